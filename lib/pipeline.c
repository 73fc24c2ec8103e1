/* The row pipeline: a batch call's keys, shard by shard under each shard's
 * lock. Inside a shard it resolves keys in order of the plan, prefetching
 * index entries a few keys ahead and rows as soon as their slot is known,
 * then copies or updates each row a few keys later: the memory misses of
 * many keys overlap instead of being paid one after another. Where each
 * key lives (DRAM, spill file, LMDB) is asked of tier.c; rows.c plans the
 * batch, reserves room and retries.
 * SPDX-License-Identifier: BSD-2-Clause */
#include <math.h>
#include <string.h>

#include "changes.h"
#include "cold.h"
#include "dirty.h"
#include "init.h"
#include "pipeline.h"
#include "prefetch.h"
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

/* Where this thread starts its walk over the shards: threads that start at
 * different shards rarely meet on the same lock. */
static uint32_t walk_start(uint32_t shards)
{
    static _Thread_local uint32_t tag;
    return (uint32_t)(pskv__key_hash((uint64_t)(uintptr_t)&tag, 0) % shards);
}

int pskv__visit_shards(pskv_table *t, const pskv__plan *p, pskv__shard_visit_fn fn, void *ctx)
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
        if (!pskv__shard_trylock(sh)) {
            p->busy[busy++] = s;
            continue;
        }
        rc = fn(t, p, s, ctx);
        pskv__shard_unlock(sh);
    }
    for (uint32_t k = 0; k < busy && rc == 0; k++) {
        pskv__shard *sh = &t->shards[p->busy[k]];
        pskv__shard_lock(sh);
        rc = fn(t, p, p->busy[k], ctx);
        pskv__shard_unlock(sh);
    }
    return rc;
}

/* Marks a key whose row is not in DRAM in the pipeline: not used this time. */
static float not_resident_mark;
#define NOT_RESIDENT (&not_resident_mark)

/* update=sync: add g to the row's accumulator (weights untouched); a key
 * whose accumulator was empty goes on its shard's pending list, from room
 * the batch reserved. A sum that would not be finite leaves it as it was. */
static void accumulate(pskv_table *t, pskv__row_ctx *c, uint64_t key, float *row, const float *g)
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
static bool fresh_enough(const pskv_table *t, pskv__row_ctx *c, const float *row)
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
static void step_applied(const pskv_table *t, const pskv__row_ctx *c, float *row)
{
    uint8_t *at = (uint8_t *)row + t->step_at;
    uint64_t newest;
    memcpy(&newest, at, sizeof newest);
    if (c->step > newest)
        memcpy(at, &c->step, sizeof c->step);
}

static inline __attribute__((always_inline)) void row_use(pskv_table *t, pskv__row_ctx *c,
                                                            enum pskv__row_op op, uint32_t i,
                                                            float *row)
{
    const size_t dim = t->dim;
    if (row == NOT_RESIDENT || (row == NULL && op == PSKV__ROW_STEP)) /* erased since pushed */
        return;
    switch (op) {
    case PSKV__ROW_READ: {
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
    case PSKV__ROW_PUSH: {
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
    case PSKV__ROW_PUT:
        memcpy(row, c->src + i * dim, dim * sizeof(float));
        break;
    case PSKV__ROW_PUT_ROWS: {
        const size_t wb = dim * sizeof(float), sb = t->payload_bytes - wb;
        memcpy(row, c->wsrc + i * wb, wb);
        if (c->ssrc != NULL)
            memcpy(row + dim, c->ssrc + i * sb, sb);
        break;
    }
    case PSKV__ROW_STEP: {
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
    case PSKV__ROW_ADD: {
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
    if (op != PSKV__ROW_READ) /* the row is in cache now */
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
static inline __attribute__((always_inline)) int rows_as(pskv_table *t, const pskv__plan *p,
                                                           uint32_t s, pskv__row_ctx *c,
                                                           enum pskv__row_op op)
{
    pskv__shard *sh = &t->shards[s];
    const uint32_t *order = p->order + p->start[s];
    const uint32_t k = pskv__plan_count(p, s);
    const bool writer = op != PSKV__ROW_READ;
    const bool create = c->create;
    const bool steps = op == PSKV__ROW_PUSH || op == PSKV__ROW_ADD || op == PSKV__ROW_STEP;
    const uint32_t prefetch_bytes = steps                    ? t->stored_bytes
                                    : op == PSKV__ROW_READ ? t->dim * (uint32_t)sizeof(float)
                                                              : 0;
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
            row_use(t, c, op, order[j - ROWS_AHEAD], inflight[(j - ROWS_AHEAD) & (ROWS_AHEAD - 1)]);
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
            row = row_create(t, sh, key, p->hash[i],
                             op != PSKV__ROW_PUT && op != PSKV__ROW_PUT_ROWS,
                             op != PSKV__ROW_PUT_ROWS || c->ssrc == NULL,
                             pskv__visit_version(t, &c->version));
            created++;
        }
        if (row != NULL && row != NOT_RESIDENT && prefetch_bytes)
            pskv__prefetch_row(row, prefetch_bytes);
        inflight[j & (ROWS_AHEAD - 1)] = row;
    }
    pskv__cold_end(t, &cold);
    pskv__shard_unreserve(sh, spare);
    if (writer && t->sync && op == PSKV__ROW_PUSH) /* the pending-list room not used */
        pskv__keylist_unreserve(&sh->pending, k - c->pending_added);
    if (writer) {
        pskv__shard_unreserve(sh, pskv__rows_reserved(op, k) - created);
        if (give_back)
            pskv__dirty_release_unused(sh, (pskv__dirty_room){k, c->cow_reserved[s], 0},
                                       at_start);
    }
    c->created += created;
    return rc;
}

/* The visit of one shard, as a copy per hot operation (pull's misses and
 * creations, push), so that the choices made per key by operation fold
 * away, and one copy for the others. */
int pskv__shard_rows(pskv_table *t, const pskv__plan *p, uint32_t s, void *arg)
{
    pskv__row_ctx *c = arg;
    switch (c->op) {
    case PSKV__ROW_PUSH:
        return rows_as(t, p, s, c, PSKV__ROW_PUSH);
    case PSKV__ROW_READ:
        return rows_as(t, p, s, c, PSKV__ROW_READ);
    default:
        return rows_as(t, p, s, c, c->op);
    }
}
