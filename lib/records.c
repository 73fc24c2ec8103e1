/* The records of a durable store's meta database (format.h has their
 * layouts and the only decoders): each written as head | body | XXH3 in
 * one put, each read checked and bounded by the mapped file. Format,
 * checkpoint, schema, count, version, key filter and the caller's
 * metadata records; the names of a table's records and databases.
 * SPDX-License-Identifier: BSD-2-Clause */
#include <lmdb.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "env.h"
#include "errors.h"
#include "format.h"
#include "keyfilter.h"
#include "options.h"
#include "pskv_internal.h"
#include "records.h"

static uint64_t unix_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* A record of the meta database: head | body | XXH3-64 of both, written in place (no copy
 * of a large body). */
static int record_put_parts(MDB_txn *txn, MDB_dbi dbi, const char *name, const void *head,
                     size_t head_len, const void *body, size_t len)
{
    MDB_val k = {strlen(name), (void *)name}, v = {head_len + len + PSKV_FMT_CHECK_BYTES, NULL};
    int rc = mdb_put(txn, dbi, &k, &v, MDB_RESERVE);
    if (rc != 0)
        return pskv__env_write_err(rc);
    uint8_t *out = v.mv_data;
    if (head_len > 0)
        memcpy(out, head, head_len);
    if (len > 0)
        memcpy(out + head_len, body, len);
    pskv_fmt_put64(out + head_len + len, pskv_fmt_record_check(out, head_len + len));
    return 0;
}

int pskv__record_put(MDB_txn *txn, MDB_dbi dbi, const char *name, const void *body, size_t len)
{
    return record_put_parts(txn, dbi, name, NULL, 0, body, len);
}

/* The body of a record (valid until the transaction ends), checked;
 * read transactions only (a write one's new pages are not in the map). */
int pskv__record_get(pskv_store *s, MDB_txn *txn, const char *name, const uint8_t **body,
                     size_t *len)
{
    *body = NULL;
    *len = 0;
    MDB_val k = {strlen(name), (void *)name}, v;
    int rc = mdb_get(txn, s->records_dbi, &k, &v);
    if (rc != 0)
        return pskv__env_err(rc);
    const void *base;
    uint64_t span;
    pskv__env_file_span(&s->lmdb, &base, &span);
    if (!pskv_fmt_in_span(base, span, v.mv_data, v.mv_size) ||
        pskv_fmt_record_open(v.mv_data, v.mv_size, body, len) != 0)
        return PSKV_ECORRUPT;
    return 0;
}

int pskv__record_put_checkpoint(pskv_store *s, MDB_txn *txn, uint64_t seq, uint64_t *time_ns)
{
    *time_ns = unix_ns();
    return pskv__record_put_checkpoint_at(s, txn, seq, *time_ns);
}

int pskv__record_put_checkpoint_at(pskv_store *s, MDB_txn *txn, uint64_t seq, uint64_t time_ns)
{
    uint8_t body[16];
    pskv_fmt_pair_put(body, seq, time_ns);
    return pskv__record_put(txn, s->records_dbi, PSKV_FMT_KEY_CHECKPOINT, body, sizeof body);
}

/* A small write transaction right after a checkpoint commits: the
 * checkpoint record put again as it is. LMDB reuses a page only once two
 * later transactions have committed (the last commit stays readable), so
 * without it the next checkpoint could not reuse the pages this one
 * freed, and the data file would settle at the live pages plus two
 * checkpoints' worth of rewritten pages instead of one (docs/DESIGN.md,
 * "Data file size"). The store's state does not change. */
int pskv__record_tick(pskv_store *s, uint64_t *txnid)
{
    MDB_txn *txn;
    int rc = pskv__env_txn_begin(&s->lmdb, true, &txn);
    if (rc != 0)
        return rc;
    rc = pskv__record_put_checkpoint_at(s, txn, s->ckpt_seq, s->ckpt_unix_ns);
    if (rc != 0) {
        mdb_txn_abort(txn);
        return rc;
    }
    *txnid = mdb_txn_id(txn);
    return pskv__env_write_err(mdb_txn_commit(txn));
}

/* Record and database names of a table (format.h). */
static int table_record_name(const char *table, char *buf, size_t len)
{
    return pskv__format(buf, len, "%s%s", PSKV_FMT_TABLE_PREFIX, table) < 0 ? PSKV_EINVAL : 0;
}

/* "<prefix><table>": a record's or a database's name for a table. */
int pskv__record_name(const char *prefix, const char *table, char *buf, size_t len)
{
    return pskv__format(buf, len, "%s%s", prefix, table) < 0 ? PSKV_EINVAL : 0;
}

static int count_record_name(const char *table, char *buf, size_t len)
{
    return pskv__record_name(PSKV_FMT_COUNT_PREFIX, table, buf, len);
}

static int version_record_name(const char *table, char *buf, size_t len)
{
    return pskv__record_name(PSKV_FMT_VERSION_PREFIX, table, buf, len);
}

/* A table's record of two u64 (a count, a version) under prefix. */
static int pair_record_put(pskv_store *s, MDB_txn *txn, const char *prefix, const char *table,
                           uint64_t a, uint64_t b)
{
    char name[PSKV_NAME_MAX + 16];
    uint8_t body[16];
    pskv_fmt_pair_put(body, a, b);
    int rc = pskv__record_name(prefix, table, name, sizeof name);
    return rc != 0 ? rc : pskv__record_put(txn, s->records_dbi, name, body, sizeof body);
}

int pskv__record_put_count(pskv_store *s, MDB_txn *txn, const char *table, uint64_t rows,
                            uint64_t digest)
{
    return pair_record_put(s, txn, PSKV_FMT_COUNT_PREFIX, table, rows, digest);
}

int pskv__record_put_version(pskv_store *s, MDB_txn *txn, const char *table, uint64_t version,
                              bool clean)
{
    return pair_record_put(s, txn, PSKV_FMT_VERSION_PREFIX, table, version, clean ? 1 : 0);
}

/* The table's version record: 0 (*version, *clean), PSKV_ENOTFOUND (a
 * table no checkpoint of format 3 has written), PSKV_ECORRUPT. */
int pskv__record_version_get(pskv_store *s, MDB_txn *txn, const char *table, uint64_t *version,
                              bool *clean)
{
    char name[PSKV_NAME_MAX + 16];
    const uint8_t *body;
    size_t len;
    uint64_t flag;
    int rc = version_record_name(table, name, sizeof name);
    if (rc == 0)
        rc = pskv__record_get(s, txn, name, &body, &len);
    if (rc == 0 && (pskv_fmt_pair_get(body, len, version, &flag) != 0 || flag > 1))
        rc = PSKV_ECORRUPT;
    *clean = rc == 0 && flag == 1;
    return rc;
}

int pskv__record_put_user(pskv_store *s, MDB_txn *txn, uint64_t seq, const void *meta,
                           size_t len)
{
    uint8_t head[8];
    pskv_fmt_put64(head, seq);
    return record_put_parts(txn, s->records_dbi, PSKV_FMT_KEY_USER, head, sizeof head, meta, len);
}


int pskv__record_put_table(pskv_store *s, MDB_txn *txn, const pskv_table *t)
{
    char name[PSKV_NAME_MAX + 16], config[1024];
    int n = pskv_table_options_format(&t->opts, config, sizeof config);
    if (n < 0)
        return n;
    int rc = table_record_name(t->name, name, sizeof name);
    return rc != 0 ? rc : pskv__record_put(txn, s->records_dbi, name, config, (size_t)n);
}

static int filter_record_name(const char *table, uint32_t i, char *buf, size_t len)
{
    return pskv__format(buf, len, "%s%s/%u", PSKV_FMT_FILTER_PREFIX, table, i) < 0 ? PSKV_EINVAL
                                                                                    : 0;
}

int pskv__record_put_filters(pskv_store *s, MDB_txn *txn, pskv_table *t)
{
    pskv__keyfilter *kf = &t->persisted;
    char name[PSKV_NAME_MAX + 32];
    if (kf->drop_records) {
        for (uint32_t i = 0; i < PSKV_FMT_FILTER_MAX; i++) {
            if (filter_record_name(t->name, i, name, sizeof name) != 0)
                return PSKV_EINVAL;
            MDB_val k = {strlen(name), name};
            int rc = mdb_del(txn, s->records_dbi, &k, NULL);
            if (rc != 0 && rc != MDB_NOTFOUND)
                return pskv__env_write_err(rc);
        }
        return 0;
    }
    uint32_t n = atomic_load(&kf->n);
    for (uint32_t i = 0; i < n && kf->valid; i++) {
        pskv__bloom *b = &kf->f[i];
        if (!b->dirty)
            continue;
        size_t len = pskv__bloom_encoded_bytes(b);
        uint8_t *buf = malloc(len);
        if (buf == NULL)
            return PSKV_ENOMEM;
        pskv__bloom_encode(b, buf);
        int rc = filter_record_name(t->name, i, name, sizeof name);
        if (rc == 0)
            rc = pskv__record_put(txn, s->records_dbi, name, buf, len);
        free(buf);
        if (rc != 0)
            return rc;
    }
    return 0;
}

void pskv__record_filters_written(pskv_table *t)
{
    pskv__keyfilter *kf = &t->persisted;
    uint32_t n = atomic_load(&kf->n);
    for (uint32_t i = 0; i < n; i++)
        kf->f[i].dirty = false;
    kf->drop_records = false;
}

/* The table's filters, in order. A series that is missing while the table
 * has rows, or damaged, is not trusted: every miss then asks LMDB. */
int pskv__record_filters_load(pskv_store *s, MDB_txn *txn, pskv_table *t, uint64_t rows)
{
    pskv__keyfilter *kf = &t->persisted;
    pskv__keyfilter_init(kf, true);
    char name[PSKV_NAME_MAX + 32];
    for (uint32_t i = 0; i < PSKV_FMT_FILTER_MAX; i++) {
        const uint8_t *body;
        size_t len;
        int rc = filter_record_name(t->name, i, name, sizeof name);
        if (rc == 0)
            rc = pskv__record_get(s, txn, name, &body, &len);
        if (rc == PSKV_ENOTFOUND)
            break;
        if (rc == 0)
            rc = pskv__keyfilter_decode(kf, body, len);
        if (rc == PSKV_ENOMEM)
            return rc;
        if (rc != 0) {
            pskv__keyfilter_free(kf);
            kf->valid = false;
            kf->drop_records = true;
            return 0;
        }
    }
    if (rows > 0 && atomic_load(&kf->n) == 0) {
        kf->valid = false;
        kf->drop_records = true;
    }
    return 0;
}

/* ---------------------------------------------------------------- schemas */

/* A schema record's body: the table's canonical config string. */
int pskv__record_schema_decode(const uint8_t *body, size_t len, pskv_table_options *o)
{
    char *config = malloc(len + 1);
    if (config == NULL)
        return PSKV_ENOMEM;
    memcpy(config, body, len);
    config[len] = '\0';
    pskv_table_options_init(o);
    /* Schemas written before 0.3 name no generator: theirs was 1, and
     * their tables keep it (a schema of 0.3 on names its own). */
    o->init_gen = 1;
    /* A record that does not parse is damage, not bad input. */
    int rc = pskv_table_options_parse(o, config) != 0 || pskv_table_options_validate(o) != 0 ||
                     o->dim == 0
                 ? PSKV_ECORRUPT
                 : 0;
    free(config);
    return rc;
}

/* The table's count record (format 2 writes one with every table). */
int pskv__record_count_get(pskv_store *s, MDB_txn *txn, const char *table, uint64_t *rows,
                      uint64_t *digest)
{
    char rec[PSKV_NAME_MAX + 16];
    const uint8_t *body;
    size_t len;
    int rc = count_record_name(table, rec, sizeof rec);
    if (rc == 0)
        rc = pskv__record_get(s, txn, rec, &body, &len);
    if (rc == PSKV_ENOTFOUND || (rc == 0 && pskv_fmt_pair_get(body, len, rows, digest) != 0))
        rc = PSKV_ECORRUPT;
    return rc;
}
