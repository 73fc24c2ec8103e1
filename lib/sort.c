/* Sorting keys by LSD radix sort: the checkpoint's keys (LMDB takes them
 * in order) and a chunk's (key, position) pairs (delta-varint keys go in
 * order). Both skip the digits every key shares (small ids, or the high
 * bits of one shard's keys). qsort with a comparison callback took a third
 * of a full export's time.
 * SPDX-License-Identifier: BSD-2-Clause */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "pskv.h"
#include "sort.h"

/* One digit's counts into start positions; false (nothing to do) when
 * every key has the same digit, the one of the first key. */
static bool digit_starts(size_t *c, size_t buckets, size_t n, size_t first)
{
    if (c[first] == n)
        return false;
    size_t sum = 0;
    for (size_t d = 0; d < buckets; d++) {
        size_t x = c[d];
        c[d] = sum;
        sum += x;
    }
    return true;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* 11-bit digits (6 passes; 2048 buckets stay in cache) for the large key
 * sets of a checkpoint. */
#define KEY_BITS 11u
#define KEY_PASSES 6u

void pskv__keys_sort(uint64_t *keys, uint64_t *tmp, size_t n)
{
    if (n < 4096) {
        qsort(keys, n, sizeof *keys, cmp_u64);
        return;
    }
    const uint64_t mask = (1u << KEY_BITS) - 1;
    size_t(*count)[1u << KEY_BITS] = calloc(KEY_PASSES, sizeof *count);
    if (count == NULL) {
        qsort(keys, n, sizeof *keys, cmp_u64); /* no memory for counts: slower, same result */
        return;
    }
    for (size_t i = 0; i < n; i++)
        for (unsigned d = 0; d < KEY_PASSES; d++)
            count[d][(keys[i] >> (KEY_BITS * d)) & mask]++;
    uint64_t *from = keys, *to = tmp;
    for (unsigned d = 0; d < KEY_PASSES; d++) {
        const unsigned shift = KEY_BITS * d;
        size_t *c = count[d];
        if (!digit_starts(c, mask + 1, n, (from[0] >> shift) & mask))
            continue;
        for (size_t i = 0; i < n; i++)
            to[c[(from[i] >> shift) & mask]++] = from[i];
        uint64_t *x = from;
        from = to;
        to = x;
    }
    if (from != keys)
        memcpy(keys, from, n * sizeof *keys);
    free(count);
}

/* A chunk holds a few thousand rows: bytes as digits, and insertion sort
 * below SMALL. */
#define SMALL 48u

static void insertion(pskv__keyed *a, size_t n)
{
    for (size_t i = 1; i < n; i++) {
        pskv__keyed x = a[i];
        size_t j = i;
        while (j > 0 && a[j - 1].key > x.key) { /* strict: stable */
            a[j] = a[j - 1];
            j--;
        }
        a[j] = x;
    }
}

/* Merge the ascending runs a[from[r]..from[r+1]), r < runs (from[runs]:
 * the end), pairwise into one, tmp as scratch (stable: the left run wins
 * ties). */
static void merge_runs(pskv__keyed *a, pskv__keyed *tmp, size_t *from, size_t runs)
{
    pskv__keyed *src = a, *dst = tmp;
    while (runs > 1) {
        size_t out = 0;
        for (size_t r = 0; r < runs; r += 2) {
            /* A run left without a partner is copied as it is. */
            size_t i = from[r], mid = from[r + 1], end = r + 2 <= runs ? from[r + 2] : mid;
            size_t k = i, j = mid;
            while (i < mid && j < end)
                dst[k++] = src[j].key < src[i].key ? src[j++] : src[i++];
            while (i < mid)
                dst[k++] = src[i++];
            while (j < end)
                dst[k++] = src[j++];
            from[out++] = from[r];
        }
        from[out] = from[runs];
        runs = out;
        pskv__keyed *x = src;
        src = dst;
        dst = x;
    }
    if (src != a)
        memcpy(a, src, from[1] * sizeof *a);
}

/* A few ascending runs (a delta export's chunk: one per shard) merge in a
 * pass or two; more go to the radix sort. */
#define RUNS_MERGED 8u

int pskv__keyed_sort(pskv__keyed *a, size_t n)
{
    if (n <= SMALL) {
        insertion(a, n);
        return 0;
    }
    size_t start[RUNS_MERGED + 1] = {0}, runs = 1;
    for (size_t i = 1; i < n && runs <= RUNS_MERGED; i++)
        if (a[i].key < a[i - 1].key) {
            if (runs < RUNS_MERGED)
                start[runs] = i;
            runs++;
        }
    if (runs == 1)
        return 0;
    pskv__keyed *tmp = malloc(n * sizeof *tmp);
    if (tmp == NULL)
        return PSKV_ENOMEM;
    if (runs <= RUNS_MERGED) {
        start[runs] = n;
        merge_runs(a, tmp, start, runs);
        free(tmp);
        return 0;
    }
    size_t(*count)[256] = calloc(8, sizeof *count);
    if (count == NULL) {
        free(tmp);
        return PSKV_ENOMEM;
    }
    for (size_t i = 0; i < n; i++)
        for (int b = 0; b < 8; b++)
            count[b][(a[i].key >> (8 * b)) & 0xff]++;
    pskv__keyed *from = a, *to = tmp;
    for (int b = 0; b < 8; b++) {
        size_t *c = count[b];
        if (!digit_starts(c, 256, n, (from[0].key >> (8 * b)) & 0xff))
            continue;
        for (size_t i = 0; i < n; i++)
            to[c[(from[i].key >> (8 * b)) & 0xff]++] = from[i];
        pskv__keyed *x = from;
        from = to;
        to = x;
    }
    if (from != a)
        memcpy(a, from, n * sizeof *a);
    free(tmp);
    free(count);
    return 0;
}
