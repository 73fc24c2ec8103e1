/* The project's one growth helper for arrays (array.c).
 * SPDX-License-Identifier: BSD-2-Clause */
#ifndef PSKV_ARRAY_H
#define PSKV_ARRAY_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"

/* Room for `need` elements of `elem` bytes in items (capacity *cap,
 * doubling from `first`): the possibly moved array, or NULL with items and
 * *cap unchanged when memory runs out. */
PSKV__HIDDEN void *pskv__array_grow(void *items, uint32_t *cap, uint64_t need, size_t elem,
                                    uint32_t first);

#endif
