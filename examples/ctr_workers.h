/* ctr_demo --workers: simulated workers with update modes and compressed
 * gradients (ctr_workers.c).
 * SPDX-License-Identifier: BSD-2-Clause */
#ifndef CTR_WORKERS_H
#define CTR_WORKERS_H

#include <stdbool.h>

/* Whether the command line asks for the workers' trainer. */
bool ctr_workers_wanted(int argc, char **argv);
/* Its main: the exit status. */
int ctr_workers_main(int argc, char **argv);

#endif
