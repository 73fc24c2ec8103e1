/* The store: options, the list of open tables, store-wide statistics and
 * the store-level calls (open, close, checkpoint).
 * SPDX-License-Identifier: BSD-2-Clause */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "array.h"
#include "backup.h"
#include "changes.h"
#include "checkpoint.h"
#include "dirlock.h"
#include "errors.h"
#include "format.h"
#include "options.h"
#include "persist.h"
#include "prefetch.h"
#include "pskv_internal.h"
#include "table.h"
#include "undo.h"

int pskv_open_opts(const char *dir, const pskv_store_options *opts, pskv_store **out)
{
    pskv__detail_clear();
    if (out == NULL || opts == NULL)
        return pskv__fail(PSKV_EINVAL, "pskv_open: %s is NULL", out == NULL ? "out" : "opts");
    *out = NULL;
    for (size_t i = 0; i < sizeof opts->reserved / sizeof opts->reserved[0]; i++)
        if (opts->reserved[i] != 0)
            return pskv__fail(PSKV_EINVAL, "pskv_store_options.reserved[%zu] is not zero "
                                           "(initialize with pskv_store_options_init)", i);
    if (opts->durability < PSKV_DURABILITY_DEFAULT || opts->durability > PSKV_DURABILITY_NONE)
        return pskv__fail(PSKV_EINVAL, "durability %d is not an enum pskv_durability",
                          opts->durability);
    if (dir == NULL && opts->spill_max != 0)
        return pskv__fail(PSKV_EINVAL, "spill_max: a memory-only store (no directory) has no "
                                       "spill tier");
    if (dir == NULL && opts->map_size != 0)
        return pskv__fail(PSKV_EINVAL, "map_size: a memory-only store (no directory) persists "
                                       "nothing");
    if (opts->undo_off > 1)
        return pskv__fail(PSKV_EINVAL, "undo_off is %u: expected 0 or 1", opts->undo_off);
    if (opts->undo_keep > PSKV_UNDO_KEEP_MAX)
        return pskv__fail(PSKV_EINVAL, "undo_keep=%u: expected 1..%u", opts->undo_keep,
                          PSKV_UNDO_KEEP_MAX);
    if (opts->undo_off && opts->undo_keep > 0)
        return pskv__fail(PSKV_EINVAL, "undo=off with undo_keep=%u: keep none, or some",
                          opts->undo_keep);
    if (opts->at_seq_set > 1 ||
        (opts->at_seq_set && (dir == NULL || opts->durability == PSKV_DURABILITY_NONE)))
        return pskv__fail(PSKV_EINVAL, "at_seq: only a durable directory store has checkpoints "
                                       "to open at");
    if (dir != NULL && dir[0] == '\0')
        return pskv__fail(PSKV_EINVAL, "the directory is \"\" (NULL makes a memory-only store)");
    if (dir != NULL && mkdir(dir, 0755) != 0 && errno != EEXIST)
        return pskv__fail(PSKV_EIO, "cannot create directory '%s': %s", dir, strerror(errno));
    if (dir != NULL) {
        struct stat st;
        if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
            return pskv__fail(PSKV_EINVAL, "'%s' is not a directory", dir);
    }
    pskv_store *s = calloc(1, sizeof *s);
    if (s == NULL)
        return PSKV_ENOMEM;
    s->opts = *opts;
    pthread_mutex_init(&s->lock, NULL);
    pthread_mutex_init(&s->evict_lock, NULL);
    pthread_mutex_init(&s->moved_lock, NULL);
    pthread_cond_init(&s->moved_cv, NULL);
    pskv__env_init(&s->lmdb, NULL); /* its directory: below */
    pthread_mutex_init(&s->ckpt_lock, NULL);
    s->lock_fd = -1;
    s->undo_keep = opts->undo_off ? 0 : opts->undo_keep ? opts->undo_keep : PSKV_UNDO_KEEP_DEFAULT;
    pskv__handles_init(&s->handles);
    pskv__prefetch_init(s);
    if (dir != NULL) {
        const char *mode = getenv("PSKV_IO");
        bool force_sync = mode != NULL && strcmp(mode, "sync") == 0;
        s->dir = strdup(dir);
        s->lmdb.dir = s->dir;
        /* One process owns a store directory (its spill files, its LMDB
         * environment): a second open gets PSKV_EBUSY. */
        int rc = s->dir ? pskv__dir_lock(s->dir, &s->lock_fd) : PSKV_ENOMEM;
        if (rc == 0)
            rc = pskv__io_create(force_sync, 64, &s->io);
        /* A killed backup's remains are not a new store (backup.c). */
        if (rc == 0 && opts->durability != PSKV_DURABILITY_NONE)
            rc = pskv__backup_unfinished(s->dir);
        if (rc == 0 && opts->durability != PSKV_DURABILITY_NONE)
            rc = pskv__persist_open(s);
        /* At the checkpoint asked for: the last one, or one the kept undo
         * generations reach, rolled back to for good. */
        if (rc == 0 && opts->at_seq_set && opts->at_seq != s->ckpt_seq) {
            uint32_t kept = 0;
            const uint64_t was = s->ckpt_seq;
            rc = pskv__undo_rollback(s, opts->at_seq, &kept);
            if (rc == PSKV_ENOTFOUND)
                pskv__fail(rc, "at_seq=%llu: the store is at checkpoint %llu and keeps undo for "
                               "%u checkpoint%s before it (%llu..%llu); undo_keep sets how many",
                           (unsigned long long)opts->at_seq, (unsigned long long)was, kept,
                           kept == 1 ? "" : "s", (unsigned long long)(was - kept),
                           (unsigned long long)was);
        }
        if (rc != 0) {
            pskv__close_abandon(s); /* nothing to checkpoint */
            return rc;
        }
    }
    *out = s;
    return 0;
}

int pskv_open(const char *dir, const char *config, pskv_store **out)
{
    if (out == NULL)
        return PSKV_EINVAL;
    *out = NULL;
    pskv_store_options o;
    pskv_store_options_init(&o);
    int rc = pskv_store_options_parse(&o, config);
    if (rc != 0)
        return rc;
    return pskv_open_opts(dir, &o, out);
}

static void store_close(pskv_store *s, bool final_checkpoint)
{
    if (s == NULL)
        return;
    pskv__prefetch_stop(s);
    /* A durable store ends with a checkpoint. If it fails, the previous
     * checkpoint stays the state on disk: callers who must know call
     * pskv_checkpoint themselves first. */
    if (s->lmdb.mdb != NULL && final_checkpoint)
        (void)pskv__checkpoint_run(s, NULL, NULL, true);
    /* An asynchronous checkpoint still writing owns ckpt_lock until its
     * commit; its handle outlives the store. */
    pthread_mutex_lock(&s->ckpt_lock);
    pthread_mutex_unlock(&s->ckpt_lock);
    /* Iterators and exports left open: later calls on them return an
     * error instead of reading the tables freed below. */
    pskv__handles_close(&s->handles);
    for (uint32_t i = 0; i < s->ntables; i++)
        pskv__table_destroy(s->tables[i]);
    free(s->tables);
    pskv__persist_close(s);
    /* A scratch store leaves nothing behind, so that its directory can be
     * removed; a durable one keeps its lock file. Only a holder gets here
     * with lock_fd >= 0. */
    pskv__dir_unlock(s->dir, s->lock_fd, s->opts.durability == PSKV_DURABILITY_NONE);
    pskv__io_destroy(s->io);
    free(s->dir);
    pthread_mutex_destroy(&s->ckpt_lock);
    pskv__env_destroy(&s->lmdb);
    pthread_cond_destroy(&s->moved_cv);
    pthread_mutex_destroy(&s->moved_lock);
    pthread_mutex_destroy(&s->evict_lock);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

void pskv_close(pskv_store *s) { store_close(s, true); }

void pskv_close_discard(pskv_store *s) { store_close(s, false); }

void pskv__close_abandon(pskv_store *s) { store_close(s, false); }

static bool name_valid(const char *name)
{
    if (name == NULL)
        return false;
    size_t len = strlen(name);
    return len >= 1 && len <= PSKV_NAME_MAX && strchr(name, '/') == NULL;
}

/* PSKV_ESCHEMA, saying which key contradicts what. */
static int schema_conflict(const char *name, const pskv_table_options *have,
                           const pskv_table_options *want, const char *whose)
{
    char w[128], h[128];
    pskv__table_schema_diff(have, want, w, h, sizeof w);
    return pskv__fail(PSKV_ESCHEMA, "table '%s': %s contradicts %s schema (%s)", name, w, whose,
                      h);
}

static pskv_table *table_lookup(const pskv_store *s, const char *name)
{
    for (uint32_t i = 0; i < s->ntables; i++)
        if (strcmp(s->tables[i]->name, name) == 0)
            return s->tables[i];
    return NULL;
}

/* Open or create under the store lock. `requested` holds the caller's
 * options on top of either defaults (create) or the table's schema (open). */
static int table_open_locked(pskv_store *s, const char *name, const pskv_table_options *wanted,
                             pskv_table **out)
{
    /* init_gen 0 asks for no generator in particular: an existing table
     * keeps its own (a 0.2 table opened with options filled by
     * pskv_table_options_init), a new one gets the current one. */
    pskv_table_options req = *wanted;
    const pskv_table_options *requested = &req;
    pskv_table *t = table_lookup(s, name);
    if (t != NULL) {
        if (req.init_gen == 0)
            req.init_gen = t->opts.init_gen;
        if (!pskv__table_schema_equal(&t->opts, requested))
            return schema_conflict(name, &t->opts, requested, "the open table's");
        *out = t;
        return 0;
    }
    bool persisted = false;
    if (s->lmdb.mdb != NULL) {
        pskv_table_options schema;
        int rc = pskv__persist_table_schema(s, name, &schema);
        if (rc != 0 && rc != PSKV_ENOTFOUND)
            return rc == PSKV_ECORRUPT
                       ? pskv__fail(rc, "table '%s': its schema record is damaged", name)
                       : rc;
        persisted = rc == 0;
        if (persisted && req.init_gen == 0)
            req.init_gen = schema.init_gen;
        if (persisted && !pskv__table_schema_equal(&schema, requested))
            return schema_conflict(name, &schema, requested, "the persisted");
    }
    if (requested->dim == 0) /* creating needs a dim */
        return pskv__fail(PSKV_EINVAL, "table '%s' does not exist yet: creating it needs dim=N "
                                       "(1..4096)", name);
    /* a row as the budget counts it */
    uint64_t row_cost = pskv__optimizer_row_bytes(requested->optimizer, requested->dim) +
                        pskv_fmt_row_extra_bytes(requested->dim, requested->update, requested->staleness_on) +
                        PSKV__VERSION_BYTES + (pskv__store_admits(s) ? PSKV__ADMIT_ROW_BYTES : 0);
    if (s->opts.memory_budget > 0 && s->opts.memory_budget < row_cost)
        return pskv__fail(PSKV_EINVAL, "table '%s': memory_budget=%llu cannot hold one of its "
                                       "rows (%llu bytes of weights, optimizer state, version "
                                       "and admission)",
                          name, (unsigned long long)s->opts.memory_budget,
                          (unsigned long long)row_cost);
    if (requested->update == PSKV_UPDATE_SYNC && pskv__store_admits(s))
        return pskv__fail(PSKV_EINVAL, "table '%s': update=sync in a memory-only store with a "
                                       "memory_budget: an evicted row would take its accumulated "
                                       "gradients with it (use a directory store, where rows "
                                       "spill, or no budget)", name);
    pskv_table **nt = pskv__array_grow(s->tables, &s->tables_cap, s->ntables + 1ull,
                                       sizeof *nt, 4);
    if (nt == NULL)
        return PSKV_ENOMEM;
    s->tables = nt;
    int rc = pskv__table_create(s, name, requested, &t);
    if (rc == 0 && s->lmdb.mdb != NULL) {
        /* Its write transaction waits for a running checkpoint (which may
         * grow the map while no other transaction is open). */
        pthread_mutex_lock(&s->ckpt_lock);
        rc = pskv__persist_table_attach(s, t, !persisted);
        pthread_mutex_unlock(&s->ckpt_lock);
        if (rc != 0)
            pskv__table_destroy(t);
    }
    if (rc != 0)
        return rc;
    s->tables[s->ntables++] = t;
    *out = t;
    return 0;
}

/* The arguments every table open checks: PSKV_EINVAL with a detail. */
static int table_args(const pskv_store *s, const char *name, pskv_table **out)
{
    pskv__detail_clear();
    if (s == NULL || out == NULL)
        return pskv__fail(PSKV_EINVAL, "%s is NULL", s == NULL ? "the store" : "out");
    if (!name_valid(name))
        return pskv__fail(PSKV_EINVAL, "table name %s%.64s%s: expected 1..255 bytes without '/'",
                          name ? "'" : "", name ? name : "NULL", name ? "'" : "");
    return 0;
}

int pskv_table_open_opts(pskv_store *s, const char *name, const pskv_table_options *opts,
                         pskv_table **out)
{
    int arc = table_args(s, name, out);
    if (arc != 0)
        return arc;
    if (pskv_table_options_validate(opts) != 0)
        return PSKV_EINVAL; /* its detail says which field */
    pthread_mutex_lock(&s->lock);
    int rc = table_open_locked(s, name, opts, out);
    pthread_mutex_unlock(&s->lock);
    return rc;
}

int pskv_table_open(pskv_store *s, const char *name, const char *config, pskv_table **out)
{
    int arc = table_args(s, name, out);
    if (arc != 0)
        return arc;
    pthread_mutex_lock(&s->lock);
    pskv_table *t = table_lookup(s, name);
    pskv_table_options o;
    int rc = 0;
    if (t != NULL) {
        o = t->opts; /* config keys are checked against the schema */
    } else if (s->lmdb.mdb != NULL &&
               (rc = pskv__persist_table_schema(s, name, &o)) == PSKV_ENOTFOUND) {
        pskv_table_options_init(&o);
        rc = 0;
    } else if (s->lmdb.mdb == NULL) {
        pskv_table_options_init(&o);
    }
    if (rc == 0)
        rc = pskv_table_options_parse(&o, config);
    if (rc == 0)
        rc = table_open_locked(s, name, &o, out);
    pthread_mutex_unlock(&s->lock);
    return rc;
}

int pskv_table_find(pskv_store *s, const char *name, pskv_table **out)
{
    int arc = table_args(s, name, out); /* clears the detail first */
    if (arc != 0)
        return arc;
    pthread_mutex_lock(&s->lock);
    pskv_table *t = table_lookup(s, name);
    pthread_mutex_unlock(&s->lock);
    if (t == NULL)
        return pskv__fail(PSKV_ENOTFOUND, "table '%s' is not open in this store%s", name,
                          s->lmdb.mdb != NULL ? " (a persisted table is opened with pskv_table_open)"
                                         : "");
    *out = t;
    return 0;
}

int pskv_store_stats_get(const pskv_store *s, pskv_store_stats *out)
{
    if (s == NULL || out == NULL)
        return PSKV_EINVAL;
    pskv_store *ms = (pskv_store *)s;
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&ms->lock);
    for (uint32_t i = 0; i < s->ntables; i++) {
        pskv_table_stats st;
        memset(&st, 0, sizeof st);
        pskv__table_stats_add(s->tables[i], &st);
        out->rows += st.rows;
        out->row_bytes += st.row_bytes;
        out->dram_bytes += st.dram_bytes;
        out->rows_evicted += st.rows_evicted;
    }
    out->tables = s->ntables;
    out->memory_budget = s->opts.memory_budget;
    out->resident_bytes = (uint64_t)atomic_load(&ms->resident_bytes);
    out->spill_bytes = atomic_load(&ms->spill_bytes);
    out->checkpoint_seq = atomic_load(&ms->ckpt_seq_pub);
    out->checkpoint_rows = atomic_load(&ms->ckpt_last_rows);
    out->checkpoint_ns = atomic_load(&ms->ckpt_last_ns);
    out->checkpoints_failed = atomic_load(&ms->n_ckpt_failed);
    out->db_bytes = pskv__env_file_bytes(&ms->lmdb);
    out->map_grows = atomic_load(&ms->lmdb.n_grows);
    out->lmdb_reopens = atomic_load(&ms->lmdb.n_restarts);
    out->stale_readers = atomic_load(&ms->lmdb.n_stale_readers);
    pthread_mutex_unlock(&ms->lock);
    return 0;
}

/* PSKV_ENOTSUP for a store that persists nothing (memory-only, scratch). */
static int persists_nothing(const pskv_store *s)
{
    return pskv__fail(PSKV_ENOTSUP, "a %s store persists nothing: checkpoints need a "
                                    "directory store with durability=checkpoint",
                      s->dir ? "durability=none" : "memory-only");
}

int pskv_checkpoint(pskv_store *s)
{
    pskv__detail_clear();
    if (s == NULL)
        return PSKV_EINVAL;
    if (s->lmdb.mdb == NULL)
        return persists_nothing(s);
    pskv_ckpt *c;
    int rc = pskv__checkpoint_start(s, NULL, 0, false, &c);
    return rc != 0 ? rc : pskv__checkpoint_wait(c, NULL);
}

/* has_meta: commit meta (len bytes; NULL with 0: an empty record), else
 * keep the last metadata record. */
static int checkpoint_start(pskv_store *s, const void *meta, size_t len, bool has_meta,
                            pskv_ckpt **out)
{
    pskv__detail_clear();
    if (out != NULL)
        *out = NULL;
    if (s == NULL || out == NULL || (meta == NULL && len > 0) || len > PSKV_CHECKPOINT_META_MAX)
        return PSKV_EINVAL;
    if (s->lmdb.mdb == NULL)
        return persists_nothing(s);
    return pskv__checkpoint_start(s, meta, len, has_meta, out);
}

int pskv_checkpoint_start(pskv_store *s, const void *meta, size_t len, pskv_ckpt **out)
{
    /* meta NULL: no metadata, the last record stays (pskv.h). */
    return checkpoint_start(s, meta, len, meta != NULL, out);
}

int pskv_checkpoint_wait(pskv_ckpt *c, uint64_t *seq)
{
    return c == NULL ? PSKV_EINVAL : pskv__checkpoint_wait(c, seq);
}

int pskv_checkpoint_done(pskv_ckpt *c)
{
    return c == NULL ? PSKV_EINVAL : pskv__checkpoint_done(c) ? 1 : 0;
}

int pskv_checkpoint_with_meta(pskv_store *s, const void *meta, size_t len)
{
    pskv_ckpt *c;
    int rc = checkpoint_start(s, meta, len, true, &c);
    return rc != 0 ? rc : pskv_checkpoint_wait(c, NULL);
}
