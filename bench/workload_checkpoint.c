/* pskv-bench checkpoint: what a checkpoint of a durable store costs.
 *
 * A table of N rows (dim 64 Adagrad: 512 bytes of row, 520 in LMDB) is
 * built and checkpointed once; then 1%, 10% and 100% of its rows are
 * pushed and each time checkpointed. Beside each figure, measured in the
 * same run:
 *  - the limit of this design: a bare LMDB write transaction putting the
 *    same number of 520-byte values, at the same keys in key order, into a
 *    database of the same size, then committing (fsync);
 *  - the disk's sequential write rate (1 MiB O_DIRECT writes + fdatasync);
 *  - the same checkpoints of a second store opened with undo=off (no
 *    pre-images kept for at_seq): what the undo costs.
 * Then a 10% checkpoint runs while a trainer thread pulls and pushes
 * batches: the longest call during it against the longest call without a
 * checkpoint, and beside an asynchronous one (with the time its start
 * takes: the instant). Then a rollback by one 10% checkpoint (reopen at
 * at_seq) against that checkpoint's time. Last, the reopen time
 * (pskv_open + pskv_table_open).
 * SPDX-License-Identifier: BSD-2-Clause */
#include <fcntl.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "format.h"
#include "io.h"

/* The rows changed in a round: every row of index i with
 * bench_mix(i + round salt) below the fraction. */
static size_t pick_rows(uint64_t n, double fraction, uint64_t salt, uint64_t *out)
{
    size_t m = 0;
    uint64_t cut = fraction >= 1.0 ? UINT64_MAX : (uint64_t)(fraction * 18446744073709551616.0);
    for (uint64_t i = 0; i < n; i++)
        if (fraction >= 1.0 || bench_mix(i ^ salt) < cut)
            out[m++] = bench_scramble(i);
    return m;
}

static void rm_rf(const char *d)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", d);
    if (system(cmd) != 0)
        fprintf(stderr, "pskv-bench: could not remove %s\n", d);
}

static int push_all(pskv_table *t, const uint64_t *keys, size_t m, float *grads)
{
    for (size_t at = 0; at < m; at += BATCH) {
        size_t n = m - at < BATCH ? m - at : BATCH;
        if (pskv_push(t, keys + at, n, grads) != 0)
            return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------- bare LMDB */

typedef struct bare {
    MDB_env *env;
    MDB_dbi dbi;
} bare;

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* One transaction putting the keys (sorted here) with fresh values, through
 * one cursor as pskv's checkpoint does. */
static double bare_txn(bare *b, uint64_t *keys, size_t m, uint32_t salt)
{
    qsort(keys, m, sizeof *keys, cmp_u64);
    uint8_t val[DIM * 2 * 4 + 8];
    double t0 = bench_now();
    MDB_txn *txn;
    MDB_cursor *cur;
    if (mdb_txn_begin(b->env, NULL, 0, &txn) != 0)
        return -1;
    if (mdb_cursor_open(txn, b->dbi, &cur) != 0) {
        mdb_txn_abort(txn);
        return -1;
    }
    for (size_t i = 0; i < m; i++) {
        uint8_t kb[8];
        pskv_fmt_key(kb, keys[i]);
        memset(val, (int)((keys[i] + salt) & 0xff), sizeof val);
        MDB_val k = {8, kb}, v = {sizeof val, val};
        if (mdb_cursor_put(cur, &k, &v, 0) != 0) {
            mdb_txn_abort(txn);
            return -1;
        }
    }
    if (mdb_txn_commit(txn) != 0)
        return -1;
    return bench_now() - t0;
}

static int bare_open(bare *b, const char *d, uint64_t map)
{
    mkdir(d, 0755);
    if (mdb_env_create(&b->env) != 0)
        return -1;
    mdb_env_set_mapsize(b->env, (size_t)map);
    MDB_txn *txn;
    if (mdb_env_open(b->env, d, MDB_NOTLS, 0644) != 0 || mdb_txn_begin(b->env, NULL, 0, &txn) != 0)
        return -1;
    if (mdb_dbi_open(txn, NULL, 0, &b->dbi) != 0 || mdb_txn_commit(txn) != 0)
        return -1;
    return 0;
}

/* What runs beside the trainer: 0 or -1, *seconds = its duration. */
typedef struct beside_job {
    int kind; /* 0: memcpy thread for `seconds`; 1: checkpoint; 2: bare LMDB transaction;
                 3: asynchronous checkpoint (start, then wait) */
    pskv_store *s;
    bare *b;
    uint64_t *keys;
    size_t m;
    double seconds;
    double instant; /* kind 3: how long pskv_checkpoint_start took (the instant) */
} beside_job;

static int run_job(beside_job *j)
{
    double t0 = bench_now();
    int rc = 0;
    if (j->kind == 0) {
        pthread_t hog;
        atomic_store(&bench_hog_stop, false);
        if (pthread_create(&hog, NULL, bench_hog_main, NULL) != 0)
            return -1;
        struct timespec ts = {(time_t)j->seconds,
                              (long)((j->seconds - (time_t)j->seconds) * 1e9)};
        nanosleep(&ts, NULL);
        atomic_store(&bench_hog_stop, true);
        pthread_join(hog, NULL);
    } else if (j->kind == 1) {
        rc = pskv_checkpoint(j->s);
    } else if (j->kind == 3) {
        pskv_ckpt *c;
        rc = pskv_checkpoint_start(j->s, "step", 4, &c);
        j->instant = bench_now() - t0;
        if (rc == 0)
            rc = pskv_checkpoint_wait(c, NULL);
    } else {
        rc = bare_txn(j->b, j->keys, j->m, 7) < 0 ? -1 : 0;
    }
    j->seconds = bench_now() - t0;
    return rc;
}

/* The trainer beside a job; tr->job_began = when the job started. */
static int train_beside(pskv_table *t, uint64_t n, beside_job *j, bench_trainer *tr)
{
    memset(tr, 0, sizeof *tr);
    tr->t = t;
    tr->n = n;
    pthread_t th;
    if (pthread_create(&th, NULL, bench_trainer_main, tr) != 0)
        return -1;
    struct timespec ts = {0, 100000000};
    nanosleep(&ts, NULL); /* the trainer is running */
    tr->job_began = bench_now();
    int rc = run_job(j);
    nanosleep(&ts, NULL);
    atomic_store(&tr->stop, true);
    pthread_join(th, NULL);
    return rc != 0 || tr->error != 0 ? -1 : 0;
}

/* ---------------------------------------------------------------- workload */

int workload_checkpoint(uint64_t n, int json)
{
    char dir[] = "pskv-bench-ckpt-XXXXXX";
    if (mkdtemp(dir) == NULL) {
        perror("pskv-bench: mkdtemp");
        return 1;
    }
    char bare_dir[64];
    snprintf(bare_dir, sizeof bare_dir, "%s/bare", dir);
    char store_dir[64];
    snprintf(store_dir, sizeof store_dir, "%s/store", dir);
    const char *table_cfg = "dim=64 optimizer=adagrad init=uniform:-0.01:0.01 seed=1";
    const uint32_t value_bytes = DIM * 2 * 4 + 8;
    uint64_t *keys = malloc(n * sizeof *keys);
    float *grads = malloc((size_t)BATCH * DIM * sizeof(float));
    for (size_t i = 0; i < (size_t)BATCH * DIM; i++)
        grads[i] = (float)((i % 17) + 1) * 1e-3f;
    pskv_store *s, *s0;
    pskv_table *t, *tn;
    char noundo_dir[64];
    snprintf(noundo_dir, sizeof noundo_dir, "%s/noundo", dir);
    if (pskv_open(store_dir, NULL, &s) != 0 || pskv_table_open(s, "emb", table_cfg, &t) != 0 ||
        pskv_open(noundo_dir, "undo=off", &s0) != 0 ||
        pskv_table_open(s0, "emb", table_cfg, &tn) != 0) {
        fprintf(stderr, "pskv-bench: cannot open a durable store in %s: %s\n", store_dir,
                pskv_last_error());
        return 1;
    }
    bare b;
    if (bare_open(&b, bare_dir, (uint64_t)n * value_bytes * 4 + (1ull << 30)) != 0) {
        fprintf(stderr, "pskv-bench: cannot open the bare LMDB environment\n");
        return 1;
    }
    /* Disk limit first, while the page cache is quiet. */
    char seq_path[96];
    snprintf(seq_path, sizeof seq_path, "%s/seq", dir);
    int fd = open(seq_path, O_RDWR | O_CREAT | O_DIRECT, 0644);
    pskv__io *io;
    double seq = -1;
    if (fd >= 0 && pskv__io_create(false, 64, &io) == 0) {
        seq = bench_seq_write_rate(io, fd, 1ull << 30);
        pskv__io_destroy(io);
    }
    if (fd >= 0)
        close(fd);
    unlink(seq_path);

    /* Build the table and the bare database alike. */
    size_t m = pick_rows(n, 1.0, 0, keys);
    double t0 = bench_now();
    if (push_all(t, keys, m, grads) != 0)
        return 1;
    double populate_s = bench_now() - t0;
    t0 = bench_now();
    if (pskv_checkpoint(s) != 0) {
        fprintf(stderr, "pskv-bench: checkpoint failed\n");
        return 1;
    }
    double first_s = bench_now() - t0;
    double first_bare = bare_txn(&b, keys, m, 0);
    /* The same store keeping no undo (undo=off): what the undo costs. */
    if (push_all(tn, keys, m, grads) != 0 || pskv_checkpoint(s0) != 0)
        return 1;
    if (!json)
        printf("workload checkpoint: %llu rows, dim 64 adagrad (%u bytes per LMDB value), "
               "disk sequential writes %.0f MB/s\n"
               "populate %.2f s; first checkpoint (all rows new) %.2f s, bare LMDB %.2f s\n"
               "%-8s %9s %9s %9s %10s %8s %9s %10s %8s\n",
               (unsigned long long)n, value_bytes, seq / 1e6, populate_s, first_s, first_bare,
               "changed", "rows", "pskv s", "MB/s", "bare LMDB", "ratio", "x seqbw",
               "undo=off s", "ratio");
    else
        printf("{\"workload\":\"checkpoint\",\"rows\":%llu,\"seq_write_bytes_per_s\":%.0f,"
               "\"populate_s\":%.3f,\"first_s\":%.3f,\"first_bare_s\":%.3f}\n",
               (unsigned long long)n, seq, populate_s, first_s, first_bare);
    const double fractions[] = {0.01, 0.10, 1.0};
    double full_s = 0, one_s = 0;
    for (int f = 0; f < 3; f++) {
        m = pick_rows(n, fractions[f], 0x5eed + f, keys);
        if (push_all(t, keys, m, grads) != 0)
            return 1;
        t0 = bench_now();
        if (pskv_checkpoint(s) != 0) {
            fprintf(stderr, "pskv-bench: checkpoint failed\n");
            return 1;
        }
        double ck = bench_now() - t0;
        double lim = bare_txn(&b, keys, m, (uint32_t)f + 1);
        if (push_all(tn, keys, m, grads) != 0)
            return 1;
        t0 = bench_now();
        if (pskv_checkpoint(s0) != 0)
            return 1;
        double ck0 = bench_now() - t0;
        double mbs = (double)m * value_bytes / ck;
        if (f == 0)
            one_s = ck;
        if (f == 2)
            full_s = ck;
        if (json)
            printf("{\"workload\":\"checkpoint\",\"fraction\":%.2f,\"rows\":%zu,\"seconds\":%.3f,"
                   "\"bytes_per_s\":%.0f,\"bare_lmdb_s\":%.3f,\"ratio\":%.3f,\"of_seq\":%.3f,"
                   "\"undo_off_s\":%.3f,\"undo_off_ratio\":%.3f}\n",
                   fractions[f], m, ck, mbs, lim, ck / lim, mbs / seq, ck0, ck0 / lim);
        else
            printf("%7.0f%% %9zu %9.2f %9.1f %10.2f %7.2fx %8.3fx %10.2f %7.2fx\n",
                   fractions[f] * 100, m, ck, mbs / 1e6, lim, ck / lim, mbs / seq, ck0,
                   ck0 / lim);
    }
    if (!json)
        printf("1%% checkpoint / 100%% checkpoint: %.3fx\n", one_s / full_s);
    pskv_close(s0); /* only the figures above use it */

    /* Stalls: the trainer beside a memcpy thread, beside a bare LMDB
     * transaction of 10% of the rows, and beside two 10% checkpoints (the
     * trainer's own writes are checkpointed away first). The first
     * checkpoint with writers running maps the memory for pre-images; the
     * second (a trainer's steady state) reuses it. */
    bench_trainer alone, bare_tr, beside[2];
    beside_job hog = {.kind = 0, .seconds = 2.0};
    m = pick_rows(n, 0.10, 0xbeef, keys);
    beside_job lmdb = {.kind = 2, .b = &b, .keys = keys, .m = m};
    beside_job ck[3] = {{.kind = 1, .s = s}, {.kind = 1, .s = s}, {.kind = 3, .s = s}};
    bench_trainer async_tr;
    uint64_t ck_rows[3];
    if (train_beside(t, n, &hog, &alone) != 0 || train_beside(t, n, &lmdb, &bare_tr) != 0) {
        fprintf(stderr, "pskv-bench: trainer failed\n");
        return 1;
    }
    for (int r = 0; r < 3; r++) {
        m = pick_rows(n, 0.10, 0xbeef + r, keys);
        pskv_store_stats ss;
        if (pskv_checkpoint(s) != 0 || push_all(t, keys, m, grads) != 0 ||
            train_beside(t, n, &ck[r], r < 2 ? &beside[r] : &async_tr) != 0) {
            fprintf(stderr, "pskv-bench: trainer failed\n");
            return 1;
        }
        pskv_store_stats_get(s, &ss);
        ck_rows[r] = ss.checkpoint_rows;
    }
    if (json) {
        printf("{\"workload\":\"checkpoint\",\"async_rows\":%llu,\"async_instant_ms\":%.3f,"
               "\"async_s\":%.3f,\"async_max_call_ms\":%.3f,\"async_vs_bare_lmdb\":%.3f,"
               "\"async_p999_ms\":%.3f,\"bare_p999_ms\":%.3f}\n",
               (unsigned long long)ck_rows[2], ck[2].instant * 1e3, ck[2].seconds,
               async_tr.max_call * 1e3, async_tr.max_call / bare_tr.max_call,
               bench_trainer_quantile(&async_tr, 0.999) * 1e3, bench_trainer_quantile(&bare_tr, 0.999) * 1e3);
        for (int r = 0; r < 2; r++)
            printf("{\"workload\":\"checkpoint\",\"loaded\":%d,\"loaded_checkpoint_s\":%.3f,"
                   "\"rows\":%llu,\"max_call_ms\":%.3f,\"max_call_cpu_ms\":%.3f,"
                   "\"max_call_bare_lmdb_ms\":%.3f,\"max_call_memcpy_ms\":%.3f,"
                   "\"mean_call_ms\":%.3f}\n",
                   r + 1, ck[r].seconds, (unsigned long long)ck_rows[r], beside[r].max_call * 1e3,
                   beside[r].max_cpu * 1e3, bare_tr.max_call * 1e3, alone.max_call * 1e3,
                   alone.total / alone.calls * 1e3);
    } else {
        printf("trainer (pull+push of %d keys, mean call %.2f ms): longest call\n"
               "  beside a memcpy thread %.2f ms; beside a bare LMDB transaction of %zu rows "
               "%.2f ms (%.2f s)\n",
               BENCH_TRAIN_BATCH, alone.total / alone.calls * 1e3, alone.max_call * 1e3, m,
               bare_tr.max_call * 1e3, lmdb.seconds);
        for (int r = 0; r < 2; r++)
            printf("  beside %s checkpoint of %llu rows (10%% + the trainer's writes before it) "
                   "%.2f ms (%.2f ms on CPU), %.3f s into its %.2f s\n",
                   r ? "the second" : "the first", (unsigned long long)ck_rows[r],
                   beside[r].max_call * 1e3, beside[r].max_cpu * 1e3,
                   beside[r].max_at - beside[r].job_began, ck[r].seconds);
        printf("  beside an asynchronous checkpoint of %llu rows %.2f ms (%.2fx the bare LMDB "
               "transaction's); pskv_checkpoint_start returned after %.3f ms (the instant), "
               "commit after %.2f s\n",
               (unsigned long long)ck_rows[2], async_tr.max_call * 1e3,
               async_tr.max_call / bare_tr.max_call, ck[2].instant * 1e3, ck[2].seconds);
        double a999 = bench_trainer_quantile(&async_tr, 0.999), b999 = bench_trainer_quantile(&bare_tr, 0.999);
        double m999 = bench_trainer_quantile(&alone, 0.999);
        printf("  99.9th percentile call: beside the asynchronous checkpoint %.2f ms, beside the "
               "bare LMDB transaction %.2f ms (%.2fx), beside a memcpy thread %.2f ms\n",
               a999 * 1e3, b999 * 1e3, a999 / b999, m999 * 1e3);
    }

    free(alone.durs);
    free(bare_tr.durs);
    free(beside[0].durs);
    free(beside[1].durs);
    free(async_tr.durs);

    /* Rollback: a 10% checkpoint, then the store reopened at the one
     * before it (at_seq), against that checkpoint's own time. */
    m = pick_rows(n, 0.10, 0xfeed, keys);
    pskv_store_stats ss;
    if (pskv_checkpoint(s) != 0 || push_all(t, keys, m, grads) != 0)
        return 1;
    t0 = bench_now();
    if (pskv_checkpoint(s) != 0 || pskv_store_stats_get(s, &ss) != 0)
        return 1;
    double ck10 = bench_now() - t0;
    pskv_close(s);
    char at_cfg[64];
    snprintf(at_cfg, sizeof at_cfg, "at_seq=%llu", (unsigned long long)ss.checkpoint_seq - 1);
    t0 = bench_now();
    if (pskv_open(store_dir, at_cfg, &s) != 0) {
        fprintf(stderr, "pskv-bench: rollback failed\n");
        return 1;
    }
    double rollback_s = bench_now() - t0;
    if (json)
        printf("{\"workload\":\"checkpoint\",\"rollback_rows\":%zu,\"rollback_s\":%.3f,"
               "\"its_checkpoint_s\":%.3f,\"rollback_vs_checkpoint\":%.3f}\n",
               m, rollback_s, ck10, rollback_s / ck10);
    else
        printf("rollback of a checkpoint of %zu rows (open at_seq=%llu) %.2f s, the checkpoint "
               "took %.2f s: %.2fx\n",
               m, (unsigned long long)ss.checkpoint_seq - 1, rollback_s, ck10, rollback_s / ck10);

    /* Reopen: metadata only. */
    pskv_close(s);
    t0 = bench_now();
    if (pskv_open(store_dir, NULL, &s) != 0 || pskv_table_open(s, "emb", NULL, &t) != 0)
        return 1;
    double reopen = bench_now() - t0;
    for (int i = 0; i < BATCH; i++)
        keys[i] = bench_scramble(bench_mix((uint64_t)i + 99) % n);
    float *out = malloc((size_t)BATCH * DIM * sizeof(float));
    t0 = bench_now();
    int rc = pskv_pull(t, keys, BATCH, out);
    double first_pull = bench_now() - t0;
    /* Brand-new keys after the reopen: each still asks LMDB (no filter of
     * persisted keys yet), against the same pull on a table with nothing
     * persisted. */
    double new_ms[2];
    for (int k = 0; k < 2 && rc == 0; k++) {
        pskv_table *nt = t;
        if (k == 1 && (rc = pskv_table_open(s, "fresh", table_cfg, &nt)) != 0)
            break;
        double best = 1e9;
        for (int rep = 0; rep < 5 && rc == 0; rep++) {
            for (int i = 0; i < BATCH; i++)
                keys[i] = bench_scramble(n + 1 + (uint64_t)rep * BATCH + (uint64_t)i) ^ (uint64_t)k << 63;
            t0 = bench_now();
            rc = pskv_pull(nt, keys, BATCH, out);
            double dt = bench_now() - t0;
            best = dt < best ? dt : best;
        }
        new_ms[k] = best * 1e3;
    }
    if (json)
        printf("{\"workload\":\"checkpoint\",\"reopen_ms\":%.3f,\"first_pull_ms\":%.3f,"
               "\"new_keys_pull_ms\":%.3f,\"new_keys_pull_fresh_ms\":%.3f}\n",
               reopen * 1e3, first_pull * 1e3, new_ms[0], new_ms[1]);
    else
        printf("reopen %.2f ms; first pull of %d rows afterwards (read back from LMDB) %.2f ms\n"
               "pull of %d brand-new keys after the reopen %.2f ms, on a table with nothing "
               "persisted %.2f ms (best of 5)\n",
               reopen * 1e3, BATCH, first_pull * 1e3, BATCH, new_ms[0], new_ms[1]);
    pskv_close(s);
    mdb_env_close(b.env);
    free(out);
    free(keys);
    free(grads);
    rm_rf(dir);
    return rc == 0 ? 0 : 1;
}
