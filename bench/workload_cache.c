/* pskv-bench workload `cache`: pskv's hit rates as a cache (CLOCK with
 * frequency-based admission) beside an exact LRU holding as many rows, with
 * and without a one-pass scan of cold keys.
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

/* What a run measures: hits over the lookups [from, to) of the trace; with
 * scan_len > 0, scan_len never-seen keys are looked up (and inserted) once
 * each just before lookup `from` (a one-pass scan of cold keys). */
typedef struct window {
    size_t from, to;
    uint64_t scan_len;
} window;

/* An exact LRU of cap nodes: a doubly linked list, head most recent. */
typedef struct lru {
    int64_t *slot_of; /* rank -> node or -1 */
    uint64_t *key;
    int64_t *prev, *next;
    int64_t head, tail;
    uint64_t used, cap;
} lru;

/* Look rank r up (a hit: true) and make it the most recent. */
static bool lru_access(lru *l, uint64_t r)
{
    int64_t x = l->slot_of[r];
    bool hit = x >= 0;
    if (hit) {
        if (x == l->head)
            return true;
        l->next[l->prev[x]] = l->next[x]; /* unlink x */
        if (l->next[x] >= 0)
            l->prev[l->next[x]] = l->prev[x];
        else
            l->tail = l->prev[x];
    } else if (l->used < l->cap) {
        x = (int64_t)l->used++;
    } else { /* reuse the tail's node */
        x = l->tail;
        l->slot_of[l->key[x]] = -1;
        l->tail = l->prev[x];
        if (l->tail >= 0)
            l->next[l->tail] = -1;
        else
            l->head = -1;
    }
    l->key[x] = r;
    l->slot_of[r] = x;
    l->prev[x] = -1;
    l->next[x] = l->head;
    if (l->head >= 0)
        l->prev[l->head] = x;
    l->head = x;
    if (l->tail < 0)
        l->tail = x;
    return hit;
}

/* Exact LRU over ranks 0..n-1 (scan keys: ranks n..n+scan_len-1) with
 * capacity cap. */
static double lru_hit_rate(const uint32_t *ranks, size_t count, uint64_t n, uint64_t cap,
                           window w)
{
    lru l = {malloc((n + w.scan_len) * sizeof(int64_t)), malloc(cap * sizeof(uint64_t)),
             malloc(cap * sizeof(int64_t)), malloc(cap * sizeof(int64_t)), -1, -1, 0, cap};
    for (uint64_t i = 0; i < n + w.scan_len; i++)
        l.slot_of[i] = -1;
    uint64_t hits = 0, measured = 0;
    for (size_t i = 0; i < w.to && i < count; i++) {
        for (uint64_t k = 0; i == w.from && k < w.scan_len; k++)
            lru_access(&l, n + k); /* the scan, not counted */
        bool counted = i >= w.from;
        hits += lru_access(&l, ranks[i]) && counted;
        measured += counted;
    }
    free(l.slot_of);
    free(l.key);
    free(l.prev);
    free(l.next);
    return (double)hits / (double)measured;
}

/* One batch of a cache's work: get, put on miss; hits counted if asked. */
static uint64_t cache_batch(pskv_table *t, const uint64_t *keys, size_t n, float *rows,
                            uint8_t *found, uint64_t *miss)
{
    uint64_t hits = 0;
    pskv_get(t, keys, n, rows, found);
    size_t n_miss = 0;
    for (size_t i = 0; i < n; i++) {
        if (found[i])
            hits++;
        else
            miss[n_miss++] = keys[i];
    }
    if (n_miss > 0)
        pskv_put(t, miss, n_miss, rows); /* values do not matter here */
    return hits;
}

/* pskv as a memory-only cache holding cap rows of dim 64 (its budget: cap
 * times what it counts per resident row, read off its own stats, so that
 * pskv and the LRU hold the same number of rows): get, put on miss. Hits
 * over the window w, and lookups/s there. */
static double pskv_cache_hit_rate(const uint64_t *keys, size_t count, uint64_t cap,
                                  const char *table_cfg, window w, double *ops_per_s,
                                  uint64_t *row_cost, double *dram_per_row)
{
    pskv_store *s;
    pskv_table *t;
    /* The budgeted bytes of one row, on a scratch store with a budget. */
    uint64_t one_key = 1;
    float one_row[DIM] = {0};
    pskv_store_stats st;
    if (pskv_open(NULL, "memory_budget=1G", &s) != 0 ||
        pskv_table_open(s, "c", table_cfg, &t) != 0 || pskv_put(t, &one_key, 1, one_row) != 0 ||
        pskv_store_stats_get(s, &st) != 0) {
        fprintf(stderr, "pskv-bench: cannot open the cache store\n");
        exit(1);
    }
    *row_cost = st.resident_bytes;
    pskv_close(s);
    char cfg[64];
    snprintf(cfg, sizeof cfg, "memory_budget=%llu", (unsigned long long)(cap * *row_cost));
    if (pskv_open(NULL, cfg, &s) != 0 || pskv_table_open(s, "c", table_cfg, &t) != 0) {
        fprintf(stderr, "pskv-bench: cannot open the cache store\n");
        exit(1);
    }
    float *rows = malloc(BATCH * DIM * sizeof(float));
    uint8_t *found = malloc(BATCH);
    uint64_t *miss = malloc(BATCH * sizeof *miss);
    uint64_t *scan = malloc(BATCH * sizeof *scan);
    uint64_t hits = 0, measured = 0;
    double t0 = 0;
    for (size_t b = 0; b < w.to && b + BATCH <= count; b += BATCH) {
        bool counted = b >= w.from;
        if (b == w.from) {
            for (uint64_t k = 0; k < w.scan_len; k += BATCH) {
                size_t n = w.scan_len - k < BATCH ? (size_t)(w.scan_len - k) : BATCH;
                for (size_t i = 0; i < n; i++)
                    scan[i] = bench_scramble(bench_cfg.keys + k + i); /* never seen */
                cache_batch(t, scan, n, rows, found, miss);
            }
            t0 = bench_now();
        }
        uint64_t h = cache_batch(t, keys + b, BATCH, rows, found, miss);
        hits += counted ? h : 0;
        measured += counted ? BATCH : 0;
    }
    *ops_per_s = (double)measured / (bench_now() - t0);
    pskv_table_stats ts;
    pskv_table_stats_get(t, &ts);
    if (dram_per_row != NULL) /* rows, index, sketch and window */
        *dram_per_row = ts.rows ? (double)ts.dram_bytes / (double)ts.rows : 0;
    free(rows);
    free(found);
    free(miss);
    free(scan);
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
    /* Hit rates over the second half of the trace; after a scan, over the
     * eighth of the trace that follows it (where a flushed hot set shows). */
    const size_t half = count / 2 / BATCH * BATCH;
    const size_t after = half + count / 8 / BATCH * BATCH;
    if (!bench_cfg.json)
        printf("workload cache: %llu keys, Zipf 0.99 scrambled, %zu lookups, get + put on miss; "
               "pskv and the LRU hold the same number of rows\n"
               "budget: the bytes of adagrad rows for that fraction of the keys (optimizer=none "
               "holds more rows in them); hit rates over the second half; 'scan': right after a one-pass scan of as many "
               "never-seen keys as the capacity, over the next %zu lookups\n"
               "%-9s %-8s %10s %9s %9s %9s %12s %12s %11s %12s %8s\n",
               (unsigned long long)bench_cfg.keys, count, after - half, "budget", "optimizer",
               "rows held", "pskv", "LRU", "pskv-LRU", "pskv no-scan", "pskv scan", "LRU scan",
               "lookups/s", "DRAM/row");
    const double fractions[] = {0.01, 0.05, 0.10, 0.25};
    /* Adagrad rows hold cap rows; optimizer=none rows get the same bytes
     * (so more rows: what dropping unused optimizer state buys a cache). */
    const char *const cfgs[] = {"dim=64", "dim=64 optimizer=none"};
    const char *const cfg_names[] = {"adagrad", "none"};
    uint64_t adagrad_cost = 0;
    for (size_t c = 0; c < 2; c++) {
        for (size_t f = 0; f < sizeof fractions / sizeof fractions[0]; f++) {
            uint64_t cap = (uint64_t)(fractions[f] * (double)bench_cfg.keys);
            double ops, ops2, ops3;
            uint64_t cost;
            if (c == 1) { /* the adagrad table's bytes, in rows of this table */
                pskv_cache_hit_rate(keys, BATCH, 1, cfgs[c], (window){0, BATCH, 0}, &ops, &cost,
                                    NULL);
                cap = cap * adagrad_cost / cost;
            }
            double dram_row;
            double pskv_rate = pskv_cache_hit_rate(keys, count, cap, cfgs[c],
                                                   (window){half, count, 0}, &ops, &cost,
                                                   &dram_row);
            if (c == 0)
                adagrad_cost = cost;
            double pskv_window = pskv_cache_hit_rate(keys, count, cap, cfgs[c],
                                                     (window){half, after, 0}, &ops2, &cost,
                                                     NULL);
            double pskv_scan = pskv_cache_hit_rate(keys, count, cap, cfgs[c],
                                                   (window){half, after, cap}, &ops3, &cost,
                                                   NULL);
            double lru_rate = lru_hit_rate(ranks, count, bench_cfg.keys, cap,
                                           (window){half, count, 0});
            double lru_scan = lru_hit_rate(ranks, count, bench_cfg.keys, cap,
                                           (window){half, after, cap});
            if (bench_cfg.json)
                printf("{\"workload\":\"cache\",\"optimizer\":\"%s\",\"budget_fraction\":%.2f,"
                       "\"capacity_rows\":%llu,\"budget_bytes_per_row\":%llu,"
                       "\"pskv_hit_rate\":%.4f,\"lru_hit_rate\":%.4f,"
                       "\"pskv_no_scan\":%.4f,\"pskv_after_scan\":%.4f,\"lru_after_scan\":%.4f,"
                       "\"lookups_per_s\":%.0f,\"dram_bytes_per_row\":%.1f}\n",
                       cfg_names[c], fractions[f], (unsigned long long)cap,
                       (unsigned long long)cost, pskv_rate, lru_rate, pskv_window, pskv_scan,
                       lru_scan, ops, dram_row);
            else
                printf("%8.0f%% %-8s %9.2f%% %8.2f%% %8.2f%% %+8.2f%% %11.2f%% %11.2f%% %10.2f%% "
                       "%11.2fM %8.1f\n",
                       fractions[f] * 100, cfg_names[c], (double)cap / (double)bench_cfg.keys * 100,
                       pskv_rate * 100, lru_rate * 100, (pskv_rate - lru_rate) * 100,
                       pskv_window * 100, pskv_scan * 100, lru_scan * 100, ops / 1e6, dram_row);
            fflush(stdout);
        }
    }
    free(ranks);
    free(keys);
    return 0;
}
