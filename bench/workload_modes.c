/* pskv-bench workload `modes`: what update=sync costs. N keys (default 1M)
 * of dim 64 Adagrad; each round pushes batches of 4096 distinct keys
 * (uniform over the keys, a fresh draw per batch) into an async table and
 * into a sync table, then steps the sync table. Reports push rows/s on
 * each table and pskv_step rows/s (rows applied per second), rounds
 * interleaved, medians; and DRAM per row of each table.
 * SPDX-License-Identifier: BSD-2-Clause */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

enum { ROUNDS_MAX = 33, PER_ROUND = 64 }; /* batches per round */

int workload_modes(uint64_t keys, int json)
{
    pskv_store *s;
    pskv_table *t[2];
    const char *cfg[2] = {"dim=64 optimizer=adagrad", "dim=64 optimizer=adagrad update=sync"};
    if (pskv_open(NULL, NULL, &s) != 0 || pskv_table_open(s, "async", cfg[0], &t[0]) != 0 ||
        pskv_table_open(s, "sync", cfg[1], &t[1]) != 0) {
        fprintf(stderr, "pskv-bench modes: cannot open the tables\n");
        return 1;
    }
    uint64_t *batch = malloc(BATCH * sizeof *batch);
    float *g = malloc((size_t)BATCH * DIM * sizeof *g);
    if (batch == NULL || g == NULL)
        return 1;
    for (size_t i = 0; i < (size_t)BATCH * DIM; i++)
        g[i] = (float)((i * 2654435761u) % 2001) * 1e-5f - 0.01f;
    /* Populate both tables with every key. */
    for (int k = 0; k < 2; k++)
        for (uint64_t base = 0; base < keys; base += BATCH) {
            size_t m = keys - base < BATCH ? keys - base : BATCH;
            for (size_t i = 0; i < m; i++)
                batch[i] = bench_scramble(base + i);
            if (pskv_pull(t[k], batch, m, g) != 0)
                return 1;
        }
    for (size_t i = 0; i < (size_t)BATCH * DIM; i++)
        g[i] = (float)((i * 2654435761u) % 2001) * 1e-5f - 0.01f;
    const unsigned rounds = bench_cfg.reps < 3 ? 3 : bench_cfg.reps < ROUNDS_MAX ? bench_cfg.reps
                                                                                 : ROUNDS_MAX;
    double push_rate[2][ROUNDS_MAX], step_rate[ROUNDS_MAX], ratio[ROUNDS_MAX];
    uint64_t draw = 7;
    for (unsigned r = 0; r < rounds; r++) {
        double sec[2] = {0, 0};
        for (int q = 0; q < 2; q++) {
            int k = (int)((r + (unsigned)q) % 2); /* alternate which table goes first */
            uint64_t d = draw;
            double t0 = bench_now();
            for (int b = 0; b < PER_ROUND; b++) {
                /* distinct keys: a stride through a random start */
                d = bench_mix(d);
                uint64_t start = d % keys, stride = 1 + 2 * (bench_mix(d) % (keys / 8));
                for (size_t i = 0; i < BATCH; i++)
                    batch[i] = bench_scramble((start + i * stride) % keys);
                if (pskv_push(t[k], batch, BATCH, g) != 0) {
                    fprintf(stderr, "pskv-bench modes: push failed\n");
                    return 1;
                }
            }
            sec[k] = bench_now() - t0;
        }
        draw = bench_mix(draw + 1);
        pskv_table_stats before, after;
        pskv_table_stats_get(t[1], &before);
        double t0 = bench_now();
        if (pskv_step(t[1]) != 0) {
            fprintf(stderr, "pskv-bench modes: step failed\n");
            return 1;
        }
        double st = bench_now() - t0;
        pskv_table_stats_get(t[1], &after);
        double stepped = (double)(after.stepped - before.stepped);
        push_rate[0][r] = PER_ROUND * (double)BATCH / sec[0];
        push_rate[1][r] = PER_ROUND * (double)BATCH / sec[1];
        step_rate[r] = stepped / st;
        ratio[r] = step_rate[r] / push_rate[0][r];
    }
    pskv_table_stats sa, ss;
    pskv_table_stats_get(t[0], &sa);
    pskv_table_stats_get(t[1], &ss);
    double pa = bench_median(push_rate[0], rounds), ps = bench_median(push_rate[1], rounds);
    double sr = bench_median(step_rate, rounds), q = bench_median(ratio, rounds);
    double da = (double)sa.dram_bytes / (double)sa.rows, ds = (double)ss.dram_bytes / (double)ss.rows;
    if (json)
        printf("{\"workload\":\"modes\",\"keys\":%llu,\"push_async_rows_per_s\":%.0f,"
               "\"push_sync_rows_per_s\":%.0f,\"step_rows_per_s\":%.0f,"
               "\"step_vs_push\":%.3f,\"dram_per_row_async\":%.1f,\"dram_per_row_sync\":%.1f}\n",
               (unsigned long long)keys, pa, ps, sr, q, da, ds);
    else
        printf("workload modes: %llu keys, dim 64 Adagrad, %d batches of %d distinct keys per "
               "round, median of %u rounds\n"
               "push, update=async: %.2fM rows/s\n"
               "push, update=sync (accumulate): %.2fM rows/s\n"
               "pskv_step: %.2fM rows/s = %.3fx the async push (median of per-round ratios)\n"
               "DRAM per row: async %.1f bytes, sync %.1f bytes (the accumulator: dim floats "
               "and 8 bytes)\n",
               (unsigned long long)keys, PER_ROUND, BATCH, rounds, pa / 1e6, ps / 1e6, sr / 1e6, q,
               da, ds);
    free(batch);
    free(g);
    pskv_close(s);
    return 0;
}
