/* A durable store's records in LMDB: open (the environment through env.c,
 * the format record, its upgrade through upgrade.c, the undo databases,
 * pskv.seq through seqfile.c) and close; the records of the meta
 * database (format, checkpoint, schema, count, version, filters, the
 * caller's metadata), each checked and bounded by the mapped file when
 * read; a table's rows database; a reader beside the owner. The layout
 * and the record decoders are in format.h; the checkpoint that writes
 * rows is checkpoint.c's, cold reads are cold.c's, the catalog walk is
 * catalog.c's, backups are backup.c's.
 *
 * Rules kept here (docs/DESIGN.md, "Persistence"):
 *  - a record that must exist and is gone, a count that disagrees, a store
 *    behind pskv.seq: PSKV_ECORRUPT, never "new" or "absent";
 *  - a write transaction is retried whole after the map grows
 *    (pskv__env_write), and after LMDB gave up on its
 *    environment the store's database handles are opened again with it
 *    (pskv__persist_recover).
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
#include "env.h"
#include "persist.h"
#include "records.h"
#include "pskv_internal.h"
#include "upgrade.h"
#include "seqfile.h"

_Static_assert(PSKV_FMT_NAME_MAX == PSKV_NAME_MAX, "format.h and pskv.h agree on table names");

#define MAP_RETRIES 16

/* A new store: the meta database and its format record, in one write;
 * PSKV__MAP_FULL asks for a bigger map (map_size may be tiny: it grows). */
static int format_create_once(void *arg)
{
    pskv_store *s = arg;
    MDB_txn *txn;
    int rc = pskv__env_txn_begin(&s->lmdb, true, &txn);
    if (rc != 0)
        return rc;
    rc = pskv__env_write_err(mdb_dbi_open(txn, PSKV_FMT_META_DB, MDB_CREATE, &s->records_dbi));
    uint8_t body[8];
    pskv_fmt_format_put(body, PSKV_FMT_VERSION_BASE);
    if (rc == 0)
        rc = pskv__record_put(txn, s->records_dbi, PSKV_FMT_KEY_FORMAT, body, sizeof body);
    uint64_t created_ns;
    if (rc == 0) /* "never checkpointed" is a record too: its absence is damage */
        rc = pskv__record_put_checkpoint(s, txn, 0, &created_ns);
    if (rc != 0) {
        mdb_txn_abort(txn);
        return rc;
    }
    return pskv__env_write_err(mdb_txn_commit(txn));
}

/* An existing store: its format, and the last checkpoint. *version is
 * the store's format version (PSKV_FMT_VERSION_MIN.. are opened). */
static int format_check(pskv_store *s, MDB_txn *txn, uint32_t *version)
{
    const uint8_t *body;
    size_t len;
    uint32_t magic;
    int rc = pskv__record_get(s, txn, PSKV_FMT_KEY_FORMAT, &body, &len);
    if (rc == PSKV_ENOTFOUND || (rc == 0 && pskv_fmt_format_get(body, len, &magic, version) != 0))
        return PSKV_ECORRUPT;
    if (rc != 0)
        return rc;
    if (magic != PSKV_FMT_MAGIC)
        return PSKV_ECORRUPT;
    if (*version < PSKV_FMT_VERSION_MIN || *version > PSKV_FMT_VERSION)
        return PSKV_EVERSION;
    rc = pskv__record_get(s, txn, PSKV_FMT_KEY_CHECKPOINT, &body, &len);
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

/* Does anything of table name exist besides its schema record (its rows
 * database or its count record)? */
static bool table_traces(pskv_store *s, MDB_txn *txn, const char *name)
{
    char db[PSKV_NAME_MAX + 16], rec[PSKV_NAME_MAX + 16];
    MDB_dbi main_dbi;
    const uint8_t *body;
    size_t len;
    if (pskv__record_name(PSKV_FMT_ROWS_PREFIX, name, db, sizeof db) != 0 || pskv__record_name(PSKV_FMT_COUNT_PREFIX, name, rec, sizeof rec) != 0)
        return false;
    MDB_val k = {strlen(db), db}, v;
    if (mdb_dbi_open(txn, NULL, 0, &main_dbi) == 0 && mdb_get(txn, main_dbi, &k, &v) == 0)
        return true;
    return pskv__record_get(s, txn, rec, &body, &len) != PSKV_ENOTFOUND;
}

/* ---------------------------------------------------------------- open */

/* After a restart: the store's database handles (meta, undo slots, the
 * attached tables' rows), opened again. */
static int handles_reopen(pskv__env *e, void *arg)
{
    pskv_store *s = arg;
    int rc = pskv__env_dbi_reopen(e, PSKV_FMT_META_DB, &s->records_dbi);
    for (uint32_t i = 0; i < PSKV_UNDO_KEEP_MAX && rc == 0; i++) {
        char name[PSKV_FMT_UNDO_SLOT_NAME_MAX];
        pskv_fmt_undo_slot_name(name, i);
        rc = pskv__env_dbi_reopen(e, name, &s->undo_dbi[i]);
    }
    for (uint32_t i = 0; i < s->nattached && rc == 0; i++) {
        char db[PSKV_NAME_MAX + 16];
        rc = pskv__record_name(PSKV_FMT_ROWS_PREFIX, s->attached[i]->name, db, sizeof db);
        if (rc == 0)
            rc = pskv__env_dbi_reopen(e, db, &s->attached[i]->dbi);
    }
    return rc;
}

int pskv__persist_recover(pskv_store *s) { return pskv__env_restart(&s->lmdb, handles_reopen, s); }

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

static int undo_create_once(void *arg)
{
    pskv_store *s = arg;
    MDB_txn *txn;
    int rc = pskv__env_txn_begin(&s->lmdb, true, &txn);
    if (rc != 0)
        return rc;
    rc = pskv__env_write_err(undo_slots_open(s, txn, MDB_CREATE));
    if (rc != 0) {
        mdb_txn_abort(txn);
        return rc;
    }
    return pskv__env_write_err(mdb_txn_commit(txn));
}

static int undo_attach(pskv_store *s)
{
    MDB_txn *txn;
    int rc = pskv__env_txn_begin(&s->lmdb, false, &txn);
    if (rc != 0)
        return rc;
    int orc = undo_slots_open(s, txn, 0);
    if (orc == 0)
        return pskv__env_err(mdb_txn_commit(txn)); /* keeps the handles */
    mdb_txn_abort(txn);
    if (orc != MDB_NOTFOUND)
        return pskv__env_err(orc);
    return pskv__env_write(&s->lmdb, undo_create_once, s, 0);
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
        map = 2 * file_bytes > PSKV__MAP_MIN ? 2 * file_bytes : PSKV__MAP_MIN;
    if (map < file_bytes)
        map = file_bytes;
    long page = sysconf(_SC_PAGESIZE);
    map = (map + (uint64_t)page - 1) / (uint64_t)page * (uint64_t)page;
    rc = pskv__env_open(&s->lmdb, map, false);
    if (rc != 0)
        return rc;
    if (file_bytes > 0 && (rc = pskv__env_file_check(s->lmdb.mdb, s->dir)) != 0)
        return rc;
    MDB_txn *txn;
    rc = pskv__env_txn_begin(&s->lmdb, false, &txn);
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
            rc = pskv__env_txn_begin(&s->lmdb, false, &txn);
            if (rc == 0) {
                MDB_dbi main_dbi;
                rc = pskv__env_err(mdb_dbi_open(txn, NULL, 0, &main_dbi));
                if (rc == 0 && mdb_stat(txn, main_dbi, &st) == 0 && st.ms_entries > 0)
                    rc = PSKV_ECORRUPT;
                mdb_txn_abort(txn);
            }
            if (rc != 0)
                return rc;
        }
        rc = pskv__env_write(&s->lmdb, format_create_once, s, 0);
        s->format = PSKV_FMT_VERSION_BASE;
        if (rc == 0)
            rc = undo_attach(s);
        return rc == 0 ? pskv__seqfile_write(s->dir, 0) : rc;
    }
    rc = pskv__env_err(open_rc);
    uint32_t version = 0;
    if (rc == 0)
        rc = format_check(s, txn, &version);
    if (rc != 0) {
        mdb_txn_abort(txn);
        return rc;
    }
    rc = pskv__env_err(mdb_txn_commit(txn)); /* keeps the meta handle */
    s->format = version < PSKV_FMT_VERSION_BASE ? PSKV_FMT_VERSION_BASE : version;
    if (rc == 0 && version < PSKV_FMT_VERSION_BASE)
        rc = pskv__upgrade(s, version);
    if (rc == 0)
        rc = undo_attach(s);
    return rc == 0 ? pskv__seqfile_reconcile(s->dir, s->ckpt_seq) : rc;
}

void pskv__persist_close(pskv_store *s)
{
    pskv__env_close(&s->lmdb);
    free(s->attached);
    s->attached = NULL;
}

/* ---------------------------------------------------------------- a reader beside the owner */

static int open_reader(pskv_store *s);

int pskv__persist_reader(const char *dir, pskv_store **out)
{
    pskv_store *s = calloc(1, sizeof *s);
    if (s == NULL)
        return PSKV_ENOMEM;
    s->dir = (char *)dir; /* borrowed: pskv__persist_reader_close does not free it */
    pskv__env_init(&s->lmdb, dir);
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
    pskv__env_destroy(&s->lmdb);
    free(s);
}

static int open_reader(pskv_store *s)
{
    MDB_txn *txn;
    int rc = pskv__env_open_reader(&s->lmdb, &txn);
    if (rc != 0)
        return rc;
    rc = pskv__env_err(mdb_dbi_open(txn, PSKV_FMT_META_DB, 0, &s->records_dbi));
    uint32_t version = 0;
    if (rc == PSKV_ENOTFOUND)
        rc = PSKV_ECORRUPT; /* pages, but not a pskv store */
    if (rc == 0)
        rc = format_check(s, txn, &version);
    if (rc != 0) {
        mdb_txn_abort(txn);
        return rc;
    }
    return pskv__env_err(mdb_txn_commit(txn)); /* keeps the handle */
}

/* ---------------------------------------------------------------- tables */

int pskv__persist_table_schema(pskv_store *s, const char *name, pskv_table_options *o)
{
    char rec[PSKV_NAME_MAX + 16];
    int rc = pskv__record_name(PSKV_FMT_TABLE_PREFIX, name, rec, sizeof rec);
    if (rc != 0)
        return rc;
    MDB_txn *txn;
    pthread_rwlock_rdlock(&s->lmdb.lock);
    rc = pskv__env_txn_begin(&s->lmdb, false, &txn);
    if (rc == 0) {
        const uint8_t *body;
        size_t len;
        rc = pskv__record_get(s, txn, rec, &body, &len);
        if (rc == 0)
            rc = pskv__record_schema_decode(body, len, o);
        else if (rc == PSKV_ENOTFOUND && table_traces(s, txn, name))
            rc = PSKV_ECORRUPT; /* its rows or count outlived the schema record */
        mdb_txn_abort(txn);
    }
    pthread_rwlock_unlock(&s->lmdb.lock);
    return rc;
}


typedef struct attach_args {
    pskv_store *s;
    pskv_table *t;
    bool create;
    const char *db;
} attach_args;

static int table_attach_once(void *arg)
{
    const attach_args *a = arg;
    pskv_store *s = a->s;
    pskv_table *t = a->t;
    const bool create = a->create;
    const char *db = a->db;
    MDB_txn *txn;
    /* Creating writes the schema at once: a table exists from its first
     * open on, with no rows until the first checkpoint. */
    int rc = pskv__env_txn_begin(&s->lmdb, true, &txn);
    if (rc != 0)
        return rc;
    MDB_dbi dbi;
    uint64_t txnid = mdb_txn_id(txn); /* a write one: the snapshot it commits */
    rc = mdb_dbi_open(txn, db, create ? MDB_CREATE : 0, &dbi);
    rc = pskv__env_write_err(rc);
    if (rc == PSKV_ENOTFOUND)
        rc = PSKV_ECORRUPT; /* a schema without its rows database */
    if (rc == 0 && create)
        rc = pskv__record_put_table(s, txn, t);
    if (rc == 0 && create)
        rc = pskv__record_put_count(s, txn, t->name, 0, 0);
    /* The store's first table of format 6 (update=sync, staleness) says so: a release
     * that knows only format 5 then refuses the store instead of reading
     * its schema as damage. */
    const bool format6 = create && t->extra_bytes > 0 && s->format < PSKV_FMT_VERSION;
    if (rc == 0 && format6) {
        uint8_t body[8];
        pskv_fmt_format_put(body, PSKV_FMT_VERSION);
        rc = pskv__record_put(txn, s->records_dbi, PSKV_FMT_KEY_FORMAT, body, sizeof body);
    }
    MDB_stat st;
    uint64_t rows = 0, digest = 0;
    if (rc == 0 && !create)
        rc = pskv__env_err(mdb_stat(txn, dbi, &st));
    if (rc == 0 && !create)
        rc = pskv__record_count_get(s, txn, t->name, &rows, &digest);
    if (rc == 0 && !create && rows != st.ms_entries)
        rc = PSKV_ECORRUPT; /* LMDB's own count disagrees with the checkpoint's */
    if (rc == 0 && !create)
        rc = pskv__record_filters_load(s, txn, t, st.ms_entries);
    if (rc == 0 && create)
        pskv__keyfilter_init(&t->persisted, true);
    uint64_t version = 0; /* where its versions go on (changes.c's rule) */
    if (rc == 0)
        rc = pskv__changes_resume(s, txn, t, create, &version);
    if (rc == 0) {
        rc = mdb_txn_commit(txn); /* keeps the handle */
        rc = pskv__env_write_err(rc);
    } else {
        mdb_txn_abort(txn);
    }
    if (rc != 0) {
        pskv__keyfilter_free(&t->persisted);
        return rc;
    }
    t->dbi = dbi;
    if (format6)
        s->format = PSKV_FMT_VERSION;
    pskv__changes_start(t, version);
    atomic_store(&t->cold_rows, create ? 0 : (uint64_t)st.ms_entries);
    /* update=sync: accumulators a checkpoint kept are listed by the first
     * step (step.c). */
    t->pending_unknown = t->sync && !create && st.ms_entries > 0;
    pskv__persist_count_seen(t, rows, digest, txnid);
    return 0;
}

void pskv__persist_count_seen(pskv_table *t, uint64_t rows, uint64_t digest, uint64_t txnid)
{
    pthread_mutex_lock(&t->count_lock);
    t->db_rows = rows;
    t->db_digest = digest;
    t->db_txnid = txnid;
    pthread_mutex_unlock(&t->count_lock);
}

int pskv__persist_seq_committed(pskv_store *s, uint64_t seq, uint64_t time_ns)
{
    s->ckpt_seq = seq;
    s->ckpt_unix_ns = time_ns;
    atomic_store(&s->ckpt_seq_pub, seq);
    /* After the commit, never before: a crash in between leaves the store
     * one ahead of pskv.seq (a checkpoint) or one behind it with the
     * rollback's intent (a rollback step), and both open. */
    return pskv__seqfile_write(s->dir, seq);
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
    attach_args a1 = {s, t, create, db};
    int rc = pskv__record_name(PSKV_FMT_ROWS_PREFIX, t->name, db, sizeof db);
    if (rc == 0) /* only a creation writes */
        rc = create ? pskv__env_write(&s->lmdb, table_attach_once, &a1, 0)
                    : table_attach_once(&a1);
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
    if (s->lmdb.mdb == NULL)
        return PSKV_ENOTSUP;
    pthread_rwlock_rdlock(&s->lmdb.lock);
    MDB_txn *txn;
    int rc = pskv__env_txn_begin(&s->lmdb, false, &txn);
    if (rc == 0) {
        const uint8_t *body, *bytes;
        size_t body_len, n;
        uint64_t written_by;
        rc = pskv__record_get(s, txn, PSKV_FMT_KEY_USER, &body, &body_len);
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
    pthread_rwlock_unlock(&s->lmdb.lock);
    return rc;
}

/* ---------------------------------------------------------------- map, backup */

