/* The batch row calls: pull, get, push, put, erase, prefetch.
 *
 * Every batch call hashes its keys once and groups them by shard (plan.c),
 * then hands each shard's keys to the row pipeline (pipeline.c), which
 * takes each shard's lock once. Writers reserve room in every shard first,
 * so that the pass that changes rows cannot fail half-way; readers that
 * meet spilled rows load them (tier.c) and go again.
 * SPDX-License-Identifier: BSD-2-Clause */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "budget.h"
#include "changes.h"
#include "cold.h"
#include "dirty.h"
#include "errors.h"
#include "hits.h"
#include "plan.h"
#include "pipeline.h"
#include "prefetch.h"
#include "pskv_internal.h"
#include "rows.h"
#include "tier.h"

/* ---------------------------------------------------------------- helpers */

static void layout_read_lock(pskv_table *t) { pthread_rwlock_rdlock(&t->layout_lock); }
static void layout_unlock(pskv_table *t) { pthread_rwlock_unlock(&t->layout_lock); }


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


/* ---------------------------------------------------------------- pull/get */

/* The reads of a planned batch, layout lock held; *added counts the rows
 * brought into DRAM (created, faulted, loaded), for rows_added once the
 * lock is given back. */
static int read_planned(pskv_table *t, pskv__plan *p, float *out, uint8_t *found, bool create,
                        bool whole, uint64_t *added)
{
    uint64_t loaded = 0;
    pskv__row_ctx c = {.op = PSKV__ROW_READ, .create = create, .whole = whole, .out = out,
                       .found = found, .count_reads = !whole};
    int rc = 0;
    while (rc == 0) {
        c.misses = 0;
        c.not_resident = 0;
        rc = pskv__visit_shards(t, p, pskv__shard_rows, &c);
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
    rc = pskv__plan_route(&p, t->ring, t->nshards, keys, n, PSKV__DEDUP_NONE);
    if (rc == 0) {
        /* Resident rows first, in input order (hits.c); the rest, if any,
         * grouped by shard. Reads that count in an admission sketch and
         * an export's whole rows take the full path alone. */
        uint32_t rest = (uint32_t)n;
        const uint32_t *list = NULL;
        if (!whole && !pskv__store_admits(t->store) && n <= PSKV__HITS_MAX) {
            rest = pskv__read_hits(t, &p, out, found);
            list = p.list;
        }
        if (rest > 0) {
            pskv__plan_group(&p, list, rest, t->nshards);
            rc = read_planned(t, &p, out, found, create, whole, &added);
        }
        if (rc == 0 && rest < n)
            pskv__count_add(create ? &t->n_pulled : &t->n_got, n - rest);
    }
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

/* Phase 1 of a writing batch: reserve room for every key of every shard (as
 * if all were new) so that phase 2 cannot fail half-way. */
/* Internal: a writer found one of its rows spilled or moving. */
#define NEEDS_LOAD 1

/* What phase 1 reserved per shard. */
typedef struct reservations {
    enum pskv__row_op op;
    uint8_t *rows;      /* [shards] rows (and dirty-list room) reserved */
    uint32_t *cow;      /* [shards] pre-images reserved */
    uint64_t faulted;   /* cold rows read from LMDB meanwhile */
} reservations;

/* Index entries prefetched ahead of the residency check of spill tables. */
#define RESERVE_AHEAD 16u

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
         * once room is reserved here, evictors leave this shard alone. The
         * index entries are prefetched a few keys ahead (each look-up was
         * a miss of its own; the row pipeline finds them in cache then). */
        const uint32_t end = p->start[s + 1];
        for (uint32_t j = p->start[s]; j < end && j < p->start[s] + RESERVE_AHEAD; j++)
            pskv__prefetch_index(sh, p->hash[p->order[j]]);
        for (uint32_t j = p->start[s]; j < end && rc == 0; j++) {
            if (j + RESERVE_AHEAD < end)
                pskv__prefetch_index(sh, p->hash[p->order[j + RESERVE_AHEAD]]);
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
    uint32_t k = pskv__plan_count(p, s), slots = pskv__rows_reserved(r->op, k);
    const bool lists = t->sync && r->op == PSKV__ROW_PUSH; /* keys may join the pending list */
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
    const uint32_t k = pskv__plan_count(p, s);
    if (r->rows[s]) {
        pskv__shard_unreserve(sh, pskv__rows_reserved(r->op, k));
        if (t->sync && r->op == PSKV__ROW_PUSH)
            pskv__keylist_unreserve(&sh->pending, k);
        if (t->durable)
            pskv__dirty_unreserve(sh, (pskv__dirty_room){k, r->cow[s], 0});
    }
    return 0;
}

static int sum_duplicates(const pskv_table *t, const pskv__plan *p, size_t n, const float *grads,
                          pskv__dup_sums *d)
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

/* A writing batch: op is PSKV__ROW_PUSH, PSKV__ROW_PUT or PSKV__ROW_ADD (src: rows of dim
 * floats, checked here) or PSKV__ROW_PUT_ROWS (src: weights, state: state or
 * NULL, as pskv__put_rows takes them). */
/* The writes of a planned batch of n keys (the plan's), layout lock held,
 * after the budget's admission; *added as read_planned's. */
static int write_planned(pskv_table *t, pskv__plan *p, size_t n, const void *src,
                         const void *state, enum pskv__row_op op, const uint64_t *step,
                         uint64_t *added)
{
    const bool is_push = op == PSKV__ROW_PUSH, sums = op == PSKV__ROW_PUSH || op == PSKV__ROW_ADD;
    int rc = 0;
    uint64_t loaded = 0;
    pskv__dup_sums dups = {NULL, NULL};
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
    if (rc == 0 && (sums || op == PSKV__ROW_STEP) && (save = malloc(t->stored_bytes)) == NULL)
        rc = PSKV_ENOMEM;
    while (rc == 0) {
        memset(res.rows, 0, t->nshards);
        memset(res.cow, 0, t->nshards * sizeof *res.cow);
        rc = pskv__visit_shards(t, p, reserve_shard, &res);
        if (rc == 0)
            break;
        pskv__visit_shards(t, p, unreserve_shard, &res);
        if (rc == NEEDS_LOAD) {
            rc = pskv__tier_load(t, p, &loaded); /* then check again */
        }
    }
    if (rc == 0) {
        /* A put of rows reads bytes at any alignment: never as floats. */
        const bool bytes = op == PSKV__ROW_PUT_ROWS;
        pskv__row_ctx c = {.op = op, .create = op != PSKV__ROW_STEP, .src = bytes ? NULL : src,
                           .wsrc = bytes ? src : NULL, .ssrc = state,
                           .dups = summed ? &dups : NULL, .cow_reserved = res.cow,
                           .save = save, .at_step = step != NULL, .step = step ? *step : 0};
        pskv__visit_shards(t, p, pskv__shard_rows, &c); /* cannot fail: room is reserved */
        pskv__count_add(&t->n_stale_dropped, c.stale);
        if (op == PSKV__ROW_STEP)
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
                      const void *state, enum pskv__row_op op, const uint64_t *step)
{
    const bool sums = op == PSKV__ROW_PUSH || op == PSKV__ROW_ADD;
    if (op != PSKV__ROW_PUT_ROWS && op != PSKV__ROW_STEP && pskv__floats_nonfinite(src, n * t->dim))
        return nonfinite_detail(keys, src, n, t->dim,
                                op == PSKV__ROW_PUSH ? "gradient row" : "value row");
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
    rc = write_planned(b->t, &b->plan, b->n, values, NULL, PSKV__ROW_PUT_ROWS, NULL, &b->added);
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
    return write_rows(t, keys, n, grads, NULL, PSKV__ROW_PUSH, NULL);
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
    return write_rows(t, keys, n, grads, NULL, PSKV__ROW_PUSH, &step);
}

int pskv__put_rows(pskv_table *t, const uint64_t *keys, size_t n, const void *weights,
                   const void *state)
{
    return n == 0 ? 0 : write_rows(t, keys, n, weights, state, PSKV__ROW_PUT_ROWS, NULL);
}

int pskv__add(pskv_table *t, const uint64_t *keys, size_t n, const float *values)
{
    return n == 0 ? 0 : write_rows(t, keys, n, values, NULL, PSKV__ROW_ADD, NULL);
}

int pskv__step_rows(pskv_table *t, const uint64_t *keys, size_t n)
{
    return n == 0 ? 0 : write_rows(t, keys, n, NULL, NULL, PSKV__ROW_STEP, NULL);
}

int pskv_put(pskv_table *t, const uint64_t *keys, size_t n, const float *values)
{
    int rc = check_row_args(t, keys, n, values);
    if (rc != 0 || n == 0)
        return rc;
    return write_rows(t, keys, n, values, NULL, PSKV__ROW_PUT, NULL);
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
    const uint32_t k = pskv__plan_count(p, s);
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
        rc = pskv__visit_shards(t, &p, erase_shard, &c); /* erasing twice is harmless */
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
