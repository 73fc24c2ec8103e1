/* pskv-bench: speed of pskv as ratios against the physical limit and
 * against peer stores, measured in the same run.
 *
 * Workload `dram`: dim 64 fp32 rows, N keys (default 4M), Zipf 0.99 over
 * scrambled ids, batches of 4096, Adagrad. Reports pull and push rows/s for
 * 1 and 2 threads beside a flat float[N][row] array indexed by rank — a
 * plain loop and one with software prefetch (the limit: about DRAM
 * bandwidth) — and DRAM bytes per resident row. With --peers, the same
 * operations on LMDB used as a plain key-value store (and RocksDB when built
 * with -Dbench_peers=enabled).
 *
 *   pskv-bench [dram] [--keys N] [--batches B] [--reps R] [--peers] [--json]
 * Each figure is the median of R runs over the same trace. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "pskv.h"
#include "bench_peers.h"

#define DIM 64
#define ROW_FLOATS (2 * DIM) /* weights + adagrad state */
#define BATCH 4096
#define LR 0.01f
#define EPS 1e-10f

static struct {
    uint64_t keys;
    unsigned batches, reps;
    int json, peers;
} cfg = {4u << 20, 128, 5, 0, 0};

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, unsigned n)
{
    qsort(v, n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* ---------------------------------------------------------------- trace */

static uint64_t scramble(uint64_t rank) { return rank * 0x9e3779b97f4a7c15ull; }

/* Zipf(0.99) ranks by inverse CDF; deterministic. */
static uint32_t *zipf_trace(uint64_t n, size_t count, double theta, uint64_t seed)
{
    double *cdf = malloc(n * sizeof *cdf);
    uint32_t *out = malloc(count * sizeof *out);
    if (cdf == NULL || out == NULL) {
        fprintf(stderr, "pskv-bench: out of memory for the trace\n");
        exit(1);
    }
    double sum = 0;
    for (uint64_t k = 0; k < n; k++) {
        sum += 1.0 / pow((double)(k + 1), theta);
        cdf[k] = sum;
    }
    uint64_t s = seed;
    for (size_t i = 0; i < count; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        double u = (double)(s >> 11) * 0x1.0p-53 * sum;
        uint64_t lo = 0, hi = n - 1;
        while (lo < hi) {
            uint64_t mid = (lo + hi) / 2;
            if (cdf[mid] < u)
                lo = mid + 1;
            else
                hi = mid;
        }
        out[i] = (uint32_t)lo;
    }
    free(cdf);
    return out;
}

/* ---------------------------------------------------------------- output */

static double limit_pull_1t, limit_push_1t;

static void report(const char *store, const char *op, int threads, double rows_per_s)
{
    double limit = strcmp(op, "pull") == 0 ? limit_pull_1t : limit_push_1t;
    double ratio = limit > 0 ? rows_per_s / (limit * threads) : 0;
    if (cfg.json)
        printf("{\"workload\":\"dram\",\"store\":\"%s\",\"op\":\"%s\",\"threads\":%d,"
               "\"rows_per_s\":%.0f,\"ratio_vs_flat_prefetch\":%.3f}\n",
               store, op, threads, rows_per_s, ratio);
    else
        printf("%-22s %-5s %7d %12.2fM %10.3fx\n", store, op, threads, rows_per_s / 1e6, ratio);
    fflush(stdout);
}

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

typedef struct flat_job {
    float *table;
    const uint32_t *ranks;
    size_t count;
    float *out;
    const float *grads;
    int prefetch;
    int push;
} flat_job;

static void flat_run(const flat_job *j)
{
    const size_t ahead = 16;
    for (size_t b = 0; b < j->count; b += BATCH) {
        const uint32_t *r = j->ranks + b;
        for (size_t i = 0; i < BATCH; i++) {
            if (j->prefetch && i + ahead < BATCH) {
                const char *p = (const char *)(j->table + (size_t)r[i + ahead] * ROW_FLOATS);
                for (int off = 0; off < (j->push ? ROW_FLOATS : DIM) * 4; off += 64)
                    __builtin_prefetch(p + off, 1, 3);
            }
            float *row = j->table + (size_t)r[i] * ROW_FLOATS;
            if (j->push)
                flat_adagrad(row, row + DIM, j->grads + i * DIM);
            else
                memcpy(j->out + i * DIM, row, DIM * sizeof(float));
        }
    }
}

/* ---------------------------------------------------------------- pskv */

typedef struct pskv_job {
    pskv_table *t;
    const uint64_t *keys;
    size_t count;
    float *buf;
    const float *grads;
    int push;
    int rc;
} pskv_job;

static void *pskv_run(void *arg)
{
    pskv_job *j = arg;
    for (size_t b = 0; b < j->count && j->rc == 0; b += BATCH)
        j->rc = j->push ? pskv_push(j->t, j->keys + b, BATCH, j->grads)
                        : pskv_pull(j->t, j->keys + b, BATCH, j->buf);
    return NULL;
}

/* Run `threads` jobs over disjoint halves of the trace; rows/s. */
static double pskv_measure(pskv_table *t, const uint64_t *keys, size_t count, const float *grads,
                           int push, int threads)
{
    pskv_job jobs[2];
    pthread_t th[2];
    size_t per = count / (size_t)threads / BATCH * BATCH;
    double times[33];
    for (unsigned r = 0; r <= cfg.reps; r++) { /* run 0 warms caches and TLB */
        for (int i = 0; i < threads; i++) {
            jobs[i] = (pskv_job){t, keys + (size_t)i * per, per, malloc(BATCH * DIM * sizeof(float)),
                                 grads, push, 0};
        }
        double t0 = now();
        for (int i = 0; i < threads; i++)
            pthread_create(&th[i], NULL, pskv_run, &jobs[i]);
        for (int i = 0; i < threads; i++)
            pthread_join(th[i], NULL);
        times[r] = now() - t0;
        for (int i = 0; i < threads; i++) {
            free(jobs[i].buf);
            if (jobs[i].rc != 0) {
                fprintf(stderr, "pskv-bench: %s\n", pskv_strerror(jobs[i].rc));
                exit(1);
            }
        }
    }
    return (double)per * threads / median(times + 1, cfg.reps);
}

static void *flat_thread(void *arg)
{
    flat_run(arg);
    return NULL;
}

static double flat_measure(float *table, const uint32_t *ranks, size_t count, const float *grads,
                           int push, int prefetch, int threads)
{
    flat_job jobs[2];
    pthread_t th[2];
    size_t per = count / (size_t)threads / BATCH * BATCH;
    double times[33];
    for (unsigned r = 0; r <= cfg.reps; r++) { /* run 0 warms caches and TLB */
        for (int i = 0; i < threads; i++)
            jobs[i] = (flat_job){table, ranks + (size_t)i * per, per,
                                 malloc(BATCH * DIM * sizeof(float)), grads, prefetch, push};
        double t0 = now();
        for (int i = 0; i < threads; i++)
            pthread_create(&th[i], NULL, flat_thread, &jobs[i]);
        for (int i = 0; i < threads; i++)
            pthread_join(th[i], NULL);
        times[r] = now() - t0;
        for (int i = 0; i < threads; i++)
            free(jobs[i].out);
    }
    return (double)per * threads / median(times + 1, cfg.reps);
}

static int workload_dram(void)
{
    size_t count = (size_t)cfg.batches * BATCH;
    uint32_t *ranks = zipf_trace(cfg.keys, count, 0.99, 42);
    uint64_t *keys = malloc(count * sizeof *keys);
    float *grads = malloc(BATCH * DIM * sizeof(float));
    for (size_t i = 0; i < count; i++)
        keys[i] = scramble(ranks[i]);
    for (size_t i = 0; i < BATCH * DIM; i++)
        grads[i] = (float)((i * 2654435761u) % 2001) * 1e-5f - 0.01f;

    if (!cfg.json)
        printf("workload dram: %llu keys, dim %d fp32, Zipf 0.99 scrambled, batch %d, adagrad, "
               "%u batches, median of %u\n%-22s %-5s %7s %13s %11s\n",
               (unsigned long long)cfg.keys, DIM, BATCH, cfg.batches, cfg.reps, "store", "op",
               "threads", "rows/s", "vs limit");

    /* The limit: a flat array indexed by rank, same row layout as pskv. */
    float *flat = malloc(cfg.keys * ROW_FLOATS * sizeof(float));
    if (flat == NULL) {
        fprintf(stderr, "pskv-bench: out of memory\n");
        return 1;
    }
    memset(flat, 0, cfg.keys * ROW_FLOATS * sizeof(float));
    limit_pull_1t = flat_measure(flat, ranks, count, grads, 0, 1, 1);
    limit_push_1t = flat_measure(flat, ranks, count, grads, 1, 1, 1);
    report("flat+prefetch (limit)", "pull", 1, limit_pull_1t);
    report("flat+prefetch (limit)", "push", 1, limit_push_1t);
    report("flat plain loop", "pull", 1, flat_measure(flat, ranks, count, grads, 0, 0, 1));
    report("flat plain loop", "push", 1, flat_measure(flat, ranks, count, grads, 1, 0, 1));
    report("flat+prefetch (limit)", "pull", 2, flat_measure(flat, ranks, count, grads, 0, 1, 2));
    report("flat+prefetch (limit)", "push", 2, flat_measure(flat, ranks, count, grads, 1, 1, 2));
    free(flat);

    pskv_store *s;
    pskv_table *t;
    int rc = pskv_open(NULL, NULL, &s);
    if (rc == 0)
        rc = pskv_table_open(s, "emb", "dim=64 optimizer=adagrad lr=0.01 init=normal:0:0.01", &t);
    if (rc != 0) {
        fprintf(stderr, "pskv-bench: %s\n", pskv_strerror(rc));
        return 1;
    }
    /* Populate every key so the measured calls find resident rows. */
    uint64_t *all = malloc(BATCH * sizeof *all);
    float *buf = malloc(BATCH * DIM * sizeof(float));
    double t0 = now();
    for (uint64_t base = 0; base < cfg.keys; base += BATCH) {
        size_t n = cfg.keys - base < BATCH ? cfg.keys - base : BATCH;
        for (size_t i = 0; i < n; i++)
            all[i] = scramble(base + i);
        pskv_pull(t, all, n, buf);
    }
    double populate = (double)cfg.keys / (now() - t0);
    free(all);
    free(buf);
    for (int threads = 1; threads <= 2; threads++) {
        report("pskv", "pull", threads, pskv_measure(t, keys, count, grads, 0, threads));
        report("pskv", "push", threads, pskv_measure(t, keys, count, grads, 1, threads));
    }
    pskv_table_stats st;
    pskv_table_stats_get(t, &st);
    double per_row = (double)st.dram_bytes / (double)st.rows;
    double payload = (double)st.row_bytes / (double)st.rows;
    if (cfg.json)
        printf("{\"workload\":\"dram\",\"store\":\"pskv\",\"populate_rows_per_s\":%.0f,"
               "\"dram_bytes_per_row\":%.1f,\"payload_bytes_per_row\":%.0f,"
               "\"dram_vs_payload\":%.3f}\n",
               populate, per_row, payload, per_row / payload);
    else
        printf("pskv populate (pull creating rows): %.2fM rows/s\n"
               "pskv DRAM per resident row: %.1f bytes for a %.0f-byte payload (%.3fx; "
               "target <= 1.15x + 16 = %.1f)\n",
               populate / 1e6, per_row, payload, per_row / payload, payload * 1.15 + 16);
    pskv_close(s);

    if (cfg.peers) {
        bench_peer_args a = {cfg.keys, keys, count, grads, BATCH, DIM, LR, EPS, cfg.reps};
        bench_peer_result res;
        for (int p = 0; p < bench_peer_count(); p++) {
            if (bench_peer_run(p, &a, &res) != 0) {
                fprintf(stderr, "pskv-bench: peer %s failed\n", bench_peer_name(p));
                continue;
            }
            report(bench_peer_name(p), "pull", 1, res.pull_rows_per_s);
            report(bench_peer_name(p), "push", 1, res.push_rows_per_s);
        }
    }
    free(ranks);
    free(keys);
    free(grads);
    return 0;
}

static void usage(void)
{
    fprintf(stderr, "usage: pskv-bench [dram] [--keys N] [--batches B] [--reps R] [--peers] "
                    "[--json]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *workload = "dram";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            cfg.json = 1;
        else if (strcmp(argv[i], "--peers") == 0)
            cfg.peers = 1;
        else if (strcmp(argv[i], "--keys") == 0 && i + 1 < argc)
            cfg.keys = strtoull(argv[++i], NULL, 0);
        else if (strcmp(argv[i], "--batches") == 0 && i + 1 < argc)
            cfg.batches = (unsigned)strtoul(argv[++i], NULL, 0);
        else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc)
            cfg.reps = (unsigned)strtoul(argv[++i], NULL, 0);
        else if (argv[i][0] != '-')
            workload = argv[i];
        else
            usage();
    }
    if (cfg.keys < BATCH || cfg.keys > (1ull << 31) || cfg.batches < 2 || cfg.reps < 1 ||
        cfg.reps > 32)
        usage();
    if (strcmp(workload, "dram") == 0)
        return workload_dram();
    usage();
    return 2;
}
