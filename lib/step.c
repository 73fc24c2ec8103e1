/* Synchronous updates (update=sync): pskv_step, and the shards' pending
 * lists it reads.
 *
 * A push on a sync table adds each gradient to the row's accumulator
 * (pipeline.c); the row's key goes on its shard's pending list when its
 * accumulator was empty. pskv_step takes a copy of every pending list,
 * applies those rows' accumulators with the optimizer (PSKV__ROW_STEP of
 * pipeline.c: a row with nothing accumulated is left alone, so a key
 * listed twice or stepped already costs a lookup), and only then drops
 * the keys it copied from the front of each list: a failure part-way
 * leaves them listed for the next step. Keys pushed meanwhile were appended behind
 * the copied ones and stay.
 *
 * The accumulators are bytes of their rows: they spill, count in the
 * budget and are checkpointed with them. The lists are not persisted: a
 * table reopened with rows in LMDB marks its lists incomplete
 * (pending_unknown), and its first step reads every persisted row once to
 * list those whose accumulator holds pushes.
 *
 * Invariant: every row with pushes accumulated has its key on its shard's
 * pending list, or the table's lists are marked incomplete.
 * SPDX-License-Identifier: BSD-2-Clause */
#include <lmdb.h>
#include <stdlib.h>
#include <string.h>

#include "errors.h"
#include "format.h"
#include "pskv_internal.h"
#include "rows.h"
#include "sort.h"
#include "step.h"

/* Keys per pskv__step_rows call: bounds the plan's memory. */
#define STEP_BATCH 65536u

/* Append the keys of persisted rows whose accumulator holds pushes. */
static int scan_persisted(pskv_table *t, uint64_t **keys, size_t *n, size_t *cap)
{
    pskv_store *s = t->store;
    const size_t count_at = (size_t)t->payload_bytes + (size_t)t->dim * sizeof(float);
    pthread_rwlock_rdlock(&s->lmdb.lock);
    MDB_txn *txn;
    MDB_cursor *cur = NULL;
    int rc = pskv__env_txn_begin(&s->lmdb, false, &txn);
    if (rc == 0 && (rc = pskv__env_err(mdb_cursor_open(txn, t->dbi, &cur))) != 0)
        mdb_txn_abort(txn);
    if (rc == 0) {
        MDB_val k, v;
        int mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
        for (; mrc == 0 && rc == 0; mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
            uint32_t pushes;
            if (k.mv_size != 8 || v.mv_size < count_at + sizeof pushes)
                continue; /* damage: the row's own read reports it */
            memcpy(&pushes, (const uint8_t *)v.mv_data + count_at, sizeof pushes);
            if (pushes == 0)
                continue;
            if (*n == *cap) {
                size_t ncap = *cap ? *cap * 2 : 1024;
                uint64_t *nk = realloc(*keys, ncap * sizeof *nk);
                if (nk == NULL) {
                    rc = PSKV_ENOMEM;
                    break;
                }
                *keys = nk;
                *cap = ncap;
            }
            (*keys)[(*n)++] = pskv_fmt_key_get(k.mv_data);
        }
        if (rc == 0 && mrc != MDB_NOTFOUND)
            rc = pskv__env_err(mrc);
        mdb_cursor_close(cur);
        mdb_txn_abort(txn);
    }
    pthread_rwlock_unlock(&s->lmdb.lock);
    return rc;
}

/* Copy every shard's pending keys (taken[s]: how many, from the front). */
static int copy_pending(pskv_table *t, uint32_t *taken, uint64_t **keys, size_t *n, size_t *cap)
{
    int rc = 0;
    for (uint32_t s = 0; s < t->nshards && rc == 0; s++) {
        pskv__shard *sh = &t->shards[s];
        pskv__shard_lock(sh);
        uint32_t k = sh->pending.count;
        if (*n + k > *cap) {
            size_t ncap = (*n + k) * 2;
            uint64_t *nk = realloc(*keys, ncap * sizeof *nk);
            if (nk == NULL)
                rc = PSKV_ENOMEM;
            else {
                *keys = nk;
                *cap = ncap;
            }
        }
        for (uint32_t i = 0; rc == 0 && i < k; i++)
            (*keys)[*n + i] = pskv__keylist_at(&sh->pending, i);
        pskv__shard_unlock(sh);
        if (rc == 0) {
            taken[s] = k;
            *n += k;
        }
    }
    return rc;
}

int pskv_step(pskv_table *t)
{
    pskv__detail_clear();
    if (t == NULL)
        return pskv__fail(PSKV_EINVAL, "the table is NULL");
    if (!t->sync)
        return pskv__fail(PSKV_EINVAL, "table '%s' has update=async: its pushes are applied at "
                                       "once, there is nothing to step", t->name);
    pthread_mutex_lock(&t->step_lock);
    pthread_rwlock_rdlock(&t->layout_lock);
    const uint64_t gen = atomic_load(&t->layout_gen);
    uint32_t nshards = t->nshards;
    uint32_t *taken = calloc(nshards, sizeof *taken);
    uint64_t *keys = NULL;
    size_t n = 0, cap = 0;
    const bool scan = t->pending_unknown;
    int rc = taken == NULL ? PSKV_ENOMEM : copy_pending(t, taken, &keys, &n, &cap);
    pthread_rwlock_unlock(&t->layout_lock);
    if (rc == 0 && scan)
        rc = scan_persisted(t, &keys, &n, &cap);
    uint64_t *tmp = rc == 0 ? malloc((n ? n : 1) * sizeof *tmp) : NULL;
    if (rc == 0 && tmp == NULL)
        rc = PSKV_ENOMEM;
    size_t m = 0;
    if (rc == 0 && n > 0) {
        pskv__keys_sort(keys, tmp, n);
        for (size_t i = 0; i < n; i++)
            if (m == 0 || keys[m - 1] != keys[i])
                keys[m++] = keys[i];
    }
    free(tmp);
    /* Every row, even when some steps are not finite (PSKV_ERANGE): those
     * rows' gradients are dropped, the others applied. */
    bool nonfinite = false;
    for (size_t at = 0; (rc == 0 || rc == PSKV_ERANGE) && at < m; at += STEP_BATCH) {
        size_t b = m - at < STEP_BATCH ? m - at : STEP_BATCH;
        rc = pskv__step_rows(t, keys + at, b);
        nonfinite = nonfinite || rc == PSKV_ERANGE;
    }
    if (rc == 0 && nonfinite)
        rc = PSKV_ERANGE;
    if (rc == 0 || rc == PSKV_ERANGE) {
        /* Done: drop what was copied (a reshard since moved the lists:
         * then they stay, and the next step finds those rows empty). */
        pthread_rwlock_rdlock(&t->layout_lock);
        if (atomic_load(&t->layout_gen) == gen)
            for (uint32_t s = 0; s < nshards; s++) {
                pskv__shard *sh = &t->shards[s];
                pskv__shard_lock(sh);
                pskv__keylist_drop_front(&sh->pending, taken[s]);
                pskv__shard_unlock(sh);
            }
        pthread_rwlock_unlock(&t->layout_lock);
        if (scan)
            t->pending_unknown = false;
    }
    free(taken);
    free(keys);
    pthread_mutex_unlock(&t->step_lock);
    return rc;
}

int pskv__step_pending_move(const pskv_table *t, const pskv_ring *ring, pskv__shard *to,
                            uint32_t nto)
{
    uint32_t *count = calloc(nto, sizeof *count);
    if (count == NULL)
        return PSKV_ENOMEM;
    for (uint32_t s = 0; s < t->nshards; s++)
        for (uint32_t i = 0; i < t->shards[s].pending.count; i++)
            count[pskv__table_route(t, ring, pskv__keylist_at(&t->shards[s].pending, i))]++;
    int rc = 0;
    for (uint32_t s = 0; s < nto && rc == 0; s++)
        rc = pskv__keylist_reserve(&to[s].pending, count[s]);
    free(count);
    for (uint32_t s = 0; s < t->nshards && rc == 0; s++)
        for (uint32_t i = 0; i < t->shards[s].pending.count; i++) {
            uint64_t key = pskv__keylist_at(&t->shards[s].pending, i);
            pskv__keylist_append(&to[pskv__table_route(t, ring, key)].pending, key);
        }
    return rc;
}
