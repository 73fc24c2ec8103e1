/* The batch row calls: pull, get, push, put, erase, prefetch.
 *
 * Every batch call hashes its keys once, groups them by shard (plan.c) and
 * takes each shard's lock once. Inside a shard it resolves keys in chunks,
 * prefetching index entries a few keys ahead and rows as soon as their slot
 * is known, then copies or updates the chunk's rows: the memory misses of a
 * chunk overlap instead of being paid one after another. Where each key
 * lives (DRAM, spill file, LMDB) is asked of tier.c.
 * SPDX-License-Identifier: BSD-2-Clause */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "budget.h"
#include "changes.h"
#include "cold.h"
#include "dirty.h"
#include "errors.h"
#include "init.h"
#include "plan.h"
#include "prefetch.h"
#include "pskv_internal.h"
#include "rows.h"
#include "tier.h"

/* Software pipeline depths: an index entry is prefetched INDEX_AHEAD keys
 * before its key is resolved, a row ROWS_AHEAD keys before it is used. */
#ifndef INDEX_AHEAD
#define INDEX_AHEAD 16u
#endif
#ifndef ROWS_AHEAD
#define ROWS_AHEAD 16u /* a power of two */
#endif
/* A pull creating rows reserves room for this many at a time: one
 * reservation (and index check) per run of new keys instead of per key,
 * while a pull of old keys grows nothing ahead of need by much. */
#define READ_RESERVE 64u

/* ---------------------------------------------------------------- helpers */

static void layout_read_lock(pskv_table *t) { pthread_rwlock_rdlock(&t->layout_lock); }
static void layout_unlock(pskv_table *t) { pthread_rwlock_unlock(&t->layout_lock); }

/* A new row: initial weights and the optimizer's initial state, unless
 * the caller overwrites them. */
static float *row_create(pskv_table *t, pskv__shard *sh, uint64_t key, uint64_t hash,
                         bool init_weights, bool init_state, uint64_t version)
{
    pskv__entry *e = pskv__shard_insert_new(sh, key, hash);
    sh->created++;
    if (t->durable)
        pskv__dirty_created(sh, e, t->parity); /* uses a list reservation */
    float *row = pskv__shard_row(sh, e->slot);
    if (init_weights)
        pskv__init_weights(&t->opts, key, row, t->dim);
    if (init_state)
        pskv__optimizer_init_state(&t->opt, row + t->dim);
    if (t->extra_bytes) /* update=sync: an empty accumulator */
        memset((uint8_t *)row + t->payload_bytes, 0, t->extra_bytes);
    pskv__row_stamp(t, row, 0);
    pskv__row_changed(t, sh, key, row, version);
    return row;
}

static int check_row_args(const pskv_table *t, const uint64_t *keys, size_t n, const void *buf)
{
    pskv__detail_clear();
    if (t == NULL || (n > 0 && (keys == NULL || buf == NULL)))
        return pskv__fail(PSKV_EINVAL, "%s is NULL", t == NULL ? "the table"
                                                     : keys == NULL ? "keys" : "the row buffer");
    if (n > UINT32_MAX - 1)
        return pskv__fail(PSKV_EINVAL, "%zu keys in one call: at most %u", n, UINT32_MAX - 1);
    return 0;
}

/* PSKV_EINVAL naming the first non-finite value of rows[n][dim]. */
static int nonfinite_detail(const uint64_t *keys, const float *rows, size_t n, uint32_t dim,
                            const char *what)
{
    for (size_t i = 0; i < n; i++)
        for (uint32_t j = 0; j < dim; j++)
            if (!isfinite(rows[i * dim + j]))
                return pskv__fail(PSKV_EINVAL, "%s %zu (key %llu), value %u is %s: nothing "
                                               "was changed", what, i,
                                  (unsigned long long)keys[i], j,
                                  isnan(rows[i * dim + j]) ? "NaN" : "infinite");
    return PSKV_EINVAL;
}

/* ---------------------------------------------------------------- shard visits */

/* Called with the shard's lock held for the plan's keys of shard s. */
typedef int (*shard_visit_fn)(pskv_table *t, const pskv__plan *p, uint32_t s, void *ctx);

/* Where this thread starts its walk over the shards: threads that start at
 * different shards rarely meet on the same lock. */
static uint32_t walk_start(uint32_t shards)
{
    static _Thread_local uint32_t tag;
    return (uint32_t)(pskv__key_hash((uint64_t)(uintptr_t)&tag, 0) % shards);
}

/* Visit every shard that has keys in the plan, each under its lock. A
 * shard whose lock is busy is skipped and visited after the others, so
 * concurrent batch calls overlap instead of queueing on one shard after
 * another. Stops at the first error of fn. */
static int visit_shards(pskv_table *t, const pskv__plan *p, shard_visit_fn fn, void *ctx)
{
    uint32_t shards = t->nshards;
    uint32_t first = walk_start(shards);
    uint32_t busy = 0;
    int rc = 0;
    for (uint32_t k = 0; k < shards && rc == 0; k++) {
        uint32_t s = first + k < shards ? first + k : first + k - shards;
        if (p->start[s] == p->start[s + 1])
            continue;
        pskv__shard *sh = &t->shards[s];
        if (pthread_mutex_trylock(&sh->lock) != 0) {
            p->busy[busy++] = s;
            continue;
        }
        rc = fn(t, p, s, ctx);
        pthread_mutex_unlock(&sh->lock);
    }
    for (uint32_t k = 0; k < busy && rc == 0; k++) {
        pskv__shard *sh = &t->shards[p->busy[k]];
        pthread_mutex_lock(&sh->lock);
        rc = fn(t, p, p->busy[k], ctx);
        pthread_mutex_unlock(&sh->lock);
    }
    return rc;
}

/* Account rows a call brought into DRAM (created, or read from the spill
 * file or LMDB) and keep the store within its budget; no lock held. */
static void rows_added(pskv_table *t, uint64_t added)
{
    if (added == 0)
        return;
    pskv__budget_account(t->store, (int64_t)(added * t->budget_bytes));
    /* Best effort: a failure to evict (spill full) is reported by a later
     * call's admission check, before it changes anything. */
    (void)pskv__budget_enforce(t->store);
}

/* ---------------------------------------------------------------- row pipeline */

/* ROW_PUT_ROWS writes weights, and state when given, from bytes a chunk
 * holds (an apply in REPLACE mode); ROW_ADD adds values to the weights (an
 * apply in ADD mode); ROW_STEP applies an update=sync row's accumulator
 * (pskv_step; creates no row). ROW_PUSH on an update=sync table adds the
 * gradient to the accumulator instead of stepping. */
enum row_op { ROW_READ, ROW_PUSH, ROW_PUT, ROW_PUT_ROWS, ROW_ADD, ROW_STEP };

/* Gradients of repeated keys, summed in order of appearance into a compact
 * buffer that holds rows only for keys that repeat; the other keys use the
 * caller's gradients in place. summed_row[i] names the buffer row of kept
 * position i, or UINT32_MAX. */
typedef struct dup_sums {
    uint32_t *summed_row; /* [n] */
    float *rows;
} dup_sums;


typedef struct row_ctx {
    enum row_op op;
    bool create;       /* ROW_READ: pull (true) or get */
    bool whole;        /* ROW_READ: weights and state (row_floats per row) */
    bool count_reads;  /* ROW_READ: count the reads in the admission sketch (a
                          pull's or get's first pass; not retries, iterations, exports) */
    float *out;        /* ROW_READ */
    uint8_t *found;    /* ROW_READ, optional */
    const float *src;  /* ROW_PUSH: gradients; ROW_PUT, ROW_ADD: values; by position */
    const uint8_t *wsrc, *ssrc; /* ROW_PUT_ROWS: weights, state (or NULL), any alignment */
    const dup_sums *dups; /* ROW_PUSH: sums of repeated keys, or NULL */
    uint64_t misses;
    uint64_t created;
    uint64_t faulted;      /* cold rows read from LMDB */
    uint32_t not_resident; /* keys found spilled or in motion: load and retry */
    const uint32_t *cow_reserved; /* writers: pre-images reserved per shard */
    float *save;       /* ROW_PUSH: one row, the row before its step */
    uint64_t nonfinite; /* ROW_PUSH: rows whose step would not be finite */
    uint64_t stepped;   /* ROW_STEP: accumulators applied */
    bool at_step;       /* ROW_PUSH from pskv_push_at: gradients of training step `step` */
    uint64_t step;
    uint64_t stale;     /* ROW_PUSH at a step: rows dropped as too old (staleness=S) */
    uint32_t pending_added; /* update=sync ROW_PUSH: keys put on this shard's pending list */
    /* The shard visit under way: its shard, the plan's keys, its version. */
    pskv__shard *sh;
    const uint64_t *keys;
    uint64_t version;
} row_ctx;

/* Row slots a writing batch reserves in a shard of k keys: room for each
 * to be new, or for a step (which creates none) one, which only keeps the
 * evictors away from the shard until the batch is done. */
static uint32_t rows_reserved(enum row_op op, uint32_t k) { return op == ROW_STEP ? 1 : k; }

/* Marks a key whose row is not in DRAM in the pipeline: not used this time. */
static float not_resident_mark;
#define NOT_RESIDENT (&not_resident_mark)

/* update=sync: add g to the row's accumulator (weights untouched); a key
 * whose accumulator was empty goes on its shard's pending list, from room
 * the batch reserved. A sum that would not be finite leaves it as it was. */
static void accumulate(pskv_table *t, row_ctx *c, uint64_t key, float *row, const float *g)
{
    const uint32_t dim = t->dim;
    float *acc = row + t->row_floats;
    bool finite = true;
    for (uint32_t j = 0; j < dim; j++) {
        c->save[j] = acc[j] + g[j];
        finite = finite && isfinite(c->save[j]);
    }
    if (!finite) {
        c->nonfinite++;
        return;
    }
    memcpy(acc, c->save, (size_t)dim * sizeof *acc);
    uint32_t pushes;
    memcpy(&pushes, acc + dim, sizeof pushes);
    if (pushes == 0) {
        pskv__keylist_append(&c->sh->pending, key);
        c->pending_added++;
    }
    pushes += pushes < UINT32_MAX;
    memcpy(acc + dim, &pushes, sizeof pushes);
}

/* staleness=S: whether a gradient of step c->step may apply to row (its
 * newest step applied minus S at most). Dropped ones are counted. */
static bool fresh_enough(const pskv_table *t, row_ctx *c, const float *row)
{
    uint64_t newest;
    memcpy(&newest, (const uint8_t *)row + t->step_at, sizeof newest);
    if (newest > c->step && newest - c->step > (uint64_t)t->staleness) {
        c->stale++;
        return false;
    }
    return true;
}

/* After a step of c->step applied: a newer step becomes the row's. */
static void step_applied(const pskv_table *t, const row_ctx *c, float *row)
{
    uint8_t *at = (uint8_t *)row + t->step_at;
    uint64_t newest;
    memcpy(&newest, at, sizeof newest);
    if (c->step > newest)
        memcpy(at, &c->step, sizeof c->step);
}

static void row_use(pskv_table *t, row_ctx *c, uint32_t i, float *row)
{
    const size_t dim = t->dim;
    if (row == NOT_RESIDENT || (row == NULL && c->op == ROW_STEP)) /* erased since pushed */
        return;
    switch (c->op) {
    case ROW_READ: {
        const size_t w = c->whole ? t->row_floats : dim; /* floats out per row */
        if (row != NULL) {
            memcpy(c->out + i * w, row, w * sizeof(float));
        } else {
            memset(c->out + i * w, 0, w * sizeof(float));
            c->misses++;
        }
        if (c->found)
            c->found[i] = row != NULL;
        break;
    }
    case ROW_PUSH: {
        const float *g = c->src + i * dim;
        if (c->dups != NULL && c->dups->summed_row[i] != UINT32_MAX)
            g = c->dups->rows + c->dups->summed_row[i] * dim;
        if (t->sync) {
            accumulate(t, c, c->keys[i], row, g);
            return; /* the weights did not change: no new version */
        }
        const bool bounded = c->at_step && t->staleness >= 0;
        if (bounded && !fresh_enough(t, c, row))
            return; /* dropped: left as it was */
        if (!pskv__optimizer_step(&t->opt, row, g, c->save)) {
            c->nonfinite++; /* left as it was, its step too */
            return;
        }
        if (bounded)
            step_applied(t, c, row);
        break;
    }
    case ROW_PUT:
        memcpy(row, c->src + i * dim, dim * sizeof(float));
        break;
    case ROW_PUT_ROWS: {
        const size_t wb = dim * sizeof(float), sb = t->payload_bytes - wb;
        memcpy(row, c->wsrc + i * wb, wb);
        if (c->ssrc != NULL)
            memcpy(row + dim, c->ssrc + i * sb, sb);
        break;
    }
    case ROW_STEP: {
        float *acc = row + t->row_floats;
        uint32_t pushes;
        memcpy(&pushes, acc + dim, sizeof pushes);
        if (pushes == 0)
            return; /* stepped already, or pushed nothing since */
        bool finite = pskv__optimizer_step(&t->opt, row, acc, c->save);
        memset(acc, 0, t->extra_bytes); /* the gradient is used (or dropped: not finite) */
        c->stepped++;
        c->nonfinite += !finite;
        break;
    }
    case ROW_ADD: {
        const float *g = c->src + i * dim;
        if (c->dups != NULL && c->dups->summed_row[i] != UINT32_MAX)
            g = c->dups->rows + c->dups->summed_row[i] * dim;
        bool finite = true;
        for (size_t j = 0; j < dim; j++) {
            c->save[j] = row[j] + g[j];
            finite = finite && isfinite(c->save[j]);
        }
        if (!finite) {
            c->nonfinite++; /* left as it was */
            return;
        }
        memcpy(row, c->save, dim * sizeof(float));
        break;
    }
    }
    if (c->op != ROW_READ) /* the row is in cache now */
        pskv__row_changed(t, c->sh, c->keys[i], row, pskv__visit_version(t, &c->version));
}

/* The keys of shard s (lock held), as a software pipeline: prefetch the
 * index entry of key j + INDEX_AHEAD, resolve key j (creating it if asked)
 * and prefetch its row, use the row of key j - ROWS_AHEAD. The memory
 * misses of many keys are in flight at once instead of one after another.
 * Writers (push/put) create rows from room reserved beforehand; pull
 * reserves as it meets new keys (READ_RESERVE at a time, or one when that
 * much is not to be had) and may fail with PSKV_ENOMEM (rows created so
 * far stay, with their initial values). */
static int shard_rows(pskv_table *t, const pskv__plan *p, uint32_t s, void *arg)
{
    row_ctx *c = arg;
    pskv__shard *sh = &t->shards[s];
    const uint32_t *order = p->order + p->start[s];
    const uint32_t k = p->start[s + 1] - p->start[s];
    const bool writer = c->op != ROW_READ;
    const bool create = c->create;
    const uint32_t prefetch_bytes = c->op == ROW_PUSH || c->op == ROW_ADD || c->op == ROW_STEP
                                        ? t->stored_bytes
                                    : c->op == ROW_READ ? t->dim * (uint32_t)sizeof(float) : 0;
    /* The sketch counts reads (pull, get; hits, misses and keys still to be
     * loaded), not writes: a cache's get-then-put of a missing key, or a
     * trainer's pull and push of one key, is one use. */
    const bool count = !writer && c->count_reads && sh->admit.sketch != NULL;
    float *inflight[ROWS_AHEAD]; /* rows resolved, not yet used */
    uint32_t created = 0;
    uint32_t spare = 0; /* readers: rows reserved and not created yet */
    /* Writers of durable tables give back the checkpoint room they did not use. */
    const bool give_back = writer && t->durable;
    const pskv__dirty_room at_start = give_back ? pskv__dirty_reserved(sh) : (pskv__dirty_room){0};
    pskv__cold cold = {NULL};
    c->sh = sh;
    c->keys = p->keys;
    c->version = 0; /* of this visit's changes, taken at the first */
    c->pending_added = 0;
    int rc = 0;
    for (uint32_t j = 0; j < k && j < INDEX_AHEAD; j++) {
        pskv__prefetch_index(sh, p->hash[order[j]]);
        if (count)
            pskv__admit_prefetch(&sh->admit, p->hash[order[j]]);
    }
    for (uint32_t j = 0; j < k + ROWS_AHEAD; j++) {
        if (j >= ROWS_AHEAD)
            row_use(t, c, order[j - ROWS_AHEAD], inflight[(j - ROWS_AHEAD) & (ROWS_AHEAD - 1)]);
        if (j >= k)
            continue;
        if (j + INDEX_AHEAD < k) {
            pskv__prefetch_index(sh, p->hash[order[j + INDEX_AHEAD]]);
            if (count)
                pskv__admit_prefetch(&sh->admit, p->hash[order[j + INDEX_AHEAD]]);
        }
        uint32_t i = order[j];
        const uint64_t key = p->keys[i];
        pskv__where w = pskv__locate(t, sh, key, p->hash[i], !writer);
        if (count)
            pskv__admit_record(&sh->admit, p->hash[i]);
        float *row = NULL;
        if (PSKV__LIKELY(w.place == PSKV__IN_DRAM)) {
            row = pskv__shard_row(sh, w.e->slot);
            /* Do not dirty the line when set; a retry's second look at a row
             * new to DRAM is not a use (admit.h: newcomers earn their bit). */
            if (!(w.e->flags & PSKV__FLAG_REF) &&
                (writer || count || !(w.e->flags & PSKV__FLAG_WINDOW)))
                w.e->flags |= PSKV__FLAG_REF;
            if (writer && t->durable)
                pskv__dirty_written(sh, w.e, t->parity); /* before the row changes */

        } else if (w.place == PSKV__EVICTING || w.place == PSKV__SPILLED ||
                   w.place == PSKV__LOADING) {
            /* Writers checked residency while reserving and evictors leave
             * shards with reservations alone, so only readers get here. */
            row = NOT_RESIDENT;
            c->not_resident++;
        } else if (w.place == PSKV__MAYBE_COLD && /* readers: writers read theirs while reserving */
                   (rc = pskv__tier_load_cold(t, sh, &cold, key, p->hash[i], &row)) != 0) {
            if (rc < 0)
                break;
            rc = 0;
            c->faulted++;
        } else if (create) {
            if (!writer && spare == 0) {
                /* Room for up to READ_RESERVE more new rows at once (the
                 * rest of the visit's keys may be new too), else for one. */
                uint32_t ask = k - j < READ_RESERVE ? k - j : READ_RESERVE;
                if (ask > 1 && pskv__shard_reserve(sh, ask) != 0)
                    ask = 1;
                if (ask == 1 && (rc = pskv__shard_reserve(sh, 1)) != 0)
                    break;
                spare = ask;
            }
            if (!writer && t->durable &&
                (rc = pskv__dirty_reserve(sh, (pskv__dirty_room){1, 0, 0})) != 0)
                break;
            spare -= !writer;
            row = row_create(t, sh, key, p->hash[i], c->op != ROW_PUT && c->op != ROW_PUT_ROWS,
                             c->op != ROW_PUT_ROWS || c->ssrc == NULL,
                             pskv__visit_version(t, &c->version));
            created++;
        }
        if (row != NULL && row != NOT_RESIDENT && prefetch_bytes)
            pskv__prefetch_row(row, prefetch_bytes);
        inflight[j & (ROWS_AHEAD - 1)] = row;
    }
    pskv__cold_end(t, &cold);
    pskv__shard_unreserve(sh, spare);
    if (writer && t->sync && c->op == ROW_PUSH) /* the pending-list room not used */
        pskv__keylist_unreserve(&sh->pending, k - c->pending_added);
    if (writer) {
        pskv__shard_unreserve(sh, rows_reserved(c->op, k) - created);
        if (give_back)
            pskv__dirty_release_unused(sh, (pskv__dirty_room){k, c->cow_reserved[s], 0},
                                       at_start);
    }
    c->created += created;
    return rc;
}

/* ---------------------------------------------------------------- pull/get */

/* The reads of a planned batch, layout lock held; *added counts the rows
 * brought into DRAM (created, faulted, loaded), for rows_added once the
 * lock is given back. */
static int read_planned(pskv_table *t, pskv__plan *p, float *out, uint8_t *found, bool create,
                        bool whole, uint64_t *added)
{
    uint64_t loaded = 0;
    row_ctx c = {.op = ROW_READ, .create = create, .whole = whole, .out = out, .found = found,
                 .count_reads = !whole};
    int rc = 0;
    while (rc == 0) {
        c.misses = 0;
        c.not_resident = 0;
        rc = visit_shards(t, p, shard_rows, &c);
        c.count_reads = false; /* each key's read counted once */
        if (rc != 0 || c.not_resident == 0)
            break;
        /* Some rows were in the spill file or moving: bring them in (one
         * I/O batch for all of them, no shard lock held) and go again. */
        rc = pskv__tier_load(t, p, &loaded);
    }
    *added += c.created + c.faulted + loaded;
    if (rc == 0 && !whole) { /* an export's reads count as exported rows */
        pskv__count_add(create ? &t->n_pulled : &t->n_got, p->m);
        if (!create)
            pskv__count_add(&t->n_get_misses, c.misses);
    }
    return rc;
}

static int read_rows(pskv_table *t, const uint64_t *keys, size_t n, float *out, uint8_t *found,
                     bool create, bool whole)
{
    /* When cold rows cannot be written out (spill full, I/O error), pull
     * fails here before anything changes, as it would create rows; get only
     * reads, so it goes on over the budget. */
    int rc = create ? pskv__budget_admit(t->store) : 0;
    if (rc != 0)
        return rc;
    uint64_t added = 0;
    layout_read_lock(t);
    pskv__plan p;
    rc = pskv__plan_build(&p, t->ring, t->nshards, keys, n, PSKV__DEDUP_NONE);
    if (rc == 0)
        rc = read_planned(t, &p, out, found, create, whole, &added);
    pskv__plan_free(&p);
    layout_unlock(t);
    rows_added(t, added);
    return rc;
}

int pskv_pull(pskv_table *t, const uint64_t *keys, size_t n, float *out)
{
    int rc = check_row_args(t, keys, n, out);
    if (rc != 0 || n == 0)
        return rc;
    return read_rows(t, keys, n, out, NULL, true, false);
}

int pskv_get(pskv_table *t, const uint64_t *keys, size_t n, float *out, uint8_t *found)
{
    int rc = check_row_args(t, keys, n, out);
    if (rc != 0 || n == 0)
        return rc;
    return read_rows(t, keys, n, out, found, false, false);
}

int pskv__get_rows(pskv_table *t, const uint64_t *keys, size_t n, float *rows, uint8_t *found)
{
    return n == 0 ? 0 : read_rows(t, keys, n, rows, found, false, true);
}

/* ---------------------------------------------------------------- push/put */

static uint32_t plan_count(const pskv__plan *p, uint32_t s) { return p->start[s + 1] - p->start[s]; }

/* Phase 1 of a writing batch: reserve room for every key of every shard (as
 * if all were new) so that phase 2 cannot fail half-way. */
/* Internal: a writer found one of its rows spilled or moving. */
#define NEEDS_LOAD 1

/* What phase 1 reserved per shard. */
typedef struct reservations {
    enum row_op op;
    uint8_t *rows;      /* [shards] rows (and dirty-list room) reserved */
    uint32_t *cow;      /* [shards] pre-images reserved */
    uint64_t faulted;   /* cold rows read from LMDB meanwhile */
} reservations;

static int reserve_shard(pskv_table *t, const pskv__plan *p, uint32_t s, void *arg)
{
    reservations *r = arg;
    pskv__shard *sh = &t->shards[s];
    const bool ckpt = t->durable && atomic_load(&t->ckpt_active);
    uint32_t pending = 0;
    pskv__cold cold = {NULL};
    int rc = 0;
    if (t->spill != NULL) {
        /* Every existing row must be in DRAM before the batch applies;
         * once room is reserved here, evictors leave this shard alone. */
        for (uint32_t j = p->start[s]; j < p->start[s + 1] && rc == 0; j++) {
            uint64_t key = p->keys[p->order[j]], hash = p->hash[p->order[j]];
            pskv__where w = pskv__locate(t, sh, key, hash, true);
            if (w.place == PSKV__IN_DRAM) {
                if (ckpt && pskv__dirty_pending(w.e, t->parity))
                    pending++;
            } else if (w.place == PSKV__MAYBE_COLD) {
                float *row;
                rc = pskv__tier_load_cold(t, sh, &cold, key, hash, &row); /* clean, not pending */
                if (rc == 1) {
                    r->faulted++;
                    rc = 0;
                }
            } else if (w.place != PSKV__ABSENT) {
                rc = NEEDS_LOAD;
            }
        }
    }
    pskv__cold_end(t, &cold);
    uint32_t k = plan_count(p, s), slots = rows_reserved(r->op, k);
    const bool lists = t->sync && r->op == ROW_PUSH; /* keys may join the pending list */
    if (rc == 0)
        rc = pskv__shard_reserve(sh, slots);
    if (rc == 0 && lists && (rc = pskv__keylist_reserve(&sh->pending, k)) != 0)
        pskv__shard_unreserve(sh, slots);
    if (rc == 0 && t->durable &&
        (rc = pskv__dirty_reserve(sh, (pskv__dirty_room){k, pending, 0})) != 0) {
        pskv__shard_unreserve(sh, slots);
        if (lists)
            pskv__keylist_unreserve(&sh->pending, k);
    }
    r->rows[s] = rc == 0;
    r->cow[s] = rc == 0 ? pending : 0;
    return rc;
}

static int unreserve_shard(pskv_table *t, const pskv__plan *p, uint32_t s, void *arg)
{
    const reservations *r = arg;
    pskv__shard *sh = &t->shards[s];
    if (r->rows[s]) {
        pskv__shard_unreserve(sh, rows_reserved(r->op, plan_count(p, s)));
        if (t->sync && r->op == ROW_PUSH)
            pskv__keylist_unreserve(&sh->pending, plan_count(p, s));
        if (t->durable) {
            pskv__dirty_unreserve(sh, (pskv__dirty_room){plan_count(p, s), r->cow[s], 0});
        }
    }
    return 0;
}

static int sum_duplicates(const pskv_table *t, const pskv__plan *p, size_t n, const float *grads,
                          dup_sums *d)
{
    const size_t dim = t->dim;
    d->summed_row = malloc(n * sizeof *d->summed_row);
    d->rows = malloc((n - p->m) * dim * sizeof(float)); /* at most n - m keys repeat */
    if (d->summed_row == NULL || d->rows == NULL)
        return PSKV_ENOMEM;
    memset(d->summed_row, 0xff, n * sizeof *d->summed_row);
    uint32_t used = 0;
    for (size_t i = 0; i < n; i++) {
        size_t k = p->kept_of[i];
        if (k == i)
            continue;
        if (d->summed_row[k] == UINT32_MAX) {
            d->summed_row[k] = used;
            memcpy(d->rows + used * dim, grads + k * dim, dim * sizeof(float));
            used++;
        }
        float *sum = d->rows + d->summed_row[k] * dim;
        const float *g = grads + i * dim;
        for (size_t j = 0; j < dim; j++)
            sum[j] += g[j];
    }
    /* Finite gradients can sum to Inf: refused like a non-finite one. */
    return pskv__floats_nonfinite(d->rows, (size_t)used * dim)
               ? pskv__fail(PSKV_EINVAL, "the gradients of a repeated key sum to an infinite "
                                         "value: nothing was changed")
               : 0;
}

/* A writing batch: op is ROW_PUSH, ROW_PUT or ROW_ADD (src: rows of dim
 * floats, checked here) or ROW_PUT_ROWS (src: weights, state: state or
 * NULL, as pskv__put_rows takes them). */
/* The writes of a planned batch of n keys (the plan's), layout lock held,
 * after the budget's admission; *added as read_planned's. */
static int write_planned(pskv_table *t, pskv__plan *p, size_t n, const void *src,
                         const void *state, enum row_op op, const uint64_t *step, uint64_t *added)
{
    const bool is_push = op == ROW_PUSH, sums = op == ROW_PUSH || op == ROW_ADD;
    int rc = 0;
    uint64_t loaded = 0;
    dup_sums dups = {NULL, NULL};
    uint64_t created = 0;
    bool summed = sums && p->has_dups;
    reservations res = {op, NULL, NULL, 0};
    if (summed)
        rc = sum_duplicates(t, p, n, src, &dups);
    if (rc == 0) {
        res.rows = calloc(t->nshards, 1);
        res.cow = calloc(t->nshards, sizeof *res.cow);
        rc = res.rows == NULL || res.cow == NULL ? PSKV_ENOMEM : 0;
    }
    /* One row of scratch for the optimizer step, before anything is
     * reserved: a failure here has nothing to give back. */
    float *save = NULL;
    if (rc == 0 && (sums || op == ROW_STEP) && (save = malloc(t->stored_bytes)) == NULL)
        rc = PSKV_ENOMEM;
    while (rc == 0) {
        memset(res.rows, 0, t->nshards);
        memset(res.cow, 0, t->nshards * sizeof *res.cow);
        rc = visit_shards(t, p, reserve_shard, &res);
        if (rc == 0)
            break;
        visit_shards(t, p, unreserve_shard, &res);
        if (rc == NEEDS_LOAD) {
            rc = pskv__tier_load(t, p, &loaded); /* then check again */
        }
    }
    if (rc == 0) {
        /* A put of rows reads bytes at any alignment: never as floats. */
        const bool bytes = op == ROW_PUT_ROWS;
        row_ctx c = {.op = op, .create = op != ROW_STEP, .src = bytes ? NULL : src,
                     .wsrc = bytes ? src : NULL, .ssrc = state,
                     .dups = summed ? &dups : NULL, .cow_reserved = res.cow, .save = save,
                     .at_step = step != NULL, .step = step ? *step : 0};
        visit_shards(t, p, shard_rows, &c); /* cannot fail: room is reserved */
        pskv__count_add(&t->n_stale_dropped, c.stale);
        if (op == ROW_STEP)
            pskv__count_add(&t->n_stepped, c.stepped);
        else
            pskv__count_add(is_push ? &t->n_pushed : &t->n_put, n);
        created = c.created;
        if (c.nonfinite > 0) {
            pskv__count_add(&t->n_push_nonfinite, c.nonfinite);
            rc = pskv__fail(PSKV_ERANGE, "%llu rows kept their weights and state: their step "
                                         "would have made a value infinite or NaN (the other "
                                         "rows were applied)",
                            (unsigned long long)c.nonfinite);
        }
    }
    free(save);
    free(res.rows);
    free(res.cow);
    free(dups.summed_row);
    free(dups.rows);
    *added += created + res.faulted + loaded;
    return rc;
}

static int write_rows(pskv_table *t, const uint64_t *keys, size_t n, const void *src,
                      const void *state, enum row_op op, const uint64_t *step)
{
    const bool sums = op == ROW_PUSH || op == ROW_ADD;
    if (op != ROW_PUT_ROWS && op != ROW_STEP && pskv__floats_nonfinite(src, n * t->dim))
        return nonfinite_detail(keys, src, n, t->dim,
                                op == ROW_PUSH ? "gradient row" : "value row");
    int rc = pskv__budget_admit(t->store);
    if (rc != 0)
        return rc;
    uint64_t added = 0;
    layout_read_lock(t);
    pskv__plan p;
    rc = pskv__plan_build(&p, t->ring, t->nshards, keys, n,
                          sums ? PSKV__DEDUP_FIRST : PSKV__DEDUP_LAST);
    if (rc == 0)
        rc = write_planned(t, &p, n, src, state, op, step, &added);
    pskv__plan_free(&p);
    layout_unlock(t);
    rows_added(t, added);
    return rc;
}

/* ---------------------------------------------------------------- batches */

void pskv__batch_begin(pskv_table *t, const uint64_t *keys, size_t n, pskv__rows_batch *b)
{
    *b = (pskv__rows_batch){.t = t, .keys = keys, .n = n};
}

/* Take the layout lock for one step of the batch, planning the keys the
 * first time and again after a reshard (layout_gen moved). */
static int batch_lock(pskv__rows_batch *b)
{
    pskv_table *t = b->t;
    layout_read_lock(t);
    uint64_t gen = atomic_load(&t->layout_gen);
    if (b->planned && gen == b->gen)
        return 0;
    if (b->planned)
        pskv__plan_free(&b->plan);
    b->planned = false;
    int rc = pskv__plan_build(&b->plan, t->ring, t->nshards, b->keys, b->n, PSKV__DEDUP_NONE);
    if (rc != 0) {
        layout_unlock(t);
        return rc;
    }
    b->planned = true;
    b->gen = gen;
    return 0;
}

int pskv__batch_get(pskv__rows_batch *b, float *out)
{
    if (b->n == 0)
        return 0;
    int rc = batch_lock(b);
    if (rc != 0)
        return rc;
    rc = read_planned(b->t, &b->plan, out, NULL, false, false, &b->added);
    layout_unlock(b->t);
    return rc;
}

int pskv__batch_put(pskv__rows_batch *b, const float *values)
{
    if (b->n == 0)
        return 0;
    int rc = pskv__budget_admit(b->t->store); /* before the lock: it may evict */
    if (rc == 0)
        rc = batch_lock(b);
    if (rc != 0)
        return rc;
    rc = write_planned(b->t, &b->plan, b->n, values, NULL, ROW_PUT_ROWS, NULL, &b->added);
    layout_unlock(b->t);
    return rc;
}

void pskv__batch_end(pskv__rows_batch *b)
{
    if (b->planned)
        pskv__plan_free(&b->plan);
    b->planned = false;
    if (b->added > 0)
        rows_added(b->t, b->added);
    b->added = 0;
}

int pskv_push(pskv_table *t, const uint64_t *keys, size_t n, const float *grads)
{
    int rc = check_row_args(t, keys, n, grads);
    if (rc == 0 && t->opts.optimizer == PSKV_OPT_NONE)
        return pskv__fail(PSKV_EINVAL, "table '%s' has optimizer=none: it takes no gradients "
                                       "(pskv_put writes rows)", t->name);
    if (rc != 0 || n == 0)
        return rc;
    return write_rows(t, keys, n, grads, NULL, ROW_PUSH, NULL);
}

int pskv_push_at(pskv_table *t, const uint64_t *keys, size_t n, const float *grads,
                 uint64_t step)
{
    int rc = check_row_args(t, keys, n, grads);
    if (rc == 0 && t->opts.optimizer == PSKV_OPT_NONE)
        return pskv__fail(PSKV_EINVAL, "table '%s' has optimizer=none: it takes no gradients "
                                       "(pskv_put writes rows)", t->name);
    if (rc == 0 && t->sync)
        return pskv__fail(PSKV_EINVAL, "table '%s' has update=sync: pskv_step applies every "
                                       "push since the last step (use pskv_push)", t->name);
    if (rc != 0 || n == 0)
        return rc;
    return write_rows(t, keys, n, grads, NULL, ROW_PUSH, &step);
}

int pskv__put_rows(pskv_table *t, const uint64_t *keys, size_t n, const void *weights,
                   const void *state)
{
    return n == 0 ? 0 : write_rows(t, keys, n, weights, state, ROW_PUT_ROWS, NULL);
}

int pskv__add(pskv_table *t, const uint64_t *keys, size_t n, const float *values)
{
    return n == 0 ? 0 : write_rows(t, keys, n, values, NULL, ROW_ADD, NULL);
}

int pskv__step_rows(pskv_table *t, const uint64_t *keys, size_t n)
{
    return n == 0 ? 0 : write_rows(t, keys, n, NULL, NULL, ROW_STEP, NULL);
}

int pskv_put(pskv_table *t, const uint64_t *keys, size_t n, const float *values)
{
    int rc = check_row_args(t, keys, n, values);
    if (rc != 0 || n == 0)
        return rc;
    return write_rows(t, keys, n, values, NULL, ROW_PUT, NULL);
}

/* ---------------------------------------------------------------- erase */

typedef struct erase_ctx {
    uint64_t erased_resident;
    uint32_t busy;         /* rows in motion: wait and erase again */
    uint32_t *spill_slots; /* freed spill slots of erased spilled rows */
    uint32_t nslots;
} erase_ctx;

static int erase_shard(pskv_table *t, const pskv__plan *p, uint32_t s, void *arg)
{
    erase_ctx *c = arg;
    pskv__shard *sh = &t->shards[s];
    const uint32_t k = p->start[s + 1] - p->start[s];
    const bool durable = t->durable;
    /* Tombstones keep erased rows from being read back from LMDB before
     * the next checkpoint deletes them there; only rows read back need it. */
    const bool tombs = durable && atomic_load(&t->cold_rows) > 0;
    const bool ckpt = durable && atomic_load(&t->ckpt_active);
    /* Room for what erasing the shard's k keys may record: dirty keys,
     * pre-images, tombstones. */
    const pskv__dirty_room held = {k, ckpt ? k : 0, tombs ? k : 0};
    pskv__dirty_room at_start = {0};
    if (durable) {
        int rc = pskv__dirty_reserve(sh, held);
        if (rc != 0)
            return rc;
        at_start = pskv__dirty_reserved(sh);
    }
    pskv__cold cold = {NULL};
    uint64_t version = 0;
    int rc = 0;
    for (uint32_t j = p->start[s]; j < p->start[s + 1] && rc == 0; j++) {
        uint32_t i = p->order[j];
        const uint64_t key = p->keys[i];
        pskv__where w = pskv__locate(t, sh, key, p->hash[i], tombs);
        const void *row;
        switch (w.place) {
        case PSKV__EVICTING:
        case PSKV__LOADING:
            c->busy++;
            break;
        case PSKV__IN_DRAM:
            if (durable)
                pskv__dirty_erased(sh, w.e, t->parity, tombs);
            pskv__shard_remove(sh, w.e);
            pskv__row_changed(t, sh, key, NULL, pskv__visit_version(t, &version));
            sh->erased++;
            c->erased_resident++;
            break;
        case PSKV__SPILLED:
            if (!durable || !pskv__dirty_erased_spilled(sh, w.sp, t->parity, tombs))
                c->spill_slots[c->nslots++] = w.sp->value & PSKV__SPILL_SLOT_MAX;
            pskv__keymap_remove(&sh->spilled, w.sp);
            pskv__row_changed(t, sh, key, NULL, pskv__visit_version(t, &version));
            sh->erased++;
            break;
        case PSKV__MAYBE_COLD:
            rc = pskv__cold_find(t, &cold, key, &row);
            if (rc == 1) { /* a row only LMDB holds */
                pskv__dirty_erased_cold(sh, key, t->parity);
                atomic_fetch_sub(&t->cold_rows, 1);
                pskv__row_changed(t, sh, key, NULL, pskv__visit_version(t, &version));
                sh->erased++;
                rc = 0;
            }
            break;
        case PSKV__ABSENT:
            break;
        }
    }
    pskv__cold_end(t, &cold);
    if (durable) /* give back what was not used */
        pskv__dirty_release_unused(sh, held, at_start);
    return rc;
}

int pskv_erase(pskv_table *t, const uint64_t *keys, size_t n)
{
    int rc = check_row_args(t, keys, n, keys);
    if (rc != 0 || n == 0)
        return rc;
    layout_read_lock(t);
    pskv__plan p;
    rc = pskv__plan_build(&p, t->ring, t->nshards, keys, n, PSKV__DEDUP_FIRST);
    erase_ctx c = {0, 0, NULL, 0};
    if (rc == 0 && t->spill != NULL) {
        c.spill_slots = malloc(n * sizeof *c.spill_slots);
        rc = c.spill_slots ? 0 : PSKV_ENOMEM;
    }
    while (rc == 0) {
        uint64_t gen = pskv__tier_moved_gen(t->store);
        c.busy = 0;
        rc = visit_shards(t, &p, erase_shard, &c); /* erasing twice is harmless */
        if (rc != 0 || c.busy == 0)
            break;
        pskv__tier_moved_wait(t->store, gen);
    }
    if (c.nslots > 0)
        pskv__spill_free(t->spill, c.spill_slots, c.nslots);
    free(c.spill_slots);
    pskv__plan_free(&p);
    layout_unlock(t);
    pskv__budget_account(t->store, -(int64_t)(c.erased_resident * t->budget_bytes));
    return rc;
}

int pskv_prefetch(pskv_table *t, const uint64_t *keys, size_t n)
{
    int rc = check_row_args(t, keys, n, keys);
    if (rc != 0 || n == 0 || t->spill == NULL)
        return rc; /* memory-only tables keep every row in DRAM */
    return pskv__prefetch_submit(t, keys, n);
}
