/* pskv-bench workload `dram`: pull and push beside a flat array (the limit)
 * and, with --peers, LMDB and RocksDB as key-value stores.
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
#include "bench_peers.h"

#include "bench.h"

/* ---------------------------------------------------------------- flat */

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define KERNEL __attribute__((target_clones("avx2", "default")))
#else
#define KERNEL
#endif

/* The same Adagrad step as pskv's kernel. */
KERNEL static void flat_adagrad(float *restrict w, float *restrict s, const float *restrict g)
{
    for (int j = 0; j < DIM; j++) {
        float gj = g[j];
        float sj = s[j] + gj * gj;
        s[j] = sj;
        w[j] -= LR * gj / (sqrtf(sj) + EPS);
    }
}

/* ---------------------------------------------------------------- runs */

enum store_kind { FLAT_PREFETCH, FLAT_PLAIN, PSKV, N_KINDS };
static const char *const kind_names[N_KINDS] = {"flat+prefetch (limit)", "flat plain loop", "pskv"};

typedef struct job {
    enum store_kind kind;
    int push;
    float *flat;           /* flat kinds: float[N][ROW_FLOATS] indexed by rank */
    pskv_table *t;         /* pskv */
    const uint32_t *ranks; /* this thread's part of the trace */
    const uint64_t *keys;
    size_t count;
    const float *grads;
    float *out;
    int rc;
} job;

static void flat_batch(const job *j, const uint32_t *r)
{
    const size_t ahead = 16;
    const int lines = (j->push ? ROW_FLOATS : DIM) * 4 / 64;
    for (size_t i = 0; i < BATCH; i++) {
        if (j->kind == FLAT_PREFETCH && i + ahead < BATCH) {
            const char *p = (const char *)(j->flat + (size_t)r[i + ahead] * ROW_FLOATS);
            for (int l = 0; l < lines; l++)
                __builtin_prefetch(p + 64 * l, 1, 3);
        }
        float *row = j->flat + (size_t)r[i] * ROW_FLOATS;
        if (j->push)
            flat_adagrad(row, row + DIM, j->grads + i * DIM);
        else
            memcpy(j->out + i * DIM, row, DIM * sizeof(float));
    }
}

static void *job_run(void *arg)
{
    job *j = arg;
    for (size_t b = 0; b < j->count && j->rc == 0; b += BATCH) {
        if (j->kind != PSKV)
            flat_batch(j, j->ranks + b);
        else if (j->push)
            j->rc = pskv_push(j->t, j->keys + b, BATCH, j->grads);
        else
            j->rc = pskv_pull(j->t, j->keys + b, BATCH, j->out);
    }
    return NULL;
}

typedef struct bench_state {
    float *flat[N_KINDS]; /* each flat kind its own rows: none finds another's hot rows in cache */
    pskv_table *t;
    const uint32_t *ranks;
    const uint64_t *keys;
    size_t count;
    const float *grads;
} bench_state;

/* One timed pass of `threads` threads over disjoint parts of the trace;
 * returns rows/s. */
static double run_once(const bench_state *b, enum store_kind kind, int push, int threads)
{
    job jobs[2];
    pthread_t th[2];
    size_t per = b->count / (size_t)threads / BATCH * BATCH;
    for (int i = 0; i < threads; i++)
        jobs[i] = (job){kind, push, b->flat[kind], b->t, b->ranks + (size_t)i * per,
                        b->keys + (size_t)i * per, per, b->grads,
                        malloc(BATCH * DIM * sizeof(float)), 0};
    double t0 = bench_now();
    for (int i = 0; i < threads; i++)
        pthread_create(&th[i], NULL, job_run, &jobs[i]);
    for (int i = 0; i < threads; i++)
        pthread_join(th[i], NULL);
    double dt = bench_now() - t0;
    for (int i = 0; i < threads; i++) {
        free(jobs[i].out);
        if (jobs[i].rc != 0) {
            fprintf(stderr, "pskv-bench: %s\n", pskv_strerror(jobs[i].rc));
            exit(1);
        }
    }
    return (double)per * threads / dt;
}

static void report(const char *store, const char *op, int threads, double rows_per_s, double ratio)
{
    if (bench_cfg.json)
        printf("{\"workload\":\"dram\",\"store\":\"%s\",\"op\":\"%s\",\"threads\":%d,"
               "\"rows_per_s\":%.0f,\"ratio_vs_limit\":%.3f}\n",
               store, op, threads, rows_per_s, ratio);
    else
        printf("%-22s %-5s %7d %12.2fM %10.3fx\n", store, op, threads, rows_per_s / 1e6, ratio);
    fflush(stdout);
}

/* For each op and thread count, alternate the limit, the plain loop and
 * pskv rep by rep, so that machine noise hits all three alike; ratios are
 * medians of per-rep ratios. */
static double measure_all(const bench_state *b, int push, int threads)
{
    const char *op = push ? "push" : "pull";
    double rate[N_KINDS][33], ratio[N_KINDS][33];
    for (int k = 0; k < N_KINDS; k++)
        run_once(b, (enum store_kind)k, push, threads); /* warm caches and TLB */
    for (unsigned r = 0; r < bench_cfg.reps; r++) {
        for (int k = 0; k < N_KINDS; k++)
            rate[k][r] = run_once(b, (enum store_kind)k, push, threads);
        for (int k = 0; k < N_KINDS; k++)
            ratio[k][r] = rate[k][r] / rate[FLAT_PREFETCH][r];
    }
    double pskv_rate = 0;
    for (int k = 0; k < N_KINDS; k++) {
        double m = bench_median(rate[k], bench_cfg.reps);
        report(kind_names[k], op, threads, m, bench_median(ratio[k], bench_cfg.reps));
        if (k == PSKV)
            pskv_rate = m;
    }
    return pskv_rate;
}

int workload_dram(void)
{
    size_t count = (size_t)bench_cfg.batches * BATCH;
    uint32_t *ranks = bench_zipf_trace(bench_cfg.keys, count, 0.99, 42);
    uint64_t *keys = malloc(count * sizeof *keys);
    float *grads = malloc(BATCH * DIM * sizeof(float));
    for (size_t i = 0; i < count; i++)
        keys[i] = bench_scramble(ranks[i]);
    for (size_t i = 0; i < BATCH * DIM; i++)
        grads[i] = (float)((i * 2654435761u) % 2001) * 1e-5f - 0.01f;

    if (!bench_cfg.json)
        printf("workload dram: %llu keys, dim %d fp32, Zipf 0.99 scrambled, batch %d, adagrad, "
               "%u batches, median of %u\n%-22s %-5s %7s %13s %11s\n",
               (unsigned long long)bench_cfg.keys, DIM, BATCH, bench_cfg.batches, bench_cfg.reps, "store", "op",
               "threads", "rows/s", "vs limit");

    /* The limit: a flat array indexed by rank, same row layout as pskv, on
     * huge pages as pskv's big shards are. The limit and the plain loop
     * each get their own array, so that neither runs on rows the other
     * just brought into cache. */
    size_t huge = 2u << 20;
    size_t flat_bytes = (bench_cfg.keys * ROW_FLOATS * sizeof(float) + huge - 1) / huge * huge;
    float *flat[N_KINDS] = {NULL};
    for (int k = FLAT_PREFETCH; k <= FLAT_PLAIN; k++) {
        flat[k] = aligned_alloc(huge, flat_bytes);
        if (flat[k] == NULL) {
            fprintf(stderr, "pskv-bench: out of memory\n");
            return 1;
        }
        madvise(flat[k], flat_bytes, MADV_HUGEPAGE);
        memset(flat[k], 0, flat_bytes);
    }

    pskv_store *s;
    pskv_table *t;
    int rc = pskv_open(NULL, NULL, &s);
    if (rc == 0)
        rc = pskv_table_open(s, "emb", "dim=64 optimizer=adagrad lr=0.01 init=normal:0:0.01", &t);
    if (rc != 0) {
        fprintf(stderr, "pskv-bench: %s\n", pskv_strerror(rc));
        return 1;
    }
    /* The populate's physical limit: the first touch of fresh memory for
     * every row (payload and version). On the 2-core VM about 1 GB/s with
     * 4 KiB pages, 0.6 GB/s with huge pages: memory, not the initializer,
     * bounds the creation of rows there. */
    const double touch_rows_per_s =
        bench_first_touch_rows_per_s(bench_cfg.keys, ROW_FLOATS * sizeof(float) + 8);
    /* Populate every key so the measured calls find resident rows. */
    uint64_t *all = malloc(BATCH * sizeof *all);
    float *buf = malloc(BATCH * DIM * sizeof(float));
    double t0 = bench_now();
    for (uint64_t base = 0; base < bench_cfg.keys; base += BATCH) {
        size_t n = bench_cfg.keys - base < BATCH ? bench_cfg.keys - base : BATCH;
        for (size_t i = 0; i < n; i++)
            all[i] = bench_scramble(base + i);
        pskv_pull(t, all, n, buf);
    }
    double populate = (double)bench_cfg.keys / (bench_now() - t0);
    free(all);
    free(buf);

    bench_state b = {{flat[0], flat[1], NULL}, t, ranks, keys, count, grads};
    double pull1 = measure_all(&b, 0, 1);
    double push1 = measure_all(&b, 1, 1);
    double pull2 = measure_all(&b, 0, 2);
    double push2 = measure_all(&b, 1, 2);
    free(flat[FLAT_PREFETCH]);
    free(flat[FLAT_PLAIN]);

    pskv_table_stats st;
    pskv_table_stats_get(t, &st);
    double per_row = (double)st.dram_bytes / (double)st.rows;
    double payload = (double)st.row_bytes / (double)st.rows;
    if (bench_cfg.json)
        printf("{\"workload\":\"dram\",\"store\":\"pskv\",\"scaling_2t_pull\":%.3f,"
               "\"scaling_2t_push\":%.3f,\"populate_rows_per_s\":%.0f,"
               "\"dram_bytes_per_row\":%.1f,\"payload_bytes_per_row\":%.0f,"
               "\"dram_vs_payload\":%.3f,\"first_touch_rows_per_s\":%.0f}\n",
               pull2 / pull1, push2 / push1, populate, per_row, payload, per_row / payload,
               touch_rows_per_s);
    else
        printf("pskv 2 threads vs 1: pull %.2fx, push %.2fx\n"
               "pskv populate (pull creating rows, normal init): %.2fM rows/s = %.3fx the first "
               "touch of fresh memory for the rows (%.2fM rows/s)\n"
               "pskv DRAM per resident row: %.1f bytes for a %.0f-byte payload (%.3fx; "
               "target <= 1.15x + 16 = %.1f)\n",
               pull2 / pull1, push2 / push1, populate / 1e6,
               touch_rows_per_s > 0 ? populate / touch_rows_per_s : 0, touch_rows_per_s / 1e6,
               per_row, payload, per_row / payload, payload * 1.15 + 16);
    pskv_close(s);

    if (bench_cfg.peers) {
        bench_peer_args a = {bench_cfg.keys, keys, count, grads, BATCH, DIM, LR, EPS, bench_cfg.reps, 0, 0, 0,
                             NULL, 0};
        bench_peer_result res;
        for (int p = 0; p < bench_peer_count(); p++) {
            int prc = bench_peer_run(p, &a, &res);
            if (prc != 0) {
                if (prc < 0)
                    fprintf(stderr, "pskv-bench: peer %s failed\n", bench_peer_name(p));
                continue;
            }
            const char *name = bench_peer_name(p);
            if (bench_cfg.json) {
                printf("{\"workload\":\"dram\",\"store\":\"%s\",\"threads\":1,"
                       "\"pull_rows_per_s\":%.0f,\"push_rows_per_s\":%.0f,"
                       "\"pskv_pull_speedup\":%.2f,\"pskv_push_speedup\":%.2f}\n",
                       name, res.pull_rows_per_s, res.push_rows_per_s,
                       pull1 / res.pull_rows_per_s, push1 / res.push_rows_per_s);
            } else {
                printf("%-22s pull %9.3fM rows/s, push %9.3fM rows/s; pskv is %.1fx / %.1fx "
                       "faster\n",
                       name, res.pull_rows_per_s / 1e6, res.push_rows_per_s / 1e6,
                       pull1 / res.pull_rows_per_s, push1 / res.push_rows_per_s);
            }
        }
    }
    free(ranks);
    free(keys);
    free(grads);
    return 0;
}
