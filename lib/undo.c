/* Undo generations: what the last checkpoints changed, so that a durable
 * store can be reopened at an earlier checkpoint (store config at_seq=N),
 * the step a job of several instances takes back to the last checkpoint
 * that every instance committed. A store keeps up to undo_keep
 * generations (default 2), one per slot database (format.h).
 *
 *   record   inside the checkpoint's own transaction (checkpoint.c calls
 *            in): the slots' headers are read, the generations that are
 *            no longer kept (the oldest beyond undo_keep - 1, and any off
 *            the chain from the store's seq down) are emptied, and a free
 *            slot takes the new one: each row the checkpoint overwrites
 *            or deletes leaves its stored value and each row it creates an
 *            empty value, in key order (appends); last the header (the
 *            seqs, every table's count record before, the "user" record
 *            before). Commit makes rows and undo one.
 *   rollback at open, before any table is attached, one generation at a
 *            time, newest first: pskv.rollback (the intent, from q to
 *            q - 1) is written, then one write transaction puts the old
 *            values back, deletes the created rows, restores the count,
 *            user and checkpoint records and empties that slot; then
 *            pskv.seq takes q - 1 and the intent goes. A crash at any
 *            point leaves the store at a checkpoint of the way (open at
 *            at_seq again to go on) or at q - 1 with the intent (taken as a
 *            finished step: seqfile.c).
 * Tables opened after the target checkpoint keep their schema records
 * (their rows go): a rollback moves rows and records, not schemas.
 * SPDX-License-Identifier: BSD-2-Clause */
#include <lmdb.h>
#include <stdlib.h>
#include <string.h>

#include "format.h"
#include "options.h"
#include "persist.h"
#include "records.h"
#include "pskv_internal.h"
#include "seqfile.h"
#include "undo.h"
#include "changes.h"

/* ---------------------------------------------------------------- record */

/* The "user" record as stored (read before the transaction changes the
 * meta database: then it lies in the map, bounded by the file). */
static int user_stored(pskv_store *s, MDB_txn *txn, MDB_val *v)
{
    MDB_val k = {strlen(PSKV_FMT_KEY_USER), PSKV_FMT_KEY_USER};
    int rc = mdb_get(txn, s->records_dbi, &k, v);
    if (rc == MDB_NOTFOUND) {
        *v = (MDB_val){0, NULL};
        return 0;
    }
    if (rc != 0)
        return pskv__env_write_err(rc);
    const void *base;
    uint64_t span;
    pskv__env_file_span(&s->lmdb, &base, &span);
    return pskv_fmt_in_span(base, span, v->mv_data, v->mv_size) ? 0 : PSKV_ECORRUPT;
}

/* The header of the generation in slot `slot`: 0 with its seqs (and a
 * copy of its body when body is not NULL), PSKV_ENOTFOUND (an empty slot),
 * PSKV_ECORRUPT. Read before the transaction writes: pages it changed are
 * not in the map, where values are bounded. */
static int head_read(pskv_store *s, MDB_txn *txn, uint32_t slot, pskv_fmt_undo_head *h,
                     uint8_t **body, size_t *len)
{
    uint8_t kb[PSKV_FMT_UNDO_KEY_BYTES];
    pskv_fmt_undo_key(kb, PSKV_FMT_UNDO_TABLE_NONE, 0);
    MDB_val k = {sizeof kb, kb}, v;
    int rc = mdb_get(txn, s->undo_dbi[slot], &k, &v);
    if (rc != 0)
        return pskv__env_err(rc);
    const void *base;
    uint64_t span;
    const uint8_t *b;
    size_t n;
    pskv__env_file_span(&s->lmdb, &base, &span);
    if (!pskv_fmt_in_span(base, span, v.mv_data, v.mv_size) ||
        pskv_fmt_record_open(v.mv_data, v.mv_size, &b, &n) != 0 ||
        pskv_fmt_undo_head_get(b, n, h) != 0)
        return PSKV_ECORRUPT;
    if (body != NULL) {
        *body = malloc(n);
        if (*body == NULL)
            return PSKV_ENOMEM;
        memcpy(*body, b, n);
        *len = n;
    }
    return 0;
}

/* The chain of generations from the store's seq down: chain[j] = the slot
 * of the generation from seq - j to seq - j - 1, for j < *n. *used: every
 * slot holding something (on the chain or not). */
static int chain_read(pskv_store *s, MDB_txn *txn, uint32_t chain[PSKV_UNDO_KEEP_MAX],
                      uint32_t *n, bool used[PSKV_UNDO_KEEP_MAX])
{
    uint64_t from[PSKV_UNDO_KEEP_MAX];
    bool valid[PSKV_UNDO_KEEP_MAX];
    for (uint32_t i = 0; i < PSKV_UNDO_KEEP_MAX; i++) {
        MDB_stat st;
        int rc = mdb_stat(txn, s->undo_dbi[i], &st);
        if (rc != 0)
            return pskv__env_write_err(rc);
        used[i] = st.ms_entries > 0;
        pskv_fmt_undo_head h;
        rc = used[i] ? head_read(s, txn, i, &h, NULL, NULL) : PSKV_ENOTFOUND;
        if (rc != 0 && rc != PSKV_ENOTFOUND && rc != PSKV_ECORRUPT)
            return rc;
        valid[i] = rc == 0; /* a slot without a readable header is stale */
        from[i] = rc == 0 ? h.from : 0;
    }
    *n = 0;
    for (uint64_t seq = s->ckpt_seq; seq > 0 && *n < PSKV_UNDO_KEEP_MAX; seq--) {
        uint32_t found = PSKV_UNDO_KEEP_MAX;
        for (uint32_t i = 0; i < PSKV_UNDO_KEEP_MAX && found == PSKV_UNDO_KEEP_MAX; i++)
            if (valid[i] && from[i] == seq)
                found = i;
        if (found == PSKV_UNDO_KEEP_MAX)
            break;
        chain[(*n)++] = found;
    }
    return 0;
}

int pskv__undo_begin(pskv_store *s, MDB_txn *txn, bool writes_user, pskv__undo *u)
{
    memset(u, 0, sizeof *u);
    u->user_state = PSKV_FMT_UNDO_USER_KEPT;
    u->off = s->undo_keep == 0;
    /* Which generations stay: the newest undo_keep - 1 of the chain (the
     * new one makes undo_keep). The rest go, with undo=off all of them:
     * they would no longer match. Drops change the main database, not the
     * meta one the "user" record below is read from. */
    uint32_t chain[PSKV_UNDO_KEEP_MAX], n = 0;
    bool used[PSKV_UNDO_KEEP_MAX], keep[PSKV_UNDO_KEEP_MAX] = {false};
    int rc = chain_read(s, txn, chain, &n, used);
    for (uint32_t j = 0; j < n && j + 1 < s->undo_keep; j++)
        keep[chain[j]] = true;
    u->slot = PSKV_UNDO_KEEP_MAX;
    for (uint32_t i = 0; i < PSKV_UNDO_KEEP_MAX && rc == 0; i++) {
        if (used[i] && !keep[i]) {
            rc = pskv__env_write_err(mdb_drop(txn, s->undo_dbi[i], 0));
            used[i] = false;
        }
        if (!used[i] && u->slot == PSKV_UNDO_KEEP_MAX)
            u->slot = i;
    }
    if (rc != 0 || u->off)
        return rc;
    PSKV__ASSERT(u->slot < PSKV_UNDO_KEEP_MAX); /* at most undo_keep - 1 kept */
    if (writes_user) {
        MDB_val user;
        rc = user_stored(s, txn, &user);
        if (rc != 0)
            return rc;
        u->user_state = user.mv_data ? PSKV_FMT_UNDO_USER_WAS : PSKV_FMT_UNDO_USER_NONE;
        if (user.mv_data != NULL) {
            u->user = malloc(user.mv_size ? user.mv_size : 1);
            if (u->user == NULL)
                return PSKV_ENOMEM;
            memcpy(u->user, user.mv_data, user.mv_size);
            u->user_len = user.mv_size;
        }
    }
    return pskv__env_write_err(mdb_cursor_open(txn, s->undo_dbi[u->slot], &u->cur));
}

void pskv__undo_free(pskv__undo *u)
{
    if (u->cur != NULL)
        mdb_cursor_close(u->cur);
    free(u->user);
    memset(u, 0, sizeof *u);
}

int pskv__undo_row(pskv__undo *u, uint32_t table, uint64_t key, const void *old, size_t len)
{
    if (u->off)
        return 0;
    uint8_t kb[PSKV_FMT_UNDO_KEY_BYTES];
    pskv_fmt_undo_key(kb, table, key);
    MDB_val k = {sizeof kb, kb}, v = {len, (void *)(len ? old : "")};
    return pskv__env_write_err(mdb_cursor_put(u->cur, &k, &v, MDB_APPEND));
}

int pskv__undo_end(pskv_store *s, pskv__undo *u, const pskv__undo_table *tables, uint32_t nt)
{
    if (u->off)
        return 0;
    size_t len = PSKV_FMT_UNDO_HEAD_BYTES + PSKV_FMT_CHECK_BYTES;
    for (uint32_t i = 0; i < nt; i++)
        len += 2 + strlen(tables[i].name) + 16;
    pskv_fmt_undo_head h = {
        .from = s->ckpt_seq + 1,
        .to = s->ckpt_seq,
        .to_ns = s->ckpt_unix_ns,
        .user = u->user_state,
        .tables = nt,
    };
    uint8_t *body = malloc(len);
    if (body == NULL)
        return PSKV_ENOMEM;
    pskv_fmt_undo_head_put(body, &h);
    size_t at = PSKV_FMT_UNDO_HEAD_BYTES;
    for (uint32_t i = 0; i < nt; i++) {
        uint16_t n = (uint16_t)strlen(tables[i].name);
        memcpy(body + at, &n, 2);
        memcpy(body + at + 2, tables[i].name, n);
        pskv_fmt_put64(body + at + 2 + n, tables[i].rows);
        pskv_fmt_put64(body + at + 2 + n + 8, tables[i].digest);
        at += 2 + (size_t)n + 16;
    }
    pskv_fmt_put64(body + at, pskv_fmt_record_check(body, at));
    uint8_t kb[PSKV_FMT_UNDO_KEY_BYTES];
    pskv_fmt_undo_key(kb, PSKV_FMT_UNDO_TABLE_NONE, 0);
    MDB_val k = {sizeof kb, kb}, v = {len, body};
    int rc = pskv__env_write_err(mdb_cursor_put(u->cur, &k, &v, MDB_APPEND));
    free(body);
    if (rc == 0 && h.user == PSKV_FMT_UNDO_USER_WAS) {
        pskv_fmt_undo_key(kb, PSKV_FMT_UNDO_TABLE_NONE, 1);
        k = (MDB_val){sizeof kb, kb};
        v = (MDB_val){u->user_len, u->user};
        rc = pskv__env_write_err(mdb_cursor_put(u->cur, &k, &v, MDB_APPEND));
    }
    return rc;
}

/* ---------------------------------------------------------------- rollback */

typedef struct rollback {
    pskv_store *s;
    uint32_t slot; /* the generation from to + 1 to `to` */
    uint64_t to;
    uint64_t to_ns; /* out */
} rollback;

static int table_dbi(MDB_txn *txn, const char *name, MDB_dbi *dbi)
{
    char db[PSKV_NAME_MAX + 16];
    if (pskv__format(db, sizeof db, "%s%s", PSKV_FMT_ROWS_PREFIX, name) < 0)
        return PSKV_ECORRUPT;
    int rc = pskv__env_err(mdb_dbi_open(txn, db, 0, dbi));
    return rc == PSKV_ENOTFOUND ? PSKV_ECORRUPT : rc; /* undo names a table that is gone */
}

/* Put every old value back and delete every created row. */
static int restore_rows(pskv_store *s, MDB_txn *txn, MDB_dbi undo, const MDB_dbi *dbis,
                        uint32_t nt)
{
    MDB_cursor *cur;
    int rc = pskv__env_write_err(mdb_cursor_open(txn, undo, &cur));
    if (rc != 0)
        return rc;
    const void *base;
    uint64_t span;
    pskv__env_file_span(&s->lmdb, &base, &span);
    uint8_t *copy = NULL;
    size_t copy_cap = 0;
    MDB_cursor *rows = NULL;
    uint32_t cur_table = PSKV_FMT_UNDO_TABLE_NONE;
    MDB_val k, v;
    int mrc;
    for (mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); mrc == 0 && rc == 0;
         mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        uint32_t ti;
        uint64_t key;
        if (pskv_fmt_undo_key_get(k.mv_data, k.mv_size, &ti, &key) != 0 ||
            !pskv_fmt_in_span(base, span, v.mv_data, v.mv_size)) {
            rc = PSKV_ECORRUPT;
            break;
        }
        if (ti == PSKV_FMT_UNDO_TABLE_NONE)
            break; /* header and user record: the end of the rows */
        if (ti >= nt) {
            rc = PSKV_ECORRUPT;
            break;
        }
        uint8_t kb[8];
        pskv_fmt_key(kb, key);
        MDB_val rk = {8, kb}, rv;
        if (ti != cur_table) { /* one cursor per table: puts in key order stay on their leaf */
            if (rows != NULL)
                mdb_cursor_close(rows);
            rows = NULL;
            cur_table = ti;
            rc = pskv__env_write_err(mdb_cursor_open(txn, dbis[ti], &rows));
            if (rc != 0)
                break;
        }
        if (v.mv_size == 0) {
            int d = mdb_cursor_get(rows, &rk, &rv, MDB_SET);
            if (d == 0)
                d = mdb_cursor_del(rows, 0);
            rc = d == MDB_NOTFOUND ? 0 : pskv__env_write_err(d);
            continue;
        }
        if (v.mv_size > copy_cap) { /* out of the page before the put moves it */
            free(copy);
            copy_cap = v.mv_size;
            copy = malloc(copy_cap);
            if (copy == NULL) {
                rc = PSKV_ENOMEM;
                break;
            }
        }
        memcpy(copy, v.mv_data, v.mv_size);
        rv = (MDB_val){v.mv_size, copy};
        rc = pskv__env_write_err(mdb_cursor_put(rows, &rk, &rv, 0));
    }
    if (rc == 0 && mrc != 0 && mrc != MDB_NOTFOUND)
        rc = pskv__env_write_err(mrc);
    if (rows != NULL)
        mdb_cursor_close(rows);
    free(copy);
    mdb_cursor_close(cur);
    return rc;
}

static int user_restore(pskv_store *s, MDB_txn *txn, MDB_dbi undo, uint32_t user)
{
    MDB_val uk = {strlen(PSKV_FMT_KEY_USER), PSKV_FMT_KEY_USER};
    if (user == PSKV_FMT_UNDO_USER_KEPT)
        return 0;
    if (user == PSKV_FMT_UNDO_USER_NONE) {
        int rc = mdb_del(txn, s->records_dbi, &uk, NULL);
        return rc == MDB_NOTFOUND ? 0 : pskv__env_write_err(rc);
    }
    uint8_t kb[PSKV_FMT_UNDO_KEY_BYTES];
    pskv_fmt_undo_key(kb, PSKV_FMT_UNDO_TABLE_NONE, 1);
    MDB_val k = {sizeof kb, kb}, v;
    int rc = mdb_get(txn, undo, &k, &v);
    if (rc == MDB_NOTFOUND)
        return PSKV_ECORRUPT; /* the header says it is there */
    if (rc != 0)
        return pskv__env_write_err(rc);
    const void *base;
    uint64_t span;
    pskv__env_file_span(&s->lmdb, &base, &span);
    if (!pskv_fmt_in_span(base, span, v.mv_data, v.mv_size))
        return PSKV_ECORRUPT;
    void *copy = malloc(v.mv_size ? v.mv_size : 1);
    if (copy == NULL)
        return PSKV_ENOMEM;
    memcpy(copy, v.mv_data, v.mv_size);
    MDB_val uv = {v.mv_size, copy};
    rc = pskv__env_write_err(mdb_put(txn, s->records_dbi, &uk, &uv, 0));
    free(copy);
    return rc;
}

/* A table of an undo header, with its version record. */
typedef struct undo_table {
    char name[PSKV_FMT_NAME_MAX + 1];
    uint64_t rows, digest, version;
    bool clean;
} undo_table;

/* The whole rollback transaction, once (PSKV__MAP_FULL: grow, again). */
static int rollback_once(void *arg)
{
    rollback *r = arg;
    pskv_store *s = r->s;
    MDB_txn *txn;
    int rc = pskv__env_txn_begin(&s->lmdb, true, &txn);
    if (rc != 0)
        return rc;
    uint8_t *body = NULL;
    size_t len = 0;
    pskv_fmt_undo_head h;
    MDB_dbi *dbis = NULL;
    rc = head_read(s, txn, r->slot, &h, &body, &len);
    if (rc == 0 && (h.from != r->to + 1 || h.to != r->to))
        rc = PSKV_ENOTFOUND; /* checked before: changed under us */
    if (rc == 0 && (uint64_t)h.tables * 18 > len)
        rc = PSKV_ECORRUPT; /* more tables than the header can hold */
    if (rc == 0) {
        dbis = calloc(h.tables ? h.tables : 1, sizeof *dbis);
        rc = dbis ? 0 : PSKV_ENOMEM;
    }
    /* The header's tables, parsed once. A version record that claims a
     * clean close no longer describes the rows: read them all before
     * writing, while every record still lies in the map (pages this
     * transaction writes are not in it). */
    undo_table *tabs = rc == 0 ? calloc(h.tables ? h.tables : 1, sizeof *tabs) : NULL;
    if (rc == 0 && tabs == NULL)
        rc = PSKV_ENOMEM;
    size_t at = PSKV_FMT_UNDO_HEAD_BYTES;
    for (uint32_t i = 0; i < h.tables && rc == 0; i++) {
        undo_table *u = &tabs[i];
        rc = pskv_fmt_undo_table_get(body, len, &at, u->name, &u->rows, &u->digest) == 0
                 ? 0
                 : PSKV_ECORRUPT;
        if (rc == 0)
            rc = pskv__record_version_get(s, txn, u->name, &u->version, &u->clean);
        if (rc == PSKV_ENOTFOUND)
            rc = 0;
    }
    for (uint32_t i = 0; i < h.tables && rc == 0; i++) {
        const undo_table *u = &tabs[i];
        rc = table_dbi(txn, u->name, &dbis[i]);
        if (rc == 0)
            rc = pskv__record_put_count(s, txn, u->name, u->rows, u->digest);
        if (rc == 0)
            rc = pskv__changes_rolled_back(s, txn, u->name, u->version, u->clean);
    }
    free(tabs);
    if (rc == 0)
        rc = restore_rows(s, txn, s->undo_dbi[r->slot], dbis, h.tables);
    if (rc == 0)
        rc = user_restore(s, txn, s->undo_dbi[r->slot], h.user);
    uint64_t ns = h.to_ns;
    if (rc == 0)
        rc = pskv__record_put_checkpoint_at(s, txn, r->to, ns);
    if (rc == 0)
        rc = pskv__env_write_err(mdb_drop(txn, s->undo_dbi[r->slot], 0)); /* for good */
    free(body);
    free(dbis);
    if (rc != 0) {
        mdb_txn_abort(txn);
        return rc;
    }
    r->to_ns = ns;
    return pskv__env_write_err(mdb_txn_commit(txn));
}

int pskv__undo_rollback(pskv_store *s, uint64_t to, uint32_t *kept)
{
    /* Do the kept generations reach `to`? Asked before anything is
     * written. */
    *kept = 0;
    MDB_txn *txn;
    int rc = pskv__env_txn_begin(&s->lmdb, false, &txn);
    if (rc != 0)
        return rc;
    uint32_t chain[PSKV_UNDO_KEEP_MAX], n = 0;
    bool used[PSKV_UNDO_KEEP_MAX];
    rc = chain_read(s, txn, chain, &n, used);
    mdb_txn_abort(txn);
    if (rc != 0)
        return rc;
    *kept = n;
    if (to >= s->ckpt_seq || s->ckpt_seq - to > n)
        return PSKV_ENOTFOUND;
    for (uint32_t j = 0; s->ckpt_seq > to; j++) {
        const uint64_t from = s->ckpt_seq;
        rc = pskv__seqfile_rollback_write(s->dir, from, from - 1);
        if (rc != 0)
            return rc;
        rollback r = {.s = s, .slot = chain[j], .to = from - 1};
        rc = pskv__env_write(&s->lmdb, rollback_once, &r, 1u << 20);
        if (rc != 0) {
            (void)pskv__persist_recover(s);
            return rc; /* the store stays at `from`; the intent is harmless */
        }
        *kept = n - j - 1;
        rc = pskv__persist_seq_committed(s, from - 1, r.to_ns);
        if (rc != 0)
            return rc;
        pskv__seqfile_rollback_remove(s->dir);
    }
    return 0;
}
