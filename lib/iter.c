/* Iteration over a table's rows: shard by shard (DRAM and spill file, each
 * shard copied under its lock), then the rows only LMDB holds, in key order.
 *
 * A row read back from LMDB after its shard was copied is in neither: the
 * copy missed it and it is no longer "only in LMDB". So while iterations
 * run, each shard notes the keys it reads back (tier.c, pskv__tier_load_cold);
 * an iteration remembers where each shard's list stood at its copy, and
 * its LMDB walk also returns the keys noted after that point, read as they
 * are now (DRAM or spill file). Rows never go back to being LMDB-only, so
 * each row is returned once: by the copy if it was in DRAM or the spill
 * file then, by the walk otherwise.
 * SPDX-License-Identifier: BSD-2-Clause */
#include <stdlib.h>
#include <string.h>

#include "array.h"
#include "cold.h"
#include "errors.h"
#include "iter.h"
#include "pskv_internal.h"
#include "rows.h"
#include "sort.h"
#include "tier.h"

struct pskv_iter {
    pskv__handle h; /* in the store's list; closed if the store went first */
    pskv_table *t;
    uint64_t gen;
    uint32_t next_shard;
    uint32_t count, pos;
    size_t cap;
    uint64_t *keys;
    float *rows;
    /* The current shard's keys, listed under its lock (at: the index
     * position, or SPILLED_HINT), taken a piece at a time from lpos. */
    pskv__keyed *listed;
    uint32_t lcap, ln, lpos, lshard;
    uint32_t piece;       /* keys per piece */
    /* Per piece: spilled rows to read (batch position, slot); rows found
     * moving, read by key after the batch's rows. */
    uint32_t *spill_at, *spill_slot;
    uint64_t *deferred;
    /* After the shards: rows only LMDB holds, in key order. */
    bool cold_started, cold_done;
    uint64_t cold_after;
    pskv__cold_walk walk; /* what the LMDB cursor saw, against the count record */
    /* Rows read back after their shard's copy (durable tables): where each
     * shard's read-back list stood at the copy, how far `late` holds it. */
    uint32_t nshards;
    uint64_t *copied_at, *late_to;
    pskv__keymap late;
    uint32_t nlate; /* the batch's last nlate keys are late: rows to read */
    /* A full export's hook (pskv__iter_direct), and per piece where each
     * DRAM row sits (valid under the shard's lock). */
    pskv__iter_direct_fn direct;
    void *direct_arg;
    bool used; /* the piece went to the hook */
    bool cold_walk; /* the shards are done: batches come from LMDB's walk */
    const float **at;
    pskv__keyed *sorted; /* the piece's listed keys in order, for the hook */
};

/* Rows copied per hold of a shard's lock, unless pskv__iter_piece says: a
 * writer waits for one piece (0.5 MB of 512-byte rows), not for a shard,
 * and the iterator's copy stays small enough to be in cache when it is
 * read. */
#define ITER_PIECE 1024u
#define SPILLED_HINT UINT32_MAX

/* Row n of the iterator's copy (rows are stored_bytes apart: weights, state,
 * version). */
static float *iter_row(const pskv_iter *it, size_t n)
{
    return (float *)(void *)((uint8_t *)it->rows + n * it->t->stored_bytes);
}

int pskv_iter_create(pskv_table *t, pskv_iter **out)
{
    pskv__detail_clear();
    if (t == NULL || out == NULL)
        return PSKV_EINVAL;
    pskv_iter *it = calloc(1, sizeof *it);
    if (it == NULL)
        return PSKV_ENOMEM;
    it->t = t;
    it->piece = ITER_PIECE;
    pskv__keymap_init(&it->late, t->opts.seed);
    pthread_rwlock_rdlock(&t->layout_lock);
    it->gen = atomic_load(&t->layout_gen);
    it->nshards = t->nshards;
    pthread_rwlock_unlock(&t->layout_lock);
    if (t->durable) {
        it->copied_at = calloc(it->nshards, sizeof *it->copied_at);
        it->late_to = calloc(it->nshards, sizeof *it->late_to);
        if (it->copied_at == NULL || it->late_to == NULL) {
            free(it->copied_at);
            free(it->late_to);
            free(it);
            return PSKV_ENOMEM;
        }
        /* Before any shard is copied: read-backs from now on are noted. */
        atomic_fetch_add(&t->iterations, 1);
    }
    pskv__handle_attach(&t->store->handles, &it->h);
    *out = it;
    return 0;
}

void pskv_iter_destroy(pskv_iter *it)
{
    if (it == NULL)
        return;
    if (!atomic_load(&it->h.closed)) { /* else its table is gone */
        if (it->copied_at != NULL)
            atomic_fetch_sub(&it->t->iterations, 1);
        pskv__handle_detach(&it->t->store->handles, &it->h);
    }
    free(it->copied_at);
    free(it->late_to);
    pskv__keymap_free(&it->late);
    free(it->keys);
    free(it->rows);
    free(it->listed);
    free(it->spill_at);
    free(it->spill_slot);
    free(it->deferred);
    free(it->at);
    free(it->sorted);
    free(it);
}


/* List shard s's keys (its lock held): DRAM rows with their index
 * positions, spilled rows with SPILLED_HINT. Read-backs from now on are
 * this iteration's late rows (iter_load_cold). */
static void iter_list_shard(pskv_iter *it, const pskv__shard *sh, uint32_t s)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i <= sh->index_mask; i++) {
        const pskv__entry *e = &sh->index[i];
        if (e->slot == PSKV__SLOT_EMPTY)
            continue;
        it->listed[n++] = (pskv__keyed){e->key, i};
    }
    for (uint32_t i = 0; i < sh->spilled.cap; i++) {
        const pskv__keyval *e = &sh->spilled.e[i];
        if (e->value == PSKV__SLOT_EMPTY)
            continue;
        it->listed[n++] = (pskv__keyed){e->key, SPILLED_HINT};
    }
    if (it->copied_at != NULL)
        it->copied_at[s] = pskv__readback_end(sh);
    it->ln = n;
    it->lpos = 0;
    it->lshard = s;
}

/* List the next shard's keys (the list grown outside its lock). */
static int iter_next_listing(pskv_iter *it, pskv__shard *sh, uint32_t s)
{
    for (;;) {
        pskv__shard_lock(sh);
        uint32_t want = sh->rows + sh->spilled.count;
        bool fits = want <= it->lcap;
        if (fits)
            iter_list_shard(it, sh, s);
        pskv__shard_unlock(sh);
        if (fits)
            return 0;
        pskv__keyed *grown = pskv__array_grow(it->listed, &it->lcap, want, sizeof *grown,
                                              ITER_PIECE);
        if (grown == NULL)
            return PSKV_ENOMEM;
        it->listed = grown;
    }
}

/* The next piece of the listed keys into the batch, under the shard's
 * lock: a DRAM row still at its listed position is copied from there,
 * else looked up; an idle spilled row is marked BUSY and read after the
 * lock is released; a row being moved is deferred to a read by key
 * (iter_read_late); a key erased since drops out. A whole piece in DRAM
 * goes to the hook, if there is one, instead of being copied. The piece
 * is consumed only once its rows are in. */
static int iter_copy_piece(pskv_iter *it, pskv__shard *sh)
{
    const pskv_table *t = it->t;
    const uint32_t end = it->ln - it->lpos < it->piece ? it->ln : it->lpos + it->piece;
    uint32_t w = 0, nspilled = 0, ndeferred = 0;
    it->used = false;
    /* For the hook, the piece's keys sorted before the lock is taken: they
     * are its rows' keys if every listed key is still there. */
    bool sorted = it->direct != NULL && end - it->lpos == it->piece;
    for (uint32_t j = it->lpos; j < end && sorted; j++)
        it->sorted[j - it->lpos] = (pskv__keyed){it->listed[j].key, j - it->lpos};
    sorted = sorted && pskv__keyed_sort(it->sorted, it->piece) == 0;
    pskv__shard_lock(sh);
    for (uint32_t j = it->lpos; j < end; j++) {
        const uint64_t key = it->listed[j].key, hint = it->listed[j].at;
        const pskv__entry *e = hint <= sh->index_mask ? &sh->index[hint] : NULL;
        pskv__where w_at;
        if (e != NULL && e->slot != PSKV__SLOT_EMPTY && e->key == key) /* where it was listed */
            w_at = (pskv__where){e->flags & PSKV__FLAG_BUSY ? PSKV__EVICTING : PSKV__IN_DRAM,
                                 (pskv__entry *)e, NULL};
        else
            w_at = pskv__locate(it->t, sh, key, pskv__key_hash(key, sh->hash_seed), false);
        switch (w_at.place) {
        case PSKV__IN_DRAM:
            it->keys[w] = key;
            it->at[w++] = pskv__shard_row(sh, w_at.e->slot);
            break;
        case PSKV__EVICTING: /* being moved: read by key once it is in place */
        case PSKV__LOADING:
            it->deferred[ndeferred++] = key;
            break;
        case PSKV__SPILLED:
            it->spill_at[nspilled] = w;
            it->spill_slot[nspilled++] = pskv__claim_spilled(w_at.sp);
            it->at[w] = NULL;
            it->keys[w++] = key;
            break;
        default: /* erased since it was listed */
            break;
        }
    }
    if (sorted && w == it->piece && nspilled == 0 && ndeferred == 0)
        it->used = it->direct(it->direct_arg, it->at, it->sorted, w) == 1;
    for (uint32_t k = 0; k < w && !it->used; k++)
        if (it->at[k] != NULL)
            memcpy(iter_row(it, k), it->at[k], t->stored_bytes);
    pskv__shard_unlock(sh);
    /* The piece's spilled rows, claimed above: read, then released. */
    int rc = pskv__tier_read_claimed(it->t, nspilled, it->keys, it->spill_at, it->spill_slot,
                                     NULL, (uint8_t *)it->rows, t->stored_bytes);
    if (rc != 0)
        return rc; /* the piece again next time */
    if (ndeferred > 0)
        memcpy(it->keys + w, it->deferred, (size_t)ndeferred * sizeof *it->keys);
    it->count = it->used ? 0 : w + ndeferred;
    it->nlate = ndeferred;
    it->pos = 0;
    it->lpos = end;
    return 1;
}

/* Add shard s's keys read back since this iteration copied it to `late`
 * (shard lock held). No iteration running means no reset of the list, so
 * positions from the copy on are still there. */
static int iter_index_late(pskv_iter *it, uint32_t s, const pskv__shard *sh)
{
    uint64_t from = it->late_to[s] > it->copied_at[s] ? it->late_to[s] : it->copied_at[s], end;
    const uint64_t *keys;
    const uint32_t n = pskv__readback_since(sh, from, &keys, &end);
    if (n == 0)
        return 0;
    if (pskv__keymap_reserve(&it->late, n) != 0)
        return PSKV_ENOMEM;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t key = keys[i];
        uint64_t h = pskv__key_hash(key, it->late.seed);
        if (pskv__keymap_find(&it->late, key, h) == NULL)
            pskv__keymap_insert_reserved(&it->late, key, h, 0);
        else
            pskv__keymap_unreserve(&it->late, 1);
    }
    it->late_to[s] = end;
    return 0;
}

static int iter_reserve(pskv_iter *it, uint32_t rows)
{
    if (rows <= it->cap)
        return 0;
    const pskv_table *t = it->t;
    uint64_t *k = realloc(it->keys, (size_t)rows * sizeof *k);
    if (k != NULL)
        it->keys = k;
    float *r = realloc(it->rows, (size_t)rows * t->stored_bytes);
    if (r != NULL)
        it->rows = r;
    uint32_t *a = realloc(it->spill_at, (size_t)rows * sizeof *a);
    if (a != NULL)
        it->spill_at = a;
    uint32_t *sl = realloc(it->spill_slot, (size_t)rows * sizeof *sl);
    if (sl != NULL)
        it->spill_slot = sl;
    uint64_t *d = realloc(it->deferred, (size_t)rows * sizeof *d);
    if (d != NULL)
        it->deferred = d;
    const float **at = realloc(it->at, (size_t)rows * sizeof *at);
    if (at != NULL)
        it->at = at;
    pskv__keyed *so = realloc(it->sorted, (size_t)rows * sizeof *so);
    if (so != NULL)
        it->sorted = so;
    if (k == NULL || r == NULL || a == NULL || sl == NULL || d == NULL || at == NULL ||
        so == NULL)
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
    pskv__keyed by_shard[ITER_COLD_BATCH]; /* (shard, position), stable: key order kept */
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
            by_shard[i] = (pskv__keyed){pskv__table_route(t, t->ring, keys[i]), i};
        if ((rc = pskv__keyed_sort(by_shard, n)) != 0)
            break;
        uint32_t count = 0, nlate = 0;
        uint64_t late[ITER_COLD_BATCH];
        /* Shard by shard, in ascending order, each shard's keys in key
         * order, under its lock. */
        for (uint32_t j = 0; j < n && rc == 0;) {
            const uint32_t s = (uint32_t)by_shard[j].key;
            pskv__shard *sh = &t->shards[s];
            pskv__cold cold = {NULL};
            pskv__shard_lock(sh);
            rc = iter_index_late(it, s, sh);
            for (; j < n && by_shard[j].key == s && rc == 0; j++) {
                const uint32_t i = by_shard[j].at;
                uint64_t h = pskv__key_hash(keys[i], t->opts.seed);
                if (pskv__locate(t, sh, keys[i], h, true).place != PSKV__MAYBE_COLD) {
                    /* Seen with the shard, erased, or read back since. */
                    if (pskv__keymap_find(&it->late, keys[i], h) != NULL)
                        late[nlate++] = keys[i];
                    continue;
                }
                const void *row;
                rc = pskv__cold_find(t, &cold, keys[i], &row);
                if (rc == 1) {
                    it->keys[count] = keys[i];
                    memcpy(iter_row(it, count), row, t->stored_bytes);
                    count++;
                    rc = 0;
                } else if (rc == 0 && pskv__cold_txnid(&cold) == it->walk.last_txnid) {
                    rc = PSKV_ECORRUPT; /* the cursor saw it, the lookup cannot find it */
                }
            }
            pskv__cold_end(t, &cold);
            pskv__shard_unlock(sh);
        }
        if (rc == 0 && count + nlate > 0) {
            /* The late keys go last; iter_read_late reads their rows. */
            memcpy(it->keys + count, late, (size_t)nlate * sizeof *late);
            it->count = count + nlate;
            it->nlate = nlate;
            it->pos = 0;
            return 1;
        }
    }
    return rc;
}

/* Read the rows of the batch's late keys as they are now, after the
 * layout lock is released (pskv__get_rows takes it); keys erased
 * meanwhile drop out. */
static int iter_read_late(pskv_iter *it)
{
    pskv_table *t = it->t;
    uint32_t first = it->count - it->nlate, n = it->nlate;
    it->nlate = 0;
    float *rows = malloc((size_t)n * t->row_floats * sizeof *rows);
    uint8_t *found = malloc(n);
    int rc = rows && found ? pskv__get_rows(t, it->keys + first, n, rows, found) : PSKV_ENOMEM;
    uint32_t kept = first;
    for (uint32_t i = 0; i < n && rc == 0; i++) {
        if (!found[i])
            continue;
        it->keys[kept] = it->keys[first + i];
        memcpy(iter_row(it, kept), rows + (size_t)i * t->row_floats,
               (size_t)t->row_floats * sizeof *rows);
        kept++;
    }
    it->count = kept;
    free(rows);
    free(found);
    return rc;
}

/* The next piece of the table's shards into the iterator, listing the
 * next shard when the current one is done. 1 loaded, 0 no shard left,
 * <0 error. Layout lock held. */
static int iter_load_piece(pskv_iter *it)
{
    pskv_table *t = it->t;
    int rc = iter_reserve(it, it->piece);
    while (rc == 0 && it->lpos >= it->ln) {
        if (it->next_shard >= t->nshards)
            return 0;
        uint32_t s = it->next_shard;
        rc = iter_next_listing(it, &t->shards[s], s);
        if (rc == 0)
            it->next_shard++;
    }
    if (rc != 0)
        return rc;
    /* One piece per load: between two pieces the caller uses the rows,
     * and writers get the lock (glibc's mutex is not fair: a loop over
     * pieces took it back before a woken writer ran). */
    return iter_copy_piece(it, &t->shards[it->lshard]);
}

static int iter_load(pskv_iter *it)
{
    pskv_table *t = it->t;
    int rc;
    pthread_rwlock_rdlock(&t->layout_lock);
    if (atomic_load(&t->layout_gen) != it->gen)
        rc = pskv__fail(PSKV_ESTALE, "table '%s' was resharded during the iteration: iterate "
                                     "again", t->name);
    else if ((rc = iter_load_piece(it)) == 0) {
        it->cold_walk = true;
        rc = t->durable ? iter_load_cold(it) : 0;
    }
    pthread_rwlock_unlock(&t->layout_lock);
    if (rc == 1 && it->nlate > 0 && (rc = iter_read_late(it)) == 0)
        rc = 1;
    return rc;
}

static int iter_next_row(pskv_iter *it, uint64_t *key, float *weights, float *state)
{
    while (it->pos >= it->count) {
        int rc = iter_load(it);
        if (rc <= 0)
            return rc;
    }
    const pskv_table *t = it->t;
    const float *row = iter_row(it, it->pos);
    *key = it->keys[it->pos];
    memcpy(weights, row, t->dim * sizeof(float));
    if (state != NULL && t->state_floats > 0)
        memcpy(state, row + t->dim, t->state_floats * sizeof(float));
    it->pos++;
    return 1;
}

int pskv_iter_next(pskv_iter *it, uint64_t *key, float *weights, float *state)
{
    if (it == NULL || key == NULL || weights == NULL)
        return PSKV_EINVAL;
    int rc = pskv__handle_enter(&it->h, "pskv_iter_next");
    if (rc != 0)
        return rc;
    rc = iter_next_row(it, key, weights, state);
    pskv__handle_leave(&it->h);
    return rc;
}

int pskv__iter_batch(pskv_iter *it, const uint64_t **keys, const float **rows, size_t *stride,
                     uint32_t *n)
{
    while (it->pos >= it->count) {
        int rc = iter_load(it);
        if (rc <= 0)
            return rc;
        if (it->used)
            return 2;
    }
    *keys = it->keys + it->pos;
    *rows = iter_row(it, it->pos);
    *stride = it->t->stored_bytes;
    *n = it->count - it->pos;
    it->pos = it->count;
    return 1;
}

bool pskv__iter_cold(const pskv_iter *it) { return it->cold_walk; }

void pskv__iter_direct(pskv_iter *it, pskv__iter_direct_fn fn, void *arg)
{
    it->direct = fn;
    it->direct_arg = arg;
}

void pskv__iter_piece(pskv_iter *it, uint32_t rows)
{
    it->piece = rows == 0 ? ITER_PIECE : rows > PSKV__ITER_PIECE_MAX ? PSKV__ITER_PIECE_MAX : rows;
}
