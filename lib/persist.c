/* A durable store's LMDB environment: opening it safely, the format,
 * schema and count records, the format-1 upgrade, reading rows that live
 * only in LMDB ("cold" rows, after a reopen), growing the map, and
 * reopening the environment after LMDB gave up on it. The layout and the
 * record decoders are in format.h; the checkpoint that writes rows is in
 * checkpoint.c; the directory lock in dirlock.c, pskv.seq in seqfile.c,
 * backups in backup.c.
 *
 * Rules kept here (docs/DESIGN.md, "Persistence"):
 *  - no MDB_NOSYNC, MDB_NOMETASYNC or MDB_WRITEMAP: a commit is on disk
 *    when mdb_txn_commit returns;
 *  - MDB_NOTLS: read transactions are not tied to threads (callers use
 *    thread pools);
 *  - stale reader slots of dead processes (a `pskv dump` killed inside its
 *    read transaction) are cleared at open and before every write
 *    transaction: LMDB reuses no page freed after the oldest reader's
 *    snapshot, so one dead reader would make the file grow for good;
 *  - every value read through the map is bounded by the data file first
 *    (LMDB does not check its node sizes);
 *  - a record that must exist and is gone, a count that disagrees, a store
 *    behind pskv.seq: PSKV_ECORRUPT, never "new" or "absent";
 *  - the map only grows while no read transaction of this process is open
 *    (env_lock exclusive); readers hold env_lock shared; a grow is tried
 *    only when the address space for it is there.
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
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "array.h"
#include "changes.h"
#include "errors.h"
#include "format.h"
#include "options.h"
#include "persist.h"
#include "pskv_internal.h"
#include "seqfile.h"

/* Map growth: at least need bytes (0: double). Takes env_lock exclusive. */
static int persist_grow(pskv_store *s, uint64_t need);

_Static_assert(PSKV_FMT_NAME_MAX == PSKV_NAME_MAX, "format.h and pskv.h agree on table names");

#define MAP_MIN (64ull << 20)
#define MAP_RETRIES 16

int pskv__persist_err(int rc)
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

bool pskv__persist_disk_full(const char *dir, uint64_t need)
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

int pskv__persist_write_err(int rc) { return rc == MDB_MAP_FULL ? PSKV__MAP_FULL : pskv__persist_err(rc); }

/* Clear the reader slots of dead processes (the owner only: a read-only
 * reader may not write the lock file's table). */
static void readers_clear_stale(pskv_store *s)
{
    int dead = 0;
    if (mdb_reader_check(s->env, &dead) == 0 && dead > 0)
        atomic_fetch_add(&s->n_stale_readers, (uint64_t)dead);
}

int pskv__persist_txn_begin(pskv_store *s, bool write, MDB_txn **txn)
{
    if (atomic_load(&s->env_lost))
        return PSKV_ENOMEM; /* a failed grow left LMDB without a map */
    if (write)
        readers_clear_stale(s);
    return pskv__persist_write_err(mdb_txn_begin(s->env, NULL, write ? 0 : MDB_RDONLY, txn));
}

int pskv__persist_write_growing(pskv_store *s, int (*once)(pskv_store *s, void *arg), void *arg,
                        uint64_t need)
{
    int rc;
    for (int attempt = 0;; attempt++) {
        rc = once(s, arg);
        if (rc != PSKV__MAP_FULL || attempt == MAP_RETRIES)
            break;
        rc = persist_grow(s, 0); /* a full map: grow it and write again */
        if (rc != 0)
            break;
    }
    if (rc == PSKV_EIO && pskv__persist_disk_full(s->dir, need))
        rc = PSKV_ENOSPC;
    return rc == PSKV__MAP_FULL ? PSKV_ENOSPC : rc;
}

/* ---------------------------------------------------------------- records of the meta database */

/* A record of the meta database: head | body | XXH3-64 of both, written in place (no copy
 * of a large body). */
static int record_put_parts(MDB_txn *txn, MDB_dbi dbi, const char *name, const void *head,
                     size_t head_len, const void *body, size_t len)
{
    MDB_val k = {strlen(name), (void *)name}, v = {head_len + len + PSKV_FMT_CHECK_BYTES, NULL};
    int rc = mdb_put(txn, dbi, &k, &v, MDB_RESERVE);
    if (rc != 0)
        return pskv__persist_write_err(rc);
    uint8_t *out = v.mv_data;
    if (head_len > 0)
        memcpy(out, head, head_len);
    if (len > 0)
        memcpy(out + head_len, body, len);
    pskv_fmt_put64(out + head_len + len, pskv_fmt_record_check(out, head_len + len));
    return 0;
}

static int record_put(MDB_txn *txn, MDB_dbi dbi, const char *name, const void *body, size_t len)
{
    return record_put_parts(txn, dbi, name, NULL, 0, body, len);
}

const void *pskv__persist_map_find(const char *data_path)
{
    /* LMDB does not say where it mapped the file: find the mapping of
     * that inode. Called at open and after a grow (a remap may move). */
    struct stat st;
    if (stat(data_path, &st) != 0)
        return NULL;
    FILE *f = fopen("/proc/self/maps", "re");
    if (f == NULL)
        return NULL;
    char line[4352];
    uintptr_t found = 0;
    int matches = 0;
    while (fgets(line, sizeof line, f) != NULL) {
        unsigned long start, end, off, ino;
        unsigned maj, min;
        char perms[8];
        if (sscanf(line, "%lx-%lx %7s %lx %x:%x %lu", &start, &end, perms, &off, &maj, &min,
                   &ino) != 7)
            continue;
        if (ino == (unsigned long)st.st_ino && makedev(maj, min) == st.st_dev && off == 0) {
            found = start;
            matches++;
        }
    }
    fclose(f);
    return matches == 1 ? (const void *)found : NULL; /* two maps of it: unknown */
}

/* The data file's pages as mapped: values are read only inside them (a
 * span of UINT64_MAX from base NULL when the map could not be found). */
void pskv__persist_file_span(pskv_store *s, const void **base, uint64_t *span)
{
    MDB_envinfo info;
    *base = NULL;
    *span = UINT64_MAX;
    if (s->map_base != NULL && mdb_env_info(s->env, &info) == 0) {
        *base = s->map_base;
        *span = ((uint64_t)info.me_last_pgno + 1) * s->db_psize;
    }
}

/* The body of a record (valid until the transaction ends), checked;
 * read transactions only (a write one's new pages are not in the map). */
static int record_get(pskv_store *s, MDB_txn *txn, const char *name, const uint8_t **body,
                    size_t *len)
{
    MDB_val k = {strlen(name), (void *)name}, v;
    int rc = mdb_get(txn, s->records_dbi, &k, &v);
    if (rc != 0)
        return pskv__persist_err(rc);
    const void *base;
    uint64_t span;
    pskv__persist_file_span(s, &base, &span);
    if (!pskv_fmt_in_span(base, span, v.mv_data, v.mv_size) ||
        pskv_fmt_record_open(v.mv_data, v.mv_size, body, len) != 0)
        return PSKV_ECORRUPT;
    return 0;
}

int pskv__persist_put_checkpoint(pskv_store *s, MDB_txn *txn, uint64_t seq, uint64_t *time_ns)
{
    *time_ns = unix_ns();
    return pskv__persist_put_checkpoint_at(s, txn, seq, *time_ns);
}

int pskv__persist_put_checkpoint_at(pskv_store *s, MDB_txn *txn, uint64_t seq, uint64_t time_ns)
{
    uint8_t body[16];
    pskv_fmt_pair_put(body, seq, time_ns);
    return record_put(txn, s->records_dbi, PSKV_FMT_KEY_CHECKPOINT, body, sizeof body);
}

/* A small write transaction right after a checkpoint commits: the
 * checkpoint record put again as it is. LMDB reuses a page only once two
 * later transactions have committed (the last commit stays readable), so
 * without it the next checkpoint could not reuse the pages this one
 * freed, and the data file would settle at the live pages plus two
 * checkpoints' worth of rewritten pages instead of one (docs/DESIGN.md,
 * "Data file size"). The store's state does not change. */
int pskv__persist_tick(pskv_store *s, uint64_t *txnid)
{
    MDB_txn *txn;
    int rc = pskv__persist_txn_begin(s, true, &txn);
    if (rc != 0)
        return rc;
    rc = pskv__persist_put_checkpoint_at(s, txn, s->ckpt_seq, s->ckpt_unix_ns);
    if (rc != 0) {
        mdb_txn_abort(txn);
        return rc;
    }
    *txnid = mdb_txn_id(txn);
    return pskv__persist_write_err(mdb_txn_commit(txn));
}

/* Record and database names of a table (format.h). */
static int table_record_name(const char *table, char *buf, size_t len)
{
    return pskv__format(buf, len, "%s%s", PSKV_FMT_TABLE_PREFIX, table) < 0 ? PSKV_EINVAL : 0;
}

/* "<prefix><table>": a record's or a database's name for a table. */
static int table_key(const char *prefix, const char *table, char *buf, size_t len)
{
    return pskv__format(buf, len, "%s%s", prefix, table) < 0 ? PSKV_EINVAL : 0;
}

static int count_record_name(const char *table, char *buf, size_t len)
{
    return table_key(PSKV_FMT_COUNT_PREFIX, table, buf, len);
}

static int rows_db_name(const char *table, char *buf, size_t len)
{
    return table_key(PSKV_FMT_ROWS_PREFIX, table, buf, len);
}

static int version_record_name(const char *table, char *buf, size_t len)
{
    return table_key(PSKV_FMT_VERSION_PREFIX, table, buf, len);
}

/* A table's record of two u64 (a count, a version) under prefix. */
static int pair_record_put(pskv_store *s, MDB_txn *txn, const char *prefix, const char *table,
                           uint64_t a, uint64_t b)
{
    char name[PSKV_NAME_MAX + 16];
    uint8_t body[16];
    pskv_fmt_pair_put(body, a, b);
    int rc = table_key(prefix, table, name, sizeof name);
    return rc != 0 ? rc : record_put(txn, s->records_dbi, name, body, sizeof body);
}

int pskv__persist_put_count(pskv_store *s, MDB_txn *txn, const char *table, uint64_t rows,
                            uint64_t digest)
{
    return pair_record_put(s, txn, PSKV_FMT_COUNT_PREFIX, table, rows, digest);
}

int pskv__persist_put_version(pskv_store *s, MDB_txn *txn, const char *table, uint64_t version,
                              bool clean)
{
    return pair_record_put(s, txn, PSKV_FMT_VERSION_PREFIX, table, version, clean ? 1 : 0);
}

/* The table's version record: 0 (*version, *clean), PSKV_ENOTFOUND (a
 * table no checkpoint of format 3 has written), PSKV_ECORRUPT. */
int pskv__persist_version_get(pskv_store *s, MDB_txn *txn, const char *table, uint64_t *version,
                              bool *clean)
{
    char name[PSKV_NAME_MAX + 16];
    const uint8_t *body;
    size_t len;
    uint64_t flag;
    int rc = version_record_name(table, name, sizeof name);
    if (rc == 0)
        rc = record_get(s, txn, name, &body, &len);
    if (rc == 0 && (pskv_fmt_pair_get(body, len, version, &flag) != 0 || flag > 1))
        rc = PSKV_ECORRUPT;
    *clean = rc == 0 && flag == 1;
    return rc;
}

int pskv__persist_put_user(pskv_store *s, MDB_txn *txn, uint64_t seq, const void *meta,
                           size_t len)
{
    uint8_t head[8];
    pskv_fmt_put64(head, seq);
    return record_put_parts(txn, s->records_dbi, PSKV_FMT_KEY_USER, head, sizeof head, meta, len);
}


int pskv__persist_put_table(pskv_store *s, MDB_txn *txn, const pskv_table *t)
{
    char name[PSKV_NAME_MAX + 16], config[1024];
    int n = pskv_table_options_format(&t->opts, config, sizeof config);
    if (n < 0)
        return n;
    int rc = table_record_name(t->name, name, sizeof name);
    return rc != 0 ? rc : record_put(txn, s->records_dbi, name, config, (size_t)n);
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
            int rc = mdb_del(txn, s->records_dbi, &k, NULL);
            if (rc != 0 && rc != MDB_NOTFOUND)
                return pskv__persist_write_err(rc);
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
            rc = record_put(txn, s->records_dbi, name, buf, len);
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
            rc = record_get(s, txn, name, &body, &len);
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

/* The data file must hold every page its meta page names: a truncated file
 * would otherwise fault (SIGBUS) on first access through the map. */
int pskv__persist_file_check(struct MDB_env *env, const char *dir)
{
    MDB_envinfo info;
    MDB_stat st;
    struct stat fst;
    char path[4096];
    if (mdb_env_info(env, &info) != 0 || mdb_env_stat(env, &st) != 0)
        return PSKV_EIO;
    if (pskv__format(path, sizeof path, "%s/data.mdb", dir) < 0 || stat(path, &fst) != 0)
        return PSKV_EIO;
    if ((uint64_t)fst.st_size < ((uint64_t)info.me_last_pgno + 1) * st.ms_psize)
        return PSKV_ECORRUPT;
    return 0;
}

/* A new store: the meta database and its format record, in one write;
 * PSKV__MAP_FULL asks for a bigger map (map_size may be tiny: it grows). */
static int format_create_once(pskv_store *s, void *arg)
{
    (void)arg;
    MDB_txn *txn;
    int rc = pskv__persist_txn_begin(s, true, &txn);
    if (rc != 0)
        return rc;
    rc = pskv__persist_write_err(mdb_dbi_open(txn, PSKV_FMT_META_DB, MDB_CREATE, &s->records_dbi));
    uint8_t body[8];
    pskv_fmt_format_put(body, PSKV_FMT_VERSION);
    if (rc == 0)
        rc = record_put(txn, s->records_dbi, PSKV_FMT_KEY_FORMAT, body, sizeof body);
    uint64_t created_ns;
    if (rc == 0) /* "never checkpointed" is a record too: its absence is damage */
        rc = pskv__persist_put_checkpoint(s, txn, 0, &created_ns);
    if (rc != 0) {
        mdb_txn_abort(txn);
        return rc;
    }
    return pskv__persist_write_err(mdb_txn_commit(txn));
}

/* An existing store: its format, and the last checkpoint. *version is
 * the store's format version (PSKV_FMT_VERSION_MIN.. are opened). */
static int format_check(pskv_store *s, MDB_txn *txn, uint32_t *version)
{
    const uint8_t *body;
    size_t len;
    uint32_t magic;
    int rc = record_get(s, txn, PSKV_FMT_KEY_FORMAT, &body, &len);
    if (rc == PSKV_ENOTFOUND || (rc == 0 && pskv_fmt_format_get(body, len, &magic, version) != 0))
        return PSKV_ECORRUPT;
    if (rc != 0)
        return rc;
    if (magic != PSKV_FMT_MAGIC)
        return PSKV_ECORRUPT;
    if (*version < PSKV_FMT_VERSION_MIN || *version > PSKV_FMT_VERSION)
        return PSKV_EVERSION;
    rc = record_get(s, txn, PSKV_FMT_KEY_CHECKPOINT, &body, &len);
    if (rc == PSKV_ENOTFOUND && *version == 1)
        return 0; /* format 1 wrote none before the first checkpoint */
    if (rc == PSKV_ENOTFOUND)
        return PSKV_ECORRUPT; /* written at creation: gone means damage */
    uint64_t seq, ns;
    if (rc == 0 && pskv_fmt_pair_get(body, len, &seq, &ns) != 0)
        return PSKV_ECORRUPT;
    if (rc == 0) {
        s->ckpt_seq = seq;
        s->ckpt_unix_ns = ns;
        atomic_store(&s->ckpt_seq_pub, s->ckpt_seq);
    }
    return rc;
}

/* ---------------------------------------------------------------- schemas */

/* A schema record's body: the table's canonical config string. */
static int schema_decode(const uint8_t *body, size_t len, pskv_table_options *o)
{
    char *config = malloc(len + 1);
    if (config == NULL)
        return PSKV_ENOMEM;
    memcpy(config, body, len);
    config[len] = '\0';
    pskv_table_options_init(o);
    /* A record that does not parse is damage, not bad input. */
    int rc = pskv_table_options_parse(o, config) != 0 || pskv_table_options_validate(o) != 0 ||
                     o->dim == 0
                 ? PSKV_ECORRUPT
                 : 0;
    free(config);
    return rc;
}

/* Does anything of table name exist besides its schema record (its rows
 * database or its count record)? */
static bool table_traces(pskv_store *s, MDB_txn *txn, const char *name)
{
    char db[PSKV_NAME_MAX + 16], rec[PSKV_NAME_MAX + 16];
    MDB_dbi main_dbi;
    const uint8_t *body;
    size_t len;
    if (rows_db_name(name, db, sizeof db) != 0 || count_record_name(name, rec, sizeof rec) != 0)
        return false;
    MDB_val k = {strlen(db), db}, v;
    if (mdb_dbi_open(txn, NULL, 0, &main_dbi) == 0 && mdb_get(txn, main_dbi, &k, &v) == 0)
        return true;
    return record_get(s, txn, rec, &body, &len) != PSKV_ENOTFOUND;
}

/* ---------------------------------------------------------------- upgrade */

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
    int rc = table_record_name(table, rec, sizeof rec) != 0 ||
                     rows_db_name(table, db, sizeof db) != 0
                 ? PSKV_EINVAL
                 : record_get(s, txn, rec, &body, &len);
    if (rc != 0)
        return rc == PSKV_ENOTFOUND ? PSKV_ECORRUPT : rc;
    rc = schema_decode(body, len, &o);
    if (rc != 0)
        return rc;
    const size_t row_bytes = pskv__optimizer_row_bytes(o.optimizer, o.dim);
    MDB_dbi dbi;
    MDB_cursor *cur;
    rc = pskv__persist_err(mdb_dbi_open(txn, db, 0, &dbi));
    if (rc == PSKV_ENOTFOUND)
        return PSKV_ECORRUPT;
    if (rc == 0)
        rc = pskv__persist_err(mdb_cursor_open(txn, dbi, &cur));
    if (rc != 0)
        return rc;
    const void *base;
    uint64_t span;
    pskv__persist_file_span(s, &base, &span);
    MDB_val k, v;
    int mrc;
    for (mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); mrc == 0;
         mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        uint64_t check;
        if (k.mv_size != 8 || !pskv_fmt_in_span(base, span, v.mv_data, v.mv_size) ||
            !pskv_fmt_row_ok(pskv_fmt_key_get(k.mv_data), v.mv_data, v.mv_size, row_bytes,
                             &check)) {
            mrc = MDB_CORRUPTED; /* a damaged store is not blessed as format 2 */
            break;
        }
        c->rows++;
        c->digest += check;
    }
    mdb_cursor_close(cur);
    return mrc == MDB_NOTFOUND ? 0 : pskv__persist_err(mrc);
}

typedef struct upgrade_write {
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
        rc = record_put(txn, s->records_dbi, PSKV_FMT_KEY_FORMAT, fmt, sizeof fmt);
    if (rc != 0) {
        mdb_txn_abort(txn);
        return rc;
    }
    return pskv__persist_write_err(mdb_txn_commit(txn));
}

/* The upgrade's one write transaction. */
static int upgrade_write_once(pskv_store *s, void *arg)
{
    const upgrade_write *w = arg;
    MDB_txn *txn;
    int rc = pskv__persist_txn_begin(s, true, &txn);
    if (rc != 0)
        return rc;
    for (uint32_t i = 0; i < w->n && rc == 0; i++)
        rc = pskv__persist_put_count(s, txn, w->counts[i].name, w->counts[i].rows,
                                     w->counts[i].digest);
    uint64_t ns;
    if (rc == 0 && !w->has_ckpt)
        rc = pskv__persist_put_checkpoint(s, txn, 0, &ns);
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
    int rc = pskv__persist_txn_begin(s, false, &txn);
    if (rc != 0)
        return rc;
    rc = pskv__persist_err(mdb_cursor_open(txn, s->records_dbi, &cur));
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
            rc = pskv__persist_err(mrc);
        mdb_cursor_close(cur);
    }
    for (uint32_t i = 0; i < n && rc == 0; i++)
        rc = upgrade_walk(s, txn, counts[i].name, &counts[i]);
    const uint8_t *body;
    size_t len;
    *has_ckpt = rc == 0 && record_get(s, txn, PSKV_FMT_KEY_CHECKPOINT, &body, &len) == 0;
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
    upgrade_write w = {counts, n, has_ckpt};
    return pskv__persist_write_growing(s, upgrade_write_once, &w, 0);
}

/* Format 2 -> 3: every row value gains its version (0) after the state,
 * its check taken again over both; the count records follow; the undo
 * (format-2 values) is emptied, so at_seq reaches only the upgraded
 * checkpoint. One write transaction: a crash leaves format 2 as it was.
 * The rows were checked by upgrade_scan from the same snapshot. */
typedef struct upgrade_rows {
    upgrade_count *counts;
    uint32_t n;
} upgrade_rows;

static int upgrade_table_rows(pskv_store *s, MDB_txn *txn, upgrade_count *c, uint8_t **buf,
                              size_t *buf_cap)
{
    char rec[PSKV_NAME_MAX + 16], db[PSKV_NAME_MAX + 16];
    MDB_val k, v;
    int rc = table_record_name(c->name, rec, sizeof rec) != 0 ||
                     rows_db_name(c->name, db, sizeof db) != 0
                 ? PSKV_EINVAL
                 : 0;
    MDB_val rk = {strlen(rec), rec};
    if (rc == 0)
        rc = pskv__persist_err(mdb_get(txn, s->records_dbi, &rk, &v));
    pskv_table_options o;
    if (rc == 0)
        rc = v.mv_size < PSKV_FMT_CHECK_BYTES ? PSKV_ECORRUPT
                                              : schema_decode(v.mv_data, v.mv_size -
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
    rc = pskv__persist_write_err(mdb_dbi_open(txn, db, 0, &dbi));
    if (rc == 0)
        rc = pskv__persist_write_err(mdb_cursor_open(txn, dbi, &cur));
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
        return pskv__persist_write_err(mrc);
    return pskv__persist_put_count(s, txn, c->name, c->rows, c->digest);
}

static int upgrade_rows_once(pskv_store *s, void *arg)
{
    upgrade_rows *u = arg;
    MDB_txn *txn;
    uint8_t *buf = NULL;
    size_t buf_cap = 0;
    int rc = pskv__persist_txn_begin(s, true, &txn);
    if (rc != 0)
        return rc;
    for (uint32_t i = 0; i < u->n && rc == 0; i++)
        rc = upgrade_table_rows(s, txn, &u->counts[i], &buf, &buf_cap);
    free(buf);
    MDB_dbi undo;
    int urc = rc == 0 ? mdb_dbi_open(txn, PSKV_FMT_UNDO_DB, 0, &undo) : 0;
    if (rc == 0 && urc == 0)
        rc = pskv__persist_write_err(mdb_drop(txn, undo, 0));
    else if (rc == 0 && urc != MDB_NOTFOUND)
        rc = pskv__persist_write_err(urc);
    return upgrade_commit(s, txn, rc, 3);
}

/* Format 3 -> 4: more than one undo generation (one database per slot,
 * created by undo_attach). Format 3's one generation, in slot 0, is read
 * as it is: only the format record changes. */
static int upgrade_to_4_once(pskv_store *s, void *arg)
{
    (void)arg;
    MDB_txn *txn;
    int rc = pskv__persist_txn_begin(s, true, &txn);
    if (rc != 0)
        return rc;
    return upgrade_commit(s, txn, 0, 4);
}

/* Open a store of an older format as the current one, one step at a time
 * (each step one transaction). */
static int upgrade(pskv_store *s, uint32_t version)
{
    int rc = 0;
    if (version <= 2) {
        upgrade_count *counts = NULL;
        uint32_t n = 0;
        bool has_ckpt = false;
        rc = upgrade_scan(s, &counts, &n, &has_ckpt);
        if (rc == 0 && version == 1)
            rc = upgrade_from_1(s, counts, n, has_ckpt);
        upgrade_rows u = {counts, n};
        if (rc == 0)
            rc = pskv__persist_write_growing(s, upgrade_rows_once, &u, 0);
        free(counts);
    }
    if (rc == 0)
        rc = pskv__persist_write_growing(s, upgrade_to_4_once, NULL, 0);
    return rc;
}

/* ---------------------------------------------------------------- open */

/* Create and open the environment with a map of map bytes (readonly: a
 * reader beside the owner, which may be another process). */
static int env_start_as(pskv_store *s, uint64_t map, bool readonly)
{
    char path[4096];
    int rc = pskv__persist_err(mdb_env_create(&s->env));
    if (rc != 0)
        return rc;
    mdb_env_set_maxdbs(s->env, PSKV_FMT_MAX_TABLES + 1 + PSKV_UNDO_KEEP_MAX); /* + meta, undo */
    mdb_env_set_maxreaders(s->env, 1024);
    mdb_env_set_mapsize(s->env, (size_t)map);
    rc = pskv__persist_err(
        mdb_env_open(s->env, s->dir, MDB_NOTLS | (readonly ? MDB_RDONLY : 0), 0644));
    if (rc != 0)
        return rc;
    if (!readonly)
        readers_clear_stale(s); /* slots of crashed processes */
    MDB_stat est;
    if (mdb_env_stat(s->env, &est) != 0)
        return PSKV_EIO;
    s->db_psize = est.ms_psize;
    if (pskv__format(path, sizeof path, "%s/data.mdb", s->dir) >= 0)
        s->map_base = pskv__persist_map_find(path);
    return 0;
}

static int env_start(pskv_store *s, uint64_t map) { return env_start_as(s, map, false); }

/* A kept handle of database name (meta, or a table's rows), opened again. */
static int dbi_reopen(pskv_store *s, const char *name, unsigned *dbi)
{
    MDB_txn *txn;
    MDB_dbi d;
    int rc = pskv__persist_err(mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn));
    if (rc != 0)
        return rc;
    rc = pskv__persist_err(mdb_dbi_open(txn, name, 0, &d));
    if (rc == 0)
        rc = pskv__persist_err(mdb_txn_commit(txn)); /* keeps the handle */
    else
        mdb_txn_abort(txn);
    if (rc == 0)
        *dbi = d;
    return rc == PSKV_ENOTFOUND ? PSKV_ECORRUPT : rc;
}

int pskv__persist_recover(pskv_store *s)
{
    MDB_txn *probe;
    if (atomic_load(&s->env_lost))
        return PSKV_EIO;
    int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &probe);
    if (rc == 0)
        mdb_txn_abort(probe);
    if (rc != MDB_PANIC)
        return 0;
    /* LMDB gave up on this environment (a failed meta page write); the
     * file holds the last commit. No transaction of ours is open: readers
     * wait on env_lock, writers on ckpt_lock. */
    pthread_rwlock_wrlock(&s->env_lock);
    MDB_envinfo info;
    uint64_t map = mdb_env_info(s->env, &info) == 0 ? info.me_mapsize : MAP_MIN;
    mdb_env_close(s->env);
    s->env = NULL;
    rc = env_start(s, map);
    if (rc == 0)
        rc = dbi_reopen(s, PSKV_FMT_META_DB, &s->records_dbi);
    for (uint32_t i = 0; i < PSKV_UNDO_KEEP_MAX && rc == 0; i++) {
        char name[PSKV_FMT_UNDO_SLOT_NAME_MAX];
        pskv_fmt_undo_slot_name(name, i);
        rc = dbi_reopen(s, name, &s->undo_dbi[i]);
    }
    for (uint32_t i = 0; i < s->nattached && rc == 0; i++) {
        char db[PSKV_NAME_MAX + 16];
        rc = rows_db_name(s->attached[i]->name, db, sizeof db);
        if (rc == 0)
            rc = dbi_reopen(s, db, &s->attached[i]->dbi);
    }
    if (rc != 0)
        atomic_store(&s->env_lost, true); /* every later call: a clean error */
    if (rc == 0)
        atomic_fetch_add(&s->n_env_reopens, 1);
    pthread_rwlock_unlock(&s->env_lock);
    return rc;
}

/* The store's seq against pskv.seq: behind it means LMDB opened an older
 * snapshot than the last commit (a damaged meta page), and is refused. A
 * missing file (a store of format 1, or one copied without it) is written. */
static int seq_check(pskv_store *s)
{
    uint64_t seq = 0, from = 0, to = 0;
    int rc = pskv__seqfile_read(s->dir, &seq);
    int intent = pskv__seqfile_rollback_read(s->dir, &from, &to);
    if (intent == 0 && rc == 0 && seq == from && s->ckpt_seq == to) {
        /* A rollback committed and was stopped before it moved pskv.seq. */
        rc = pskv__seqfile_write(s->dir, to);
        if (rc == 0)
            pskv__seqfile_rollback_remove(s->dir);
        return rc;
    }
    if (rc == 0 && seq > s->ckpt_seq)
        return PSKV_ECORRUPT;
    if (intent != PSKV_ENOTFOUND && (rc == 0 || rc == PSKV_ENOTFOUND))
        pskv__seqfile_rollback_remove(s->dir); /* never began, or damaged: not a licence */
    if (rc == 0 && seq == s->ckpt_seq)
        return 0;
    if (rc == 0 || rc == PSKV_ENOTFOUND)
        return pskv__seqfile_write(s->dir, s->ckpt_seq);
    return rc;
}

/* The undo databases (undo.c: one per generation slot), opened, or
 * created in their own transaction on a store that lacks some (new, or
 * written by a release with fewer). */
static int undo_slots_open(pskv_store *s, MDB_txn *txn, unsigned flags)
{
    for (uint32_t i = 0; i < PSKV_UNDO_KEEP_MAX; i++) {
        char name[PSKV_FMT_UNDO_SLOT_NAME_MAX];
        pskv_fmt_undo_slot_name(name, i);
        int rc = mdb_dbi_open(txn, name, flags, &s->undo_dbi[i]);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int undo_create_once(pskv_store *s, void *arg)
{
    (void)arg;
    MDB_txn *txn;
    int rc = pskv__persist_txn_begin(s, true, &txn);
    if (rc != 0)
        return rc;
    rc = pskv__persist_write_err(undo_slots_open(s, txn, MDB_CREATE));
    if (rc != 0) {
        mdb_txn_abort(txn);
        return rc;
    }
    return pskv__persist_write_err(mdb_txn_commit(txn));
}

static int undo_attach(pskv_store *s)
{
    MDB_txn *txn;
    int rc = pskv__persist_txn_begin(s, false, &txn);
    if (rc != 0)
        return rc;
    int orc = undo_slots_open(s, txn, 0);
    if (orc == 0)
        return pskv__persist_err(mdb_txn_commit(txn)); /* keeps the handles */
    mdb_txn_abort(txn);
    if (orc != MDB_NOTFOUND)
        return pskv__persist_err(orc);
    return pskv__persist_write_growing(s, undo_create_once, NULL, 0);
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
    /* pskv.seq is written once the store exists: without its data file
     * (gone, or emptied) this is a lost store, not a new one. */
    if (file_bytes == 0 && pskv__seqfile_exists(s->dir))
        return PSKV_ECORRUPT;
    uint64_t map = s->opts.map_size;
    if (map == 0)
        map = 2 * file_bytes > MAP_MIN ? 2 * file_bytes : MAP_MIN;
    if (map < file_bytes)
        map = file_bytes;
    long page = sysconf(_SC_PAGESIZE);
    map = (map + (uint64_t)page - 1) / (uint64_t)page * (uint64_t)page;
    rc = env_start(s, map);
    if (rc != 0)
        return rc;
    if (file_bytes > 0 && (rc = pskv__persist_file_check(s->env, s->dir)) != 0)
        return rc;
    MDB_txn *txn;
    rc = pskv__persist_txn_begin(s, false, &txn);
    if (rc != 0)
        return rc;
    int open_rc = mdb_dbi_open(txn, PSKV_FMT_META_DB, 0, &s->records_dbi);
    if (open_rc == MDB_NOTFOUND) {
        mdb_txn_abort(txn);
        if (file_bytes > 0) {
            /* Pages but no meta database: could be a store interrupted
             * before its first commit (then it is empty) or a foreign
             * LMDB file. Only an empty main database is taken. */
            MDB_stat st;
            rc = pskv__persist_txn_begin(s, false, &txn);
            if (rc == 0) {
                MDB_dbi main_dbi;
                rc = pskv__persist_err(mdb_dbi_open(txn, NULL, 0, &main_dbi));
                if (rc == 0 && mdb_stat(txn, main_dbi, &st) == 0 && st.ms_entries > 0)
                    rc = PSKV_ECORRUPT;
                mdb_txn_abort(txn);
            }
            if (rc != 0)
                return rc;
        }
        rc = pskv__persist_write_growing(s, format_create_once, NULL, 0);
        if (rc == 0)
            rc = undo_attach(s);
        return rc == 0 ? pskv__seqfile_write(s->dir, 0) : rc;
    }
    rc = pskv__persist_err(open_rc);
    uint32_t version = 0;
    if (rc == 0)
        rc = format_check(s, txn, &version);
    if (rc != 0) {
        mdb_txn_abort(txn);
        return rc;
    }
    rc = pskv__persist_err(mdb_txn_commit(txn)); /* keeps the meta handle */
    if (rc == 0 && version < PSKV_FMT_VERSION)
        rc = upgrade(s, version);
    if (rc == 0)
        rc = undo_attach(s);
    return rc == 0 ? seq_check(s) : rc;
}

void pskv__persist_close(pskv_store *s)
{
    if (s->env != NULL)
        mdb_env_close(s->env);
    s->env = NULL;
    free(s->attached);
    s->attached = NULL;
}

/* ---------------------------------------------------------------- catalog */

static int open_reader(pskv_store *s);

int pskv__persist_reader(const char *dir, pskv_store **out)
{
    pskv_store *s = calloc(1, sizeof *s);
    if (s == NULL)
        return PSKV_ENOMEM;
    pthread_rwlock_init(&s->env_lock, NULL);
    s->dir = (char *)dir; /* borrowed: pskv__persist_reader_close does not free it */
    int rc = open_reader(s);
    if (rc != 0) {
        pskv__persist_reader_close(s);
        return rc;
    }
    *out = s;
    return 0;
}

void pskv__persist_reader_close(pskv_store *s)
{
    if (s == NULL)
        return;
    pskv__persist_close(s);
    pthread_rwlock_destroy(&s->env_lock);
    free(s);
}

static int open_reader(pskv_store *s)
{
    char path[4096];
    struct stat fst;
    if (pskv__format(path, sizeof path, "%s/data.mdb", s->dir) < 0)
        return PSKV_EINVAL;
    if (stat(path, &fst) != 0)
        return errno == ENOENT ? PSKV_ENOTFOUND : PSKV_EIO;
    if (fst.st_size < 2 * 4096)
        return PSKV_ECORRUPT;
    /* The owner may grow the map meanwhile: a map twice the file, and
     * LMDB's own size when it says the map was resized. */
    int rc = env_start_as(s, (uint64_t)fst.st_size * 2 + MAP_MIN, true);
    if (rc == 0)
        rc = pskv__persist_file_check(s->env, s->dir);
    MDB_txn *txn = NULL;
    if (rc == 0) {
        int mrc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
        if (mrc == MDB_MAP_RESIZED && mdb_env_set_mapsize(s->env, 0) == 0)
            mrc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
        rc = pskv__persist_err(mrc);
    }
    if (rc != 0)
        return rc;
    rc = pskv__persist_err(mdb_dbi_open(txn, PSKV_FMT_META_DB, 0, &s->records_dbi));
    uint32_t version = 0;
    if (rc == PSKV_ENOTFOUND)
        rc = PSKV_ECORRUPT; /* pages, but not a pskv store */
    if (rc == 0)
        rc = format_check(s, txn, &version);
    if (rc != 0) {
        mdb_txn_abort(txn);
        return rc;
    }
    return pskv__persist_err(mdb_txn_commit(txn)); /* keeps the handle */
}

static int count_load(pskv_store *s, MDB_txn *txn, const char *table, uint64_t *rows,
                      uint64_t *digest);

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
    pskv__persist_file_span(s, &base, &span);
    if (!pskv_fmt_in_span(base, span, v->mv_data, v->mv_size) ||
        pskv_fmt_record_open(v->mv_data, v->mv_size, &body, &len) != 0)
        return PSKV_ECORRUPT;
    int rc = schema_decode(body, len, &d->options);
    uint64_t digest;
    if (rc == 0)
        rc = count_load(s, txn, name, &d->rows, &digest);
    d->dim = d->options.dim;
    d->state_floats = pskv__optimizer_state_floats(d->options.optimizer, d->options.dim);
    d->row_bytes = pskv__optimizer_row_bytes(d->options.optimizer, d->options.dim);
    return rc;
}

int pskv__persist_tables(pskv_store *s, pskv_table_desc **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    MDB_txn *txn;
    MDB_cursor *cur = NULL;
    pthread_rwlock_rdlock(&s->env_lock);
    int rc = pskv__persist_txn_begin(s, false, &txn);
    if (rc != 0) {
        pthread_rwlock_unlock(&s->env_lock);
        return rc;
    }
    rc = pskv__persist_err(mdb_cursor_open(txn, s->records_dbi, &cur));
    const void *base;
    uint64_t span;
    pskv__persist_file_span(s, &base, &span);
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
        rc = pskv__persist_err(mrc);
    if (cur != NULL)
        mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    pthread_rwlock_unlock(&s->env_lock);
    if (rc != 0) {
        free(*out);
        *out = NULL;
        *n = 0;
    }
    return rc;
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
    rc = pskv__persist_txn_begin(s, false, &txn);
    if (rc == 0) {
        const uint8_t *body;
        size_t len;
        rc = record_get(s, txn, rec, &body, &len);
        if (rc == 0)
            rc = schema_decode(body, len, o);
        else if (rc == PSKV_ENOTFOUND && table_traces(s, txn, name))
            rc = PSKV_ECORRUPT; /* its rows or count outlived the schema record */
        mdb_txn_abort(txn);
    }
    pthread_rwlock_unlock(&s->env_lock);
    return rc;
}


/* The table's count record (format 2 writes one with every table). */
static int count_load(pskv_store *s, MDB_txn *txn, const char *table, uint64_t *rows,
                      uint64_t *digest)
{
    char rec[PSKV_NAME_MAX + 16];
    const uint8_t *body;
    size_t len;
    int rc = count_record_name(table, rec, sizeof rec);
    if (rc == 0)
        rc = record_get(s, txn, rec, &body, &len);
    if (rc == PSKV_ENOTFOUND || (rc == 0 && pskv_fmt_pair_get(body, len, rows, digest) != 0))
        rc = PSKV_ECORRUPT;
    return rc;
}

typedef struct attach_args {
    pskv_table *t;
    bool create;
    const char *db;
} attach_args;

static int table_attach_once(pskv_store *s, void *arg)
{
    const attach_args *a = arg;
    pskv_table *t = a->t;
    const bool create = a->create;
    const char *db = a->db;
    MDB_txn *txn;
    /* Creating writes the schema at once: a table exists from its first
     * open on, with no rows until the first checkpoint. */
    int rc = pskv__persist_txn_begin(s, true, &txn);
    if (rc != 0)
        return rc;
    MDB_dbi dbi;
    uint64_t txnid = mdb_txn_id(txn); /* a write one: the snapshot it commits */
    rc = mdb_dbi_open(txn, db, create ? MDB_CREATE : 0, &dbi);
    rc = pskv__persist_write_err(rc);
    if (rc == PSKV_ENOTFOUND)
        rc = PSKV_ECORRUPT; /* a schema without its rows database */
    if (rc == 0 && create)
        rc = pskv__persist_put_table(s, txn, t);
    if (rc == 0 && create)
        rc = pskv__persist_put_count(s, txn, t->name, 0, 0);
    MDB_stat st;
    uint64_t rows = 0, digest = 0;
    if (rc == 0 && !create)
        rc = pskv__persist_err(mdb_stat(txn, dbi, &st));
    if (rc == 0 && !create)
        rc = count_load(s, txn, t->name, &rows, &digest);
    if (rc == 0 && !create && rows != st.ms_entries)
        rc = PSKV_ECORRUPT; /* LMDB's own count disagrees with the checkpoint's */
    if (rc == 0 && !create)
        rc = filters_load(s, txn, t, st.ms_entries);
    if (rc == 0 && create)
        pskv__keyfilter_init(&t->persisted, true);
    /* Versions go on from the last checkpoint's after a clean close; after
     * a crash or a rollback they jump past any version the lost run handed
     * out. Either way this run is not clean until its close says so. */
    uint64_t version = create ? atomic_load(&t->version) : 0; /* created: its base */
    bool clean = create;
    if (rc == 0 && !create) {
        rc = pskv__persist_version_get(s, txn, t->name, &version, &clean);
        if (rc == PSKV_ENOTFOUND)
            rc = 0; /* upgraded from format 2: no cursor can predate it */
    }
    if (rc == 0 && !clean)
        version += PSKV__VERSION_JUMP;
    if (rc == 0)
        rc = pskv__persist_put_version(s, txn, t->name, version, false);
    if (rc == 0) {
        rc = mdb_txn_commit(txn); /* keeps the handle */
        rc = pskv__persist_write_err(rc);
    } else {
        mdb_txn_abort(txn);
    }
    if (rc != 0) {
        pskv__keyfilter_free(&t->persisted);
        return rc;
    }
    t->dbi = dbi;
    atomic_store(&t->version, version);
    atomic_store(&t->changes_floor, version);
    atomic_store(&t->cold_rows, create ? 0 : (uint64_t)st.ms_entries);
    pthread_mutex_lock(&t->count_lock);
    t->db_rows = rows;
    t->db_digest = digest;
    t->db_txnid = txnid;
    pthread_mutex_unlock(&t->count_lock);
    return 0;
}

int pskv__persist_table_attach(pskv_store *s, pskv_table *t, bool create)
{
    char db[PSKV_NAME_MAX + 16];
    /* Room in the list of attached tables first: a failure then changes
     * nothing. */
    pskv_table **a = pskv__array_grow(s->attached, &s->attached_cap, s->nattached + 1ull,
                                      sizeof *a, 4);
    if (a == NULL)
        return PSKV_ENOMEM;
    s->attached = a;
    attach_args a1 = {t, create, db};
    int rc = rows_db_name(t->name, db, sizeof db);
    if (rc == 0) /* only a creation writes */
        rc = create ? pskv__persist_write_growing(s, table_attach_once, &a1, 0)
                    : table_attach_once(s, &a1);
    if (rc == 0) {
        s->attached[s->nattached++] = t;
        return 0;
    }
    if (create)
        (void)pskv__persist_recover(s);
    return rc;
}

/* ---------------------------------------------------------------- caller's metadata */

int pskv_checkpoint_meta(pskv_store *s, void *buf, size_t cap, size_t *len, uint64_t *seq)
{
    pskv__detail_clear();
    if (s == NULL || len == NULL || (buf == NULL && cap > 0))
        return PSKV_EINVAL;
    if (s->env == NULL)
        return PSKV_ENOTSUP;
    pthread_rwlock_rdlock(&s->env_lock);
    MDB_txn *txn;
    int rc = pskv__persist_txn_begin(s, false, &txn);
    if (rc == 0) {
        const uint8_t *body, *bytes;
        size_t body_len, n;
        uint64_t written_by;
        rc = record_get(s, txn, PSKV_FMT_KEY_USER, &body, &body_len);
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

static int persist_grow(pskv_store *s, uint64_t need)
{
    MDB_envinfo info;
    pthread_rwlock_wrlock(&s->env_lock);
    int rc = atomic_load(&s->env_lost) ? PSKV_ENOMEM : pskv__persist_err(mdb_env_info(s->env, &info));
    if (rc == 0) {
        /* Four times the map when the address space is there, else twice,
         * else what is needed: each grow unmaps the whole map, which holds
         * the process's mmap lock (every page fault of every thread waits:
         * 0.1-0.2 s for a 7-28 GB map, measured), so grows should be few. */
        long page = sysconf(_SC_PAGESIZE);
        uint64_t size = 0;
        for (unsigned factor = 4; factor >= 1 && size == 0; factor /= 2) {
            uint64_t want = factor > 1 ? (uint64_t)info.me_mapsize * factor : need;
            want = want < need ? need : want;
            want = (want + (uint64_t)page - 1) / (uint64_t)page * (uint64_t)page;
            if (factor == 1 || address_space_for(want - (uint64_t)info.me_mapsize))
                size = want;
        }
        if (!address_space_for(size - (uint64_t)info.me_mapsize)) {
            rc = PSKV_ENOMEM; /* the old map stays as it was */
        } else {
            int mrc = mdb_env_set_mapsize(s->env, (size_t)size);
            /* Lost the race for the address space after all: LMDB has no
             * map now, and every later call fails with PSKV_ENOMEM. */
            if (mrc != 0 && mrc != EINVAL)
                atomic_store(&s->env_lost, true);
            rc = pskv__persist_err(mrc);
        }
        char path[4096];
        if (rc == 0 && pskv__format(path, sizeof path, "%s/data.mdb", s->dir) >= 0)
            s->map_base = pskv__persist_map_find(path); /* the map may have moved */
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
    if (s->env == NULL || atomic_load(&s->env_lost) || mdb_env_info(s->env, &info) != 0 ||
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
        return atomic_load(&s->env_lost) ? PSKV_ENOMEM : PSKV_EIO;
    if (used + more <= map)
        return 0;
    return persist_grow(s, used + more);
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
