/* pskv-bench workload `cache`: CLOCK hit rates beside an exact LRU.
 * SPDX-License-Identifier: BSD-2-Clause */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

/* ---------------------------------------------------------------- cache */

/* Exact LRU over ranks 0..n-1 with capacity cap: hits over the second half
 * of the trace. */
static double lru_hit_rate(const uint32_t *ranks, size_t count, uint64_t n, uint64_t cap)
{
    int64_t *slot_of = malloc(n * sizeof *slot_of); /* rank -> list node or -1 */
    uint32_t *key = malloc(cap * sizeof *key);
    int64_t *prev = malloc(cap * sizeof *prev), *next = malloc(cap * sizeof *next);
    for (uint64_t i = 0; i < n; i++)
        slot_of[i] = -1;
    int64_t head = -1, tail = -1;
    uint64_t used = 0, hits = 0, measured = 0;
    for (size_t i = 0; i < count; i++) {
        uint32_t r = ranks[i];
        int64_t x = slot_of[r];
        bool counted = i >= count / 2;
        if (x >= 0) {
            hits += counted;
            if (x == head)
                goto done;
            /* unlink x */
            next[prev[x]] = next[x];
            if (next[x] >= 0)
                prev[next[x]] = prev[x];
            else
                tail = prev[x];
        } else if (used < cap) {
            x = (int64_t)used++;
        } else { /* reuse the tail's node */
            x = tail;
            slot_of[key[x]] = -1;
            tail = prev[x];
            if (tail >= 0)
                next[tail] = -1;
            else
                head = -1;
        }
        key[x] = r;
        slot_of[r] = x;
        prev[x] = -1;
        next[x] = head;
        if (head >= 0)
            prev[head] = x;
        head = x;
        if (tail < 0)
            tail = x;
    done:
        measured += counted;
    }
    free(slot_of);
    free(key);
    free(prev);
    free(next);
    return (double)hits / (double)measured;
}

/* pskv as a memory-only cache with a budget of cap rows: get, put on miss.
 * Hit rate over the second half of the trace, and lookups/s. */
static double pskv_cache_hit_rate(const uint64_t *keys, size_t count, uint64_t cap,
                                  double *ops_per_s)
{
    const uint32_t row_bytes = 2 * DIM * sizeof(float); /* adagrad rows */
    char cfg[64];
    snprintf(cfg, sizeof cfg, "memory_budget=%llu", (unsigned long long)(cap * row_bytes));
    pskv_store *s;
    pskv_table *t;
    if (pskv_open(NULL, cfg, &s) != 0 || pskv_table_open(s, "c", "dim=64", &t) != 0) {
        fprintf(stderr, "pskv-bench: cannot open the cache store\n");
        exit(1);
    }
    float *rows = malloc(BATCH * DIM * sizeof(float));
    uint8_t *found = malloc(BATCH);
    uint64_t *miss = malloc(BATCH * sizeof *miss);
    uint64_t hits = 0, measured = 0;
    double t0 = 0;
    for (size_t b = 0; b + BATCH <= count; b += BATCH) {
        bool counted = b >= count / 2;
        if (counted && t0 == 0)
            t0 = bench_now();
        pskv_get(t, keys + b, BATCH, rows, found);
        size_t n_miss = 0;
        for (size_t i = 0; i < BATCH; i++) {
            if (found[i])
                hits += counted;
            else
                miss[n_miss++] = keys[b + i];
        }
        measured += counted ? BATCH : 0;
        if (n_miss > 0)
            pskv_put(t, miss, n_miss, rows); /* values do not matter here */
    }
    *ops_per_s = (double)measured / (bench_now() - t0);
    free(rows);
    free(found);
    free(miss);
    pskv_close(s);
    return (double)hits / (double)measured;
}

int workload_cache(void)
{
    size_t count = (size_t)bench_cfg.batches * BATCH;
    uint32_t *ranks = bench_zipf_trace(bench_cfg.keys, count, 0.99, 7);
    uint64_t *keys = malloc(count * sizeof *keys);
    for (size_t i = 0; i < count; i++)
        keys[i] = bench_scramble(ranks[i]);
    if (!bench_cfg.json)
        printf("workload cache: %llu keys, Zipf 0.99 scrambled, %zu lookups (hit rates over the "
               "second half), dim 64 adagrad rows, get + put on miss\n"
               "%-10s %12s %12s %14s %16s\n",
               (unsigned long long)bench_cfg.keys, count, "capacity", "pskv CLOCK", "exact LRU",
               "CLOCK - LRU", "pskv lookups/s");
    const double fractions[] = {0.01, 0.05, 0.10, 0.25};
    for (size_t f = 0; f < sizeof fractions / sizeof fractions[0]; f++) {
        uint64_t cap = (uint64_t)(fractions[f] * (double)bench_cfg.keys);
        double ops;
        double clock_rate = pskv_cache_hit_rate(keys, count, cap, &ops);
        double lru_rate = lru_hit_rate(ranks, count, bench_cfg.keys, cap);
        if (bench_cfg.json)
            printf("{\"workload\":\"cache\",\"capacity_fraction\":%.2f,\"capacity_rows\":%llu,"
                   "\"clock_hit_rate\":%.4f,\"lru_hit_rate\":%.4f,\"lookups_per_s\":%.0f}\n",
                   fractions[f], (unsigned long long)cap, clock_rate, lru_rate, ops);
        else
            printf("%9.0f%% %11.2f%% %11.2f%% %+13.2f%% %15.2fM\n", fractions[f] * 100,
                   clock_rate * 100, lru_rate * 100, (clock_rate - lru_rate) * 100, ops / 1e6);
        fflush(stdout);
    }
    free(ranks);
    free(keys);
    return 0;
}
