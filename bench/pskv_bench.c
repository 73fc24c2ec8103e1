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
 * Workload `cache`: pskv as a memory-only cache with a DRAM budget of 1%,
 * 5%, 10% and 25% of the keys' rows; get, put on miss, over a Zipf 0.99
 * trace. Reports the hit rate of pskv's CLOCK eviction beside an exact LRU
 * simulated over the same trace and capacity.
 *
 * Workload `device`: the disk's limits through the same I/O layer the
 * spill tier uses — sequential 1 MiB O_DIRECT writes, then random O_DIRECT
 * reads of 512 B .. 16 KiB at queue depths 1 .. 128 (--keys N: an N KiB
 * file).
 *
 * Workload `spill`: a scratch directory store, 16M keys (--keys) of dim 64
 * Adagrad rows, DRAM budget 1 GiB (--budget), Zipf 0.99, batch 4096:
 * pull/push rows/s, hit rate, miss-path slot reads/s beside raw random
 * O_DIRECT reads of the same size and depth on the same file, and pull's
 * wait with prefetch one batch ahead while the caller computes.
 *
 * The spill figures are taken in the cache's steady state: populated from
 * the coldest key to the hottest, then --warm batches (default 256) of the
 * training loop; RocksDB warms its block cache on the same keys.
 *
 *   pskv-bench [dram|cache|device|spill] [--keys N] [--budget BYTES] [--batches B] [--warm B]
 *              [--reps R] [--peers] [--json]
 * Each dram figure is the median of R runs over the same trace. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>
#include <unistd.h>

#include <fcntl.h>
#include <lz4.h>

#include "pskv_internal.h"
#include "bench_peers.h"
#include "bench_checkpoint.h"

#define DIM 64
#define ROW_FLOATS (2 * DIM) /* weights + adagrad state */
#define BATCH 4096
#define LR 0.01f
#define EPS 1e-10f

static struct {
    uint64_t keys;
    unsigned batches, reps;
    int json, peers;
    uint64_t budget; /* spill workload */
    unsigned warm;   /* spill workload: warm-up batches before timing */
} cfg = {4u << 20, 128, 5, 0, 0, 1ull << 30, 256};

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
    float *flat;
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
        jobs[i] = (job){kind, push, b->flat, b->t, b->ranks + (size_t)i * per,
                        b->keys + (size_t)i * per, per, b->grads,
                        malloc(BATCH * DIM * sizeof(float)), 0};
    double t0 = now();
    for (int i = 0; i < threads; i++)
        pthread_create(&th[i], NULL, job_run, &jobs[i]);
    for (int i = 0; i < threads; i++)
        pthread_join(th[i], NULL);
    double dt = now() - t0;
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
    if (cfg.json)
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
    for (unsigned r = 0; r < cfg.reps; r++) {
        for (int k = 0; k < N_KINDS; k++)
            rate[k][r] = run_once(b, (enum store_kind)k, push, threads);
        for (int k = 0; k < N_KINDS; k++)
            ratio[k][r] = rate[k][r] / rate[FLAT_PREFETCH][r];
    }
    double pskv_rate = 0;
    for (int k = 0; k < N_KINDS; k++) {
        double m = median(rate[k], cfg.reps);
        report(kind_names[k], op, threads, m, median(ratio[k], cfg.reps));
        if (k == PSKV)
            pskv_rate = m;
    }
    return pskv_rate;
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

    /* The limit: a flat array indexed by rank, same row layout as pskv, on
     * huge pages as pskv's big shards are. */
    size_t huge = 2u << 20;
    size_t flat_bytes = (cfg.keys * ROW_FLOATS * sizeof(float) + huge - 1) / huge * huge;
    float *flat = aligned_alloc(huge, flat_bytes);
    if (flat == NULL) {
        fprintf(stderr, "pskv-bench: out of memory\n");
        return 1;
    }
    madvise(flat, flat_bytes, MADV_HUGEPAGE);
    memset(flat, 0, flat_bytes);

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

    bench_state b = {flat, t, ranks, keys, count, grads};
    double pull1 = measure_all(&b, 0, 1);
    double push1 = measure_all(&b, 1, 1);
    double pull2 = measure_all(&b, 0, 2);
    double push2 = measure_all(&b, 1, 2);
    free(flat);

    pskv_table_stats st;
    pskv_table_stats_get(t, &st);
    double per_row = (double)st.dram_bytes / (double)st.rows;
    double payload = (double)st.row_bytes / (double)st.rows;
    if (cfg.json)
        printf("{\"workload\":\"dram\",\"store\":\"pskv\",\"scaling_2t_pull\":%.3f,"
               "\"scaling_2t_push\":%.3f,\"populate_rows_per_s\":%.0f,"
               "\"dram_bytes_per_row\":%.1f,\"payload_bytes_per_row\":%.0f,"
               "\"dram_vs_payload\":%.3f}\n",
               pull2 / pull1, push2 / push1, populate, per_row, payload, per_row / payload);
    else
        printf("pskv 2 threads vs 1: pull %.2fx, push %.2fx\n"
               "pskv populate (pull creating rows, normal init): %.2fM rows/s\n"
               "pskv DRAM per resident row: %.1f bytes for a %.0f-byte payload (%.3fx; "
               "target <= 1.15x + 16 = %.1f)\n",
               pull2 / pull1, push2 / push1, populate / 1e6, per_row, payload, per_row / payload,
               payload * 1.15 + 16);
    pskv_close(s);

    if (cfg.peers) {
        bench_peer_args a = {cfg.keys, keys, count, grads, BATCH, DIM, LR, EPS, cfg.reps, 0, 0, 0,
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
            if (cfg.json) {
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
            t0 = now();
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
    *ops_per_s = (double)measured / (now() - t0);
    free(rows);
    free(found);
    free(miss);
    pskv_close(s);
    return (double)hits / (double)measured;
}

static int workload_cache(void)
{
    size_t count = (size_t)cfg.batches * BATCH;
    uint32_t *ranks = zipf_trace(cfg.keys, count, 0.99, 7);
    uint64_t *keys = malloc(count * sizeof *keys);
    for (size_t i = 0; i < count; i++)
        keys[i] = scramble(ranks[i]);
    if (!cfg.json)
        printf("workload cache: %llu keys, Zipf 0.99 scrambled, %zu lookups (hit rates over the "
               "second half), dim 64 adagrad rows, get + put on miss\n"
               "%-10s %12s %12s %14s %16s\n",
               (unsigned long long)cfg.keys, count, "capacity", "pskv CLOCK", "exact LRU",
               "CLOCK - LRU", "pskv lookups/s");
    const double fractions[] = {0.01, 0.05, 0.10, 0.25};
    for (size_t f = 0; f < sizeof fractions / sizeof fractions[0]; f++) {
        uint64_t cap = (uint64_t)(fractions[f] * (double)cfg.keys);
        double ops;
        double clock_rate = pskv_cache_hit_rate(keys, count, cap, &ops);
        double lru_rate = lru_hit_rate(ranks, count, cfg.keys, cap);
        if (cfg.json)
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

/* ---------------------------------------------------------------- device */

/* Random O_DIRECT transfers of `size` bytes at `depth`, aligned to size,
 * over the first file_bytes of fd, for about 2 s, in depth-sized batches
 * (the queue depth in flight). writes: 0 = reads, 1 = writes, 2 = every
 * other one a write. Transfers/s, or -1 when one fails. */
static double random_io_rate(pskv__io *io, int fd, uint64_t file_bytes, uint32_t size,
                             uint32_t depth, int writes, uint64_t *rng)
{
    size_t stride = (size + 4095) / 4096 * 4096;
    uint8_t *buf = aligned_alloc(4096, (size_t)depth * stride);
    pskv__io_req *req = calloc(depth, sizeof *req);
    if (buf == NULL || req == NULL) {
        free(buf);
        free(req);
        return -1;
    }
    memset(buf, 0x5a, (size_t)depth * stride);
    uint64_t blocks = file_bytes / size, total = 0;
    double rate = -1, t0 = now();
    while (now() - t0 < 2.0) {
        for (uint32_t i = 0; i < depth; i++) {
            *rng = *rng * 6364136223846793005ull + 1442695040888963407ull;
            req[i] = (pskv__io_req){.fd = fd, .write = writes == 1 || (writes == 2 && (i & 1)),
                                    .buf = buf + (size_t)i * stride, .len = size,
                                    .off = ((*rng >> 16) % blocks) * size};
        }
        if (pskv__io_run(io, req, depth) != 0)
            goto out;
        total += depth;
    }
    rate = (double)total / (now() - t0);
out:
    free(buf);
    free(req);
    return rate;
}

/* The disk's own limits through pskv's I/O layer (io_uring, O_DIRECT):
 * sequential write bandwidth, then random reads of several sizes at several
 * queue depths over a file larger than the page cache would help with. */
double bench_seq_write_rate(pskv__io *io, int fd, uint64_t bytes)
{
    const size_t chunk = 1u << 20;
    uint8_t *buf = aligned_alloc(4096, 64 * chunk);
    pskv__io_req *req = calloc(64, sizeof *req);
    if (buf == NULL || req == NULL)
        return -1;
    memset(buf, 0x5a, 64 * chunk);
    double t0 = now(), rate = -1;
    uint64_t off = 0;
    for (; off < bytes; off += 64 * chunk) {
        size_t n = 0;
        for (; n < 64 && off + n * chunk < bytes; n++)
            req[n] = (pskv__io_req){.fd = fd, .write = true, .buf = buf + n * chunk, .len = chunk,
                                    .off = off + n * chunk};
        if (pskv__io_run(io, req, n) != 0)
            break;
    }
    if (off >= bytes && fdatasync(fd) == 0)
        rate = (double)bytes / (now() - t0);
    free(buf);
    free(req);
    return rate;
}

static int workload_device(void)
{
    const uint64_t file_bytes = cfg.keys * 1024; /* --keys N: N KiB file */
    char path[] = "pskv-bench-device-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) {
        perror("pskv-bench: mkstemp");
        return 1;
    }
    close(fd);
    fd = open(path, O_RDWR | O_DIRECT);
    unlink(path);
    if (fd < 0) {
        perror("pskv-bench: O_DIRECT open");
        return 1;
    }
    pskv__io *io;
    if (pskv__io_create(getenv("PSKV_IO") && strcmp(getenv("PSKV_IO"), "sync") == 0, 256, &io) != 0)
        return 1;
    double wbw = bench_seq_write_rate(io, fd, file_bytes);
    if (wbw < 0) {
        fprintf(stderr, "pskv-bench: write failed\n");
        return 1;
    }
    const size_t chunk = 1u << 20;
    uint8_t *buf = aligned_alloc(4096, 64 * chunk);
    memset(buf, 0x5a, 64 * chunk);
    pskv__io_req *req = calloc(4096, sizeof *req);
    if (cfg.json)
        printf("{\"workload\":\"device\",\"io\":\"%s\",\"seq_write_bytes_per_s\":%.0f}\n",
               pskv__io_is_uring(io) ? "io_uring" : "sync", wbw);
    else
        printf("workload device (%s, O_DIRECT, %.1f GiB file): sequential 1 MiB writes %.0f MB/s\n"
               "%-8s %6s %12s %10s\n",
               pskv__io_is_uring(io) ? "io_uring" : "pread/pwrite", file_bytes / 1073741824.0,
               wbw / 1e6, "size", "depth", "reads/s", "MB/s");
    const uint32_t sizes[] = {512, 1024, 4096, 16384};
    const uint32_t depths[] = {1, 32, 64, 128};
    uint64_t rng = 99;
    for (size_t si = 0; si < 4; si++) {
        for (size_t di = 0; di < 4; di++) {
            uint32_t size = sizes[si], depth = depths[di];
            double rate = random_io_rate(io, fd, file_bytes, size, depth, 0, &rng);
            if (rate < 0) {
                fprintf(stderr, "pskv-bench: read failed\n");
                return 1;
            }
            if (cfg.json)
                printf("{\"workload\":\"device\",\"read_size\":%u,\"depth\":%u,"
                       "\"reads_per_s\":%.0f}\n", size, depth, rate);
            else
                printf("%-8u %6u %12.0f %10.1f\n", size, depth, rate, rate * size / 1e6);
            fflush(stdout);
        }
    }
    /* Random writes and a read/write mix: what the spill tier's eviction
     * writes and miss reads cost the device, alone and together. */
    const uint32_t mix_size = 1024, mix_depth = 64;
    const char *mix_names[] = {"writes", "mixed 1:1"};
    for (int mode = 0; mode < 2; mode++) {
        double rate = random_io_rate(io, fd, file_bytes, mix_size, mix_depth, mode + 1, &rng);
        if (rate < 0) {
            fprintf(stderr, "pskv-bench: write failed\n");
            return 1;
        }
        if (cfg.json)
            printf("{\"workload\":\"device\",\"random\":\"%s\",\"size\":%u,\"depth\":%u,"
                   "\"ops_per_s\":%.0f}\n", mix_names[mode], mix_size, mix_depth, rate);
        else
            printf("random %-9s %u B, depth %u: %.0f ops/s\n", mix_names[mode], mix_size, mix_depth,
                   rate);
    }
    free(buf);
    free(req);
    pskv__io_destroy(io);
    close(fd);
    return 0;
}

/* ---------------------------------------------------------------- lz4 */

/* Would lz4 on spill slots pay? Compress rows as a slot would hold them
 * (weights + Adagrad state after training) and report the ratio and the
 * cost per row, beside the cost of a slot read. */
static void lz4_report(pskv_table *t, const uint64_t *keys, size_t count, double read_ns)
{
    enum { SAMPLE = 65536 };
    size_t n = count < SAMPLE ? count : SAMPLE;
    pskv_table_info info;
    pskv_table_info_get(t, &info);
    size_t rb = info.row_bytes;
    float *w = malloc(BATCH * DIM * sizeof(float)), *st = malloc(2 * DIM * sizeof(float));
    uint8_t *rows = malloc(n * rb);
    size_t got = 0, seen = 0;
    pskv_iter *it;
    (void)keys;
    (void)count;
    /* Trained rows (non-zero Adagrad state) among the first 300k rows of
     * the table: what evictions write in steady-state training. */
    if (pskv_iter_create(t, &it) == 0) {
        uint64_t key;
        while (got < n && seen < 300000 && pskv_iter_next(it, &key, w, st) == 1) {
            seen++;
            bool trained = false;
            for (int j = 0; j < DIM; j++)
                trained |= st[j] != 0.0f;
            if (!trained)
                continue;
            memcpy(rows + got * rb, w, DIM * sizeof(float));
            memcpy(rows + got * rb + DIM * sizeof(float), st, rb - DIM * sizeof(float));
            got++;
        }
        pskv_iter_destroy(it);
    }
    if (got == 0)
        return;
    int bound = LZ4_compressBound((int)rb);
    char *dst = malloc((size_t)bound);
    char *back = malloc(rb);
    uint64_t total = 0;
    double t0 = now();
    for (size_t i = 0; i < got; i++)
        total += (uint64_t)LZ4_compress_default((const char *)rows + i * rb, dst, (int)rb, bound);
    double comp_ns = (now() - t0) / (double)got * 1e9;
    int clen = LZ4_compress_default((const char *)rows, dst, (int)rb, bound);
    t0 = now();
    for (size_t i = 0; i < got; i++)
        LZ4_decompress_safe(dst, back, clen, (int)rb);
    double dec_ns = (now() - t0) / (double)got * 1e9;
    double ratio = (double)got * (double)rb / (double)total;
    if (cfg.json)
        printf("{\"workload\":\"spill\",\"lz4_rows\":%zu,\"lz4_ratio\":%.3f,"
               "\"lz4_compress_ns_per_row\":%.0f,\"lz4_decompress_ns_per_row\":%.0f}\n",
               got, ratio, comp_ns, dec_ns);
    else
        printf("lz4 on %zu trained %zu-byte rows: ratio %.3f, compress %.0f ns/row, decompress "
               "%.0f ns/row (a slot read costs %.0f ns of device time per row)\n",
               got, rb, ratio, comp_ns, dec_ns, read_ns);
    free(w);
    free(st);
    free(rows);
    free(dst);
    free(back);
}

/* ---------------------------------------------------------------- spill */

static void spin_for(double seconds)
{
    double end = now() + seconds;
    while (now() < end)
        ;
}

/* Random O_DIRECT reads of `size` bytes at queue depth `depth` over the
 * first `bytes` of the file at path, for about 2 s: reads/s. */
static double raw_read_rate(const char *path, uint64_t bytes, uint32_t size, uint32_t depth,
                            pskv__io *io)
{
    int fd = open(path, O_RDONLY | O_DIRECT);
    if (fd < 0)
        return 0;
    uint64_t rng = 5;
    double rate = random_io_rate(io, fd, bytes, size, depth, 0, &rng);
    close(fd);
    return rate;
}

typedef struct spill_phase {
    double pull_s, push_s, rows;
    uint64_t loads;
    double read_s, write_s; /* time in spill read / write batches */
    double max_resident;    /* most resident bytes seen after a pull */
} spill_phase;

static int spill_run(pskv_table *t, const uint64_t *keys, size_t first, size_t batches,
                     const float *grads, float *out, int prefetch, double compute_s,
                     spill_phase *ph)
{
    pskv_table_stats a, b;
    pskv_table_stats_get(t, &a);
    memset(ph, 0, sizeof *ph);
    for (size_t i = 0; i < batches; i++) {
        const uint64_t *k = keys + (first + i) * BATCH;
        double t0 = now();
        if (pskv_pull(t, k, BATCH, out) != 0)
            return 1;
        double t1 = now();
        pskv_store_stats ss;
        pskv_store_stats_get(t->store, &ss);
        if ((double)ss.resident_bytes > ph->max_resident)
            ph->max_resident = (double)ss.resident_bytes;
        /* The next batch's reads run while this one is computed: issued
         * after this pull, so the two never wait on each other's rows. */
        if (prefetch && i + 1 < batches && pskv_prefetch(t, k + BATCH, BATCH) != 0)
            return 1;
        if (compute_s > 0)
            spin_for(compute_s); /* the trainer's forward/backward pass */
        double t2 = now();
        if (pskv_push(t, k, BATCH, grads) != 0)
            return 1;
        ph->pull_s += t1 - t0;
        ph->push_s += now() - t2;
    }
    pskv_table_stats_get(t, &b);
    ph->rows = (double)batches * BATCH;
    ph->loads = b.spill_reads - a.spill_reads;
    ph->read_s = (double)(b.spill_read_ns - a.spill_read_ns) * 1e-9;
    ph->write_s = (double)(b.spill_write_ns - a.spill_write_ns) * 1e-9;
    return 0;
}

static int workload_spill(void)
{
    const uint64_t n = cfg.keys;
    const uint64_t budget = cfg.budget;
    char dir[] = "pskv-bench-spill-XXXXXX";
    if (mkdtemp(dir) == NULL) {
        perror("pskv-bench: mkdtemp");
        return 1;
    }
    char store_cfg[96];
    snprintf(store_cfg, sizeof store_cfg, "durability=none memory_budget=%llu",
             (unsigned long long)budget);
    pskv_store *s;
    pskv_table *t;
    if (pskv_open(dir, store_cfg, &s) != 0 ||
        pskv_table_open(s, "emb", "dim=64 optimizer=adagrad lr=0.01 init=uniform:-0.01:0.01", &t) != 0) {
        fprintf(stderr, "pskv-bench: cannot open the spill store in %s\n", dir);
        return 1;
    }
    /* Steady state, not a cold cache: the populate pass creates the keys
     * from the coldest rank to the hottest, so the rows it leaves resident
     * are about those a long-running trainer keeps in DRAM, and the warm-up
     * then runs the training loop itself before timing. (Populated hottest
     * first, the cache starts with the coldest rows and needs ~2000 batches
     * to reach its steady hit rate: compulsory misses, not training.) */
    size_t warm = cfg.warm, timed = cfg.batches;
    size_t count = (warm + 2 * timed + 1) * BATCH;
    uint32_t *ranks = zipf_trace(n, count, 0.99, 11);
    uint64_t *keys = malloc(count * sizeof *keys);
    for (size_t i = 0; i < count; i++)
        keys[i] = scramble(ranks[i]);
    free(ranks);
    float *grads = malloc(BATCH * DIM * sizeof(float)), *out = malloc(BATCH * DIM * sizeof(float));
    for (size_t i = 0; i < BATCH * DIM; i++)
        grads[i] = (float)((i * 2654435761u) % 2001) * 1e-5f - 0.01f;

    /* Populate every key: rows beyond the budget go to the spill file. */
    uint64_t *all = malloc(BATCH * sizeof *all);
    double t0 = now();
    for (uint64_t base = 0; base < n; base += BATCH) {
        size_t m = n - base < BATCH ? n - base : BATCH;
        for (size_t i = 0; i < m; i++)
            all[i] = scramble(n - 1 - (base + i));
        if (pskv_pull(t, all, m, out) != 0) {
            fprintf(stderr, "pskv-bench: populate failed\n");
            return 1;
        }
    }
    double populate_s = now() - t0;
    free(all);
    pskv_store_stats ss;
    pskv_table_stats ts;
    pskv_store_stats_get(s, &ss);
    pskv_table_stats_get(t, &ts);
    if (!cfg.json)
        printf("workload spill: %llu keys, dim 64 adagrad (%.1f GB of rows), budget %.2f GiB, "
               "Zipf 0.99 scrambled, batch %d\n"
               "populated in %.1f s (%.2fM rows/s): %llu rows spilled, spill file %.1f GB, "
               "%.1f MiB resident\n",
               (unsigned long long)n, n * 512.0 / 1e9, budget / 1073741824.0, BATCH, populate_s,
               n / populate_s / 1e6, (unsigned long long)ts.rows_spilled, ss.spill_bytes / 1e9,
               ss.resident_bytes / 1048576.0);

    spill_phase w, plain, pre;
    /* The hit rate of the warm-up's last quarter shows whether the cache
     * has settled: it should match the timed run's. */
    if (spill_run(t, keys, 0, warm - warm / 4, grads, out, 0, 0, &w) != 0 ||
        spill_run(t, keys, warm - warm / 4, warm / 4, grads, out, 0, 0, &w) != 0 ||
        spill_run(t, keys, warm, timed, grads, out, 0, 0, &plain) != 0) {
        fprintf(stderr, "pskv-bench: spill run failed\n");
        return 1;
    }
    /* With prefetch one batch ahead and a trainer that computes as long as
     * a batch's I/O took without prefetch: the reads of its misses and the
     * writes of the rows evicted for them (pull + push time). */
    double compute = (plain.pull_s + plain.push_s) / (double)timed;
    if (spill_run(t, keys, warm + timed, timed, grads, out, 1, compute, &pre) != 0) {
        fprintf(stderr, "pskv-bench: spill run failed\n");
        return 1;
    }
    /* The limit: raw reads of one slot at the I/O layer's depth, same file. */
    char path[96];
    snprintf(path, sizeof path, "%s/emb.spill", dir);
    pskv_store_stats_get(s, &ss);
    pskv_table_stats_get(t, &ts);
    double spilled_dram = ts.rows_spilled ? (double)ts.spill_index_bytes / ts.rows_spilled : 0;
    pskv__io *io;
    pskv__io_create(getenv("PSKV_IO") && strcmp(getenv("PSKV_IO"), "sync") == 0, 64, &io);
    uint32_t slot = pskv__spill_read_bytes(t->spill); /* what one miss reads */
    uint64_t rewrites = pskv__spill_rewrites(t->spill);
    pskv__io_stats_t ios;
    pskv__io_stats(s->io, &ios);
    double raw = raw_read_rate(path, ss.spill_bytes, slot, 64, io);
    pskv__io_destroy(io);

    double hit = 1.0 - (double)plain.loads / plain.rows;
    double warm_hit = w.rows > 0 ? 1.0 - (double)w.loads / w.rows : 0;
    /* Miss-path rate: rows read per second of read batches (the time the
     * reads of a call's misses take, from submission to the last check). */
    double miss_rate = (double)plain.loads / plain.read_s;
    double train = plain.rows / (plain.pull_s + plain.push_s);
    if (cfg.json) {
        printf("{\"workload\":\"spill\",\"keys\":%llu,\"budget\":%llu,\"populate_rows_per_s\":%.0f,"
               "\"pull_rows_per_s\":%.0f,\"push_rows_per_s\":%.0f,\"train_rows_per_s\":%.0f,"
               "\"hit_rate\":%.4f,\"miss_reads_per_s\":%.0f,\"raw_reads_per_s\":%.0f,"
               "\"miss_vs_raw\":%.3f,\"read_bytes\":%u,\"pull_wait_prefetch_vs_none\":%.3f,"
               "\"warm_batches\":%zu,\"warm_hit_rate\":%.4f,\"dram_per_spilled_row\":%.2f}\n",
               (unsigned long long)n, (unsigned long long)budget, n / populate_s,
               plain.rows / plain.pull_s, plain.rows / plain.push_s, train, hit, miss_rate, raw,
               miss_rate / raw, slot, pre.pull_s / plain.pull_s, warm, warm_hit, spilled_dram);
    } else {
        printf("warm-up:       %zu batches, hit rate %.1f%% over the last quarter\n"
               "spilled rows:  %llu, spill index %.1f MiB = %.2f bytes of DRAM per spilled row\n",
               warm, warm_hit * 100, (unsigned long long)ts.rows_spilled,
               ts.spill_index_bytes / 1048576.0, spilled_dram);
        printf("evictions:     %llu rows written in %llu write requests (%.1f MB), %llu pages "
               "read back to fill holes; spill file %.1f GB\n",
               (unsigned long long)ts.spill_writes, (unsigned long long)ios.writes,
               ios.bytes_written / 1e6, (unsigned long long)rewrites, ss.spill_bytes / 1e9);
        printf("no prefetch:   pull %.3fM rows/s, push %.3fM rows/s, pull+push %.3fM rows/s; "
               "hit rate %.1f%%; %.0f%% of the time in spill reads, %.0f%% in eviction writes\n"
               "miss path:     %.0f slot reads/s (%u-byte reads) vs raw io_uring O_DIRECT random "
               "reads, same size, depth 64, same file: %.0f/s = %.2fx\n"
               "prefetch 1 ahead, %.2f ms compute per batch: pull waits %.3f ms per batch vs "
               "%.3f ms without = %.3fx; hit rate %.1f%%, resident at most %.3fx the budget\n",
               plain.rows / plain.pull_s / 1e6, plain.rows / plain.push_s / 1e6, train / 1e6,
               hit * 100, 100 * plain.read_s / (plain.pull_s + plain.push_s),
               100 * plain.write_s / (plain.pull_s + plain.push_s), miss_rate, slot, raw, miss_rate / raw, compute * 1e3,
               pre.pull_s / timed * 1e3, plain.pull_s / timed * 1e3, pre.pull_s / plain.pull_s,
               100.0 * (1.0 - (double)pre.loads / pre.rows), pre.max_resident / (double)budget);
    }
    lz4_report(t, keys + warm * BATCH, timed * BATCH, 1e9 / miss_rate);
    pskv_close(s);
    rmdir(dir);
    if (cfg.peers) {
        /* RocksDB under the same DRAM budget: block cache = budget, direct
         * reads, the same trace after the same history. Its populate pass
         * does not fill the block cache, so it first reads the keys pskv
         * had resident after populating (coldest to hottest), then the
         * warm-up trace. */
        uint64_t hot = budget / 512 < n ? budget / 512 : n;
        uint64_t *warm_keys = malloc((hot + warm * BATCH) * sizeof *warm_keys);
        for (uint64_t i = 0; i < hot; i++)
            warm_keys[i] = scramble(hot - 1 - i);
        memcpy(warm_keys + hot, keys, warm * BATCH * sizeof *keys);
        bench_peer_args a = {n, keys + warm * BATCH, timed * BATCH, grads, BATCH, DIM, LR, EPS,
                             1, budget, 1, 1, warm_keys, hot + warm * BATCH};
        bench_peer_result res;
        for (int pi = 0; pi < bench_peer_count(); pi++) {
            if (bench_peer_run(pi, &a, &res) != 0)
                continue;
            double peer_train = 1.0 / (1.0 / res.pull_rows_per_s + 1.0 / res.push_rows_per_s);
            if (cfg.json)
                printf("{\"workload\":\"spill\",\"store\":\"%s\",\"pull_rows_per_s\":%.0f,"
                       "\"push_rows_per_s\":%.0f,\"train_rows_per_s\":%.0f,"
                       "\"pskv_train_speedup\":%.2f}\n",
                       bench_peer_name(pi), res.pull_rows_per_s, res.push_rows_per_s, peer_train,
                       train / peer_train);
            else
                printf("%s, %.2f GiB block cache, direct reads: pull %.4fM rows/s, push %.4fM "
                       "rows/s, pull+push %.4fM rows/s; pskv is %.1fx faster\n",
                       bench_peer_name(pi), budget / 1073741824.0, res.pull_rows_per_s / 1e6,
                       res.push_rows_per_s / 1e6, peer_train / 1e6, train / peer_train);
        }
        free(warm_keys);
    }
    free(keys);
    free(grads);
    free(out);
    return 0;
}

static void usage(void)
{
    fprintf(stderr, "usage: pskv-bench [dram|cache|device|spill|checkpoint] [--keys N] [--budget BYTES] [--batches B] [--warm B] "
                    "[--reps R] [--peers] [--json]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *workload = "dram";
    int keys_set = 0;
    setvbuf(stdout, NULL, _IOLBF, 0); /* progress shows up in logs as it happens */
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            cfg.json = 1;
        else if (strcmp(argv[i], "--peers") == 0)
            cfg.peers = 1;
        else if (strcmp(argv[i], "--keys") == 0 && i + 1 < argc) {
            cfg.keys = strtoull(argv[++i], NULL, 0);
            keys_set = 1;
        } else if (strcmp(argv[i], "--budget") == 0 && i + 1 < argc)
            cfg.budget = strtoull(argv[++i], NULL, 0);
        else if (strcmp(argv[i], "--warm") == 0 && i + 1 < argc)
            cfg.warm = (unsigned)strtoul(argv[++i], NULL, 0);
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
    if (strcmp(workload, "cache") == 0)
        return workload_cache();
    if (strcmp(workload, "device") == 0)
        return workload_device();
    if (strcmp(workload, "checkpoint") == 0)
        return workload_checkpoint(keys_set ? cfg.keys : 4u << 20, cfg.json);
    if (strcmp(workload, "spill") == 0) {
        if (!keys_set)
            cfg.keys = 16u << 20;
        return workload_spill();
    }
    usage();
    return 2;
}
