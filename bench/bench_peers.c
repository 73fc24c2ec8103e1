/* Peers for pskv-bench: LMDB used as a plain key-value store (always built:
 * pskv depends on LMDB anyway) and RocksDB (with -Dbench_peers=enabled).
 * Each stores a row as weights + Adagrad state under the 8-byte big-endian
 * id, and serves pull as get + copy, push as get + Adagrad + put per key,
 * one transaction or write batch per batch of keys — how a trainer would
 * use them as its embedding store. */
#include <lmdb.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#ifdef HAVE_ROCKSDB
#include <rocksdb/c.h>
#endif

#include "bench_peers.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t scramble(uint64_t rank) { return rank * 0x9e3779b97f4a7c15ull; }

static void be64(uint64_t v, uint8_t out[8])
{
    for (int i = 0; i < 8; i++)
        out[i] = (uint8_t)(v >> (56 - 8 * i));
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static uint64_t *sorted_ids(uint64_t n)
{
    uint64_t *ids = malloc(n * sizeof *ids);
    if (ids == NULL)
        return NULL;
    for (uint64_t i = 0; i < n; i++)
        ids[i] = scramble(i);
    qsort(ids, n, sizeof *ids, cmp_u64);
    return ids;
}

static void adagrad(float *w, float *s, const float *g, int dim, float lr, float eps)
{
    for (int j = 0; j < dim; j++) {
        float sj = s[j] + g[j] * g[j];
        s[j] = sj;
        w[j] -= lr * g[j] / (sqrtf(sj) + eps);
    }
}

static double best_of(double *t, unsigned n)
{
    /* median */
    for (unsigned i = 1; i < n; i++)
        for (unsigned k = i; k > 0 && t[k] < t[k - 1]; k--) {
            double x = t[k];
            t[k] = t[k - 1];
            t[k - 1] = x;
        }
    return t[n / 2];
}

/* Peers are slow: time a prefix of the trace (32 batches at most). */
static size_t peer_count(const bench_peer_args *a)
{
    size_t max = 32 * a->batch;
    return a->count < max ? a->count : max;
}

/* ---------------------------------------------------------------- LMDB */

static int lmdb_run(const bench_peer_args *a, bench_peer_result *out)
{
    char dir[] = "pskv-bench-lmdb-XXXXXX";
    if (mkdtemp(dir) == NULL)
        return -1;
    size_t row_bytes = (size_t)a->dim * 2 * sizeof(float);
    MDB_env *env;
    MDB_dbi dbi;
    MDB_txn *txn;
    int rc = mdb_env_create(&env);
    /* NOSYNC favours the peer: no fsync per committed batch. */
    if (rc == 0)
        rc = mdb_env_set_mapsize(env, (size_t)(a->nkeys * (row_bytes + 64) * 1.6) + (64u << 20));
    if (rc == 0)
        rc = mdb_env_open(env, dir, MDB_NOSYNC, 0644);
    if (rc == 0)
        rc = mdb_txn_begin(env, NULL, 0, &txn);
    if (rc == 0)
        rc = mdb_dbi_open(txn, NULL, 0, &dbi);
    uint64_t *ids = sorted_ids(a->nkeys);
    float *row = calloc(1, row_bytes);
    for (uint64_t i = 0; rc == 0 && i < a->nkeys; i++) {
        uint8_t k[8];
        be64(ids[i], k);
        MDB_val key = {8, k}, val = {row_bytes, row};
        rc = mdb_put(txn, dbi, &key, &val, MDB_APPEND);
    }
    if (rc == 0)
        rc = mdb_txn_commit(txn);
    free(ids);
    size_t count = peer_count(a);
    float *buf = malloc(a->batch * a->dim * sizeof(float));
    double tp[32], tw[32];
    for (unsigned r = 0; rc == 0 && r < a->reps; r++) {
        double t0 = now();
        for (size_t b = 0; rc == 0 && b < count; b += a->batch) {
            rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &txn);
            for (size_t i = 0; rc == 0 && i < a->batch; i++) {
                uint8_t k[8];
                be64(a->trace[b + i], k);
                MDB_val key = {8, k}, val;
                rc = mdb_get(txn, dbi, &key, &val);
                if (rc == 0)
                    memcpy(buf + i * a->dim, val.mv_data, (size_t)a->dim * sizeof(float));
            }
            mdb_txn_abort(txn);
        }
        tp[r] = now() - t0;
        t0 = now();
        for (size_t b = 0; rc == 0 && b < count; b += a->batch) {
            rc = mdb_txn_begin(env, NULL, 0, &txn);
            for (size_t i = 0; rc == 0 && i < a->batch; i++) {
                uint8_t k[8];
                be64(a->trace[b + i], k);
                MDB_val key = {8, k}, val;
                rc = mdb_get(txn, dbi, &key, &val);
                if (rc == 0) {
                    memcpy(row, val.mv_data, row_bytes);
                    adagrad(row, row + a->dim, a->grads + i * a->dim, a->dim, a->lr, a->eps);
                    val = (MDB_val){row_bytes, row};
                    rc = mdb_put(txn, dbi, &key, &val, 0);
                }
            }
            if (rc == 0)
                rc = mdb_txn_commit(txn);
            else
                mdb_txn_abort(txn);
        }
        tw[r] = now() - t0;
    }
    if (rc != 0)
        fprintf(stderr, "lmdb peer: %s\n", mdb_strerror(rc));
    else {
        out->pull_rows_per_s = (double)count / best_of(tp, a->reps);
        out->push_rows_per_s = (double)count / best_of(tw, a->reps);
    }
    free(buf);
    free(row);
    mdb_env_close(env);
    char path[64];
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/lock.mdb", dir);
    unlink(path);
    rmdir(dir);
    return rc == 0 ? 0 : -1;
}

/* ---------------------------------------------------------------- RocksDB */

#ifdef HAVE_ROCKSDB
static int rocksdb_run(const bench_peer_args *a, bench_peer_result *out)
{
    char dir[] = "pskv-bench-rocksdb-XXXXXX";
    if (mkdtemp(dir) == NULL)
        return -1;
    size_t row_bytes = (size_t)a->dim * 2 * sizeof(float);
    rocksdb_options_t *o = rocksdb_options_create();
    rocksdb_options_set_create_if_missing(o, 1);
    rocksdb_options_increase_parallelism(o, 2);
    rocksdb_block_based_table_options_t *bt = rocksdb_block_based_options_create();
    /* A block cache big enough to hold the whole table, unless the run asks
     * for the same DRAM budget as pskv's. */
    size_t cache_bytes = a->cache_bytes ? a->cache_bytes : (size_t)(a->nkeys * (row_bytes + 64) * 2);
    rocksdb_cache_t *cache = rocksdb_cache_create_lru(cache_bytes);
    if (a->direct_reads) {
        rocksdb_options_set_use_direct_reads(o, 1);
        rocksdb_options_set_use_direct_io_for_flush_and_compaction(o, 1);
    }
    rocksdb_block_based_options_set_block_cache(bt, cache);
    rocksdb_options_set_block_based_table_factory(o, bt);
    char *err = NULL;
    rocksdb_t *db = rocksdb_open(o, dir, &err);
    if (err != NULL) {
        fprintf(stderr, "rocksdb peer: %s\n", err);
        return -1;
    }
    rocksdb_writeoptions_t *wo = rocksdb_writeoptions_create();
    rocksdb_writeoptions_disable_WAL(wo, 1); /* favours the peer */
    rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
    float *row = calloc(1, row_bytes);
    rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
    for (uint64_t i = 0; i < a->nkeys && err == NULL; i++) {
        uint8_t k[8];
        be64(scramble(i), k);
        rocksdb_writebatch_put(wb, (char *)k, 8, (char *)row, row_bytes);
        if (rocksdb_writebatch_count(wb) == 4096 || i + 1 == a->nkeys) {
            rocksdb_write(db, wo, wb, &err);
            rocksdb_writebatch_clear(wb);
        }
    }
    if (err == NULL)
        rocksdb_compact_range(db, NULL, 0, NULL, 0);
    size_t count = peer_count(a);
    float *buf = malloc(a->batch * a->dim * sizeof(float));
    double tp[32], tw[32];
    /* Warm the block cache with one pass, as pskv's rows are warm too: over
     * the trace itself when the table fits in the cache, over the keys
     * pskv warmed up with when it does not (same budget, same history). */
    const uint64_t *warm = a->warm_trace ? a->warm_trace : a->trace;
    size_t warm_count = a->warm_trace ? a->warm_count : count;
    for (unsigned r = 0; err == NULL && r <= a->reps; r++) {
        const uint64_t *tr = r == 0 ? warm : a->trace;
        size_t cnt = r == 0 ? warm_count : count;
        double t0 = now();
        for (size_t i = 0; i < cnt && err == NULL; i++) {
            uint8_t k[8];
            be64(tr[i], k);
            size_t len;
            char *v = rocksdb_get(db, ro, (char *)k, 8, &len, &err);
            if (v != NULL) {
                memcpy(buf + (i % a->batch) * a->dim, v, (size_t)a->dim * sizeof(float));
                rocksdb_free(v);
            }
        }
        if (r > 0)
            tp[r - 1] = now() - t0;
    }
    for (unsigned r = 0; err == NULL && r < a->reps; r++) {
        double t0 = now();
        for (size_t b = 0; b < count && err == NULL; b += a->batch) {
            for (size_t i = 0; i < a->batch && err == NULL; i++) {
                uint8_t k[8];
                be64(a->trace[b + i], k);
                size_t len;
                char *v = rocksdb_get(db, ro, (char *)k, 8, &len, &err);
                if (v != NULL) {
                    memcpy(row, v, row_bytes);
                    rocksdb_free(v);
                    adagrad(row, row + a->dim, a->grads + i * a->dim, a->dim, a->lr, a->eps);
                    rocksdb_writebatch_put(wb, (char *)k, 8, (char *)row, row_bytes);
                }
            }
            rocksdb_write(db, wo, wb, &err);
            rocksdb_writebatch_clear(wb);
        }
        tw[r] = now() - t0;
    }
    int rc = err == NULL ? 0 : -1;
    if (err != NULL)
        fprintf(stderr, "rocksdb peer: %s\n", err);
    else {
        out->pull_rows_per_s = (double)count / best_of(tp, a->reps);
        out->push_rows_per_s = (double)count / best_of(tw, a->reps);
    }
    free(buf);
    free(row);
    rocksdb_writebatch_destroy(wb);
    rocksdb_readoptions_destroy(ro);
    rocksdb_writeoptions_destroy(wo);
    rocksdb_close(db);
    rocksdb_destroy_db(o, dir, &err);
    rocksdb_options_destroy(o);
    rocksdb_block_based_options_destroy(bt);
    rocksdb_cache_destroy(cache);
    rmdir(dir);
    return rc;
}
#endif

typedef struct peer {
    const char *name;
    int (*run)(const bench_peer_args *, bench_peer_result *);
} peer;

static const peer peers[] = {
    {"lmdb-as-kv (nosync)", lmdb_run},
#ifdef HAVE_ROCKSDB
    {"rocksdb (no WAL)", rocksdb_run},
#endif
};

int bench_peer_count(void) { return (int)(sizeof peers / sizeof peers[0]); }
const char *bench_peer_name(int i) { return peers[i].name; }
int bench_peer_run(int i, const bench_peer_args *a, bench_peer_result *out)
{
    if (a->rocksdb_only && peers[i].run == lmdb_run)
        return 1; /* not asked for */
    return peers[i].run(a, out);
}
