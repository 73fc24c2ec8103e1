/* pskv-bench workload `init`: the key-seeded initializers alone, rows of
 * dim 64 per second for each generator (init_gen 1 and 2) of uniform and
 * normal values, beside the limit of writing the same bytes (a memset per
 * row into the same buffer), generators interleaved rep by rep; then the
 * populate of a table (pull creating every row) per initializer, against
 * the first touch of fresh memory for its rows.
 * SPDX-License-Identifier: BSD-2-Clause */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "init.h"

enum { KINDS = 5 };
static const char *const names[KINDS] = {"memset (limit)", "uniform, init_gen=1",
                                         "uniform, init_gen=2", "normal, init_gen=1",
                                         "normal, init_gen=2"};

/* Rows per second of one kind over n keys. */
static double init_rate(int kind, uint64_t n, float *w, double *sink)
{
    pskv_table_options o;
    pskv_table_options_init(&o);
    o.seed = 7;
    o.init = kind <= 2 ? PSKV_INIT_UNIFORM : PSKV_INIT_NORMAL;
    o.init_a = kind <= 2 ? -0.01f : 0.0f;
    o.init_b = 0.01f;
    o.init_gen = kind % 2 == 1 ? 1 : 2;
    double t0 = bench_now();
    for (uint64_t i = 0; i < n; i++) {
        if (kind == 0)
            memset(w, (int)(i & 0x7f), DIM * sizeof *w);
        else
            pskv__init_weights(&o, bench_scramble(i), w, DIM);
        *sink += w[i % DIM];
    }
    return (double)n / (bench_now() - t0);
}

int workload_init(uint64_t keys, int json)
{
    const uint64_t n = keys < 100000 ? 100000 : keys;
    float w[DIM];
    double sink = 0, rate[KINDS][33], ratio[KINDS][33];
    const unsigned reps = bench_cfg.reps < 33 ? bench_cfg.reps : 33;
    for (unsigned r = 0; r < reps; r++) {
        for (int k = 0; k < KINDS; k++)
            rate[k][r] = init_rate(k, n, w, &sink);
        for (int k = 0; k < KINDS; k++)
            ratio[k][r] = rate[k][r] / rate[0][r];
    }
    if (!json)
        printf("workload init: %llu rows of dim %d per run, median of %u\n%-22s %14s %11s\n",
               (unsigned long long)n, DIM, reps, "initializer", "rows/s", "vs memset");
    for (int k = 0; k < KINDS; k++) {
        double m = bench_median(rate[k], reps), q = bench_median(ratio[k], reps);
        if (json)
            printf("{\"workload\":\"init\",\"initializer\":\"%s\",\"rows_per_s\":%.0f,"
                   "\"ns_per_row\":%.1f,\"ratio_vs_memset\":%.4f}\n",
                   names[k], m, 1e9 / m, q);
        else
            printf("%-22s %12.2fM %10.4fx  (%.1f ns per row)\n", names[k], m / 1e6, q, 1e9 / m);
    }
    /* Populate: pull creating every row of a memory-only table, against
     * the first touch of fresh memory for the rows (payload and version). */
    const double touch = bench_first_touch_rows_per_s(keys, ROW_FLOATS * sizeof(float) + 8);
    static const char *const cfgs[] = {"init=zeros", "init=uniform:-0.01:0.01 init_gen=1",
                                       "init=uniform:-0.01:0.01", "init=normal:0:0.01 init_gen=1",
                                       "init=normal:0:0.01"};
    uint64_t *batch = malloc(BATCH * sizeof *batch);
    float *out = malloc((size_t)BATCH * DIM * sizeof *out);
    for (int c = 0; c < 5; c++) {
        pskv_store *s;
        pskv_table *t;
        char cfg[128];
        snprintf(cfg, sizeof cfg, "dim=%d optimizer=adagrad %s", DIM, cfgs[c]);
        if (pskv_open(NULL, NULL, &s) != 0 || pskv_table_open(s, "t", cfg, &t) != 0)
            return 1;
        double t0 = bench_now();
        for (uint64_t base = 0; base < keys; base += BATCH) {
            size_t m = keys - base < BATCH ? keys - base : BATCH;
            for (size_t i = 0; i < m; i++)
                batch[i] = bench_scramble(base + i);
            if (pskv_pull(t, batch, m, out) != 0)
                return 1;
        }
        double pop = (double)keys / (bench_now() - t0);
        pskv_close(s);
        if (json)
            printf("{\"workload\":\"init\",\"populate\":\"%s\",\"rows_per_s\":%.0f,"
                   "\"ratio_vs_first_touch\":%.3f}\n",
                   cfgs[c], pop, touch > 0 ? pop / touch : 0);
        else
            printf("populate %-36s %6.2fM rows/s = %.3fx the first touch of fresh memory "
                   "(%.2fM rows/s)\n",
                   cfgs[c], pop / 1e6, touch > 0 ? pop / touch : 0, touch / 1e6);
    }
    free(batch);
    free(out);
    if (sink == 12345.0)
        printf("\n"); /* keeps the loops */
    return 0;
}
