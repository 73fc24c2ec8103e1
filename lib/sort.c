/* Sorting keys: the checkpoint's keys (LMDB takes them in order) by an LSD
 * radix sort, and (key, position) pairs (a chunk's keys go in order, delta
 * varints) by one counting pass on the highest bits where the keys differ,
 * then insertion or a byte-wise radix sort inside each bucket. Both skip
 * the bits every key shares (small ids, or the high bits of one shard's
 * keys). qsort with a comparison callback took a third of a full export's
 * time; the byte-wise radix sort alone, eight passes, a fifth of an int8
 * export's instructions.
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

/* LSD radix sort of a[n] by bytes, tmp[n] as scratch, count[8][256]
 * zeroed; the result in a. Stable. */
static void keyed_lsd(pskv__keyed *a, pskv__keyed *tmp, size_t n, size_t (*count)[256])
{
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
}

/* Most bits of the first pass: 4096 buckets (32 KiB of counts). */
#define SPREAD_BITS_MAX 12u

int pskv__keyed_sort(pskv__keyed *a, size_t n)
{
    if (n <= SMALL) {
        insertion(a, n);
        return 0;
    }
    size_t start[RUNS_MERGED + 1] = {0}, runs = 1;
    uint64_t any = a[0].key, all = a[0].key; /* bits some key has, bits every key has */
    for (size_t i = 1; i < n; i++) {
        any |= a[i].key;
        all &= a[i].key;
        if (a[i].key < a[i - 1].key) {
            if (runs < RUNS_MERGED)
                start[runs] = i;
            runs++;
        }
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
    /* One counting pass on the highest bits where keys differ (about two
     * keys a bucket), stable, into tmp; then each bucket in place: by
     * insertion when small (the common case: keys are hashed ids), else
     * by the byte-wise radix sort (ids that differ in a few low bits only,
     * or pile up under one prefix). */
    const uint64_t differ = any ^ all; /* not 0: the keys are not in order */
    const unsigned top = 63u - (unsigned)__builtin_clzll(differ);
    unsigned bits = 1;
    while (bits < SPREAD_BITS_MAX && ((size_t)2 << bits) < n)
        bits++;
    if (bits > top + 1)
        bits = top + 1;
    const unsigned shift = top + 1 - bits;
    const size_t buckets = (size_t)1 << bits, mask = buckets - 1;
    size_t *at = calloc(buckets + 1, sizeof *at);
    size_t(*count)[256] = NULL;
    if (at == NULL) {
        free(tmp);
        return PSKV_ENOMEM;
    }
    for (size_t i = 0; i < n; i++)
        at[((a[i].key >> shift) & mask) + 1]++;
    size_t largest = 0;
    for (size_t d = 0; d < buckets; d++) {
        largest = at[d + 1] > largest ? at[d + 1] : largest;
        at[d + 1] += at[d];
    }
    if (largest > SMALL && (count = malloc(8 * sizeof *count)) == NULL) {
        free(at);
        free(tmp);
        return PSKV_ENOMEM; /* a left as it was */
    }
    for (size_t i = 0; i < n; i++)
        tmp[at[(a[i].key >> shift) & mask]++] = a[i];
    /* at[d] is now the end of bucket d, the start of bucket d + 1. */
    for (size_t d = 0, from = 0; d < buckets; from = at[d++]) {
        const size_t len = at[d] - from;
        if (len <= SMALL) {
            insertion(tmp + from, len);
        } else {
            memset(count, 0, 8 * sizeof *count);
            keyed_lsd(tmp + from, a + from, len, count); /* a's range as scratch */
        }
    }
    memcpy(a, tmp, n * sizeof *a);
    free(count);
    free(at);
    free(tmp);
    return 0;
}
