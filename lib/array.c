/* Growable arrays: the one place that doubles a buffer.
 * SPDX-License-Identifier: BSD-2-Clause */
#include <stdlib.h>

#include "array.h"
#include "pskv.h"

void *pskv__array_grow(void *items, uint32_t *cap, uint64_t need, size_t elem, uint32_t first)
{
    if (need <= *cap)
        return items;
    uint64_t n = *cap ? *cap : first;
    while (n < need)
        n *= 2;
    if (n > UINT32_MAX)
        return NULL;
    void *grown = realloc(items, (size_t)n * elem);
    if (grown != NULL)
        *cap = (uint32_t)n;
    return grown;
}
