/* pskv-bench workload `dram`: pull and push beside a flat array (the limit)
 * and, with --peers, hash maps with hand-written loops (peers_maps.cc) and
 * LMDB and RocksDB as key-value stores.
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
#include "bench_peers.h"
#include "bench_sum.h"
#include "peers_maps.h"

/* ---------------------------------------------------------------- runs */

/* The contenders: the flat limit, the plain flat loop, pskv, then the
 * hash-map peers (peers_maps.h) when built and asked for (--peers). */
enum { FLAT_PREFETCH, FLAT_PLAIN, PSKV, FIRST_MAP };
enum { MAX_MAPS = 4, MAX_KINDS = FIRST_MAP + MAX_MAPS };
static const char *const kind_names[FIRST_MAP] = {"flat+prefetch (limit)", "flat plain loop", "pskv"};

static const char *kind_name(int kind)
{
    return kind < FIRST_MAP ? kind_names[kind] : bench_maps_name(kind - FIRST_MAP);
}

typedef struct job {
    int kind, push;
    float *flat;           /* flat kinds: float[N][ROW_FLOATS] indexed by rank */
    pskv_table *t;         /* pskv */
    bench_map *map;        /* hash-map peers */
    const uint32_t *ranks; /* this thread's part of the trace */
    const uint64_t *keys;
    size_t count;
    const float *grads;
    float *out;
    bench_sum sum; /* push, but pskv's: this thread's summing of repeated keys */
    int rc;
} job;

/* A batch on a flat array. Push sums the gradients of repeated keys first
 * and steps each distinct row once, as pskv and the peers do. */
static void flat_batch(job *j, const uint32_t *r, const uint64_t *k)
{
    const size_t ahead = 16;
    const bool limit = j->kind == FLAT_PREFETCH;
    if (!j->push) {
        for (size_t i = 0; i < BATCH; i++) {
            if (limit && i + ahead < BATCH) {
                const char *p = (const char *)(j->flat + (size_t)r[i + ahead] * ROW_FLOATS);
                for (int l = 0; l < DIM * 4 / 64; l++)
                    __builtin_prefetch(p + 64 * l, 1, 3);
            }
            memcpy(j->out + i * DIM, j->flat + (size_t)r[i] * ROW_FLOATS, DIM * sizeof(float));
        }
        return;
    }
    bench_sum_batch(&j->sum, k, BATCH, j->grads);
    const uint32_t *first = j->sum.first;
    const size_t m = j->sum.m;
    for (size_t d = 0; d < m; d++) {
        if (limit && d + ahead < m) {
            const char *p = (const char *)(j->flat + (size_t)r[first[d + ahead]] * ROW_FLOATS);
            for (int l = 0; l < ROW_FLOATS * 4 / 64; l++)
                __builtin_prefetch(p + 64 * l, 1, 3);
        }
        float *row = j->flat + (size_t)r[first[d]] * ROW_FLOATS;
        bench_adagrad(row, row + DIM, j->sum.grad[d]);
    }
}

static void *job_run(void *arg)
{
    job *j = arg;
    for (size_t b = 0; b < j->count && j->rc == 0; b += BATCH) {
        if (j->kind < PSKV)
            flat_batch(j, j->ranks + b, j->keys + b);
        else if (j->kind == PSKV)
            j->rc = j->push ? pskv_push(j->t, j->keys + b, BATCH, j->grads)
                            : pskv_pull(j->t, j->keys + b, BATCH, j->out);
        else
            j->rc = j->push ? bench_map_push(j->map, j->keys + b, BATCH, j->grads, &j->sum)
                            : bench_map_pull(j->map, j->keys + b, BATCH, j->out);
    }
    return NULL;
}

typedef struct bench_state {
    float *flat[2]; /* each flat kind its own rows: none finds another's hot rows in cache */
    pskv_table *t;
    bench_map *map[MAX_MAPS]; /* each peer its own map and rows, likewise */
    int kinds;                /* contenders: FIRST_MAP + the peers built */
    const uint32_t *ranks;
    const uint64_t *keys;
    size_t count;
    const float *grads;
    uint64_t rng; /* the rounds' order: fixed seed, the same every run */
} bench_state;

/* One timed pass of `threads` threads over disjoint parts of the trace;
 * returns rows/s. */
static double run_once(const bench_state *b, int kind, int push, int threads)
{
    job jobs[2];
    pthread_t th[2];
    size_t per = b->count / (size_t)threads / BATCH * BATCH;
    for (int i = 0; i < threads; i++) {
        jobs[i] = (job){kind, push, kind < PSKV ? b->flat[kind] : NULL, b->t,
                        kind >= FIRST_MAP ? b->map[kind - FIRST_MAP] : NULL,
                        b->ranks + (size_t)i * per, b->keys + (size_t)i * per, per, b->grads,
                        malloc(BATCH * DIM * sizeof(float)), {0}, 0};
        /* Scratch is allocated outside the timed part; pskv allocates its own. */
        if (jobs[i].out == NULL ||
            (push && kind != PSKV && bench_sum_init(&jobs[i].sum, BATCH) != 0)) {
            fprintf(stderr, "pskv-bench: out of memory\n");
            exit(1);
        }
    }
    double t0 = bench_now();
    for (int i = 0; i < threads; i++)
        pthread_create(&th[i], NULL, job_run, &jobs[i]);
    for (int i = 0; i < threads; i++)
        pthread_join(th[i], NULL);
    double dt = bench_now() - t0;
    for (int i = 0; i < threads; i++) {
        free(jobs[i].out);
        bench_sum_free(&jobs[i].sum);
        if (jobs[i].rc != 0) {
            if (kind >= FIRST_MAP)
                fprintf(stderr, "pskv-bench: %s did not find a key\n", kind_name(kind));
            else
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

/* Fisher-Yates with an LCG: the same orders on every run. */
static void shuffle(int *v, int n, uint64_t *rng)
{
    for (int i = n - 1; i > 0; i--) {
        *rng = *rng * 6364136223846793005ull + 1442695040888963407ull;
        int j = (int)((*rng >> 33) % (uint64_t)(i + 1));
        int x = v[i];
        v[i] = v[j];
        v[j] = x;
    }
}

/* For one op and thread count, rounds of every contender once, in an order
 * shuffled per round, so that machine noise and whatever a run leaves in
 * the caches hit all alike; rows/s are medians of the rounds' rates, ratios
 * medians of per-round ratios to the limit (into ratio[kind], -1 for a
 * contender not run). The peers push on 1 thread only: a hand-written map
 * has no locks, so concurrent pushes would race on its rows. Returns pskv's
 * median rows/s. */
static double measure_all(bench_state *b, int push, int threads, double ratio_med[MAX_KINDS])
{
    const char *op = push ? "push" : "pull";
    double rate[MAX_KINDS][33], ratio[MAX_KINDS][33];
    int order[MAX_KINDS], n = 0;
    bool runs[MAX_KINDS] = {false};
    for (int k = 0; k < b->kinds; k++)
        if (k < FIRST_MAP || !push || threads == 1) {
            order[n++] = k;
            runs[k] = true;
        }
    for (int c = 0; c < n; c++)
        run_once(b, order[c], push, threads); /* warm caches and TLB */
    for (unsigned r = 0; r < bench_cfg.reps; r++) {
        shuffle(order, n, &b->rng);
        for (int c = 0; c < n; c++)
            rate[order[c]][r] = run_once(b, order[c], push, threads);
        for (int c = 0; c < n; c++)
            ratio[order[c]][r] = rate[order[c]][r] / rate[FLAT_PREFETCH][r];
    }
    double pskv_rate = 0;
    for (int k = 0; k < MAX_KINDS; k++) {
        ratio_med[k] = -1;
        if (!runs[k])
            continue;
        double m = bench_median(rate[k], bench_cfg.reps);
        ratio_med[k] = bench_median(ratio[k], bench_cfg.reps);
        report(kind_name(k), op, threads, m, ratio_med[k]);
        if (k == PSKV)
            pskv_rate = m;
    }
    return pskv_rate;
}

/* The peer with the highest median ratio to the limit, or -1. */
static int best_peer(const double ratio[MAX_KINDS])
{
    int best = -1;
    for (int k = FIRST_MAP; k < MAX_KINDS; k++)
        if (ratio[k] > 0 && (best < 0 || ratio[k] > ratio[best]))
            best = k;
    return best;
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
               "%u batches, median of %u rounds (order shuffled per round)\n"
               "%-22s %-5s %7s %13s %11s\n",
               (unsigned long long)bench_cfg.keys, DIM, BATCH, bench_cfg.batches, bench_cfg.reps, "store", "op",
               "threads", "rows/s", "vs limit");

    /* The limit: a flat array indexed by rank, same row layout as pskv, on
     * huge pages as pskv's big shards are. The limit and the plain loop
     * each get their own array, so that neither runs on rows the other
     * just brought into cache. */
    size_t huge = 2u << 20;
    size_t flat_bytes = (bench_cfg.keys * ROW_FLOATS * sizeof(float) + huge - 1) / huge * huge;
    float *flat[2] = {NULL};
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
    /* --budget: a memory budget (admission sketch on), to measure what it
     * costs per row; the table must fit in it for the other figures. */
    char store_cfg[64];
    snprintf(store_cfg, sizeof store_cfg, "memory_budget=%llu",
             (unsigned long long)bench_cfg.budget);
    int rc = pskv_open(NULL, bench_cfg.budget ? store_cfg : NULL, &s);
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

    bench_state b = {{flat[0], flat[1]}, t, {NULL}, FIRST_MAP, ranks, keys, count, grads,
                     0x243f6a8885a308d3ull};
    /* The hash-map peers, each on its own rows, populated with every key. */
    int maps = bench_cfg.peers ? bench_maps_count() : 0;
    maps = maps < MAX_MAPS ? maps : MAX_MAPS;
    for (int i = 0; i < maps; i++) {
        b.map[i] = bench_map_create(i, bench_cfg.keys);
        if (b.map[i] == NULL) {
            fprintf(stderr, "pskv-bench: out of memory for %s and the peers after it\n",
                    bench_maps_name(i));
            break;
        }
        b.kinds++;
    }
    double ratio[4][MAX_KINDS];
    double pull1 = measure_all(&b, 0, 1, ratio[0]);
    double push1 = measure_all(&b, 1, 1, ratio[1]);
    double pull2 = measure_all(&b, 0, 2, ratio[2]);
    double push2 = measure_all(&b, 1, 2, ratio[3]);
    free(flat[FLAT_PREFETCH]);
    free(flat[FLAT_PLAIN]);
    for (int i = 0; i < MAX_MAPS; i++)
        bench_map_free(b.map[i]);
    /* pskv against the best peer at 1 thread: the ratio of their median
     * ratios to the limit. */
    int best_pull = best_peer(ratio[0]), best_push = best_peer(ratio[1]);
    if (best_pull >= 0 && best_push >= 0) {
        double vs_pull = ratio[0][PSKV] / ratio[0][best_pull];
        double vs_push = ratio[1][PSKV] / ratio[1][best_push];
        if (bench_cfg.json)
            printf("{\"workload\":\"dram\",\"store\":\"pskv\",\"threads\":1,"
                   "\"pull_vs_best_peer\":%.3f,\"best_peer_pull\":\"%s\","
                   "\"push_vs_best_peer\":%.3f,\"best_peer_push\":\"%s\"}\n",
                   vs_pull, kind_name(best_pull), vs_push, kind_name(best_push));
        else
            printf("pskv vs best peer: pull %.2fx (best: %s), push %.2fx (best: %s)\n", vs_pull,
                   kind_name(best_pull), vs_push, kind_name(best_push));
    }
    if (bench_cfg.peers && bench_maps_count() == 0)
        fprintf(bench_cfg.json ? stderr : stdout,
                "pskv vs best peer: no hash-map peers in this build (they need a C++ compiler, "
                "absl and boost >= 1.81 at build time: -Dbench_maps)\n");

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
