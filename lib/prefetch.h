/* The prefetch worker thread and its queue (prefetch.c).
 * SPDX-License-Identifier: BSD-2-Clause */
#ifndef PSKV_PREFETCH_H
#define PSKV_PREFETCH_H

#include "pskv_internal.h"

PSKV__HIDDEN void pskv__prefetch_init(pskv_store *s);
/* Queue a load of the keys' spilled rows and return (waits only when 64
 * jobs are pending). 0 or PSKV_ENOMEM. */
PSKV__HIDDEN int pskv__prefetch_submit(pskv_table *t, const uint64_t *keys, size_t n);
/* Finish queued jobs and stop the worker; before tables are destroyed. */
PSKV__HIDDEN void pskv__prefetch_stop(pskv_store *s);

#endif
