/* pskv-bench filesize: how big data.mdb gets, and why, over checkpoints of
 * a table that changes 10% per checkpoint.
 *
 * A durable store holds N rows (--keys, default 500k) of dim 64 Adagrad
 * (512 bytes of payload, 520 in LMDB with the check; --dim D for others); then 50 rounds each
 * push 10% of the rows (a fresh random draw each round) and checkpoint.
 * After each checkpoint the data file is taken apart with LMDB's own
 * statistics: the pages of the rows B-tree (and its fill: payload bytes
 * over page bytes), of the undo generation, of the meta records (schemas,
 * counts, filters of persisted keys), of LMDB's free-page database, the
 * pages on the free list (freed by earlier transactions, reusable), and
 * what the file holds beyond LMDB's last page. The ratio to the payload is
 * the figure to bound (issue: <= 2x over 50 checkpoints).
 * SPDX-License-Identifier: BSD-2-Clause */
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bench.h"
#include "format.h"
#include "pskv_internal.h" /* white box: the store's and table's structs */

typedef struct layout {
    uint64_t file, used, rows, undo, meta, freedb, free_listed;
    double fill; /* payload / rows-tree bytes */
} layout;

static uint64_t db_pages(MDB_txn *txn, MDB_dbi dbi)
{
    MDB_stat st;
    if (mdb_stat(txn, dbi, &st) != 0)
        return 0;
    return st.ms_branch_pages + st.ms_leaf_pages + st.ms_overflow_pages;
}

/* The store's data file, taken apart in one read transaction. */
static int take_apart(pskv_store *s, pskv_table *t, const char *dir, layout *l)
{
    memset(l, 0, sizeof *l);
    char path[256];
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    struct stat fst;
    if (stat(path, &fst) != 0)
        return -1;
    l->file = (uint64_t)fst.st_size;
    MDB_envinfo ei;
    MDB_stat es;
    MDB_txn *txn;
    if (mdb_env_info(s->lmdb.mdb, &ei) != 0 || mdb_env_stat(s->lmdb.mdb, &es) != 0 ||
        mdb_txn_begin(s->lmdb.mdb, NULL, MDB_RDONLY, &txn) != 0)
        return -1;
    uint64_t ps = es.ms_psize;
    l->used = ((uint64_t)ei.me_last_pgno + 1) * ps;
    l->rows = db_pages(txn, t->dbi) * ps;
    for (unsigned i = 0; i < PSKV_UNDO_KEEP_MAX; i++) /* every kept generation */
        l->undo += db_pages(txn, s->undo_dbi[i]) * ps;
    l->meta = db_pages(txn, s->records_dbi) * ps;
    l->freedb = db_pages(txn, 0) * ps;
    MDB_cursor *cur;
    if (mdb_cursor_open(txn, 0, &cur) == 0) { /* each value: an ID list, count first */
        MDB_val k, v;
        for (int rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
             rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT))
            if (v.mv_size >= sizeof(size_t))
                l->free_listed += *(const size_t *)v.mv_data * ps;
        mdb_cursor_close(cur);
    }
    mdb_txn_abort(txn);
    uint64_t payload = pskv_table_rows(t) * (uint64_t)t->stored_bytes;
    l->fill = l->rows ? (double)payload / (double)l->rows : 0;
    return 0;
}

int workload_filesize(uint64_t n, int json)
{
    char dir[] = "pskv-bench-size-XXXXXX";
    if (mkdtemp(dir) == NULL) {
        perror("pskv-bench: mkdtemp");
        return 1;
    }
    pskv_store *s;
    pskv_table *t;
    const unsigned dim = bench_cfg.dim ? bench_cfg.dim : DIM;
    char cfg[128];
    snprintf(cfg, sizeof cfg, "dim=%u optimizer=adagrad init=uniform:-0.01:0.01 seed=1", dim);
    if (pskv_open(dir, NULL, &s) != 0 || pskv_table_open(s, "emb", cfg, &t) != 0) {
        fprintf(stderr, "pskv-bench: cannot open a durable store in %s: %s\n", dir,
                pskv_last_error());
        return 1;
    }
    uint64_t *keys = malloc(n * sizeof *keys);
    float *grads = malloc((size_t)BATCH * dim * sizeof(float));
    for (size_t i = 0; i < (size_t)BATCH * dim; i++)
        grads[i] = (float)((i % 17) + 1) * 1e-3f;
    for (uint64_t i = 0; i < n; i++)
        keys[i] = bench_scramble(i);
    int rc = 0;
    for (uint64_t at = 0; at < n && rc == 0; at += BATCH)
        rc = pskv_push(t, keys + at, n - at < BATCH ? n - at : BATCH, grads);
    if (rc == 0)
        rc = pskv_checkpoint(s);
    const double payload_mb = (double)n * t->stored_bytes / 1e6;
    if (!json)
        printf("workload filesize: %llu rows of %u bytes (%.1f MB payload), 50 checkpoints of "
               "10%% changed rows\n"
               "%5s %9s %9s %7s %9s %9s %9s %9s %9s %9s %9s\n",
               (unsigned long long)n, t->stored_bytes, payload_mb, "ckpt", "file MB", "x payload",
               "fill", "rows MB", "undo MB", "meta MB", "freedb MB", "free MB", "unused MB",
               "ckpt s");
    uint64_t rng = 7;
    const uint64_t changed = n / 10;
    uint64_t *pick = malloc(changed * sizeof *pick);
    layout l = {0};
    for (int round = 0; round <= 50 && rc == 0; round++) {
        double ck = 0;
        if (round > 0) {
            for (uint64_t i = 0; i < changed; i++) { /* a fresh draw each round */
                rng = rng * 6364136223846793005ull + 1442695040888963407ull;
                pick[i] = keys[(rng >> 33) % n];
            }
            for (uint64_t at = 0; at < changed && rc == 0; at += BATCH)
                rc = pskv_push(t, pick + at, changed - at < BATCH ? changed - at : BATCH, grads);
            double t0 = bench_now();
            if (rc == 0)
                rc = pskv_checkpoint(s);
            ck = bench_now() - t0;
        }
        if (rc != 0 || take_apart(s, t, dir, &l) != 0)
            break;
        if (round % 5 != 0)
            continue;
        if (json)
            printf("{\"workload\":\"filesize\",\"checkpoint\":%d,\"file_bytes\":%llu,"
                   "\"payload_bytes\":%.0f,\"ratio\":%.3f,\"fill\":%.3f,\"rows_bytes\":%llu,"
                   "\"undo_bytes\":%llu,\"meta_bytes\":%llu,\"freedb_bytes\":%llu,"
                   "\"free_bytes\":%llu,\"unused_bytes\":%llu,\"checkpoint_s\":%.3f}\n",
                   round, (unsigned long long)l.file, payload_mb * 1e6, l.file / 1e6 / payload_mb,
                   l.fill, (unsigned long long)l.rows, (unsigned long long)l.undo,
                   (unsigned long long)l.meta, (unsigned long long)l.freedb,
                   (unsigned long long)l.free_listed, (unsigned long long)(l.file - l.used), ck);
        else
            printf("%5d %9.1f %8.2fx %7.2f %9.1f %9.1f %9.1f %9.1f %9.1f %9.1f %9.2f\n", round,
                   l.file / 1e6, l.file / 1e6 / payload_mb, l.fill, l.rows / 1e6, l.undo / 1e6,
                   l.meta / 1e6, l.freedb / 1e6, l.free_listed / 1e6, (l.file - l.used) / 1e6,
                   ck);
    }
    if (rc != 0)
        fprintf(stderr, "pskv-bench: %s %s\n", pskv_strerror(rc), pskv_last_error());
    pskv_close(s);
    /* Between runs: compaction in place, and how fast the file comes back. */
    uint64_t before = 0, after = 0;
    double t0 = bench_now();
    if (rc == 0)
        rc = pskv_compact(dir, &before, &after);
    double compact_s = bench_now() - t0;
    if (rc == 0) {
        if (json)
            printf("{\"workload\":\"filesize\",\"compact_before\":%llu,\"compact_after\":%llu,"
                   "\"compact_s\":%.3f,\"after_ratio\":%.3f}\n",
                   (unsigned long long)before, (unsigned long long)after, compact_s,
                   after / 1e6 / payload_mb);
        else
            printf("pskv_compact: %.1f MB -> %.1f MB (%.2fx the payload) in %.2f s\n",
                   before / 1e6, after / 1e6, after / 1e6 / payload_mb, compact_s);
    }
    if (rc == 0 && (rc = pskv_open(dir, NULL, &s)) == 0 &&
        (rc = pskv_table_open(s, "emb", NULL, &t)) == 0) {
        for (int round = 1; round <= 3 && rc == 0; round++) {
            for (uint64_t i = 0; i < changed; i++) {
                rng = rng * 6364136223846793005ull + 1442695040888963407ull;
                pick[i] = keys[(rng >> 33) % n];
            }
            for (uint64_t at = 0; at < changed && rc == 0; at += BATCH)
                rc = pskv_push(t, pick + at, changed - at < BATCH ? changed - at : BATCH, grads);
            if (rc == 0)
                rc = pskv_checkpoint(s);
            if (rc == 0 && take_apart(s, t, dir, &l) == 0 && !json)
                printf("  checkpoint %d after the compaction: %.1f MB (%.2fx)\n", round,
                       l.file / 1e6, l.file / 1e6 / payload_mb);
        }
        pskv_close(s);
    }
    free(pick);
    free(keys);
    free(grads);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "pskv-bench: could not remove %s\n", dir);
    return rc == 0 ? 0 : 1;
}
