/* pskv: look into a durable store's directory without opening it for
 * writing (the library may have it open meanwhile: LMDB readers do not
 * block it, and it does not block them); compact it between runs.
 *
 *   pskv stat DIR                     tables, rows, bytes, last checkpoint
 *   pskv verify DIR                   format, schemas, every row's checksum
 *   pskv dump DIR TABLE [--keys K,..] rows as text: key, weights, state
 *   pskv backup DIR DEST              compacted copy of the last checkpoint
 *   pskv meta DIR                     the trainer's checkpoint metadata
 *                                     (pskv_checkpoint_with_meta) to stdout
 *   pskv compact DIR                  data.mdb rewritten with its live pages
 *                                     only, in place (between runs: it takes
 *                                     the directory's lock, like a store)
 *
 * Exit status: 0 fine, 1 the store has problems (verify) or an operation
 * failed, 2 bad usage. A progress line goes to stderr during long work when
 * stderr is a terminal.
 *
 * The tool never trusts the file: records go through the library's
 * decoders (format.h) with every value bounded by the mapped file, and the
 * command itself runs in a child process, because LMDB follows B-tree
 * pages without checking them: a crash there is reported as
 * "damaged: B-tree" with exit status 1.
 * SPDX-License-Identifier: BSD-2-Clause */
#include <errno.h>
#include <inttypes.h>
#include <lmdb.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "backup.h"
#include "env.h"
#include "format.h"
#include "pskv.h"
#include "seqfile.h"

#define PROGRESS_EVERY 65536u

static bool progress_on;

static void progress(const char *what, const char *table, uint64_t done, uint64_t total)
{
    if (progress_on)
        fprintf(stderr, "\r%s %s: %" PRIu64 " / %" PRIu64 " rows", what, table, done, total);
}

static void progress_end(void)
{
    if (progress_on)
        fprintf(stderr, "\r\033[K");
}

/* ---------------------------------------------------------------- env */

typedef struct store {
    pskv__env lmdb;   /* opened read-only beside the owner (env.c) */
    MDB_txn *txn;     /* one read transaction: a consistent checkpoint */
    MDB_dbi meta;
    const void *base; /* the file's pages in the map, for bounds */
    uint64_t span;
    uint32_t format;  /* the format record's version (0: unreadable) */
} store;

static bool in_file(const store *st, const MDB_val *v);

static void store_close(store *st)
{
    if (st->txn != NULL)
        mdb_txn_abort(st->txn);
    pskv__env_destroy(&st->lmdb);
}

static int store_open(store *st, const char *dir)
{
    char path[4096];
    struct stat fs;
    memset(st, 0, sizeof *st);
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    if (stat(path, &fs) != 0) {
        fprintf(stderr, "pskv: %s: no store here (%s)\n", dir, strerror(errno));
        return 1;
    }
    if (fs.st_size < 2 * 4096) {
        fprintf(stderr, "pskv: %s: damaged: data.mdb is %lld bytes, not even two meta pages\n",
                dir, (long long)fs.st_size);
        return 1;
    }
    /* The library's read-only open beside the owner (env.c). */
    pskv__env_init(&st->lmdb, dir);
    int rc = pskv__env_open_reader(&st->lmdb, &st->txn);
    int mrc = rc == 0 ? mdb_dbi_open(st->txn, PSKV_FMT_META_DB, 0, &st->meta) : st->lmdb.mdb_rc;
    if (rc != 0 || mrc != 0) {
        if (rc == PSKV_ECORRUPT && mrc == 0) /* LMDB opened it: the size check said no */
            fprintf(stderr, "pskv: %s: damaged: data.mdb is shorter than its pages\n", dir);
        else
            fprintf(stderr, "pskv: %s: cannot open the store: %s\n", dir,
                    mrc != 0 ? mdb_strerror(mrc) : pskv_strerror(rc));
        store_close(st);
        return 1;
    }
    pskv__env_file_span(&st->lmdb, &st->base, &st->span);
    MDB_val fk = {strlen(PSKV_FMT_KEY_FORMAT), PSKV_FMT_KEY_FORMAT}, fv;
    const uint8_t *body;
    size_t blen;
    uint32_t magic;
    if (mdb_get(st->txn, st->meta, &fk, &fv) != 0 || !in_file(st, &fv) ||
        pskv_fmt_record_open(fv.mv_data, fv.mv_size, &body, &blen) != 0 ||
        pskv_fmt_format_get(body, blen, &magic, &st->format) != 0)
        st->format = 0;
    return 0;
}

static bool in_file(const store *st, const MDB_val *v)
{
    return pskv_fmt_in_span(st->base, st->span, v->mv_data, v->mv_size);
}

/* A meta record's body, checked; NULL if absent or damaged (*bad set). */
static const uint8_t *meta_body(store *st, const char *name, size_t *len, bool *bad)
{
    MDB_val k = {strlen(name), (void *)name}, v;
    const uint8_t *body;
    *bad = false;
    if (mdb_get(st->txn, st->meta, &k, &v) != 0)
        return NULL;
    if (!in_file(st, &v) || pskv_fmt_record_open(v.mv_data, v.mv_size, &body, len) != 0) {
        *bad = true;
        return NULL;
    }
    return body;
}

/* The trainer's checkpoint metadata: 1 present (*bytes, *n, *seq), 0
 * absent, -1 damaged. */
static int user_meta(store *st, const uint8_t **bytes, size_t *n, uint64_t *seq)
{
    size_t len;
    bool bad;
    const uint8_t *u = meta_body(st, PSKV_FMT_KEY_USER, &len, &bad);
    if (u == NULL)
        return bad ? -1 : 0;
    return pskv_fmt_user_get(u, len, seq, bytes, n) == 0 ? 1 : -1;
}

/* ---------------------------------------------------------------- tables */

/* The bytes of a row value before its check: payload, and from format 3
 * on the row's version. */
static size_t stored_bytes(const store *st, const pskv_table_info *info)
{
    return info->row_bytes + pskv_fmt_row_extra_bytes(info->dim, info->options.update, info->options.staleness_on) +
           (st->format >= 3 ? PSKV_FMT_VERSION_BYTES : 0);
}

typedef struct table {
    char name[PSKV_NAME_MAX + 1];
    char config[1024];
    pskv_table_info info;
    bool schema_ok;
    MDB_dbi dbi;
    bool has_rows_db;
    uint64_t rows;          /* LMDB's own count */
    bool count_ok;          /* the count record (format 2) */
    uint64_t count_rows, count_digest;
} table;

/* The row layout of a schema: a memory-only table of that config. */
static bool schema_info(const char *config, pskv_table_info *info)
{
    pskv_store *s;
    pskv_table *t;
    bool ok = pskv_open(NULL, NULL, &s) == 0;
    ok = ok && pskv_table_open(s, "x", config, &t) == 0 && pskv_table_info_get(t, info) == 0;
    pskv_close(s);
    return ok;
}

static void table_read(store *st, table *t, const MDB_val *v)
{
    const uint8_t *body;
    size_t clen;
    if (in_file(st, v) && pskv_fmt_record_open(v->mv_data, v->mv_size, &body, &clen) == 0 &&
        clen < sizeof t->config) {
        memcpy(t->config, body, clen);
        t->config[clen] = '\0';
        t->schema_ok = strlen(t->config) == clen && schema_info(t->config, &t->info);
    }
    char db[PSKV_NAME_MAX + 16], rec[PSKV_NAME_MAX + 16];
    snprintf(db, sizeof db, "%s%s", PSKV_FMT_ROWS_PREFIX, t->name);
    MDB_stat ms;
    t->has_rows_db = mdb_dbi_open(st->txn, db, 0, &t->dbi) == 0 &&
                     mdb_stat(st->txn, t->dbi, &ms) == 0;
    t->rows = t->has_rows_db ? ms.ms_entries : 0;
    snprintf(rec, sizeof rec, "%s%s", PSKV_FMT_COUNT_PREFIX, t->name);
    size_t len;
    bool bad;
    const uint8_t *c = meta_body(st, rec, &len, &bad);
    t->count_ok = c != NULL && pskv_fmt_pair_get(c, len, &t->count_rows, &t->count_digest) == 0;
}

/* Every table record of the store; 1 when listing them failed. */
static int tables_list(store *st, table **out, uint32_t *n)
{
    MDB_cursor *cur;
    *out = NULL;
    *n = 0;
    if (mdb_cursor_open(st->txn, st->meta, &cur) != 0)
        return 1;
    size_t plen = strlen(PSKV_FMT_TABLE_PREFIX);
    MDB_val k = {plen, (void *)PSKV_FMT_TABLE_PREFIX}, v;
    int rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE), status = 0;
    for (; rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        char name[PSKV_FMT_NAME_MAX + 1];
        int is_table = in_file(st, &k) ? pskv_fmt_table_key(k.mv_data, k.mv_size, name) : 0;
        if (is_table < 0)
            status = 1; /* a name too long: damage */
        if (is_table <= 0)
            break;
        if (*n >= PSKV_FMT_MAX_TABLES) {
            status = 1;
            break;
        }
        table *grown = realloc(*out, (*n + 1) * sizeof **out);
        if (grown == NULL) {
            status = 1;
            break;
        }
        *out = grown;
        table *t = &(*out)[(*n)++];
        memset(t, 0, sizeof *t);
        memcpy(t->name, name, strlen(name) + 1);
        table_read(st, t, &v);
    }
    if (rc != 0 && rc != MDB_NOTFOUND)
        status = 1;
    mdb_cursor_close(cur);
    return status;
}

static table *table_named(table *ts, uint32_t n, const char *name)
{
    for (uint32_t i = 0; i < n; i++)
        if (strcmp(ts[i].name, name) == 0)
            return &ts[i];
    return NULL;
}

/* ---------------------------------------------------------------- stat */

static void print_checkpoint(store *st)
{
    size_t len;
    bool bad;
    const uint8_t *b = meta_body(st, PSKV_FMT_KEY_CHECKPOINT, &len, &bad);
    uint64_t seq, ns;
    if (b == NULL || pskv_fmt_pair_get(b, len, &seq, &ns) != 0) {
        printf("last checkpoint: %s\n", bad || b != NULL ? "DAMAGED record" : "none");
        return;
    }
    time_t secs = (time_t)(ns / 1000000000u);
    struct tm tm;
    char when[64];
    gmtime_r(&secs, &tm);
    strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", &tm);
    printf("last checkpoint: %" PRIu64 " at %s\n", seq, when);
    const uint8_t *bytes;
    uint64_t meta_seq;
    int meta = user_meta(st, &bytes, &len, &meta_seq);
    if (meta > 0)
        printf("checkpoint metadata: %zu bytes, from checkpoint %" PRIu64 "\n", len, meta_seq);
    else if (meta < 0)
        printf("checkpoint metadata: DAMAGED record\n");
}

static int cmd_stat(const char *dir)
{
    /* The library's listing first: it opens LMDB itself, and one process
     * must not hold two environments of one file at once. */
    size_t n = 0;
    pskv_table_desc *ts = NULL;
    int list_rc = pskv_dir_tables(dir, NULL, 0, &n);
    if (list_rc == PSKV_ERANGE) {
        ts = calloc(n ? n : 1, sizeof *ts);
        list_rc = ts == NULL ? PSKV_ENOMEM : pskv_dir_tables(dir, ts, n, &n);
    }
    store st = {0};
    if (store_open(&st, dir) != 0) {
        free(ts);
        return 1;
    }
    MDB_envinfo ei;
    MDB_stat es;
    mdb_env_info(st.lmdb.mdb, &ei);
    mdb_env_stat(st.lmdb.mdb, &es);
    printf("store: %s\n", dir);
    size_t len;
    bool bad;
    const uint8_t *f = meta_body(&st, PSKV_FMT_KEY_FORMAT, &len, &bad);
    uint32_t magic = 0, version = 0;
    if (f == NULL || pskv_fmt_format_get(f, len, &magic, &version) != 0)
        printf("format: DAMAGED record\n");
    else
        printf("format: %u%s\n", version,
               version >= PSKV_FMT_VERSION_BASE && version <= PSKV_FMT_VERSION ? ""
               : version >= PSKV_FMT_VERSION_MIN && version < PSKV_FMT_VERSION_BASE
                   ? " (upgraded when the library opens it)"
                   : " (not supported)");
    print_checkpoint(&st);
    printf("data file pages in use: %" PRIu64 " bytes (%" PRIu64 " pages of %u)\n",
           ((uint64_t)ei.me_last_pgno + 1) * es.ms_psize, (uint64_t)ei.me_last_pgno + 1,
           es.ms_psize);
    if (list_rc != 0) {
        printf("tables: listing them failed: DAMAGED (%s%s%s)\n", pskv_strerror(list_rc),
               pskv_last_error()[0] ? ": " : "", pskv_last_error());
        free(ts);
        store_close(&st);
        return 1;
    }
    printf("tables: %zu\n", n);
    for (size_t i = 0; i < n; i++) {
        const pskv_table_desc *t = &ts[i];
        char config[1024];
        if (pskv_table_options_describe(&t->options, config, sizeof config) < 0)
            snprintf(config, sizeof config, "(schema too long to print)");
        printf("  %s: %" PRIu64 " rows, %" PRIu64 " bytes of rows (%u per row), %s\n", t->name,
               t->rows, t->rows * t->row_bytes, t->row_bytes, config);
    }
    free(ts);
    store_close(&st);
    return 0;
}

/* ---------------------------------------------------------------- filters */

/* A table's filter series of persisted keys (format.h), read into memory. */
typedef struct filters {
    uint32_t n;
    uint64_t *words[PSKV_FMT_FILTER_MAX];
    uint32_t blocks[PSKV_FMT_FILTER_MAX];
    bool damaged;
} filters;

static void filters_read(store *st, const char *table, filters *f)
{
    memset(f, 0, sizeof *f);
    for (uint32_t i = 0; i < PSKV_FMT_FILTER_MAX; i++) {
        char name[PSKV_NAME_MAX + 32];
        snprintf(name, sizeof name, "%s%s/%u", PSKV_FMT_FILTER_PREFIX, table, i);
        size_t len;
        bool bad;
        const uint8_t *b = meta_body(st, name, &len, &bad), *bits;
        if (b == NULL) {
            f->damaged = bad;
            return;
        }
        uint64_t capacity, count;
        uint32_t blocks;
        if (pskv_fmt_filter_get(b, len, &capacity, &count, &blocks, &bits) != 0) {
            f->damaged = true;
            return;
        }
        f->words[i] = malloc((size_t)blocks * 64);
        if (f->words[i] == NULL) {
            f->damaged = true;
            return;
        }
        memcpy(f->words[i], bits, (size_t)blocks * 64);
        f->blocks[i] = blocks;
        f->n = i + 1;
    }
}

static bool filters_maybe(const filters *f, uint64_t key)
{
    uint64_t h = pskv_fmt_filter_hash(key);
    for (uint32_t i = 0; i < f->n; i++)
        if (pskv_fmt_filter_probe(f->words[i], f->blocks[i], h))
            return true;
    return false;
}

static void filters_free(filters *f)
{
    for (uint32_t i = 0; i < f->n; i++)
        free(f->words[i]);
}

/* ---------------------------------------------------------------- verify */

/* A cursor walk's entries against LMDB's own count of a database (kept in
 * its database record, not taken from its pages): a page whose key count
 * was lowered hides its last keys in order, and only a walk shows it. The
 * rows databases get this from verify_rows; this covers the rest (the
 * list of databases, the records, the undo). 0 or 1 problem. */
static uint64_t verify_entries(store *st, MDB_dbi dbi, const char *what)
{
    MDB_stat ms;
    MDB_cursor *cur;
    MDB_val k, v;
    uint64_t seen = 0;
    int rc = mdb_stat(st->txn, dbi, &ms);
    if (rc == 0)
        rc = mdb_cursor_open(st->txn, dbi, &cur);
    if (rc != 0) {
        printf("%s: cannot be read: %s\n", what, mdb_strerror(rc));
        return 1;
    }
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT))
        if (++seen > ms.ms_entries)
            break; /* bounded whatever the count says */
    mdb_cursor_close(cur);
    if (rc != 0 && rc != MDB_NOTFOUND) {
        printf("%s: reading it failed after %" PRIu64 " entries: %s\n", what, seen,
               mdb_strerror(rc));
        return 1;
    }
    if (seen != ms.ms_entries) {
        printf("%s: %" PRIu64 " entries read, %" PRIu64 " counted by LMDB (a damaged page "
               "hides keys)\n",
               what, seen, (uint64_t)ms.ms_entries);
        return 1;
    }
    return 0;
}

/* The databases besides the rows: LMDB's list of databases, the meta
 * records, and the undo (absent in stores of older formats). */
static uint64_t verify_databases(store *st)
{
    MDB_dbi main_dbi, undo_dbi;
    uint64_t problems = 0;
    int rc = mdb_dbi_open(st->txn, NULL, 0, &main_dbi);
    problems += rc == 0 ? verify_entries(st, main_dbi, "main database (list of databases)") : 1;
    problems += verify_entries(st, st->meta, "meta database (records)");
    for (uint32_t i = 0; i < PSKV_UNDO_KEEP_MAX; i++) { /* absent in older formats */
        char name[PSKV_FMT_UNDO_SLOT_NAME_MAX];
        pskv_fmt_undo_slot_name(name, i);
        rc = mdb_dbi_open(st->txn, name, 0, &undo_dbi);
        if (rc == 0) {
            char what[64];
            snprintf(what, sizeof what, "undo database %s", name);
            problems += verify_entries(st, undo_dbi, what);
        } else if (rc != MDB_NOTFOUND) {
            printf("undo database %s: cannot be opened: %s\n", name, mdb_strerror(rc));
            problems++;
        }
    }
    return problems;
}

/* Every row of a table through one cursor: checksums, the filter, and the
 * walk's count and digest against the table's count record. */
static uint64_t verify_rows(store *st, table *t, uint32_t version, uint64_t *rows)
{
    uint64_t problems = 0;
    /* Every row's key must be in the table's filter of persisted keys
     * (when it has one: without, the library asks LMDB for every miss). */
    filters fl;
    filters_read(st, t->name, &fl);
    if (fl.damaged) {
        printf("table %s: filter of persisted keys damaged (misses will ask LMDB)\n", t->name);
        problems++;
    }
    MDB_cursor *cur;
    int rc = mdb_cursor_open(st->txn, t->dbi, &cur);
    if (rc != 0) {
        printf("table %s: cannot read its rows: %s\n", t->name, mdb_strerror(rc));
        filters_free(&fl);
        return problems + 1;
    }
    MDB_val k, v;
    uint64_t seen = 0, bad_rows = 0, unfiltered = 0, unfindable = 0, digest = 0;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        uint64_t key = k.mv_size == 8 && in_file(st, &k) ? pskv_fmt_key_get(k.mv_data) : 0,
                 check = 0;
        bool ok = k.mv_size == 8 && in_file(st, &k) && in_file(st, &v) &&
                  pskv_fmt_row_ok(key, v.mv_data, v.mv_size, stored_bytes(st, &t->info), &check);
        /* The walk follows sibling pages; a lookup descends by the branch
         * keys. Damage to those makes rows unfindable that the walk sees. */
        MDB_val found = {0, NULL};
        if (ok && (mdb_get(st->txn, t->dbi, &k, &found) != 0 || found.mv_data != v.mv_data)) {
            if (unfindable < 20)
                printf("table %s: row %" PRIu64 " is in the B-tree, but a lookup does not find "
                       "it\n",
                       t->name, key);
            unfindable++;
        }
        if (!ok) {
            if (bad_rows < 20)
                printf("table %s: row %" PRIu64 " fails its check\n", t->name, key);
            bad_rows++;
            if (in_file(st, &v))
                pskv_fmt_row_stored_check(v.mv_data, v.mv_size, stored_bytes(st, &t->info), &check);
        } else if (fl.n > 0 && !filters_maybe(&fl, key)) {
            if (unfiltered < 20)
                printf("table %s: row %" PRIu64 " missing from the filter of persisted keys\n",
                       t->name, key);
            unfiltered++;
        }
        digest += check;
        if (++seen % PROGRESS_EVERY == 0)
            progress("verify", t->name, seen, t->rows);
    }
    progress_end();
    mdb_cursor_close(cur);
    if (rc != MDB_NOTFOUND) {
        printf("table %s: reading rows failed after %" PRIu64 ": %s\n", t->name, seen,
               mdb_strerror(rc));
        problems++;
    }
    if (seen != t->rows) {
        printf("table %s: %" PRIu64 " rows read, %" PRIu64 " counted by LMDB\n", t->name, seen,
               t->rows);
        problems++;
    }
    if (version >= 2 && !t->count_ok) {
        printf("table %s: count record missing or damaged\n", t->name);
        problems++;
    } else if (version >= 2 && (seen != t->count_rows || digest != t->count_digest)) {
        /* Rows lost (or swapped) inside the B-tree: the walk disagrees with
         * what the last checkpoint recorded. */
        printf("table %s: %" PRIu64 " rows read, the checkpoint recorded %" PRIu64 "%s\n",
               t->name, seen, t->count_rows,
               seen == t->count_rows ? " (but their digest differs)" : "");
        problems++;
    }
    problems += bad_rows + unfiltered + unfindable;
    *rows += seen;
    filters_free(&fl);
    return problems;
}

static int cmd_verify(const char *dir)
{
    store st = {0};
    char path[4096];
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    if (store_open(&st, dir) != 0) {
        if (access(path, F_OK) == 0)
            printf("DAMAGED: the data file cannot be opened\n");
        return 1;
    }
    uint64_t problems = 0, rows = 0, seq = 0, ns;
    size_t len;
    bool bad;
    const uint8_t *f = meta_body(&st, PSKV_FMT_KEY_FORMAT, &len, &bad);
    uint32_t magic = 0, version = 0;
    if (f == NULL || pskv_fmt_format_get(f, len, &magic, &version) != 0 ||
        magic != PSKV_FMT_MAGIC || version < PSKV_FMT_VERSION_MIN || version > PSKV_FMT_VERSION) {
        printf("format record: %s\n", f == NULL ? "missing or damaged" : "unsupported version");
        problems++;
    }
    const uint8_t *c = meta_body(&st, PSKV_FMT_KEY_CHECKPOINT, &len, &bad);
    if (bad || (c != NULL && pskv_fmt_pair_get(c, len, &seq, &ns) != 0) ||
        (c == NULL && version >= 2)) {
        printf("checkpoint record: %s\n", c == NULL && !bad ? "missing" : "damaged");
        problems++;
    }
    uint64_t file_seq;
    int seq_rc = pskv__seqfile_read(dir, &file_seq);
    if (seq_rc == PSKV_ECORRUPT) {
        printf("pskv.seq: damaged\n");
        problems++;
    } else if (seq_rc == 0 && file_seq > seq) {
        printf("checkpoint %" PRIu64 " is older than the last committed one (%" PRIu64
               ", pskv.seq): the data file went back\n",
               seq, file_seq);
        problems++;
    }
    const uint8_t *bytes;
    uint64_t meta_seq;
    if (user_meta(&st, &bytes, &len, &meta_seq) < 0) {
        printf("checkpoint metadata record: damaged\n");
        problems++;
    }
    table *ts;
    uint32_t n;
    if (tables_list(&st, &ts, &n) != 0) {
        printf("meta database: listing the tables failed\n");
        problems++;
    }
    for (uint32_t i = 0; i < n; i++) {
        table *t = &ts[i];
        if (!t->schema_ok) {
            printf("table %s: schema record damaged or invalid\n", t->name);
            problems++;
        } else if (!t->has_rows_db) {
            printf("table %s: rows database missing\n", t->name);
            problems++;
        } else {
            problems += verify_rows(&st, t, version, &rows);
        }
    }
    problems += verify_databases(&st);
    printf("%s: %u tables, %" PRIu64 " rows, %" PRIu64 " problems\n", problems ? "DAMAGED" : "ok",
           n, rows, problems);
    free(ts);
    store_close(&st);
    return problems ? 1 : 0;
}

/* ---------------------------------------------------------------- dump */

static void print_row(uint64_t key, const float *row, const pskv_table_info *info)
{
    printf("%" PRIu64 "\t", key);
    for (uint32_t j = 0; j < info->dim; j++)
        printf(j ? " %.9g" : "%.9g", (double)row[j]);
    printf("\t");
    for (uint32_t j = 0; j < info->state_floats; j++) {
        if (info->options.optimizer == PSKV_OPT_ADAM && j + 1 == info->state_floats) {
            uint32_t steps; /* Adam's step count is an integer in the last slot */
            memcpy(&steps, &row[info->dim + j], sizeof steps);
            printf(" %" PRIu32, steps);
        } else {
            printf(j ? " %.9g" : "%.9g", (double)row[info->dim + j]);
        }
    }
    printf("\n");
}

static bool row_value_ok(const store *st, const table *t, uint64_t key, const MDB_val *v)
{
    return in_file(st, v) &&
           pskv_fmt_row_ok(key, v->mv_data, v->mv_size, stored_bytes(st, &t->info), NULL);
}

static int dump_one(const store *st, const table *t, uint64_t key, float *row)
{
    uint8_t kb[8];
    pskv_fmt_key(kb, key);
    MDB_val k = {8, kb}, v;
    if (mdb_get(st->txn, t->dbi, &k, &v) != 0) {
        printf("%" PRIu64 "\tabsent\n", key);
        return 0;
    }
    if (!row_value_ok(st, t, key, &v)) {
        fprintf(stderr, "pskv: row %" PRIu64 " fails its check\n", key);
        return 1;
    }
    memcpy(row, v.mv_data, t->info.row_bytes); /* the payload */
    print_row(key, row, &t->info);
    return 0;
}

static int cmd_dump(const char *dir, const char *name, const char *keys)
{
    store st = {0};
    if (store_open(&st, dir) != 0)
        return 1;
    table *ts;
    uint32_t n;
    (void)tables_list(&st, &ts, &n); /* a partial list still finds the table */
    table *t = table_named(ts, n, name);
    int status = 0;
    if (t == NULL || !t->schema_ok || !t->has_rows_db) {
        fprintf(stderr, "pskv: %s: %s\n", name, t == NULL ? "no such table" : "table damaged");
        status = 1;
    }
    float *row = status == 0 ? malloc(t->info.row_bytes) : NULL;
    if (status == 0 && row == NULL) {
        fprintf(stderr, "pskv: out of memory\n");
        status = 1;
    }
    if (status == 0)
        printf("# key\tweights[%u]\tstate[%u]\n", t->info.dim, t->info.state_floats);
    if (status == 0 && keys != NULL) {
        for (const char *p = keys; *p && status == 0;) {
            char *end;
            errno = 0;
            uint64_t key = strtoull(p, &end, 0);
            if (end == p || errno != 0 || (*end != ',' && *end != '\0')) {
                fprintf(stderr, "pskv: --keys: bad key at \"%s\"\n", p);
                status = 2;
                break;
            }
            status = dump_one(&st, t, key, row);
            p = *end == ',' ? end + 1 : end;
        }
    } else if (status == 0) {
        MDB_cursor *cur;
        int crc = mdb_cursor_open(st.txn, t->dbi, &cur);
        if (crc != 0) {
            fprintf(stderr, "pskv: %s: cannot read its rows: %s\n", name, mdb_strerror(crc));
            status = 1;
        }
        MDB_val k, v;
        uint64_t seen = 0;
        for (int rc = status ? MDB_NOTFOUND : mdb_cursor_get(cur, &k, &v, MDB_FIRST);
             rc == 0 && status == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
            uint64_t key = k.mv_size == 8 && in_file(&st, &k) ? pskv_fmt_key_get(k.mv_data) : 0;
            if (k.mv_size != 8 || !in_file(&st, &k) || !row_value_ok(&st, t, key, &v)) {
                fprintf(stderr, "pskv: row %" PRIu64 " fails its check\n", key);
                status = 1;
                break;
            }
            memcpy(row, v.mv_data, t->info.row_bytes); /* the payload */
            print_row(key, row, &t->info);
            if (++seen % PROGRESS_EVERY == 0)
                progress("dump", t->name, seen, t->rows);
        }
        progress_end();
        if (crc == 0)
            mdb_cursor_close(cur);
    }
    free(row);
    free(ts);
    store_close(&st);
    if (fflush(stdout) != 0)
        return 1;
    return status;
}

/* ---------------------------------------------------------------- backup */

static int cmd_backup(const char *dir, const char *dest)
{
    store st = {0};
    if (store_open(&st, dir) != 0)
        return 1;
    if (progress_on)
        fprintf(stderr, "backup: copying %s to %s (compacting)...", dir, dest);
    /* The library's backup: it claims DEST first (its lock), writes the
     * copy under a temporary name and renames it whole into place. */
    int rc = pskv__backup_env(st.lmdb.mdb, dest);
    if (progress_on)
        fprintf(stderr, "\r\033[K");
    if (rc != 0)
        fprintf(stderr, "pskv: backup to %s: %s\n", dest,
                pskv_last_error()[0] ? pskv_last_error()
                : rc == PSKV_EEXIST  ? "it already holds a store"
                : rc == PSKV_EBUSY ? "a store or another backup is using it"
                                   : pskv_strerror(rc));
    store_close(&st);
    return rc == 0 ? 0 : 1;
}

/* ---------------------------------------------------------------- meta */

static int cmd_meta(const char *dir)
{
    store st = {0};
    if (store_open(&st, dir) != 0)
        return 1;
    const uint8_t *bytes;
    size_t len;
    uint64_t seq;
    int meta = user_meta(&st, &bytes, &len, &seq), status = 0;
    if (meta <= 0) {
        fprintf(stderr, "pskv: %s: %s\n", dir,
                meta < 0 ? "checkpoint metadata record is damaged"
                         : "no checkpoint carried metadata");
        status = 1;
    } else if (fwrite(bytes, 1, len, stdout) != len || fflush(stdout) != 0) {
        fprintf(stderr, "pskv: writing the metadata: %s\n", strerror(errno));
        status = 1;
    }
    store_close(&st);
    return status;
}

/* ---------------------------------------------------------------- compact */

static int cmd_compact(const char *dir)
{
    uint64_t before = 0, after = 0;
    if (progress_on)
        fprintf(stderr, "compact: rewriting %s/data.mdb with its live pages...", dir);
    int rc = pskv_compact(dir, &before, &after);
    if (progress_on)
        fprintf(stderr, "\r\033[K");
    if (rc != 0) {
        fprintf(stderr, "pskv: compact %s: %s%s%s\n", dir, pskv_strerror(rc),
                pskv_last_error()[0] ? ": " : "", pskv_last_error());
        return 1;
    }
    printf("compacted %s: data.mdb %" PRIu64 " -> %" PRIu64 " bytes\n", dir, before, after);
    return 0;
}

/* ---------------------------------------------------------------- main */

static int usage(void)
{
    fprintf(stderr, "usage: pskv stat DIR\n"
                    "       pskv verify DIR\n"
                    "       pskv dump DIR TABLE [--keys K1,K2,...]\n"
                    "       pskv backup DIR DEST\n"
                    "       pskv compact DIR\n"
                    "       pskv meta DIR\n");
    return 2;
}

static int run_command(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "stat") == 0)
        return cmd_stat(argv[2]);
    if (argc == 3 && strcmp(argv[1], "verify") == 0)
        return cmd_verify(argv[2]);
    if (argc == 4 && strcmp(argv[1], "dump") == 0)
        return cmd_dump(argv[2], argv[3], NULL);
    if (argc == 6 && strcmp(argv[1], "dump") == 0 && strcmp(argv[4], "--keys") == 0)
        return cmd_dump(argv[2], argv[3], argv[5]);
    if (argc == 4 && strcmp(argv[1], "backup") == 0)
        return cmd_backup(argv[2], argv[3]);
    if (argc == 3 && strcmp(argv[1], "meta") == 0)
        return cmd_meta(argv[2]);
    if (argc == 3 && strcmp(argv[1], "compact") == 0)
        return cmd_compact(argv[2]);
    return usage();
}

int main(int argc, char **argv)
{
    progress_on = isatty(STDERR_FILENO);
    if (argc < 3)
        return usage();
    /* LMDB follows page numbers and node sizes as it finds them: on a
     * damaged B-tree it can fault. The command runs in a child, and a
     * child killed by a signal is a damaged store, not a crashed tool. */
    const bool backup = argc == 4 && strcmp(argv[1], "backup") == 0;
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        return run_command(argc, argv); /* no child to be had: run here */
    if (pid == 0) {
        int rc = run_command(argc, argv);
        _exit(fflush(NULL) == 0 ? rc : 1);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return 1;
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    if (backup)
        pskv__backup_abandon(argv[3]); /* the child's half copy */
    int sig = WTERMSIG(status);
    if (sig != SIGSEGV && sig != SIGBUS && sig != SIGILL && sig != SIGFPE && sig != SIGABRT) {
        /* Not a fault inside LMDB: a reader that stopped reading (SIGPIPE
         * from `| head`), Ctrl-C, a kill. The tool ends the same way, as
         * a command in a pipeline should; nothing is said about the store. */
        signal(sig, SIG_DFL);
        raise(sig);
        return 128 + sig;
    }
    fflush(stdout);
    fprintf(stderr, "pskv: %s: damaged: B-tree (reading it crashed LMDB with signal %d, %s)\n",
            argv[2], WTERMSIG(status), strsignal(WTERMSIG(status)));
    if (strcmp(argv[1], "verify") == 0)
        printf("DAMAGED: B-tree unreadable\n");
    return 1;
}
