/* Cold rows: reading a durable table's rows from LMDB (lookups on a miss,
 * key walks for iteration), each value checked and bounded by the mapped
 * data file, with the checks that find rows a damaged B-tree lost.
 * SPDX-License-Identifier: BSD-2-Clause */
#include <lmdb.h>
#include <stdlib.h>
#include <string.h>

#include "cold.h"
#include "format.h"
#include "persist.h"
#include "pskv_internal.h"

/* A lookup found no key. In a sound B-tree the keys around it, as a cursor
 * finds them, are one below and one above it, in order. A damaged branch
 * key or node sends a lookup to the wrong leaf, or renames a key: the
 * neighbours then disagree with the key order (or one is the key itself),
 * and the "absent" is damage. Only misses the filter of persisted keys
 * could not rule out get here. 0 (absent), or PSKV_ECORRUPT. */
static int miss_check(pskv_table *t, pskv__cold *c, uint64_t key)
{
    MDB_cursor *cur;
    if (mdb_cursor_open(c->txn, t->dbi, &cur) != 0)
        return 0; /* no cursor (memory): the miss stands unchecked */
    uint8_t kb[8];
    pskv_fmt_key(kb, key);
    MDB_val k = {8, kb}, v;
    int rc = 0;
    int mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    if (mrc == 0) {
        uint64_t above = k.mv_size == 8 ? pskv_fmt_key_get(k.mv_data) : 0;
        if (k.mv_size != 8 || above <= key)
            rc = PSKV_ECORRUPT; /* the key itself, or a smaller one, where a larger belongs */
        mrc = rc == 0 ? mdb_cursor_get(cur, &k, &v, MDB_NEXT) : MDB_NOTFOUND;
        if (mrc == 0 && (k.mv_size != 8 || pskv_fmt_key_get(k.mv_data) <= above))
            rc = PSKV_ECORRUPT;
        k = (MDB_val){8, kb}; /* back to the key's place, then one below */
        if (rc == 0 && mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE) == 0)
            mrc = mdb_cursor_get(cur, &k, &v, MDB_PREV);
        else
            mrc = rc == 0 ? mdb_cursor_get(cur, &k, &v, MDB_LAST) : MDB_NOTFOUND;
    } else if (mrc == MDB_NOTFOUND) {
        mrc = mdb_cursor_get(cur, &k, &v, MDB_LAST); /* every key is below it */
    }
    if (rc == 0 && mrc == 0 && (k.mv_size != 8 || pskv_fmt_key_get(k.mv_data) >= key))
        rc = PSKV_ECORRUPT;
    if (rc == 0 && mrc != 0 && mrc != MDB_NOTFOUND)
        rc = pskv__env_err(mrc);
    mdb_cursor_close(cur);
    return rc;
}

int pskv__cold_find(pskv_table *t, pskv__cold *c, uint64_t key, const void **row)
{
    pskv_store *s = t->store;
    if (c->txn == NULL) {
        pthread_rwlock_rdlock(&s->lmdb.lock);
        MDB_txn *txn;
        int rc = pskv__env_txn_begin(&s->lmdb, false, &txn);
        if (rc != 0) {
            pthread_rwlock_unlock(&s->lmdb.lock);
            return rc;
        }
        c->txn = txn;
        pskv__env_file_span(&s->lmdb, &c->base, &c->span);
    }
    uint8_t kb[8];
    pskv_fmt_key(kb, key);
    MDB_val k = {8, kb}, v;
    atomic_fetch_add_explicit(&t->n_cold_lookups, 1, memory_order_relaxed);
    int rc = mdb_get(c->txn, t->dbi, &k, &v);
    if (rc == MDB_NOTFOUND)
        return miss_check(t, c, key);
    if (rc != 0)
        return pskv__env_err(rc);
    if (!pskv_fmt_in_span(c->base, c->span, v.mv_data, v.mv_size) ||
        !pskv_fmt_row_ok(key, v.mv_data, v.mv_size, t->stored_bytes, NULL))
        return PSKV_ECORRUPT;
    *row = v.mv_data;
    return 1;
}

int pskv__cold_keys(pskv_table *t, uint64_t after, bool first, uint64_t *keys, uint32_t max,
                    uint32_t *n, pskv__cold_walk *w)
{
    pskv_store *s = t->store;
    *n = 0;
    pthread_rwlock_rdlock(&s->lmdb.lock);
    MDB_txn *txn;
    MDB_cursor *cur;
    int rc = pskv__env_txn_begin(&s->lmdb, false, &txn);
    if (rc == 0) {
        uint64_t id = mdb_txn_id(txn);
        if (first) {
            memset(w, 0, sizeof *w);
            w->txnid = id;
            w->one_snapshot = true;
        } else if (id != w->txnid) {
            w->one_snapshot = false; /* a checkpoint committed meanwhile */
        }
        w->last_txnid = id;
        const void *base;
        uint64_t span;
        pskv__env_file_span(&s->lmdb, &base, &span);
        rc = pskv__env_err(mdb_cursor_open(txn, t->dbi, &cur));
        if (rc == 0) {
            uint8_t kb[8];
            pskv_fmt_key(kb, after);
            MDB_val k = {8, kb}, v;
            int mrc = mdb_cursor_get(cur, &k, &v, first ? MDB_FIRST : MDB_SET_RANGE);
            if (mrc == 0 && !first && k.mv_size == 8 && pskv_fmt_key_get(k.mv_data) == after)
                mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
            while (mrc == 0 && *n < max) {
                uint64_t check;
                if (k.mv_size != 8 || !pskv_fmt_in_span(base, span, v.mv_data, v.mv_size) ||
                    pskv_fmt_row_stored_check(v.mv_data, v.mv_size, t->stored_bytes, &check) != 0) {
                    mrc = MDB_CORRUPTED;
                    break;
                }
                keys[(*n)++] = pskv_fmt_key_get(k.mv_data);
                w->rows++;
                w->digest += check;
                mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
            }
            rc = mrc == MDB_NOTFOUND ? 0 : pskv__env_err(mrc);
            mdb_cursor_close(cur);
        }
        mdb_txn_abort(txn);
    }
    pthread_rwlock_unlock(&s->lmdb.lock);
    return rc;
}

int pskv__cold_walk_check(pskv_table *t, const pskv__cold_walk *w)
{
    if (!w->one_snapshot)
        return 0; /* rows moved meanwhile: nothing exact to compare */
    pthread_mutex_lock(&t->count_lock);
    bool known = t->db_txnid == w->txnid;
    bool same = w->rows == t->db_rows && w->digest == t->db_digest;
    pthread_mutex_unlock(&t->count_lock);
    return known && !same ? PSKV_ECORRUPT : 0;
}

uint64_t pskv__cold_txnid(const pskv__cold *c) { return c->txn ? mdb_txn_id(c->txn) : 0; }

void pskv__cold_end(pskv_table *t, pskv__cold *c)
{
    if (c->txn == NULL)
        return;
    mdb_txn_abort(c->txn);
    c->txn = NULL;
    pthread_rwlock_unlock(&t->store->lmdb.lock);
}
