/* Key-seeded initial weights (init.c).
 * SPDX-License-Identifier: BSD-2-Clause */
#ifndef PSKV_INIT_H
#define PSKV_INIT_H

#include <stdint.h>

#include "common.h"
#include "pskv.h"

/* Fill w[dim] with the key-seeded initial weights of the options. */
PSKV__HIDDEN void pskv__init_weights(const pskv_table_options *o, uint64_t key,
                                     float *w, uint32_t dim);

#endif
