/* pskv-bench delta: what moving rows between instances costs.
 *
 * A memory-only table of N rows (default 4M; dim 64 Adagrad: 256 bytes of
 * weights, 512 with the state; initialized normal(0, 0.01)), every row
 * trained once with its own gradient. For each export
 * config (payload rows or weights; codec fp32, fp16, bf16, int8; lz4 off or
 * on) a full export (since 0) into chunks kept in memory: rows/s, GB/s of
 * payload read, bytes per row on the wire. Then the kept chunks are applied
 * (REPLACE) into an empty table, creating its rows, and again over them.
 * Beside them, in the same run:
 *  - the limit: memcpy of the same payload bytes;
 *  - LZ4 alone over the fp32 chunks' bytes, at the acceleration chunks use
 *    (2; what the lz4 configs pay on top);
 *  - a delta export after 1% of the rows changed, against the full export;
 *    the bytes of tombstones, with lz4 and without;
 *  - a trainer thread pulling and pushing beside a full export, against the
 *    same trainer beside a memory-copying thread (same contention).
 * SPDX-License-Identifier: BSD-2-Clause */
#include <lz4.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench.h"

typedef struct xconfig {
    const char *name, *cfg;
    int rows;  /* payload=rows: weights and state */
    int apply; /* also timed: apply into an empty table */
} xconfig;

static const xconfig configs[] = {
    {"rows fp32", "payload=rows", 1, 1},
    {"rows fp32 lz4", "payload=rows lz4=on", 1, 1},
    {"weights fp32", "payload=weights", 0, 1},
    {"weights fp32 lz4", "payload=weights lz4=on", 0, 0},
    {"weights fp16", "payload=weights codec=fp16", 0, 1},
    {"weights fp16 lz4", "payload=weights codec=fp16 lz4=on", 0, 0},
    {"weights bf16", "payload=weights codec=bf16", 0, 0},
    {"weights int8", "payload=weights codec=int8", 0, 1},
    {"weights int8 lz4", "payload=weights codec=int8 lz4=on", 0, 0},
};
#define NCONFIGS (sizeof configs / sizeof configs[0])

/* Chunks kept one after another in one buffer. */
typedef struct chunks {
    uint8_t *buf;
    size_t cap, used;
    size_t *ends; /* chunk i is buf[ends[i-1] .. ends[i]) */
    size_t n, ncap;
    uint64_t rows, tombstones;
} chunks;

/* Export t from since with cfg into c (kept when c->buf != NULL, else into a
 * 1 MiB scratch and dropped): the seconds it took, < 0 on error. */
static double export_all(pskv_table *t, uint64_t since, const char *cfg, chunks *c,
                         uint64_t *cursor)
{
    static uint8_t scratch[(1u << 20) + 4096];
    c->used = c->n = 0;
    c->rows = c->tombstones = 0;
    double t0 = bench_now();
    pskv_export *e;
    if (pskv_export_open(t, since, cfg, &e) != 0)
        return -1;
    int rc;
    size_t len;
    for (;;) {
        uint8_t *to = c->buf != NULL ? c->buf + c->used : scratch;
        size_t room = c->buf != NULL ? c->cap - c->used : sizeof scratch;
        if ((rc = pskv_export_next(e, to, room, &len)) != 1)
            break;
        c->used += len;
        if (c->buf == NULL) {
            pskv_chunk_info in;
            if (pskv_chunk_info_get(scratch, len, &in) == 0) {
                c->rows += in.rows;
                c->tombstones += in.tombstones;
            }
            c->n++;
            continue;
        }
        if (c->n == c->ncap) {
            size_t ncap = c->ncap ? c->ncap * 2 : 1024;
            size_t *ends = realloc(c->ends, ncap * sizeof *ends);
            if (ends == NULL) {
                rc = PSKV_ENOMEM;
                break;
            }
            c->ends = ends;
            c->ncap = ncap;
        }
        c->ends[c->n++] = c->used;
    }
    double dt = bench_now() - t0;
    if (cursor != NULL)
        *cursor = pskv_export_version(e);
    pskv_export_close(e);
    for (size_t i = 0; c->buf != NULL && i < c->n; i++) {
        size_t from = i ? c->ends[i - 1] : 0;
        pskv_chunk_info in;
        if (pskv_chunk_info_get(c->buf + from, c->ends[i] - from, &in) == 0) {
            c->rows += in.rows;
            c->tombstones += in.tombstones;
        }
    }
    if (rc != 0)
        fprintf(stderr, "pskv-bench: export '%s' failed: %s\n", cfg, pskv_strerror(rc));
    return rc == 0 ? dt : -1;
}

/* Apply every chunk of c (REPLACE) into a new empty table, creating its
 * rows, then again over those rows (a replica catching up): the seconds
 * of each into again[0..1]; 0, or -1 on error. */
static int apply_all(const chunks *c, const char *tcfg, double again[2])
{
    pskv_store *s;
    pskv_table *t;
    if (pskv_open(NULL, NULL, &s) != 0 || pskv_table_open(s, "t", tcfg, &t) != 0)
        return -1;
    int rc = 0;
    for (int pass = 0; pass < 2 && rc == 0; pass++) {
        double t0 = bench_now();
        for (size_t i = 0; i < c->n && rc == 0; i++) {
            size_t from = i ? c->ends[i - 1] : 0;
            rc = pskv_apply(t, c->buf + from, c->ends[i] - from, PSKV_APPLY_REPLACE);
        }
        again[pass] = bench_now() - t0;
    }
    if (rc == 0 && pskv_table_rows(t) != c->rows)
        rc = PSKV_ECORRUPT;
    if (rc != 0)
        fprintf(stderr, "pskv-bench: apply failed: %s\n", pskv_strerror(rc));
    pskv_close(s);
    return rc == 0 ? 0 : -1;
}

/* memcpy of bytes in 1 MiB pieces from a 256 MiB source (larger than any
 * cache): bytes per second. */
static double memcpy_rate(uint64_t bytes)
{
    const size_t src_bytes = 256u << 20, piece = 1u << 20;
    uint8_t *src = malloc(src_bytes), *dst = malloc(src_bytes);
    if (src == NULL || dst == NULL) {
        free(src);
        free(dst);
        return -1;
    }
    /* Not zero: the compiler would make malloc + memset(0) a calloc, whose
     * pages the timed copies would then fault in. */
    memset(src, 3, src_bytes);
    memset(dst, 1, src_bytes);
    __asm__ volatile("" : : "r"(dst) : "memory"); /* dst is never read: keep its stores */
    double t0 = bench_now();
    for (uint64_t done = 0, at = 0; done < bytes; done += piece, at = (at + piece) % src_bytes)
        memcpy(dst + at, src + at, piece);
    __asm__ volatile("" : : "r"(dst) : "memory");
    double dt = bench_now() - t0;
    free(src);
    free(dst);
    return (double)bytes / dt;
}

/* LZ4 at acceleration 2 (chunk.c's) over every chunk of c: input bytes
 * per second. */
static double lz4_rate(const chunks *c)
{
    int bound = LZ4_compressBound(4u << 20);
    char *dst = malloc((size_t)bound);
    if (dst == NULL)
        return -1;
    double t0 = bench_now();
    for (size_t i = 0; i < c->n; i++) {
        size_t from = i ? c->ends[i - 1] : 0;
        if (LZ4_compress_fast((const char *)c->buf + from, dst, (int)(c->ends[i] - from), bound,
                              2) <= 0) {
            free(dst);
            return -1;
        }
    }
    double dt = bench_now() - t0;
    free(dst);
    return (double)c->used / dt;
}

/* The trainer beside a job that runs for about `seconds`: 0 a memcpy
 * thread, 1 full exports (rows fp32, chunks dropped) one after another. */
static int trainer_beside(pskv_table *t, uint64_t n, int job, double seconds, bench_trainer *tr)
{
    memset(tr, 0, sizeof *tr);
    tr->t = t;
    tr->n = n;
    pthread_t th, hog;
    if (pthread_create(&th, NULL, bench_trainer_main, tr) != 0)
        return -1;
    struct timespec ts = {0, 100000000};
    nanosleep(&ts, NULL); /* the trainer is running */
    tr->job_began = bench_now();
    int rc = 0;
    if (job == 0) {
        atomic_store(&bench_hog_stop, false);
        if (pthread_create(&hog, NULL, bench_hog_main, NULL) != 0)
            rc = -1;
        struct timespec run = {(time_t)seconds, (long)((seconds - (time_t)seconds) * 1e9)};
        nanosleep(&run, NULL);
        atomic_store(&bench_hog_stop, true);
        if (rc == 0)
            pthread_join(hog, NULL);
    } else {
        chunks none = {0};
        while (rc == 0 && bench_now() - tr->job_began < seconds)
            rc = export_all(t, 0, "payload=rows", &none, NULL) < 0 ? -1 : 0;
    }
    nanosleep(&ts, NULL);
    atomic_store(&tr->stop, true);
    pthread_join(th, NULL);
    return rc != 0 || tr->error != 0 ? -1 : 0;
}

int workload_delta(uint64_t n, int json)
{
    const char *tcfg = "dim=64 optimizer=adagrad init=normal:0:0.01";
    pskv_store *s;
    pskv_table *t;
    uint64_t *keys = malloc(n * sizeof *keys);
    float *grads = malloc((size_t)BATCH * DIM * sizeof *grads);
    chunks c = {0};
    c.cap = (size_t)n * (ROW_FLOATS * 4 + 32) + (64u << 20);
    c.buf = malloc(c.cap);
    if (keys == NULL || grads == NULL || c.buf == NULL || pskv_open(NULL, NULL, &s) != 0 ||
        pskv_table_open(s, "t", tcfg, &t) != 0) {
        fprintf(stderr, "pskv-bench: set-up failed\n");
        return 1;
    }
    for (uint64_t i = 0; i < n; i++)
        keys[i] = bench_scramble(i);
    for (uint64_t at = 0; at < n; at += BATCH) {
        for (size_t i = 0; i < (size_t)BATCH * DIM; i++) /* every row its own gradient */
            grads[i] = (float)((int)(bench_mix(at * DIM + i) % 2001) - 1000) * 1e-4f;
        if (pskv_push(t, keys + at, n - at < BATCH ? n - at : BATCH, grads) != 0)
            return 1;
    }
    memset(c.buf, 1, c.cap); /* resident before any timing (not 0: see memcpy_rate) */

    double memcpy_bps = memcpy_rate(n * ROW_FLOATS * 4);
    if (!json)
        printf("delta: %llu rows, dim %d Adagrad (weights %d B, row %d B); memcpy %.2f GB/s\n",
               (unsigned long long)n, DIM, DIM * 4, ROW_FLOATS * 4, memcpy_bps / 1e9);
    double exp_s[NCONFIGS], app_s[NCONFIGS][2] = {{0}}, wire[NCONFIGS], lz4_bps = 0, full_s = 0;
    for (size_t k = 0; k < NCONFIGS; k++) {
        const xconfig *x = &configs[k];
        exp_s[k] = export_all(t, 0, x->cfg, &c, NULL);
        if (exp_s[k] < 0 || c.rows != n)
            return 1;
        wire[k] = (double)c.used / (double)n;
        if (x->apply && apply_all(&c, tcfg, app_s[k]) != 0)
            return 1;
        if (k == 0) {
            full_s = exp_s[0];
            lz4_bps = lz4_rate(&c);
        }
    }
    const double w32 = wire[2];
    if (!json) {
        printf("%-18s %10s %8s %8s %9s %9s   %s\n", "full export", "rows/s", "GB/s",
               "xmemcpy", "B/row", "xfp32", "apply rows/s and GB/s: new rows | over them");
        for (size_t k = 0; k < NCONFIGS; k++) {
            const xconfig *x = &configs[k];
            double payload = (double)n * (x->rows ? ROW_FLOATS : DIM) * 4;
            printf("%-18s %9.2fM %8.2f %8.2f %9.1f %9.3f", x->name, n / exp_s[k] / 1e6,
                   payload / exp_s[k] / 1e9, payload / exp_s[k] / memcpy_bps, wire[k],
                   x->rows ? wire[k] / wire[0] : wire[k] / w32);
            if (x->apply)
                printf("   %6.2fM %5.2f | %6.2fM %5.2f (%.2fx memcpy)", n / app_s[k][0] / 1e6,
                       payload / app_s[k][0] / 1e9, n / app_s[k][1] / 1e6,
                       payload / app_s[k][1] / 1e9, payload / app_s[k][1] / memcpy_bps);
            printf("\n");
        }
        printf("  (xfp32: bytes per row against the same payload in fp32 without lz4)\n");
        printf("LZ4 (acceleration 2) alone over the fp32 row chunks: %.2f GB/s (the lz4 "
               "export above: %.2f GB/s of chunk bytes)\n",
               lz4_bps / 1e9, (double)n * wire[0] / exp_s[1] / 1e9);
    }

    /* 1% of the rows change: the delta against the full export. */
    uint64_t cursor;
    chunks none = {0};
    if (export_all(t, 0, "payload=rows", &none, &cursor) < 0)
        return 1;
    uint64_t m = 0;
    for (uint64_t i = 0; i < n; i++)
        if (bench_mix(i ^ 0x5eed) % 100 == 0)
            keys[m++] = bench_scramble(i);
    for (uint64_t at = 0; at < m; at += BATCH)
        if (pskv_push(t, keys + at, m - at < BATCH ? m - at : BATCH, grads) != 0)
            return 1;
    double delta_s = export_all(t, cursor, "payload=rows", &c, &cursor);
    if (delta_s < 0 || c.rows != m)
        return 1;
    /* Tombstones: 0.5% of the rows erased, the delta holds only them. */
    uint64_t e = 0;
    for (uint64_t i = 0; i < n; i++)
        if (bench_mix(i ^ 0x7077) % 200 == 0)
            keys[e++] = bench_scramble(i);
    if (pskv_erase(t, keys, e) != 0)
        return 1;
    double tomb_bytes[2];
    for (int lz = 0; lz < 2; lz++) {
        if (export_all(t, cursor, lz ? "payload=weights lz4=on" : "payload=weights", &c, NULL) <
                0 ||
            c.tombstones != e)
            return 1;
        tomb_bytes[lz] = (double)(c.used - c.n * 72) / (double)e; /* less headers, checksums */
    }
    if (!json) {
        printf("1%% delta export: %llu rows in %.1f ms, %.4fx the full export (%.0f ms)\n",
               (unsigned long long)m, delta_s * 1e3, delta_s / full_s, full_s * 1e3);
        printf("tombstones (%llu keys erased): %.2f B each, %.2f B with lz4\n",
               (unsigned long long)e, tomb_bytes[0], tomb_bytes[1]);
    }

    /* The trainer beside a full export, against beside a memcpy thread. */
    bench_trainer alone, beside;
    double run = full_s * 3 > 2 ? full_s * 3 : 2;
    if (trainer_beside(t, n - e, 0, run, &alone) != 0 ||
        trainer_beside(t, n - e, 1, run, &beside) != 0) {
        fprintf(stderr, "pskv-bench: trainer failed\n");
        return 1;
    }
    double a999 = bench_trainer_quantile(&alone, 0.999),
           b999 = bench_trainer_quantile(&beside, 0.999);
    if (!json) {
        printf("trainer (pull+push of %d keys, mean call %.2f ms): longest call %.2f ms beside "
               "full exports, %.2f ms beside memcpy: %.2fx; p99.9 %.2f ms against %.2f ms: "
               "%.2fx\n",
               BENCH_TRAIN_BATCH, alone.total / (double)alone.calls * 1e3, beside.max_call * 1e3,
               alone.max_call * 1e3, beside.max_call / alone.max_call, b999 * 1e3, a999 * 1e3,
               b999 / a999);
    } else {
        printf("{\"workload\":\"delta\",\"rows\":%llu,\"memcpy_gbps\":%.3f,\"lz4_gbps\":%.3f,"
               "\"full_export_s\":%.4f,\"delta_1pct_s\":%.4f,\"tombstone_bytes\":%.2f,"
               "\"tombstone_bytes_lz4\":%.2f,\"trainer_max_ratio\":%.3f,"
               "\"trainer_p999_ratio\":%.3f,\"configs\":[",
               (unsigned long long)n, memcpy_bps / 1e9, lz4_bps / 1e9, full_s, delta_s,
               tomb_bytes[0], tomb_bytes[1], beside.max_call / alone.max_call, b999 / a999);
        for (size_t k = 0; k < NCONFIGS; k++)
            printf("%s{\"name\":\"%s\",\"export_s\":%.4f,\"apply_new_s\":%.4f,"
                   "\"apply_over_s\":%.4f,\"bytes_per_row\":%.2f}",
                   k ? "," : "", configs[k].name, exp_s[k], app_s[k][0], app_s[k][1], wire[k]);
        printf("]}\n");
    }
    free(alone.durs);
    free(beside.durs);
    free(keys);
    free(grads);
    free(c.buf);
    free(c.ends);
    pskv_close(s);
    return 0;
}
