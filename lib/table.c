/* A table: shards behind a consistent-hash ring, and the batch row calls
 * (pull, push, get, put, erase, prefetch), online resharding, statistics
 * and iteration.
 *
 * Every batch call hashes its keys once, groups them by shard (batch.c) and
 * takes each shard's lock once. Inside a shard it resolves keys in chunks,
 * prefetching index entries a few keys ahead and rows as soon as their slot
 * is known, then copies or updates the chunk's rows: the memory misses of a
 * chunk overlap instead of being paid one after another.
 * SPDX-License-Identifier: BSD-2-Clause */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pskv_internal.h"

/* Virtual nodes per shard in a table's ring: enough for a balanced spread of
 * rows over shards; the ring stays small enough to sit in cache. */
#define TABLE_RING_VNODES 64u
/* Software pipeline depths: an index entry is prefetched INDEX_AHEAD keys
 * before its key is resolved, a row ROWS_AHEAD keys before it is used. */
#ifndef INDEX_AHEAD
#define INDEX_AHEAD 16u
#endif
#ifndef ROWS_AHEAD
#define ROWS_AHEAD 16u /* a power of two */
#endif

/* ---------------------------------------------------------------- layout */

static void shards_free(pskv__shard *shards, uint32_t n)
{
    if (shards == NULL)
        return;
    for (uint32_t i = 0; i < n; i++)
        pskv__shard_free(&shards[i]);
    free(shards);
}

/* A ring over shards 0..n-1 and the empty shards themselves. */
static int layout_create(const pskv_table *t, uint32_t n, pskv_ring **ring_out,
                         pskv__shard **shards_out)
{
    pskv_ring *ring = NULL;
    int rc = pskv__ring_create_uniform(TABLE_RING_VNODES, t->opts.seed, n, &ring);
    pskv__shard *shards = NULL;
    if (rc == 0) {
        shards = aligned_alloc(64, (size_t)n * sizeof *shards);
        if (shards == NULL)
            rc = PSKV_ENOMEM;
    }
    uint32_t made = 0;
    for (; rc == 0 && made < n; made++)
        rc = pskv__shard_init(&shards[made], t->row_bytes, t->opts.seed);
    if (rc != 0) {
        if (shards != NULL && made > 0)
            made--; /* the failed init cleaned up after itself */
        shards_free(shards, made);
        pskv_ring_destroy(ring);
        return rc;
    }
    *ring_out = ring;
    *shards_out = shards;
    return 0;
}

int pskv__table_create(pskv_store *s, const char *name, const pskv_table_options *o,
                       pskv_table **out)
{
    pskv_table *t = calloc(1, sizeof *t);
    if (t == NULL)
        return PSKV_ENOMEM;
    t->store = s;
    memcpy(t->name, name, strlen(name) + 1);
    t->opts = *o;
    pskv__table_options_resolve(&t->opts);
    pskv__optimizer_setup(&t->opt, &t->opts);
    t->dim = o->dim;
    t->state_floats = t->opt.state_floats;
    t->row_floats = t->dim + t->state_floats;
    t->row_bytes = t->row_floats * (uint32_t)sizeof(float);

    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
    /* A reshard must not starve behind an endless stream of row calls. */
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    int rc = pthread_rwlock_init(&t->layout_lock, &attr) == 0 ? 0 : PSKV_ENOMEM;
    pthread_rwlockattr_destroy(&attr);
    if (rc != 0) {
        free(t);
        return rc;
    }
    rc = layout_create(t, o->shards, &t->ring, &t->shards);
    if (rc != 0) {
        pthread_rwlock_destroy(&t->layout_lock);
        free(t);
        return rc;
    }
    t->nshards = o->shards;
    t->durable = s->env != NULL;
    pthread_mutex_init(&t->ckpt_lock, NULL);
    pthread_mutex_init(&t->count_lock, NULL);
    if (s->dir != NULL) {
        size_t len = strlen(s->dir) + strlen(name) + 16;
        char *path = malloc(len);
        rc = path ? 0 : PSKV_ENOMEM;
        if (rc == 0) {
            snprintf(path, len, "%s/%s.spill", s->dir, name);
            rc = pskv__spill_open(path, t->row_bytes, s->opts.spill_max, &s->spill_bytes, s->io,
                                  &t->spill);
        }
        free(path);
        if (rc != 0) {
            pskv__table_destroy(t);
            return rc;
        }
    }
    *out = t;
    return 0;
}

void pskv__table_destroy(pskv_table *t)
{
    if (t == NULL)
        return;
    shards_free(t->shards, t->nshards);
    pskv_ring_destroy(t->ring);
    pskv__spill_close(t->spill);
    pthread_rwlock_destroy(&t->layout_lock);
    pthread_mutex_destroy(&t->ckpt_lock);
    pthread_mutex_destroy(&t->count_lock);
    pskv__keyfilter_free(&t->persisted);
    free(t->carry);
    free(t);
}

/* ---------------------------------------------------------------- helpers */

static void layout_read_lock(pskv_table *t) { pthread_rwlock_rdlock(&t->layout_lock); }
static void layout_unlock(pskv_table *t) { pthread_rwlock_unlock(&t->layout_lock); }

static void count_add(atomic_uint_fast64_t *c, uint64_t v)
{
    atomic_fetch_add_explicit(c, v, memory_order_relaxed);
}

/* A new row: initial weights (unless the caller overwrites them) and the
 * optimizer's initial state. */
static float *row_create(pskv_table *t, pskv__shard *sh, uint64_t key, uint64_t hash,
                         bool init_weights)
{
    pskv__entry *e = pskv__shard_insert_entry(sh, key, hash);
    sh->created++;
    if (t->durable)
        pskv__row_created(sh, e, t->parity); /* uses a list reservation */
    float *row = pskv__shard_row(sh, e->slot);
    if (init_weights)
        pskv__init_weights(&t->opts, key, row, t->dim);
    pskv__optimizer_init_state(&t->opt, row + t->dim);
    return row;
}

static void prefetch_row(const float *row, uint32_t bytes)
{
    const char *p = (const char *)row;
    for (uint32_t off = 0; off < bytes; off += 64)
        __builtin_prefetch(p + off, 1, 3);
}

static void prefetch_index(const pskv__shard *sh, uint64_t hash)
{
    __builtin_prefetch(&sh->index[pskv__index_pos(hash, sh->index_mask)], 0, 3);
}

static int check_row_args(const pskv_table *t, const uint64_t *keys, size_t n, const void *buf)
{
    if (t == NULL || (n > 0 && (keys == NULL || buf == NULL)))
        return PSKV_EINVAL;
    if (n > UINT32_MAX - 1)
        return PSKV_EINVAL;
    return 0;
}

/* A row that only LMDB holds (a durable store after a reopen), brought
 * into DRAM as a clean row (shard lock held; c's transaction must end
 * before the lock is released). 1 with *row_out, 0 if LMDB has no such
 * row (or it was erased since), or an error. */
static int cold_fault(pskv_table *t, pskv__shard *sh, pskv__cold *c, uint64_t key, uint64_t hash,
                      float **row_out)
{
    if (atomic_load_explicit(&t->cold_rows, memory_order_relaxed) == 0 ||
        !pskv__keyfilter_maybe(&t->persisted, key) || pskv__tombstoned(sh, key, hash))
        return 0; /* brand-new keys mostly stop at the filter */
    const void *bytes;
    int rc = pskv__cold_find(t, c, key, &bytes);
    if (rc <= 0)
        return rc;
    if ((rc = pskv__shard_reserve(sh, 1)) != 0)
        return rc;
    float *row = pskv__shard_row(sh, pskv__shard_insert_reserved(sh, key, hash));
    memcpy(row, bytes, t->row_bytes);
    atomic_fetch_sub_explicit(&t->cold_rows, 1, memory_order_relaxed);
    *row_out = row;
    return 1;
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

/* Account rows a call created and keep the store within its budget; called
 * with no lock held. */
static void rows_added(pskv_table *t, uint64_t created, bool loaded)
{
    if (created == 0 && !loaded)
        return;
    pskv__store_account(t->store, (int64_t)(created * t->row_bytes)); /* loads count themselves */
    /* Best effort: a failure to evict (spill full) is reported by a later
     * call's admission check, before it changes anything. */
    (void)pskv__store_enforce_budget(t->store);
}

/* ---------------------------------------------------------------- row pipeline */

enum row_op { ROW_READ, ROW_PUSH, ROW_PUT };

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
    const uint64_t *keys;
    float *out;        /* ROW_READ */
    uint8_t *found;    /* ROW_READ, optional */
    const float *src;  /* ROW_PUSH: gradients; ROW_PUT: values; by position */
    const dup_sums *dups; /* ROW_PUSH: sums of repeated keys, or NULL */
    uint64_t misses;
    uint64_t created;
    uint64_t faulted;      /* cold rows read from LMDB */
    uint32_t not_resident; /* keys found spilled or in motion: load and retry */
    const uint32_t *cow_reserved; /* writers: pre-images reserved per shard */
    float *save;       /* ROW_PUSH: one row, the row before its step */
    uint64_t nonfinite; /* ROW_PUSH: rows whose step would not be finite */
} row_ctx;

/* Marks a key whose row is not in DRAM in the pipeline: not used this time. */
static float not_resident_mark;
#define NOT_RESIDENT (&not_resident_mark)

static void row_use(pskv_table *t, row_ctx *c, uint32_t i, float *row)
{
    const size_t dim = t->dim;
    if (row == NOT_RESIDENT)
        return;
    switch (c->op) {
    case ROW_READ:
        if (row != NULL) {
            memcpy(c->out + i * dim, row, dim * sizeof(float));
        } else {
            memset(c->out + i * dim, 0, dim * sizeof(float));
            c->misses++;
        }
        if (c->found)
            c->found[i] = row != NULL;
        break;
    case ROW_PUSH: {
        const float *g = c->src + i * dim;
        if (c->dups != NULL && c->dups->summed_row[i] != UINT32_MAX)
            g = c->dups->rows + c->dups->summed_row[i] * dim;
        if (!pskv__optimizer_step(&t->opt, row, g, c->save))
            c->nonfinite++; /* left as it was */
        break;
    }
    case ROW_PUT:
        memcpy(row, c->src + i * dim, dim * sizeof(float));
        break;
    }
}

/* The keys of shard s (lock held), as a software pipeline: prefetch the
 * index entry of key j + INDEX_AHEAD, resolve key j (creating it if asked)
 * and prefetch its row, use the row of key j - ROWS_AHEAD. The memory
 * misses of many keys are in flight at once instead of one after another.
 * Writers (push/put) create rows from room reserved beforehand; pull
 * reserves per created row and may fail with PSKV_ENOMEM (rows created so
 * far stay, with their initial values). */
static int shard_rows(pskv_table *t, const pskv__plan *p, uint32_t s, void *arg)
{
    row_ctx *c = arg;
    pskv__shard *sh = &t->shards[s];
    const uint32_t *order = p->order + p->start[s];
    const uint32_t k = p->start[s + 1] - p->start[s];
    const bool writer = c->op != ROW_READ;
    const bool create = writer || c->create;
    const uint32_t prefetch_bytes = c->op == ROW_PUSH ? t->row_bytes
                                    : c->op == ROW_PUT ? 0 : t->dim * (uint32_t)sizeof(float);
    float *ring[ROWS_AHEAD];
    uint32_t created = 0;
    const uint32_t dirty0 = sh->dirty.count, cow0 = sh->cow_count;
    pskv__cold cold = {NULL};
    int rc = 0;
    for (uint32_t j = 0; j < k && j < INDEX_AHEAD; j++)
        prefetch_index(sh, p->hash[order[j]]);
    for (uint32_t j = 0; j < k + ROWS_AHEAD; j++) {
        if (j >= ROWS_AHEAD)
            row_use(t, c, order[j - ROWS_AHEAD], ring[(j - ROWS_AHEAD) & (ROWS_AHEAD - 1)]);
        if (j >= k)
            continue;
        if (j + INDEX_AHEAD < k)
            prefetch_index(sh, p->hash[order[j + INDEX_AHEAD]]);
        uint32_t i = order[j];
        pskv__entry *e = pskv__shard_find(sh, c->keys[i], p->hash[i]);
        float *row = NULL;
        if (e != NULL && PSKV__UNLIKELY(e->meta & PSKV__META_BUSY)) {
            /* Writers checked residency while reserving and evictors leave
             * shards with reservations alone, so only readers get here. */
            row = NOT_RESIDENT;
            c->not_resident++;
        } else if (e == NULL && sh->spilled.count > 0 &&
                   pskv__spillmap_find(&sh->spilled, c->keys[i], p->hash[i]) != NULL) {
            row = NOT_RESIDENT; /* readers only, as above */
            c->not_resident++;
        } else if (e != NULL) {
            row = pskv__shard_row(sh, e->slot);
            if (!(e->meta & PSKV__META_REF)) /* do not dirty the line when set */
                e->meta |= PSKV__META_REF;
            if (writer && t->durable)
                pskv__row_written(sh, e, t->parity); /* before the row changes */
        } else if (!writer && t->durable &&
                   (rc = cold_fault(t, sh, &cold, c->keys[i], p->hash[i], &row)) != 0) {
            if (rc < 0)
                break;
            rc = 0; /* writers faulted their cold rows in while reserving */
            c->faulted++;
        } else if (create) {
            if (!writer && (rc = pskv__shard_reserve(sh, 1)) != 0)
                break;
            if (!writer && t->durable && (rc = pskv__dirty_reserve(sh, 1)) != 0) {
                pskv__shard_unreserve(sh, 1);
                break;
            }
            row = row_create(t, sh, c->keys[i], p->hash[i], c->op != ROW_PUT);
            created++;
        }
        if (row != NULL && row != NOT_RESIDENT && prefetch_bytes)
            prefetch_row(row, prefetch_bytes);
        ring[j & (ROWS_AHEAD - 1)] = row;
    }
    pskv__cold_end(t, &cold);
    if (writer) {
        pskv__shard_unreserve(sh, k - created);
        if (t->durable) {
            pskv__dirty_unreserve(sh, k - (sh->dirty.count - dirty0));
            pskv__cow_unreserve(sh, c->cow_reserved[s] - (sh->cow_count - cow0));
        }
    }
    c->created += created;
    return rc;
}

/* ---------------------------------------------------------------- pull/get */

static int read_rows(pskv_table *t, const uint64_t *keys, size_t n, float *out, uint8_t *found,
                     bool create)
{
    /* When cold rows cannot be written out (spill full, I/O error), pull
     * fails here before anything changes, as it would create rows; get only
     * reads, so it goes on over the budget. */
    int rc = create ? pskv__store_admit(t->store) : 0;
    if (rc != 0)
        return rc;
    bool loaded = false;
    layout_read_lock(t);
    pskv__plan p;
    rc = pskv__plan_build(&p, t->ring, t->nshards, keys, n, PSKV__DEDUP_NONE);
    row_ctx c = {ROW_READ, create, keys, out, found, NULL, NULL, 0, 0, 0, 0, NULL, NULL, 0};
    while (rc == 0) {
        c.misses = 0;
        c.not_resident = 0;
        rc = visit_shards(t, &p, shard_rows, &c);
        if (rc != 0 || c.not_resident == 0)
            break;
        /* Some rows were in the spill file or moving: bring them in (one
         * I/O batch for all of them, no shard lock held) and go again. */
        rc = pskv__tier_load(t, &p);
        loaded = true;
    }
    pskv__plan_free(&p);
    layout_unlock(t);
    rows_added(t, c.created + c.faulted, loaded);
    if (rc == 0) {
        count_add(create ? &t->n_pulled : &t->n_got, n);
        if (!create)
            count_add(&t->n_get_misses, c.misses);
    }
    return rc;
}

int pskv_pull(pskv_table *t, const uint64_t *keys, size_t n, float *out)
{
    int rc = check_row_args(t, keys, n, out);
    if (rc != 0 || n == 0)
        return rc;
    return read_rows(t, keys, n, out, NULL, true);
}

int pskv_get(pskv_table *t, const uint64_t *keys, size_t n, float *out, uint8_t *found)
{
    int rc = check_row_args(t, keys, n, out);
    if (rc != 0 || n == 0)
        return rc;
    return read_rows(t, keys, n, out, found, false);
}

/* ---------------------------------------------------------------- push/put */

static uint32_t plan_count(const pskv__plan *p, uint32_t s) { return p->start[s + 1] - p->start[s]; }

/* Phase 1 of a writing batch: reserve room for every key of every shard (as
 * if all were new) so that phase 2 cannot fail half-way. */
/* Internal: a writer found one of its rows spilled or moving. */
#define NEEDS_LOAD 1

/* What phase 1 reserved per shard. */
typedef struct reservations {
    uint8_t *rows;      /* [shards] rows (and dirty-list room) reserved */
    uint32_t *cow;      /* [shards] pre-images reserved */
    uint64_t faulted;   /* cold rows read from LMDB meanwhile */
} reservations;

static int reserve_shard(pskv_table *t, const pskv__plan *p, uint32_t s, void *arg)
{
    reservations *r = arg;
    pskv__shard *sh = &t->shards[s];
    const bool ckpt = t->durable && atomic_load(&t->ckpt_active);
    const uint32_t pend = pskv__meta_dirty(t->parity ^ 1u);
    uint32_t pending = 0;
    pskv__cold cold = {NULL};
    int rc = 0;
    if (t->spill != NULL) {
        /* Every existing row must be in DRAM before the batch applies;
         * once room is reserved here, evictors leave this shard alone. */
        for (uint32_t j = p->start[s]; j < p->start[s + 1] && rc == 0; j++) {
            uint64_t key = p->keys[p->order[j]], hash = p->hash[p->order[j]];
            pskv__entry *e = pskv__shard_find(sh, key, hash);
            if (e != NULL) {
                if (e->meta & PSKV__META_BUSY)
                    rc = NEEDS_LOAD;
                else if (ckpt && (e->meta & pend))
                    pending++;
            } else if (pskv__spillmap_find(&sh->spilled, key, hash) != NULL) {
                rc = NEEDS_LOAD;
            } else if (t->durable) {
                float *row;
                rc = cold_fault(t, sh, &cold, key, hash, &row); /* a clean row, not pending */
                if (rc == 1) {
                    r->faulted++;
                    rc = 0;
                }
            }
        }
    }
    pskv__cold_end(t, &cold);
    uint32_t k = plan_count(p, s);
    if (rc == 0)
        rc = pskv__shard_reserve(sh, k);
    if (rc == 0 && t->durable && (rc = pskv__dirty_reserve(sh, k)) != 0)
        pskv__shard_unreserve(sh, k);
    if (rc == 0 && pending > 0 && (rc = pskv__cow_reserve(sh, pending)) != 0) {
        pskv__shard_unreserve(sh, k);
        pskv__dirty_unreserve(sh, k);
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
        pskv__shard_unreserve(sh, plan_count(p, s));
        if (t->durable) {
            pskv__dirty_unreserve(sh, plan_count(p, s));
            pskv__cow_unreserve(sh, r->cow[s]);
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
    return pskv__floats_nonfinite(d->rows, (size_t)used * dim) ? PSKV_EINVAL : 0;
}

static int write_rows(pskv_table *t, const uint64_t *keys, size_t n, const float *src, bool is_push)
{
    if (pskv__floats_nonfinite(src, n * t->dim))
        return PSKV_EINVAL;
    int rc = pskv__store_admit(t->store);
    if (rc != 0)
        return rc;
    layout_read_lock(t);
    pskv__plan p;
    rc = pskv__plan_build(&p, t->ring, t->nshards, keys, n,
                          is_push ? PSKV__DEDUP_FIRST : PSKV__DEDUP_LAST);
    bool loaded = false;
    dup_sums dups = {NULL, NULL};
    uint64_t created = 0;
    bool summed = rc == 0 && is_push && p.has_dups;
    reservations res = {NULL, NULL, 0};
    if (summed)
        rc = sum_duplicates(t, &p, n, src, &dups);
    if (rc == 0) {
        res.rows = calloc(t->nshards, 1);
        res.cow = calloc(t->nshards, sizeof *res.cow);
        rc = res.rows == NULL || res.cow == NULL ? PSKV_ENOMEM : 0;
    }
    while (rc == 0) {
        memset(res.rows, 0, t->nshards);
        memset(res.cow, 0, t->nshards * sizeof *res.cow);
        rc = visit_shards(t, &p, reserve_shard, &res);
        if (rc == 0)
            break;
        visit_shards(t, &p, unreserve_shard, &res);
        if (rc == NEEDS_LOAD) {
            rc = pskv__tier_load(t, &p); /* then check again */
            loaded = true;
        }
    }
    float *save = NULL;
    if (rc == 0 && is_push && (save = malloc(t->row_bytes)) == NULL)
        rc = PSKV_ENOMEM;
    if (rc == 0) {
        row_ctx c = {is_push ? ROW_PUSH : ROW_PUT, true, keys, NULL, NULL, src,
                     summed ? &dups : NULL, 0, 0, 0, 0, res.cow, save, 0};
        visit_shards(t, &p, shard_rows, &c); /* cannot fail: room is reserved */
        count_add(is_push ? &t->n_pushed : &t->n_put, n);
        created = c.created;
        if (c.nonfinite > 0) {
            count_add(&t->n_push_nonfinite, c.nonfinite);
            rc = PSKV_ERANGE;
        }
    }
    free(save);
    free(res.rows);
    free(res.cow);
    free(dups.summed_row);
    free(dups.rows);
    pskv__plan_free(&p);
    layout_unlock(t);
    rows_added(t, created + res.faulted, loaded || res.faulted > 0);
    return rc;
}

int pskv_push(pskv_table *t, const uint64_t *keys, size_t n, const float *grads)
{
    int rc = check_row_args(t, keys, n, grads);
    if (rc != 0 || n == 0)
        return rc;
    return write_rows(t, keys, n, grads, true);
}

int pskv_put(pskv_table *t, const uint64_t *keys, size_t n, const float *values)
{
    int rc = check_row_args(t, keys, n, values);
    if (rc != 0 || n == 0)
        return rc;
    return write_rows(t, keys, n, values, false);
}

/* ---------------------------------------------------------------- erase */

typedef struct erase_ctx {
    uint64_t erased_resident;
    uint32_t busy;         /* rows in motion: wait and erase again */
    uint32_t *spill_slots; /* freed spill slots of erased spilled rows */
    uint32_t nslots;
} erase_ctx;

/* Durable tables: room for what erasing the shard's k keys may record
 * (dirty keys, pre-images, tombstones). */
static int erase_reserve(pskv__shard *sh, uint32_t k, bool ckpt, bool tombs)
{
    int rc = pskv__dirty_reserve(sh, k);
    if (rc == 0 && ckpt && (rc = pskv__cow_reserve(sh, k)) != 0)
        pskv__dirty_unreserve(sh, k);
    if (rc == 0 && tombs && (rc = pskv__spillmap_reserve(&sh->tombs, k)) != 0) {
        pskv__dirty_unreserve(sh, k);
        if (ckpt)
            pskv__cow_unreserve(sh, k);
    }
    return rc;
}

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
    const uint32_t dirty0 = sh->dirty.reserved, cow0 = sh->cow_reserved,
                   tombs0 = sh->tombs.reserved;
    if (durable) {
        int rc = erase_reserve(sh, k, ckpt, tombs);
        if (rc != 0)
            return rc;
    }
    pskv__cold cold = {NULL};
    int rc = 0;
    for (uint32_t j = p->start[s]; j < p->start[s + 1] && rc == 0; j++) {
        uint32_t i = p->order[j];
        pskv__entry *e = pskv__shard_find(sh, p->keys[i], p->hash[i]);
        if (e != NULL) {
            if (e->meta & PSKV__META_BUSY) {
                c->busy++;
            } else {
                if (durable)
                    pskv__row_erased(sh, e, t->parity, tombs);
                pskv__shard_remove(sh, e);
                sh->erased++;
                c->erased_resident++;
            }
            continue;
        }
        pskv__spilled *sp = pskv__spillmap_find(&sh->spilled, p->keys[i], p->hash[i]);
        if (sp != NULL) {
            if (sp->slot & PSKV__SPILL_BUSY) {
                c->busy++;
                continue;
            }
            if (!durable || !pskv__spilled_erased(sh, sp, t->parity, tombs))
                c->spill_slots[c->nslots++] = sp->slot & PSKV__SPILL_SLOT_MAX;
            pskv__spillmap_remove(&sh->spilled, sp);
            sh->erased++;
            continue;
        }
        if (tombs && pskv__keyfilter_maybe(&t->persisted, p->keys[i]) &&
            !pskv__tombstoned(sh, p->keys[i], p->hash[i])) {
            const void *row;
            rc = pskv__cold_find(t, &cold, p->keys[i], &row);
            if (rc == 1) { /* a row only LMDB holds */
                pskv__key_erased_cold(sh, p->keys[i], t->parity);
                atomic_fetch_sub(&t->cold_rows, 1);
                sh->erased++;
                rc = 0;
            }
        }
    }
    pskv__cold_end(t, &cold);
    if (durable) { /* give back what was not used */
        pskv__dirty_unreserve(sh, sh->dirty.reserved - dirty0);
        if (ckpt)
            pskv__cow_unreserve(sh, sh->cow_reserved - cow0);
        if (tombs)
            pskv__spillmap_unreserve(&sh->tombs, sh->tombs.reserved - tombs0);
    }
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
        uint64_t gen = pskv__moved_gen(t->store);
        c.busy = 0;
        rc = visit_shards(t, &p, erase_shard, &c); /* erasing twice is harmless */
        if (rc != 0 || c.busy == 0)
            break;
        pskv__moved_wait(t->store, gen);
    }
    if (c.nslots > 0)
        pskv__spill_free(t->spill, c.spill_slots, c.nslots);
    free(c.spill_slots);
    pskv__plan_free(&p);
    layout_unlock(t);
    pskv__store_account(t->store, -(int64_t)(c.erased_resident * t->row_bytes));
    return rc;
}

int pskv_prefetch(pskv_table *t, const uint64_t *keys, size_t n)
{
    int rc = check_row_args(t, keys, n, keys);
    if (rc != 0 || n == 0 || t->spill == NULL)
        return rc; /* memory-only tables keep every row in DRAM */
    return pskv__prefetch_submit(t, keys, n);
}

/* ---------------------------------------------------------------- reshard */

/* Copy every row of the old shards into new ones routed by a new ring:
 * resident rows with their bytes, spilled rows as spill-map entries (their
 * slots belong to the table's file). Called with the layout lock exclusive,
 * so no row is BUSY. */
static uint32_t route(const pskv_table *t, const pskv_ring *ring, uint64_t key)
{
    return pskv__ring_route_hash(ring, pskv__key_hash(key, t->opts.seed));
}

/* The checkpoint state of durable tables moves too: dirty keys and
 * tombstones (no checkpoint runs during a reshard, so there are no
 * pre-images and no pending marks). */
static int dirty_move(pskv_table *t, const pskv_ring *ring, pskv__shard *to, uint32_t nto)
{
    uint32_t *count = calloc(2 * (size_t)nto, sizeof *count); /* [dirty | tombs] */
    if (count == NULL)
        return PSKV_ENOMEM;
    for (uint32_t s = 0; s < t->nshards; s++) {
        pskv__shard *sh = &t->shards[s];
        for (uint32_t i = 0; i < sh->dirty.count; i++)
            count[route(t, ring, pskv__keylist_at(&sh->dirty, i))]++;
        for (uint32_t i = 0; i < sh->tombs.cap; i++)
            if (sh->tombs.e[i].slot != PSKV__SLOT_EMPTY)
                count[nto + route(t, ring, sh->tombs.e[i].key)]++;
    }
    int rc = 0;
    for (uint32_t s = 0; s < nto && rc == 0; s++) {
        rc = pskv__dirty_reserve(&to[s], count[s]);
        if (rc == 0)
            rc = pskv__spillmap_reserve(&to[s].tombs, count[nto + s]);
    }
    free(count);
    if (rc != 0)
        return rc;
    for (uint32_t s = 0; s < t->nshards; s++) {
        pskv__shard *sh = &t->shards[s];
        for (uint32_t i = 0; i < sh->dirty.count; i++) {
            uint64_t key = pskv__keylist_at(&sh->dirty, i);
            pskv__keylist_append(&to[route(t, ring, key)].dirty, key);
        }
        for (uint32_t i = 0; i < sh->tombs.cap; i++) {
            pskv__spilled e = sh->tombs.e[i];
            if (e.slot == PSKV__SLOT_EMPTY)
                continue;
            uint64_t h = pskv__key_hash(e.key, t->opts.seed);
            pskv__spillmap_insert_reserved(&to[pskv__ring_route_hash(ring, h)].tombs, e.key, h,
                                           e.slot);
        }
    }
    return 0;
}

static int rows_move(pskv_table *t, const pskv_ring *ring, pskv__shard *to, uint32_t nto)
{
    if (t->durable) {
        int rc = dirty_move(t, ring, to, nto);
        if (rc != 0)
            return rc;
    }
    uint32_t *count = calloc(2 * (size_t)nto, sizeof *count); /* [resident | spilled] */
    if (count == NULL)
        return PSKV_ENOMEM;
    for (uint32_t s = 0; s < t->nshards; s++) {
        pskv__shard *sh = &t->shards[s];
        for (uint32_t i = 0; i <= sh->index_mask; i++)
            if (sh->index[i].slot != PSKV__SLOT_EMPTY)
                count[pskv__ring_route_hash(ring, pskv__key_hash(sh->index[i].key, t->opts.seed))]++;
        for (uint32_t i = 0; i < sh->spilled.cap; i++)
            if (sh->spilled.e[i].slot != PSKV__SLOT_EMPTY)
                count[nto + pskv__ring_route_hash(
                                ring, pskv__key_hash(sh->spilled.e[i].key, t->opts.seed))]++;
    }
    int rc = 0;
    for (uint32_t s = 0; s < nto && rc == 0; s++) {
        rc = pskv__shard_reserve(&to[s], count[s]);
        if (rc == 0)
            rc = pskv__spillmap_reserve(&to[s].spilled, count[nto + s]);
    }
    free(count);
    if (rc != 0)
        return rc;
    for (uint32_t s = 0; s < t->nshards; s++) {
        pskv__shard *sh = &t->shards[s];
        for (uint32_t i = 0; i <= sh->index_mask; i++) {
            pskv__entry e = sh->index[i];
            if (e.slot == PSKV__SLOT_EMPTY)
                continue;
            uint64_t h = pskv__key_hash(e.key, t->opts.seed);
            pskv__shard *dst = &to[pskv__ring_route_hash(ring, h)];
            pskv__entry *ne = pskv__shard_insert_entry(dst, e.key, h);
            ne->meta = e.meta; /* reference bit and checkpoint marks */
            memcpy(pskv__shard_row(dst, ne->slot), pskv__shard_row(sh, e.slot), t->row_bytes);
        }
        for (uint32_t i = 0; i < sh->spilled.cap; i++) {
            pskv__spilled e = sh->spilled.e[i];
            if (e.slot == PSKV__SLOT_EMPTY)
                continue;
            uint64_t h = pskv__key_hash(e.key, t->opts.seed);
            pskv__spillmap_insert_reserved(&to[pskv__ring_route_hash(ring, h)].spilled, e.key, h,
                                           e.slot);
        }
    }
    return 0;
}

int pskv_table_reshard(pskv_table *t, uint32_t shards)
{
    if (t == NULL || shards < 1 || shards > PSKV_SHARDS_MAX)
        return PSKV_EINVAL;
    /* Wait for a running checkpoint first, without blocking row calls. */
    pthread_mutex_lock(&t->ckpt_lock);
    pthread_rwlock_wrlock(&t->layout_lock);
    if (shards == t->nshards) {
        layout_unlock(t);
        pthread_mutex_unlock(&t->ckpt_lock);
        return 0;
    }
    pskv_ring *ring;
    pskv__shard *fresh;
    int rc = layout_create(t, shards, &ring, &fresh);
    if (rc == 0) {
        rc = rows_move(t, ring, fresh, shards);
        if (rc != 0) {
            shards_free(fresh, shards);
            pskv_ring_destroy(ring);
        }
    }
    if (rc == 0) {
        /* Keep lifetime counters: fold the old shards' into the first new one. */
        for (uint32_t s = 0; s < t->nshards; s++) {
            fresh[0].created += t->shards[s].created;
            fresh[0].erased += t->shards[s].erased;
            fresh[0].evicted += t->shards[s].evicted;
        }
        shards_free(t->shards, t->nshards);
        pskv_ring_destroy(t->ring);
        t->shards = fresh;
        t->ring = ring;
        t->nshards = shards;
        t->opts.shards = shards;
        atomic_fetch_add(&t->layout_gen, 1);
        count_add(&t->n_reshards, 1);
    }
    layout_unlock(t);
    pthread_mutex_unlock(&t->ckpt_lock);
    return rc;
}

/* ---------------------------------------------------------------- info, stats */

int pskv_table_info_get(const pskv_table *t, pskv_table_info *out)
{
    if (t == NULL || out == NULL)
        return PSKV_EINVAL;
    pskv_table *mt = (pskv_table *)t;
    layout_read_lock(mt);
    memset(out, 0, sizeof *out);
    out->dim = t->dim;
    out->state_floats = t->state_floats;
    out->row_bytes = t->row_bytes;
    out->shards = t->nshards;
    out->options = t->opts;
    layout_unlock(mt);
    return 0;
}

void pskv__table_stats_add(pskv_table *t, pskv_table_stats *st)
{
    layout_read_lock(t);
    for (uint32_t s = 0; s < t->nshards; s++) {
        pskv__shard *sh = &t->shards[s];
        pthread_mutex_lock(&sh->lock);
        st->rows += (uint64_t)sh->rows + sh->spilled.count;
        st->dram_bytes += pskv__shard_dram_bytes(sh);
        st->spill_index_bytes += pskv__spillmap_bytes(&sh->spilled);
        st->rows_created += sh->created;
        st->rows_erased += sh->erased;
        st->rows_evicted += sh->evicted;
        st->rows_spilled += sh->spilled.count;
        pthread_mutex_unlock(&sh->lock);
    }
    st->rows += atomic_load(&t->cold_rows);
    st->rows_cold = atomic_load(&t->cold_rows);
    st->dram_bytes += sizeof *t + (uint64_t)t->nshards * sizeof(pskv__shard) +
                      pskv__keyfilter_bytes(&t->persisted);
    if (t->spill != NULL) {
        uint64_t alloc_bytes = pskv__spill_dram_bytes(t->spill);
        st->dram_bytes += alloc_bytes;
        st->spill_index_bytes += alloc_bytes;
    }
    layout_unlock(t);
    st->row_bytes = st->rows * t->row_bytes;
}

int pskv_table_stats_get(const pskv_table *t, pskv_table_stats *out)
{
    if (t == NULL || out == NULL)
        return PSKV_EINVAL;
    pskv_table *mt = (pskv_table *)t;
    memset(out, 0, sizeof *out);
    pskv__table_stats_add(mt, out);
    out->pulled = atomic_load(&mt->n_pulled);
    out->pushed = atomic_load(&mt->n_pushed);
    out->got = atomic_load(&mt->n_got);
    out->put = atomic_load(&mt->n_put);
    out->get_misses = atomic_load(&mt->n_get_misses);
    out->reshards = atomic_load(&mt->n_reshards);
    out->spill_reads = atomic_load(&mt->n_spill_reads);
    out->prefetch_errors = atomic_load(&mt->n_prefetch_errors);
    out->spill_read_ns = atomic_load(&mt->n_spill_read_ns);
    out->spill_write_ns = atomic_load(&mt->n_spill_write_ns);
    out->spill_writes = atomic_load(&mt->n_spill_writes);
    out->cold_lookups = atomic_load(&mt->n_cold_lookups);
    out->push_nonfinite = atomic_load(&mt->n_push_nonfinite);
    return 0;
}

uint64_t pskv_table_rows(const pskv_table *t)
{
    pskv_table_stats st;
    if (pskv_table_stats_get(t, &st) != 0)
        return 0;
    return st.rows;
}

/* ---------------------------------------------------------------- iteration */

struct pskv_iter {
    pskv_table *t;
    uint64_t gen;
    uint32_t next_shard;
    uint32_t count, pos;
    size_t cap;
    uint64_t *keys;
    float *rows;
    uint32_t *spill_at, *spill_slot; /* spilled rows of the current shard */
    /* After the shards: rows only LMDB holds, in key order. */
    bool cold_started, cold_done;
    uint64_t cold_after;
    pskv__cold_walk walk; /* what the LMDB cursor saw, against the count record */
};

int pskv_iter_create(pskv_table *t, pskv_iter **out)
{
    if (t == NULL || out == NULL)
        return PSKV_EINVAL;
    pskv_iter *it = calloc(1, sizeof *it);
    if (it == NULL)
        return PSKV_ENOMEM;
    it->t = t;
    it->gen = atomic_load(&t->layout_gen);
    *out = it;
    return 0;
}

void pskv_iter_destroy(pskv_iter *it)
{
    if (it == NULL)
        return;
    free(it->keys);
    free(it->rows);
    free(it->spill_at);
    free(it->spill_slot);
    free(it);
}

/* Copy the shard's rows into the iterator (shard lock held); spilled rows
 * are marked BUSY and listed in it->spill_at / it->spill_slot to be read
 * after the lock is released. Returns the rows found BUSY by others. */
static uint32_t iter_copy_shard(pskv_iter *it, pskv__shard *sh, uint32_t *nspilled)
{
    const pskv_table *t = it->t;
    uint32_t n = 0, busy = 0;
    *nspilled = 0;
    for (uint32_t i = 0; i <= sh->index_mask; i++) {
        pskv__entry *e = &sh->index[i];
        if (e->slot == PSKV__SLOT_EMPTY)
            continue;
        if (e->meta & PSKV__META_BUSY) {
            busy++;
            continue;
        }
        it->keys[n] = e->key;
        memcpy(it->rows + (size_t)n * t->row_floats, pskv__shard_row(sh, e->slot), t->row_bytes);
        n++;
    }
    for (uint32_t i = 0; i < sh->spilled.cap; i++) {
        pskv__spilled *e = &sh->spilled.e[i];
        if (e->slot == PSKV__SLOT_EMPTY)
            continue;
        if (e->slot & PSKV__SPILL_BUSY) {
            busy++;
            continue;
        }
        it->keys[n] = e->key;
        it->spill_at[*nspilled] = n;
        it->spill_slot[(*nspilled)++] = e->slot & PSKV__SPILL_SLOT_MAX;
        e->slot |= PSKV__SPILL_BUSY;
        n++;
    }
    it->count = n;
    return busy;
}

/* Read the spilled rows listed by iter_copy_shard, then release them. */
static int iter_read_spilled(pskv_iter *it, pskv__shard *sh, uint32_t nspilled)
{
    pskv_table *t = it->t;
    uint64_t *keys = malloc((size_t)nspilled * sizeof *keys);
    float **rows = malloc((size_t)nspilled * sizeof *rows);
    int rc = keys && rows ? 0 : PSKV_ENOMEM;
    if (rc == 0) {
        for (uint32_t k = 0; k < nspilled; k++) {
            keys[k] = it->keys[it->spill_at[k]];
            rows[k] = it->rows + (size_t)it->spill_at[k] * t->row_floats;
        }
        rc = pskv__spill_read(t->spill, nspilled, keys, it->spill_slot, rows, NULL);
    }
    pthread_mutex_lock(&sh->lock);
    for (uint32_t k = 0; k < nspilled; k++) {
        uint64_t key = it->keys[it->spill_at[k]];
        pskv__spilled *e =
            pskv__spillmap_find(&sh->spilled, key, pskv__key_hash(key, sh->hash_seed));
        e->slot &= ~PSKV__SPILL_BUSY;
    }
    pthread_mutex_unlock(&sh->lock);
    pskv__moved_wake(t->store);
    free(keys);
    free(rows);
    return rc;
}

static int iter_reserve(pskv_iter *it, uint32_t rows)
{
    if (rows <= it->cap)
        return 0;
    const pskv_table *t = it->t;
    uint64_t *k = realloc(it->keys, (size_t)rows * sizeof *k);
    if (k != NULL)
        it->keys = k;
    float *r = realloc(it->rows, (size_t)rows * t->row_bytes);
    if (r != NULL)
        it->rows = r;
    uint32_t *a = realloc(it->spill_at, (size_t)rows * sizeof *a);
    if (a != NULL)
        it->spill_at = a;
    uint32_t *sl = realloc(it->spill_slot, (size_t)rows * sizeof *sl);
    if (sl != NULL)
        it->spill_slot = sl;
    if (k == NULL || r == NULL || a == NULL || sl == NULL)
        return PSKV_ENOMEM;
    it->cap = rows;
    return 0;
}

#define ITER_COLD_BATCH 1024u

/* The next batch of rows that only LMDB holds (layout lock held): keys
 * from a cursor, then, shard by shard under the shard's lock, the rows
 * still cold (not read back, not erased) from a transaction begun under
 * that lock. 1 loaded, 0 end, <0 error. */
static int iter_load_cold(pskv_iter *it)
{
    pskv_table *t = it->t;
    uint64_t keys[ITER_COLD_BATCH];
    uint32_t shard_of[ITER_COLD_BATCH];
    int rc = iter_reserve(it, ITER_COLD_BATCH);
    while (rc == 0 && !it->cold_done) {
        uint32_t n;
        rc = pskv__cold_keys(t, it->cold_after, !it->cold_started, keys, ITER_COLD_BATCH, &n,
                             &it->walk);
        if (rc != 0)
            break;
        it->cold_started = true;
        it->cold_done = n < ITER_COLD_BATCH;
        /* The whole B-tree walked in one snapshot: rows it lost (a damaged
         * page) show as a count or digest that differs from the record. */
        if (it->cold_done && (rc = pskv__cold_walk_check(t, &it->walk)) != 0)
            break;
        if (n == 0)
            break;
        it->cold_after = keys[n - 1];
        for (uint32_t i = 0; i < n; i++)
            shard_of[i] = route(t, t->ring, keys[i]);
        uint32_t count = 0;
        for (uint32_t s = 0; s < t->nshards && rc == 0; s++) {
            pskv__shard *sh = &t->shards[s];
            pskv__cold cold = {NULL};
            bool locked = false;
            for (uint32_t i = 0; i < n && rc == 0; i++) {
                if (shard_of[i] != s)
                    continue;
                if (!locked) {
                    pthread_mutex_lock(&sh->lock);
                    locked = true;
                }
                uint64_t h = pskv__key_hash(keys[i], t->opts.seed);
                if (pskv__shard_find(sh, keys[i], h) != NULL ||
                    (sh->spilled.count && pskv__spillmap_find(&sh->spilled, keys[i], h)) ||
                    pskv__tombstoned(sh, keys[i], h))
                    continue; /* seen with the shard, or erased */
                const void *row;
                rc = pskv__cold_find(t, &cold, keys[i], &row);
                if (rc == 1) {
                    it->keys[count] = keys[i];
                    memcpy(it->rows + (size_t)count * t->row_floats, row, t->row_bytes);
                    count++;
                    rc = 0;
                } else if (rc == 0 && pskv__cold_txnid(&cold) == it->walk.last_txnid) {
                    rc = PSKV_ECORRUPT; /* the cursor saw it, the lookup cannot find it */
                }
            }
            pskv__cold_end(t, &cold);
            if (locked)
                pthread_mutex_unlock(&sh->lock);
        }
        if (rc == 0 && count > 0) {
            it->count = count;
            it->pos = 0;
            return 1;
        }
    }
    return rc;
}

/* Copy the next shard's rows into the iterator. 1 loaded, 0 end, <0 error. */
static int iter_load(pskv_iter *it)
{
    pskv_table *t = it->t;
    int rc = 1;
    layout_read_lock(t);
    if (atomic_load(&t->layout_gen) != it->gen) {
        rc = PSKV_EBUSY;
    } else if (it->next_shard >= t->nshards) {
        rc = t->durable ? iter_load_cold(it) : 0;
    } else {
        pskv__shard *sh = &t->shards[it->next_shard];
        for (;;) {
            uint64_t moved = pskv__moved_gen(t->store);
            uint32_t nspilled = 0, busy = 0;
            pthread_mutex_lock(&sh->lock);
            int err = iter_reserve(it, sh->rows + sh->spilled.count);
            if (err == 0)
                busy = iter_copy_shard(it, sh, &nspilled);
            pthread_mutex_unlock(&sh->lock);
            if (err == 0 && nspilled > 0)
                err = iter_read_spilled(it, sh, nspilled);
            if (err != 0) {
                rc = err;
                break;
            }
            if (busy == 0)
                break;
            /* Rows of this shard were moving between tiers: wait, copy again. */
            pskv__moved_wait(t->store, moved);
        }
        if (rc == 1) {
            it->pos = 0;
            it->next_shard++;
        }
    }
    layout_unlock(t);
    return rc;
}

int pskv_iter_next(pskv_iter *it, uint64_t *key, float *weights, float *state)
{
    if (it == NULL || key == NULL || weights == NULL)
        return PSKV_EINVAL;
    while (it->pos >= it->count) {
        int rc = iter_load(it);
        if (rc <= 0)
            return rc;
    }
    const pskv_table *t = it->t;
    const float *row = it->rows + (size_t)it->pos * t->row_floats;
    *key = it->keys[it->pos];
    memcpy(weights, row, t->dim * sizeof(float));
    if (state != NULL && t->state_floats > 0)
        memcpy(state, row + t->dim, t->state_floats * sizeof(float));
    it->pos++;
    return 1;
}
