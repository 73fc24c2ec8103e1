/* A durable store's LMDB environment: opening it safely, the format and
 * schema records, reading rows that live only in LMDB ("cold" rows, after a
 * reopen), growing the map, and backups. The layout is in format.h; the
 * checkpoint that writes rows is in checkpoint.c.
 *
 * Rules kept here (docs/DESIGN.md, "Persistence"):
 *  - one process owns a store directory: an exclusive flock on pskv.lock,
 *    so a second pskv_open of the same directory (this process or another)
 *    gets PSKV_EBUSY instead of a second writer;
 *  - no MDB_NOSYNC, MDB_NOMETASYNC or MDB_WRITEMAP: a commit is on disk
 *    when mdb_txn_commit returns;
 *  - MDB_NOTLS: read transactions are not tied to threads (callers use
 *    thread pools);
 *  - stale reader slots of dead processes are cleared at open;
 *  - the map only grows while no read transaction of this process is open
 *    (env_lock exclusive); readers hold env_lock shared.
 * SPDX-License-Identifier: BSD-2-Clause */
#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "format.h"
#include "pskv_internal.h"

#define MAP_MIN (64ull << 20)

int pskv__mdb_err(int rc)
{
    switch (rc) {
    case 0:
        return 0;
    case MDB_NOTFOUND:
        return PSKV_ENOTFOUND;
    case MDB_MAP_FULL:
    case ENOSPC:
    case EDQUOT:
    case EFBIG: /* RLIMIT_FSIZE (with SIGXFSZ ignored) */
        return PSKV_ENOSPC;
    case MDB_INVALID:
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
    case MDB_PANIC:
        return PSKV_ECORRUPT;
    case MDB_VERSION_MISMATCH:
        return PSKV_EVERSION;
    case MDB_DBS_FULL:
        return PSKV_ERANGE;
    case MDB_READERS_FULL:
    case EAGAIN:
    case EBUSY:
        return PSKV_EBUSY;
    case ENOMEM:
        return PSKV_ENOMEM;
    default:
        return PSKV_EIO;
    }
}

bool pskv__disk_full(const char *dir, uint64_t need)
{
    /* LMDB reports a short write (a full disk, a file-size limit) as EIO:
     * tell those apart by what is left. */
    struct statvfs vfs;
    uint64_t margin = need + (1u << 20);
    if (statvfs(dir, &vfs) == 0 && (uint64_t)vfs.f_bavail * vfs.f_frsize < margin)
        return true;
    struct rlimit lim;
    char path[4096];
    struct stat st;
    return getrlimit(RLIMIT_FSIZE, &lim) == 0 && lim.rlim_cur != RLIM_INFINITY &&
           pskv__format(path, sizeof path, "%s/data.mdb", dir) >= 0 && stat(path, &st) == 0 &&
           (uint64_t)st.st_size + margin > (uint64_t)lim.rlim_cur;
}

static uint64_t unix_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int pskv__txn_begin(pskv_store *s, bool write, MDB_txn **txn)
{
    if (atomic_load(&s->map_lost))
        return PSKV_ENOMEM; /* a failed grow left LMDB without a map */
    int rc = mdb_txn_begin(s->env, NULL, write ? 0 : MDB_RDONLY, txn);
    return rc == MDB_MAP_FULL ? PSKV__MAP_FULL : pskv__mdb_err(rc);
}

/* ---------------------------------------------------------------- meta records */

/* A meta record: head | body | XXH3-64 of both, written in place (no copy
 * of a large body). */
static int meta_put2(MDB_txn *txn, MDB_dbi dbi, const char *name, const void *head,
                     size_t head_len, const void *body, size_t len)
{
    MDB_val k = {strlen(name), (void *)name}, v = {head_len + len + PSKV_FMT_CHECK_BYTES, NULL};
    int rc = mdb_put(txn, dbi, &k, &v, MDB_RESERVE);
    if (rc != 0)
        return rc == MDB_MAP_FULL ? PSKV__MAP_FULL : pskv__mdb_err(rc);
    uint8_t *out = v.mv_data;
    if (head_len > 0)
        memcpy(out, head, head_len);
    if (len > 0)
        memcpy(out + head_len, body, len);
    pskv_fmt_put64(out + head_len + len, pskv_fmt_meta_check(out, head_len + len));
    return 0;
}

static int meta_put(MDB_txn *txn, MDB_dbi dbi, const char *name, const void *body, size_t len)
{
    return meta_put2(txn, dbi, name, NULL, 0, body, len);
}

/* The body of a meta record (valid until the transaction ends), checked. */
static int meta_get(MDB_txn *txn, MDB_dbi dbi, const char *name, const uint8_t **body,
                    size_t *len)
{
    MDB_val k = {strlen(name), (void *)name}, v;
    int rc = mdb_get(txn, dbi, &k, &v);
    if (rc != 0)
        return pskv__mdb_err(rc);
    if (v.mv_size < PSKV_FMT_CHECK_BYTES)
        return PSKV_ECORRUPT;
    size_t n = v.mv_size - PSKV_FMT_CHECK_BYTES;
    if (pskv_fmt_get64((const uint8_t *)v.mv_data + n) != pskv_fmt_meta_check(v.mv_data, n))
        return PSKV_ECORRUPT;
    *body = v.mv_data;
    *len = n;
    return 0;
}

int pskv__persist_put_checkpoint(pskv_store *s, MDB_txn *txn, uint64_t seq, uint64_t *time_ns)
{
    uint8_t body[16];
    *time_ns = unix_ns();
    pskv_fmt_put64(body, seq);
    pskv_fmt_put64(body + 8, *time_ns);
    return meta_put(txn, s->meta_dbi, PSKV_FMT_KEY_CHECKPOINT, body, sizeof body);
}

int pskv__persist_put_user(pskv_store *s, MDB_txn *txn, uint64_t seq, const void *meta,
                           size_t len)
{
    uint8_t head[8];
    pskv_fmt_put64(head, seq);
    return meta_put2(txn, s->meta_dbi, PSKV_FMT_KEY_USER, head, sizeof head, meta, len);
}

static int table_record_name(const char *table, char *buf, size_t len)
{
    return pskv__format(buf, len, "%s%s", PSKV_FMT_TABLE_PREFIX, table) < 0 ? PSKV_EINVAL : 0;
}

int pskv__persist_put_table(pskv_store *s, MDB_txn *txn, const pskv_table *t)
{
    char name[PSKV_NAME_MAX + 16], config[1024];
    int n = pskv_table_options_format(&t->opts, config, sizeof config);
    if (n < 0)
        return n;
    int rc = table_record_name(t->name, name, sizeof name);
    return rc != 0 ? rc : meta_put(txn, s->meta_dbi, name, config, (size_t)n);
}

static int filter_record_name(const char *table, uint32_t i, char *buf, size_t len)
{
    return pskv__format(buf, len, "%s%s/%u", PSKV_FMT_FILTER_PREFIX, table, i) < 0 ? PSKV_EINVAL
                                                                                    : 0;
}

int pskv__persist_put_filters(pskv_store *s, MDB_txn *txn, pskv_table *t)
{
    pskv__keyfilter *kf = &t->persisted;
    char name[PSKV_NAME_MAX + 32];
    if (kf->drop_records) {
        for (uint32_t i = 0; i < PSKV_FMT_FILTER_MAX; i++) {
            if (filter_record_name(t->name, i, name, sizeof name) != 0)
                return PSKV_EINVAL;
            MDB_val k = {strlen(name), name};
            int rc = mdb_del(txn, s->meta_dbi, &k, NULL);
            if (rc != 0 && rc != MDB_NOTFOUND)
                return rc == MDB_MAP_FULL ? PSKV__MAP_FULL : pskv__mdb_err(rc);
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
            rc = meta_put(txn, s->meta_dbi, name, buf, len);
        free(buf);
        if (rc != 0)
            return rc;
    }
    return 0;
}

void pskv__persist_filters_written(pskv_table *t)
{
    pskv__keyfilter *kf = &t->persisted;
    uint32_t n = atomic_load(&kf->n);
    for (uint32_t i = 0; i < n; i++)
        kf->f[i].dirty = false;
    kf->drop_records = false;
}

/* The table's filters, in order. A series that is missing while the table
 * has rows, or damaged, is not trusted: every miss then asks LMDB. */
static int filters_load(pskv_store *s, MDB_txn *txn, pskv_table *t, uint64_t rows)
{
    pskv__keyfilter *kf = &t->persisted;
    pskv__keyfilter_init(kf, true);
    char name[PSKV_NAME_MAX + 32];
    for (uint32_t i = 0; i < PSKV_FMT_FILTER_MAX; i++) {
        const uint8_t *body;
        size_t len;
        int rc = filter_record_name(t->name, i, name, sizeof name);
        if (rc == 0)
            rc = meta_get(txn, s->meta_dbi, name, &body, &len);
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

/* ---------------------------------------------------------------- open */

/* The data file must hold every page its meta page names: a truncated file
 * would otherwise fault (SIGBUS) on first access through the map. */
static int check_file_length(pskv_store *s)
{
    MDB_envinfo info;
    MDB_stat st;
    struct stat fst;
    char path[4096];
    if (mdb_env_info(s->env, &info) != 0 || mdb_env_stat(s->env, &st) != 0)
        return PSKV_EIO;
    if (pskv__format(path, sizeof path, "%s/data.mdb", s->dir) < 0 || stat(path, &fst) != 0)
        return PSKV_EIO;
    if ((uint64_t)fst.st_size < ((uint64_t)info.me_last_pgno + 1) * st.ms_psize)
        return PSKV_ECORRUPT;
    return 0;
}

/* A new store: the meta database and its format record, in one write;
 * PSKV__MAP_FULL asks for a bigger map. */
static int format_create_once(pskv_store *s)
{
    MDB_txn *txn;
    int rc = pskv__txn_begin(s, true, &txn);
    if (rc != 0)
        return rc;
    rc = mdb_dbi_open(txn, PSKV_FMT_META_DB, MDB_CREATE, &s->meta_dbi);
    rc = rc == MDB_MAP_FULL ? PSKV__MAP_FULL : pskv__mdb_err(rc);
    uint8_t body[8];
    uint32_t magic = PSKV_FMT_MAGIC, version = PSKV_FMT_VERSION;
    memcpy(body, &magic, 4);
    memcpy(body + 4, &version, 4);
    if (rc == 0)
        rc = meta_put(txn, s->meta_dbi, PSKV_FMT_KEY_FORMAT, body, sizeof body);
    if (rc != 0) {
        mdb_txn_abort(txn);
        return rc;
    }
    rc = mdb_txn_commit(txn);
    return rc == MDB_MAP_FULL ? PSKV__MAP_FULL : pskv__mdb_err(rc);
}

static int format_create(pskv_store *s)
{
    int rc = 0;
    for (int attempt = 0;; attempt++) {
        rc = format_create_once(s);
        if (rc != PSKV__MAP_FULL || attempt == 16)
            break;
        rc = pskv__persist_grow(s, 0); /* map_size may be tiny: it grows */
        if (rc != 0)
            break;
    }
    if (rc == PSKV_EIO && pskv__disk_full(s->dir, 0))
        rc = PSKV_ENOSPC;
    return rc == PSKV__MAP_FULL ? PSKV_ENOSPC : rc;
}

/* An existing store: its format, and the last checkpoint. */
static int format_check(pskv_store *s, MDB_txn *txn)
{
    const uint8_t *body;
    size_t len;
    int rc = meta_get(txn, s->meta_dbi, PSKV_FMT_KEY_FORMAT, &body, &len);
    if (rc == PSKV_ENOTFOUND || (rc == 0 && len != 8))
        return PSKV_ECORRUPT;
    if (rc != 0)
        return rc;
    uint32_t magic, version;
    memcpy(&magic, body, 4);
    memcpy(&version, body + 4, 4);
    if (magic != PSKV_FMT_MAGIC)
        return PSKV_ECORRUPT;
    if (version != PSKV_FMT_VERSION)
        return PSKV_EVERSION; /* no migration exists yet */
    rc = meta_get(txn, s->meta_dbi, PSKV_FMT_KEY_CHECKPOINT, &body, &len);
    if (rc == PSKV_ENOTFOUND)
        return 0; /* never checkpointed */
    if (rc == 0 && len != 16)
        return PSKV_ECORRUPT;
    if (rc == 0) {
        s->ckpt_seq = pskv_fmt_get64(body);
        s->ckpt_unix_ns = pskv_fmt_get64(body + 8);
        atomic_store(&s->ckpt_seq_pub, s->ckpt_seq);
    }
    return rc;
}

int pskv__persist_open(pskv_store *s)
{
    int rc;
    char path[4096];
    struct stat fst;
    uint64_t file_bytes = 0;
    if (pskv__format(path, sizeof path, "%s/data.mdb", s->dir) >= 0 && stat(path, &fst) == 0) {
        file_bytes = (uint64_t)fst.st_size;
        if (file_bytes > 0 && file_bytes < 2 * 4096)
            return PSKV_ECORRUPT; /* not even two meta pages */
    }
    uint64_t map = s->opts.map_size;
    if (map == 0)
        map = 2 * file_bytes > MAP_MIN ? 2 * file_bytes : MAP_MIN;
    if (map < file_bytes)
        map = file_bytes;
    long page = sysconf(_SC_PAGESIZE);
    map = (map + (uint64_t)page - 1) / (uint64_t)page * (uint64_t)page;
    rc = pskv__mdb_err(mdb_env_create(&s->env));
    if (rc != 0)
        return rc;
    mdb_env_set_maxdbs(s->env, PSKV_FMT_MAX_TABLES + 1);
    mdb_env_set_maxreaders(s->env, 1024);
    mdb_env_set_mapsize(s->env, (size_t)map);
    rc = pskv__mdb_err(mdb_env_open(s->env, s->dir, MDB_NOTLS, 0644));
    if (rc != 0)
        return rc;
    int dead = 0;
    mdb_reader_check(s->env, &dead); /* slots of crashed processes */
    if (file_bytes > 0 && (rc = check_file_length(s)) != 0)
        return rc;
    MDB_txn *txn;
    rc = pskv__txn_begin(s, false, &txn);
    if (rc != 0)
        return rc;
    int open_rc = mdb_dbi_open(txn, PSKV_FMT_META_DB, 0, &s->meta_dbi);
    if (open_rc == MDB_NOTFOUND) {
        mdb_txn_abort(txn);
        if (file_bytes > 0) {
            /* Pages but no meta database: could be a store interrupted
             * before its first commit (then it is empty) or a foreign
             * LMDB file. Only an empty main database is taken. */
            MDB_stat st;
            rc = pskv__txn_begin(s, false, &txn);
            if (rc == 0) {
                MDB_dbi main_dbi;
                rc = pskv__mdb_err(mdb_dbi_open(txn, NULL, 0, &main_dbi));
                if (rc == 0 && mdb_stat(txn, main_dbi, &st) == 0 && st.ms_entries > 0)
                    rc = PSKV_ECORRUPT;
                mdb_txn_abort(txn);
            }
            if (rc != 0)
                return rc;
        }
        return format_create(s);
    }
    rc = pskv__mdb_err(open_rc);
    if (rc == 0)
        rc = format_check(s, txn);
    if (rc == 0)
        return pskv__mdb_err(mdb_txn_commit(txn)); /* keeps the meta handle */
    mdb_txn_abort(txn);
    return rc;
}

void pskv__persist_close(pskv_store *s)
{
    if (s->env != NULL)
        mdb_env_close(s->env);
    s->env = NULL;
}

/* ---------------------------------------------------------------- tables */

int pskv__persist_table_schema(pskv_store *s, const char *name, pskv_table_options *o)
{
    char rec[PSKV_NAME_MAX + 16];
    int rc = table_record_name(name, rec, sizeof rec);
    if (rc != 0)
        return rc;
    MDB_txn *txn;
    pthread_rwlock_rdlock(&s->env_lock);
    rc = pskv__txn_begin(s, false, &txn);
    if (rc == 0) {
        const uint8_t *body;
        size_t len;
        rc = meta_get(txn, s->meta_dbi, rec, &body, &len);
        if (rc == 0) {
            char *config = malloc(len + 1);
            rc = config ? 0 : PSKV_ENOMEM;
            if (rc == 0) {
                memcpy(config, body, len);
                config[len] = '\0';
                pskv_table_options_init(o);
                /* A record that does not parse is damage, not bad input. */
                if (pskv_table_options_parse(o, config) != 0 ||
                    pskv_table_options_validate(o) != 0 || o->dim == 0)
                    rc = PSKV_ECORRUPT;
                free(config);
            }
        }
        mdb_txn_abort(txn);
    }
    pthread_rwlock_unlock(&s->env_lock);
    return rc;
}

static int rows_db_name(const char *table, char *buf, size_t len)
{
    return pskv__format(buf, len, "%s%s", PSKV_FMT_ROWS_PREFIX, table) < 0 ? PSKV_EINVAL : 0;
}

static int table_attach_once(pskv_store *s, pskv_table *t, bool create, const char *db)
{
    MDB_txn *txn;
    /* Creating writes the schema at once: a table exists from its first
     * open on, with no rows until the first checkpoint. */
    int rc = pskv__txn_begin(s, create, &txn);
    if (rc != 0)
        return rc;
    MDB_dbi dbi;
    rc = mdb_dbi_open(txn, db, create ? MDB_CREATE : 0, &dbi);
    rc = rc == MDB_MAP_FULL ? PSKV__MAP_FULL : pskv__mdb_err(rc);
    if (rc == PSKV_ENOTFOUND)
        rc = PSKV_ECORRUPT; /* a schema without its rows database */
    if (rc == 0 && create)
        rc = pskv__persist_put_table(s, txn, t);
    MDB_stat st;
    if (rc == 0 && !create)
        rc = pskv__mdb_err(mdb_stat(txn, dbi, &st));
    if (rc == 0 && !create)
        rc = filters_load(s, txn, t, st.ms_entries);
    if (rc == 0 && create)
        pskv__keyfilter_init(&t->persisted, true);
    if (rc == 0) {
        rc = mdb_txn_commit(txn); /* keeps the handle */
        rc = rc == MDB_MAP_FULL ? PSKV__MAP_FULL : pskv__mdb_err(rc);
    } else {
        mdb_txn_abort(txn);
    }
    if (rc != 0) {
        pskv__keyfilter_free(&t->persisted);
        return rc;
    }
    t->dbi = dbi;
    atomic_store(&t->cold_rows, create ? 0 : (uint64_t)st.ms_entries);
    return 0;
}

int pskv__persist_table_attach(pskv_store *s, pskv_table *t, bool create)
{
    char db[PSKV_NAME_MAX + 16];
    int rc = rows_db_name(t->name, db, sizeof db);
    for (int attempt = 0; rc == 0; attempt++) {
        rc = table_attach_once(s, t, create, db);
        if (rc != PSKV__MAP_FULL || attempt == 16)
            break;
        rc = pskv__persist_grow(s, 0); /* a full map: grow it and write again */
    }
    if (rc == PSKV_EIO && create && pskv__disk_full(s->dir, 0))
        rc = PSKV_ENOSPC;
    return rc == PSKV__MAP_FULL ? PSKV_ENOSPC : rc;
}

/* ---------------------------------------------------------------- cold rows */

int pskv__cold_find(pskv_table *t, pskv__cold *c, uint64_t key, const void **row)
{
    pskv_store *s = t->store;
    if (c->txn == NULL) {
        pthread_rwlock_rdlock(&s->env_lock);
        MDB_txn *txn;
        int rc = pskv__txn_begin(s, false, &txn);
        if (rc != 0) {
            pthread_rwlock_unlock(&s->env_lock);
            return rc;
        }
        c->txn = txn;
    }
    uint8_t kb[8];
    pskv_fmt_key(kb, key);
    MDB_val k = {8, kb}, v;
    atomic_fetch_add_explicit(&t->n_cold_lookups, 1, memory_order_relaxed);
    int rc = mdb_get(c->txn, t->dbi, &k, &v);
    if (rc == MDB_NOTFOUND)
        return 0;
    if (rc != 0)
        return pskv__mdb_err(rc);
    if (v.mv_size != (size_t)t->row_bytes + PSKV_FMT_CHECK_BYTES ||
        pskv_fmt_get64((const uint8_t *)v.mv_data + t->row_bytes) !=
            pskv_fmt_row_check(key, v.mv_data, t->row_bytes))
        return PSKV_ECORRUPT;
    *row = v.mv_data;
    return 1;
}

int pskv__cold_keys(pskv_table *t, uint64_t after, bool first, uint64_t *keys, uint32_t max,
                    uint32_t *n)
{
    pskv_store *s = t->store;
    *n = 0;
    pthread_rwlock_rdlock(&s->env_lock);
    MDB_txn *txn;
    MDB_cursor *cur;
    int rc = pskv__txn_begin(s, false, &txn);
    if (rc == 0) {
        rc = pskv__mdb_err(mdb_cursor_open(txn, t->dbi, &cur));
        if (rc == 0) {
            uint8_t kb[8];
            pskv_fmt_key(kb, after);
            MDB_val k = {8, kb}, v;
            int mrc = mdb_cursor_get(cur, &k, &v, first ? MDB_FIRST : MDB_SET_RANGE);
            if (mrc == 0 && !first && pskv_fmt_key_get(k.mv_data) == after)
                mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
            while (mrc == 0 && *n < max) {
                if (k.mv_size != 8) {
                    mrc = MDB_CORRUPTED;
                    break;
                }
                keys[(*n)++] = pskv_fmt_key_get(k.mv_data);
                mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
            }
            rc = mrc == MDB_NOTFOUND ? 0 : pskv__mdb_err(mrc);
            mdb_cursor_close(cur);
        }
        mdb_txn_abort(txn);
    }
    pthread_rwlock_unlock(&s->env_lock);
    return rc;
}

void pskv__cold_end(pskv_table *t, pskv__cold *c)
{
    if (c->txn == NULL)
        return;
    mdb_txn_abort(c->txn);
    c->txn = NULL;
    pthread_rwlock_unlock(&t->store->env_lock);
}

/* ---------------------------------------------------------------- caller's metadata */

int pskv_checkpoint_meta(pskv_store *s, void *buf, size_t cap, size_t *len, uint64_t *seq)
{
    if (s == NULL || len == NULL || (buf == NULL && cap > 0))
        return PSKV_EINVAL;
    if (s->env == NULL)
        return PSKV_ENOTSUP;
    pthread_rwlock_rdlock(&s->env_lock);
    MDB_txn *txn;
    int rc = pskv__txn_begin(s, false, &txn);
    if (rc == 0) {
        const uint8_t *body, *bytes;
        size_t body_len, n;
        uint64_t written_by;
        rc = meta_get(txn, s->meta_dbi, PSKV_FMT_KEY_USER, &body, &body_len);
        if (rc == 0 && pskv_fmt_user_get(body, body_len, &written_by, &bytes, &n) != 0)
            rc = PSKV_ECORRUPT;
        if (rc == 0) {
            *len = n;
            if (seq != NULL)
                *seq = written_by;
            if (n > cap)
                rc = PSKV_ERANGE;
            else if (n > 0)
                memcpy(buf, bytes, n);
        }
        mdb_txn_abort(txn);
    }
    pthread_rwlock_unlock(&s->env_lock);
    return rc;
}

/* ---------------------------------------------------------------- map, backup */

/* Is there address space for `more` bytes of new mapping? LMDB unmaps the
 * old map before it maps the grown one and has no way back when that
 * fails, so a grow is only attempted when it will fit (RLIMIT_AS, or an
 * exhausted address space). */
static bool address_space_for(uint64_t more)
{
    if (more == 0)
        return true;
    void *probe = mmap(NULL, (size_t)more, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                       -1, 0);
    if (probe == MAP_FAILED)
        return false;
    munmap(probe, (size_t)more);
    return true;
}

int pskv__persist_grow(pskv_store *s, uint64_t need)
{
    MDB_envinfo info;
    pthread_rwlock_wrlock(&s->env_lock);
    int rc = atomic_load(&s->map_lost) ? PSKV_ENOMEM : pskv__mdb_err(mdb_env_info(s->env, &info));
    if (rc == 0) {
        uint64_t size = (uint64_t)info.me_mapsize * 2;
        if (size < need)
            size = need;
        long page = sysconf(_SC_PAGESIZE);
        size = (size + (uint64_t)page - 1) / (uint64_t)page * (uint64_t)page;
        if (!address_space_for(size - (uint64_t)info.me_mapsize)) {
            rc = PSKV_ENOMEM; /* the old map stays as it was */
        } else {
            int mrc = mdb_env_set_mapsize(s->env, (size_t)size);
            /* Lost the race for the address space after all: LMDB has no
             * map now, and every later call fails with PSKV_ENOMEM. */
            if (mrc != 0 && mrc != EINVAL)
                atomic_store(&s->map_lost, true);
            rc = pskv__mdb_err(mrc);
        }
        if (rc == 0)
            atomic_fetch_add(&s->n_map_grows, 1);
    }
    pthread_rwlock_unlock(&s->env_lock);
    return rc;
}

/* Pages in use (the file's meaningful length); 0 when unknown. Caller
 * holds env_lock or ckpt_lock (no grow meanwhile). */
static uint64_t used_bytes(pskv_store *s, uint64_t *map_size)
{
    MDB_envinfo info;
    MDB_stat st;
    if (s->env == NULL || atomic_load(&s->map_lost) || mdb_env_info(s->env, &info) != 0 ||
        mdb_env_stat(s->env, &st) != 0)
        return 0;
    if (map_size != NULL)
        *map_size = info.me_mapsize;
    return ((uint64_t)info.me_last_pgno + 1) * st.ms_psize;
}

int pskv__persist_reserve_map(pskv_store *s, uint64_t more)
{
    uint64_t map = 0, used = used_bytes(s, &map);
    if (used == 0)
        return atomic_load(&s->map_lost) ? PSKV_ENOMEM : PSKV_EIO;
    if (used + more <= map)
        return 0;
    return pskv__persist_grow(s, used + more);
}

uint64_t pskv__persist_file_bytes(pskv_store *s)
{
    if (s->env == NULL)
        return 0;
    pthread_rwlock_rdlock(&s->env_lock);
    uint64_t used = used_bytes(s, NULL);
    pthread_rwlock_unlock(&s->env_lock);
    return used;
}
