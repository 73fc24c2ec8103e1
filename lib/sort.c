/* Sorting (key, position) pairs by key for chunks, whose keys go in order
 * (delta-varint). An LSD radix sort on bytes: stable, so repeated keys keep
 * the order they came in, and it skips the bytes all keys share (small ids,
 * or keys of one shard's high bits). qsort with a comparison callback took
 * a third of a full export's time.
 * SPDX-License-Identifier: BSD-2-Clause */
#include <stdlib.h>
#include <string.h>

#include "pskv_internal.h"

/* Below this, insertion sort. */
#define SMALL 48u

static void insertion(pskv__keyed *a, size_t n)
{
    for (size_t i = 1; i < n; i++) {
        pskv__keyed x = a[i];
        size_t j = i;
        while (j > 0 && a[j - 1].key > x.key) {
            a[j] = a[j - 1];
            j--;
        }
        a[j] = x;
    }
}

int pskv__keyed_sort(pskv__keyed *a, size_t n)
{
    if (n <= SMALL) {
        insertion(a, n);
        return 0;
    }
    size_t(*count)[256] = calloc(8, sizeof *count);
    pskv__keyed *tmp = malloc(n * sizeof *tmp);
    if (count == NULL || tmp == NULL) {
        free(count);
        free(tmp);
        return PSKV_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        uint64_t k = a[i].key;
        for (int b = 0; b < 8; b++)
            count[b][(k >> (8 * b)) & 0xff]++;
    }
    pskv__keyed *from = a, *to = tmp;
    for (int b = 0; b < 8; b++) {
        size_t *c = count[b];
        if (c[(from[0].key >> (8 * b)) & 0xff] == n)
            continue; /* every key has this byte */
        size_t sum = 0;
        for (int d = 0; d < 256; d++) {
            size_t x = c[d];
            c[d] = sum;
            sum += x;
        }
        for (size_t i = 0; i < n; i++)
            to[c[(from[i].key >> (8 * b)) & 0xff]++] = from[i];
        pskv__keyed *swap = from;
        from = to;
        to = swap;
    }
    if (from != a)
        memcpy(a, from, n * sizeof *a);
    free(tmp);
    free(count);
    return 0;
}
