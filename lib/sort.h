/* Sorting keys and keyed rows (sort.c).
 * SPDX-License-Identifier: BSD-2-Clause */
#ifndef PSKV_SORT_H
#define PSKV_SORT_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"

/* A key and where its row is (a chunk's rows in key order). */
typedef struct pskv__keyed {
    uint64_t key;
    uint32_t at;
} pskv__keyed;

/* Sort by key, stable (repeated keys keep their order): 0 or PSKV_ENOMEM
 * (a left as it was). */
PSKV__HIDDEN int pskv__keyed_sort(pskv__keyed *a, size_t n);
/* Sort keys ascending, tmp[n] as scratch. Never fails (qsort without
 * memory for the digit counts). */
PSKV__HIDDEN void pskv__keys_sort(uint64_t *keys, uint64_t *tmp, size_t n);

#endif
