/* Online resharding: every row of the old shards moves into new ones
 * routed by a new ring, under the table's layout lock held exclusive.
 * SPDX-License-Identifier: BSD-2-Clause */
#include <stdlib.h>
#include <string.h>

#include "changes.h"
#include "dirty.h"
#include "errors.h"
#include "pskv_internal.h"
#include "step.h"
#include "table.h"


/* Copy every row of the old shards into new ones routed by a new ring:
 * resident rows with their bytes, spilled rows as spill-map entries (their
 * slots belong to the table's file). Called with the layout lock exclusive,
 * so no row is BUSY. */
static int rows_move(pskv_table *t, const pskv_ring *ring, pskv__shard *to, uint32_t nto)
{
    if (t->durable) {
        int rc = pskv__dirty_move(t, ring, to, nto);
        if (rc != 0)
            return rc;
    }
    int lrc = pskv__changes_move(t, ring, to, nto);
    if (lrc == 0 && t->sync)
        lrc = pskv__step_pending_move(t, ring, to, nto);
    if (lrc != 0)
        return lrc;
    uint32_t *count = calloc(2 * (size_t)nto, sizeof *count); /* [resident | spilled] */
    if (count == NULL)
        return PSKV_ENOMEM;
    for (uint32_t s = 0; s < t->nshards; s++) {
        pskv__shard *sh = &t->shards[s];
        for (uint32_t i = 0; i <= sh->index_mask; i++)
            if (sh->index[i].slot != PSKV__SLOT_EMPTY)
                count[pskv__ring_route_hash(ring, pskv__key_hash(sh->index[i].key, t->opts.seed))]++;
        for (uint32_t i = 0; i < sh->spilled.cap; i++)
            if (sh->spilled.e[i].value != PSKV__SLOT_EMPTY)
                count[nto + pskv__ring_route_hash(
                                ring, pskv__key_hash(sh->spilled.e[i].key, t->opts.seed))]++;
    }
    int rc = 0;
    for (uint32_t s = 0; s < nto && rc == 0; s++) {
        rc = pskv__shard_reserve(&to[s], count[s]);
        if (rc == 0)
            rc = pskv__keymap_reserve(&to[s].spilled, count[nto + s]);
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
            /* reference bit and checkpoint marks; a row the admission window
             * held joins the main rows (the new shard's ring lacks it) */
            ne->flags = e.flags & ~PSKV__FLAG_WINDOW;
            memcpy(pskv__shard_row(dst, ne->slot), pskv__shard_row(sh, e.slot), t->stored_bytes);
        }
        for (uint32_t i = 0; i < sh->spilled.cap; i++) {
            pskv__keyval e = sh->spilled.e[i];
            if (e.value == PSKV__SLOT_EMPTY)
                continue;
            uint64_t h = pskv__key_hash(e.key, t->opts.seed);
            pskv__keymap_insert_reserved(&to[pskv__ring_route_hash(ring, h)].spilled, e.key, h,
                                           e.value);
        }
    }
    return 0;
}

int pskv_table_reshard(pskv_table *t, uint32_t shards)
{
    pskv__detail_clear();
    if (t == NULL)
        return pskv__fail(PSKV_EINVAL, "the table is NULL");
    if (shards < 1 || shards > PSKV_SHARDS_MAX)
        return pskv__fail(PSKV_EINVAL, "shards=%u: expected 1..%u", shards, PSKV_SHARDS_MAX);
    /* Wait for a running checkpoint first, without blocking row calls. */
    pthread_mutex_lock(&t->ckpt_lock);
    pthread_rwlock_wrlock(&t->layout_lock);
    if (shards == t->nshards) {
        pthread_rwlock_unlock(&t->layout_lock);
        pthread_mutex_unlock(&t->ckpt_lock);
        return 0;
    }
    pskv_ring *ring;
    pskv__shard *fresh;
    int rc = pskv__layout_create(t, shards, &ring, &fresh);
    if (rc == 0) {
        rc = rows_move(t, ring, fresh, shards);
        if (rc != 0) {
            pskv__layout_free(fresh, shards);
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
        pskv__layout_free(t->shards, t->nshards);
        pskv_ring_destroy(t->ring);
        t->shards = fresh;
        t->ring = ring;
        t->nshards = shards;
        t->opts.shards = shards;
        atomic_fetch_add(&t->layout_gen, 1);
        pskv__count_add(&t->n_reshards, 1);
    }
    pthread_rwlock_unlock(&t->layout_lock);
    pthread_mutex_unlock(&t->ckpt_lock);
    return rc;
}
