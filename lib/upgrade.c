/* Opening a store of an older format as the current one, one step at a
 * time, each step one write transaction (a crash leaves the store in the
 * format it had): 1 -> 2 count and checkpoint records, 2 -> 3 a version
 * stamp in every row, 3 -> 4 undo generations per slot, 4 -> 5 the
 * initializer's generator named in schemas. Called by
 * persist.c's open; the layouts are in format.h and docs/FORMAT.md.
 * SPDX-License-Identifier: BSD-2-Clause */
#include <lmdb.h>
#include <stdlib.h>
#include <string.h>

#include "array.h"
#include "env.h"
#include "format.h"
#include "persist.h"
#include "records.h"
#include "pskv_internal.h"
#include "upgrade.h"

/* Format 1 -> 2: a count record per table (a walk over its rows, each
 * checked) and a checkpoint record, then the format record, in one write
 * transaction: a crash leaves format 1 as it was. */
typedef struct upgrade_count {
    char name[PSKV_NAME_MAX + 1];
    uint64_t rows, digest;
} upgrade_count;

static int upgrade_walk(pskv_store *s, MDB_txn *txn, const char *table, upgrade_count *c)
{
    char rec[PSKV_NAME_MAX + 16], db[PSKV_NAME_MAX + 16];
    const uint8_t *body;
    size_t len;
    pskv_table_options o;
    int rc = pskv__record_name(PSKV_FMT_TABLE_PREFIX, table, rec, sizeof rec) != 0 ||
                     pskv__record_name(PSKV_FMT_ROWS_PREFIX, table, db, sizeof db) != 0
                 ? PSKV_EINVAL
                 : pskv__record_get(s, txn, rec, &body, &len);
    if (rc != 0)
        return rc == PSKV_ENOTFOUND ? PSKV_ECORRUPT : rc;
    rc = pskv__record_schema_decode(body, len, &o);
    if (rc != 0)
        return rc;
    const size_t payload_bytes = pskv__optimizer_row_bytes(o.optimizer, o.dim); /* format 1, 2 */
    MDB_dbi dbi;
    MDB_cursor *cur;
    rc = pskv__env_err(mdb_dbi_open(txn, db, 0, &dbi));
    if (rc == PSKV_ENOTFOUND)
        return PSKV_ECORRUPT;
    if (rc == 0)
        rc = pskv__env_err(mdb_cursor_open(txn, dbi, &cur));
    if (rc != 0)
        return rc;
    const void *base;
    uint64_t span;
    pskv__env_file_span(&s->lmdb, &base, &span);
    MDB_val k, v;
    int mrc;
    for (mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); mrc == 0;
         mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        uint64_t check;
        if (k.mv_size != 8 || !pskv_fmt_in_span(base, span, v.mv_data, v.mv_size) ||
            !pskv_fmt_row_ok(pskv_fmt_key_get(k.mv_data), v.mv_data, v.mv_size, payload_bytes,
                             &check)) {
            mrc = MDB_CORRUPTED; /* a damaged store is not blessed as format 2 */
            break;
        }
        c->rows++;
        c->digest += check;
    }
    mdb_cursor_close(cur);
    return mrc == MDB_NOTFOUND ? 0 : pskv__env_err(mrc);
}

typedef struct upgrade_write {
    pskv_store *s;
    const upgrade_count *counts;
    uint32_t n;
    bool has_ckpt;
} upgrade_write;

/* The end of one upgrade step: after its writes (rc), the store's format
 * record says `format` and the transaction commits; on an error it aborts. */
static int upgrade_commit(pskv_store *s, MDB_txn *txn, int rc, uint32_t format)
{
    uint8_t fmt[8];
    pskv_fmt_format_put(fmt, format);
    if (rc == 0)
        rc = pskv__record_put(txn, s->records_dbi, PSKV_FMT_KEY_FORMAT, fmt, sizeof fmt);
    if (rc != 0) {
        mdb_txn_abort(txn);
        return rc;
    }
    return pskv__env_write_err(mdb_txn_commit(txn));
}

/* The upgrade's one write transaction. */
static int upgrade_write_once(void *arg)
{
    const upgrade_write *w = arg;
    pskv_store *s = w->s;
    MDB_txn *txn;
    int rc = pskv__env_txn_begin(&s->lmdb, true, &txn);
    if (rc != 0)
        return rc;
    for (uint32_t i = 0; i < w->n && rc == 0; i++)
        rc = pskv__record_put_count(s, txn, w->counts[i].name, w->counts[i].rows,
                                     w->counts[i].digest);
    uint64_t ns;
    if (rc == 0 && !w->has_ckpt)
        rc = pskv__record_put_checkpoint(s, txn, 0, &ns);
    return upgrade_commit(s, txn, rc, 2);
}

/* Every table's name and rows, each row checked (format 1 or 2 values),
 * in one read transaction; *has_ckpt: a checkpoint record exists. */
static int upgrade_scan(pskv_store *s, upgrade_count **out, uint32_t *nout, bool *has_ckpt)
{
    MDB_txn *txn;
    MDB_cursor *cur;
    upgrade_count *counts = NULL;
    uint32_t n = 0, cap = 0;
    int rc = pskv__env_txn_begin(&s->lmdb, false, &txn);
    if (rc != 0)
        return rc;
    rc = pskv__env_err(mdb_cursor_open(txn, s->records_dbi, &cur));
    if (rc == 0) {
        size_t plen = strlen(PSKV_FMT_TABLE_PREFIX);
        MDB_val k = {plen, (void *)PSKV_FMT_TABLE_PREFIX}, v;
        int mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
        for (; mrc == 0 && rc == 0; mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
            char name[PSKV_FMT_NAME_MAX + 1];
            int is_table = pskv_fmt_table_key(k.mv_data, k.mv_size, name);
            if (is_table == 0)
                break;
            if (is_table < 0) {
                rc = PSKV_ECORRUPT;
                break;
            }
            upgrade_count *g = pskv__array_grow(counts, &cap, n + 1ull, sizeof *counts, 8);
            if (g == NULL) {
                rc = PSKV_ENOMEM;
                break;
            }
            counts = g;
            memset(&counts[n], 0, sizeof counts[n]);
            memcpy(counts[n].name, name, strlen(name) + 1);
            n++;
        }
        if (rc == 0 && mrc != 0 && mrc != MDB_NOTFOUND)
            rc = pskv__env_err(mrc);
        mdb_cursor_close(cur);
    }
    for (uint32_t i = 0; i < n && rc == 0; i++)
        rc = upgrade_walk(s, txn, counts[i].name, &counts[i]);
    const uint8_t *body;
    size_t len;
    *has_ckpt = rc == 0 && pskv__record_get(s, txn, PSKV_FMT_KEY_CHECKPOINT, &body, &len) == 0;
    mdb_txn_abort(txn);
    if (rc != 0) {
        free(counts);
        return rc;
    }
    *out = counts;
    *nout = n;
    return 0;
}

static int upgrade_from_1(pskv_store *s, const upgrade_count *counts, uint32_t n, bool has_ckpt)
{
    uint64_t any_rows = 0;
    for (uint32_t i = 0; i < n; i++)
        any_rows += counts[i].rows;
    if (!has_ckpt && any_rows > 0)
        return PSKV_ECORRUPT; /* rows exist only after a checkpoint */
    upgrade_write w = {s, counts, n, has_ckpt};
    return pskv__env_write(&s->lmdb, upgrade_write_once, &w, 0);
}

/* Format 2 -> 3: every row value gains its version (0) after the state,
 * its check taken again over both; the count records follow; the undo
 * (format-2 values) is emptied, so at_seq reaches only the upgraded
 * checkpoint. One write transaction: a crash leaves format 2 as it was.
 * The rows were checked by upgrade_scan from the same snapshot. */
typedef struct upgrade_rows {
    pskv_store *s;
    upgrade_count *counts;
    uint32_t n;
} upgrade_rows;

static int upgrade_table_rows(pskv_store *s, MDB_txn *txn, upgrade_count *c, uint8_t **buf,
                              size_t *buf_cap)
{
    char rec[PSKV_NAME_MAX + 16], db[PSKV_NAME_MAX + 16];
    MDB_val k, v;
    int rc = pskv__record_name(PSKV_FMT_TABLE_PREFIX, c->name, rec, sizeof rec) != 0 ||
                     pskv__record_name(PSKV_FMT_ROWS_PREFIX, c->name, db, sizeof db) != 0
                 ? PSKV_EINVAL
                 : 0;
    MDB_val rk = {strlen(rec), rec};
    if (rc == 0)
        rc = pskv__env_err(mdb_get(txn, s->records_dbi, &rk, &v));
    pskv_table_options o;
    if (rc == 0)
        rc = v.mv_size < PSKV_FMT_CHECK_BYTES ? PSKV_ECORRUPT
                                              : pskv__record_schema_decode(v.mv_data, v.mv_size -
                                                                             PSKV_FMT_CHECK_BYTES,
                                                              &o);
    if (rc != 0)
        return rc == PSKV_ENOTFOUND ? PSKV_ECORRUPT : rc;
    const size_t payload = pskv__optimizer_row_bytes(o.optimizer, o.dim);
    const size_t stored = payload + PSKV_FMT_VERSION_BYTES;
    if (*buf_cap < stored + PSKV_FMT_CHECK_BYTES) {
        uint8_t *nb = realloc(*buf, stored + PSKV_FMT_CHECK_BYTES);
        if (nb == NULL)
            return PSKV_ENOMEM;
        *buf = nb;
        *buf_cap = stored + PSKV_FMT_CHECK_BYTES;
    }
    MDB_dbi dbi;
    MDB_cursor *cur;
    rc = pskv__env_write_err(mdb_dbi_open(txn, db, 0, &dbi));
    if (rc == 0)
        rc = pskv__env_write_err(mdb_cursor_open(txn, dbi, &cur));
    if (rc != 0)
        return rc == PSKV_ENOTFOUND ? PSKV_ECORRUPT : rc;
    c->rows = 0;
    c->digest = 0;
    /* Each row is replaced by a longer value: the cursor seeks again past
     * the last key converted rather than trust its place across a put. */
    uint8_t last[8];
    int mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
    while (mrc == 0) {
        if (k.mv_size != 8 || v.mv_size != payload + PSKV_FMT_CHECK_BYTES) {
            mrc = MDB_CORRUPTED;
            break;
        }
        uint8_t *nv = *buf;
        memcpy(last, k.mv_data, 8);
        memcpy(nv, v.mv_data, payload);
        memset(nv + payload, 0, PSKV_FMT_VERSION_BYTES);
        uint64_t check = pskv_fmt_row_check(pskv_fmt_key_get(last), nv, stored);
        pskv_fmt_put64(nv + stored, check);
        MDB_val key = {8, last}, nval = {stored + PSKV_FMT_CHECK_BYTES, nv};
        mrc = mdb_put(txn, dbi, &key, &nval, 0);
        if (mrc != 0)
            break;
        c->rows++;
        c->digest += check;
        k = (MDB_val){8, last};
        mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
        if (mrc == 0 && k.mv_size == 8 && memcmp(k.mv_data, last, 8) == 0)
            mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    if (mrc != MDB_NOTFOUND)
        return pskv__env_write_err(mrc);
    return pskv__record_put_count(s, txn, c->name, c->rows, c->digest);
}

static int upgrade_rows_once(void *arg)
{
    upgrade_rows *u = arg;
    pskv_store *s = u->s;
    MDB_txn *txn;
    uint8_t *buf = NULL;
    size_t buf_cap = 0;
    int rc = pskv__env_txn_begin(&s->lmdb, true, &txn);
    if (rc != 0)
        return rc;
    for (uint32_t i = 0; i < u->n && rc == 0; i++)
        rc = upgrade_table_rows(s, txn, &u->counts[i], &buf, &buf_cap);
    free(buf);
    MDB_dbi undo;
    int urc = rc == 0 ? mdb_dbi_open(txn, PSKV_FMT_UNDO_DB, 0, &undo) : 0;
    if (rc == 0 && urc == 0)
        rc = pskv__env_write_err(mdb_drop(txn, undo, 0));
    else if (rc == 0 && urc != MDB_NOTFOUND)
        rc = pskv__env_write_err(urc);
    return upgrade_commit(s, txn, rc, 3);
}

/* Format 3 -> 4: more than one undo generation (one database per slot,
 * created by undo_attach); format 3's one generation, in slot 0, is read
 * as it is. Format 4 -> 5: a table's schema names its initializer's
 * generator (init_gen); a schema without one is generator 1, the only
 * one before (records.c). Only the format record changes. */
static int upgrade_format_once(void *arg)
{
    pskv_store *s = arg;
    MDB_txn *txn;
    int rc = pskv__env_txn_begin(&s->lmdb, true, &txn);
    if (rc != 0)
        return rc;
    return upgrade_commit(s, txn, 0, PSKV_FMT_VERSION_BASE);
}

/* Open a store of an older format as the current one, one step at a time
 * (each step one transaction). */
int pskv__upgrade(pskv_store *s, uint32_t version)
{
    int rc = 0;
    if (version <= 2) {
        upgrade_count *counts = NULL;
        uint32_t n = 0;
        bool has_ckpt = false;
        rc = upgrade_scan(s, &counts, &n, &has_ckpt);
        if (rc == 0 && version == 1)
            rc = upgrade_from_1(s, counts, n, has_ckpt);
        upgrade_rows u = {s, counts, n};
        if (rc == 0)
            rc = pskv__env_write(&s->lmdb, upgrade_rows_once, &u, 0);
        free(counts);
    }
    if (rc == 0)
        rc = pskv__env_write(&s->lmdb, upgrade_format_once, s, 0);
    return rc;
}
