/* What tables a store holds, opened or not: pskv_store_tables on an open
 * store, pskv_dir_tables on a directory read beside its owner: a walk over
 * the schema records (each checked, with its count record) in one read
 * transaction.
 * SPDX-License-Identifier: BSD-2-Clause */
#include <lmdb.h>
#include <stdlib.h>
#include <string.h>

#include "dirlock.h"
#include "env.h"
#include "errors.h"
#include "format.h"
#include "array.h"
#include "persist.h"
#include "records.h"
#include "pskv_internal.h"

/* ---------------------------------------------------------------- the walk over schema records */

/* One schema record at the cursor: the table's description. */
static int table_desc(pskv_store *s, MDB_txn *txn, const char *name, const MDB_val *v,
                      pskv_table_desc *d)
{
    const void *base;
    uint64_t span;
    const uint8_t *body;
    size_t len;
    memset(d, 0, sizeof *d);
    memcpy(d->name, name, strlen(name) + 1);
    pskv__env_file_span(&s->lmdb, &base, &span);
    if (!pskv_fmt_in_span(base, span, v->mv_data, v->mv_size) ||
        pskv_fmt_record_open(v->mv_data, v->mv_size, &body, &len) != 0)
        return PSKV_ECORRUPT;
    int rc = pskv__record_schema_decode(body, len, &d->options);
    uint64_t digest;
    if (rc == 0)
        rc = pskv__record_count_get(s, txn, name, &d->rows, &digest);
    d->dim = d->options.dim;
    d->state_floats = pskv__optimizer_state_floats(d->options.optimizer, d->options.dim);
    d->row_bytes = pskv__optimizer_row_bytes(d->options.optimizer, d->options.dim);
    return rc;
}

/* Every table the store holds, in name order, from its schema and count
 * records: *out (malloc'd) and *n. */
static int stored_tables(pskv_store *s, pskv_table_desc **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    MDB_txn *txn;
    MDB_cursor *cur = NULL;
    pthread_rwlock_rdlock(&s->lmdb.lock);
    int rc = pskv__env_txn_begin(&s->lmdb, false, &txn);
    if (rc != 0) {
        pthread_rwlock_unlock(&s->lmdb.lock);
        return rc;
    }
    rc = pskv__env_err(mdb_cursor_open(txn, s->records_dbi, &cur));
    const void *base;
    uint64_t span;
    pskv__env_file_span(&s->lmdb, &base, &span);
    size_t plen = strlen(PSKV_FMT_TABLE_PREFIX);
    uint32_t cap = 0;
    MDB_val k = {plen, (void *)PSKV_FMT_TABLE_PREFIX}, v;
    int mrc = rc == 0 ? mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE) : MDB_NOTFOUND;
    for (; mrc == 0 && rc == 0; mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        char name[PSKV_FMT_NAME_MAX + 1];
        int is_table = pskv_fmt_in_span(base, span, k.mv_data, k.mv_size)
                           ? pskv_fmt_table_key(k.mv_data, k.mv_size, name)
                           : -1;
        if (is_table < 0 || *n >= PSKV_FMT_MAX_TABLES)
            rc = PSKV_ECORRUPT; /* a name too long, or more tables than a store holds */
        if (is_table <= 0 || rc != 0)
            break;
        pskv_table_desc *grown = pskv__array_grow(*out, &cap, *n + 1, sizeof **out, 8);
        if (grown == NULL) {
            rc = PSKV_ENOMEM;
            break;
        }
        *out = grown;
        rc = table_desc(s, txn, name, &v, &(*out)[*n]);
        if (rc == 0)
            (*n)++;
    }
    if (rc == 0 && mrc != 0 && mrc != MDB_NOTFOUND)
        rc = pskv__env_err(mrc);
    if (cur != NULL)
        mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    pthread_rwlock_unlock(&s->lmdb.lock);
    if (rc != 0) {
        free(*out);
        *out = NULL;
        *n = 0;
    }
    return rc;
}

/* ---------------------------------------------------------------- the calls */

/* Copy n descriptions out when they fit (out untouched otherwise). */
static int hand_out(const pskv_table_desc *d, size_t count, pskv_table_desc *out, size_t cap,
                    size_t *n)
{
    *n = count;
    if (cap < count)
        return PSKV_ERANGE;
    if (count > 0)
        memcpy(out, d, count * sizeof *d);
    return 0;
}

static void describe_open(const pskv_table *t, pskv_table_desc *d)
{
    memset(d, 0, sizeof *d);
    memcpy(d->name, t->name, strlen(t->name) + 1);
    d->options = t->opts;
    d->options.shards = t->nshards;
    d->dim = t->opts.dim;
    d->state_floats = t->state_floats;
    d->row_bytes = t->payload_bytes;
    d->rows = pskv_table_rows(t);
    d->open = 1;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(((const pskv_table_desc *)a)->name, ((const pskv_table_desc *)b)->name);
}

int pskv_store_tables(pskv_store *s, pskv_table_desc *out, size_t cap, size_t *n)
{
    pskv__detail_clear();
    if (s == NULL || n == NULL || (out == NULL && cap > 0))
        return PSKV_EINVAL;
    pskv_table_desc *d = NULL;
    size_t count = 0;
    int rc = 0;
    if (s->lmdb.mdb != NULL) {
        rc = stored_tables(s, &d, &count);
        if (rc != 0)
            return rc;
        /* Mark the open ones (every open table of a durable store has its
         * schema persisted when it is created). */
        pthread_mutex_lock(&s->lock);
        for (uint32_t i = 0; i < s->ntables; i++)
            for (size_t j = 0; j < count; j++)
                if (strcmp(d[j].name, s->tables[i]->name) == 0)
                    d[j].open = 1;
        pthread_mutex_unlock(&s->lock);
    } else {
        pthread_mutex_lock(&s->lock);
        count = s->ntables;
        d = malloc((count ? count : 1) * sizeof *d);
        if (d != NULL)
            for (size_t i = 0; i < count; i++)
                describe_open(s->tables[i], &d[i]);
        pthread_mutex_unlock(&s->lock);
        if (d == NULL)
            return PSKV_ENOMEM;
        qsort(d, count, sizeof *d, by_name);
    }
    rc = hand_out(d, count, out, cap, n);
    free(d);
    return rc;
}

int pskv_dir_tables(const char *dir, pskv_table_desc *out, size_t cap, size_t *n)
{
    pskv__detail_clear();
    if (dir == NULL || dir[0] == '\0' || n == NULL || (out == NULL && cap > 0))
        return PSKV_EINVAL;
    if (pskv__dir_held_here(dir))
        return PSKV_EBUSY; /* a second LMDB environment in one process breaks its locks */
    pskv_store *s = NULL;
    pskv_table_desc *d = NULL;
    size_t count = 0;
    /* One reader environment at a time in this process: two on one file
     * share LMDB's per-process lock of the reader table, and the first to
     * close drops it, leaving the other's slot to look dead to an owner
     * that clears stale readers before its writes. */
    static pthread_mutex_t one_reader = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&one_reader);
    int rc = pskv__persist_reader(dir, &s);
    if (rc == 0)
        rc = stored_tables(s, &d, &count);
    if (rc == 0)
        rc = hand_out(d, count, out, cap, n);
    free(d);
    pskv__persist_reader_close(s);
    pthread_mutex_unlock(&one_reader);
    return rc;
}
