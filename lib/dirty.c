/* What a durable table's shard remembers between checkpoints: which keys
 * were written (the dirty list and the rows' checkpoint marks), the
 * pre-images of rows written while a checkpoint persists them
 * (copy-on-write), and which erased keys LMDB may still hold (tombstones).
 *
 * A key enters the dirty list when its row first gets the current
 * generation's mark; later writes find the mark and cost nothing more. A
 * row that still carries the other generation's mark belongs to a running
 * checkpoint that has not committed yet: before its first write, its bytes
 * go to the COW store, where the checkpoint finds them. Callers reserve
 * list, COW and tombstone room under the shard lock before they change
 * anything, so that marking never fails half-way through a batch.
 * SPDX-License-Identifier: BSD-2-Clause */
#include <stdlib.h>
#include <string.h>

#include "pskv_internal.h"

/* ---------------------------------------------------------------- key lists */

int pskv__keylist_reserve(pskv__keylist *l, uint32_t k)
{
    uint64_t need = (uint64_t)l->count + l->reserved + k;
    while ((uint64_t)l->nblocks * PSKV__KEYS_PER_BLOCK < need) {
        uint64_t **b = pskv__array_grow(l->blocks, &l->blocks_cap, l->nblocks + 1ull, sizeof *b, 4);
        if (b == NULL)
            return PSKV_ENOMEM;
        l->blocks = b;
        if ((b[l->nblocks] = malloc(PSKV__KEYS_PER_BLOCK * sizeof **b)) == NULL)
            return PSKV_ENOMEM;
        l->nblocks++;
    }
    l->reserved += k;
    return 0;
}

void pskv__keylist_append(pskv__keylist *l, uint64_t key)
{
    l->reserved--;
    l->blocks[l->count / PSKV__KEYS_PER_BLOCK][l->count % PSKV__KEYS_PER_BLOCK] = key;
    l->count++;
}

void pskv__keylist_free(pskv__keylist *l)
{
    for (uint32_t i = 0; i < l->nblocks; i++)
        free(l->blocks[i]);
    free(l->blocks);
    *l = (pskv__keylist){0};
}

/* ---------------------------------------------------------------- reservations */

int pskv__dirty_reserve(pskv__shard *sh, uint32_t k) { return pskv__keylist_reserve(&sh->dirty, k); }

void pskv__dirty_unreserve(pskv__shard *sh, uint32_t k) { sh->dirty.reserved -= k; }

int pskv__cow_reserve(pskv__shard *sh, uint32_t k)
{
    if (k == 0)
        return 0;
    uint64_t need = (uint64_t)sh->cow_count + sh->cow_reserved + k;
    while ((uint64_t)sh->cow_nblocks * PSKV__COW_BLOCK_ROWS < need) {
        uint8_t **b = pskv__array_grow(sh->cow_blocks, &sh->cow_blocks_cap, sh->cow_nblocks + 1ull,
                                       sizeof *b, 4);
        if (b == NULL)
            return PSKV_ENOMEM;
        sh->cow_blocks = b;
        if ((b[sh->cow_nblocks] = malloc((size_t)PSKV__COW_BLOCK_ROWS * sh->row_bytes)) == NULL)
            return PSKV_ENOMEM;
        sh->cow_nblocks++;
    }
    int rc = pskv__keymap_reserve(&sh->cow, k);
    if (rc != 0)
        return rc;
    sh->cow_reserved += k;
    return 0;
}

void pskv__cow_unreserve(pskv__shard *sh, uint32_t k)
{
    sh->cow_reserved -= k;
    pskv__keymap_unreserve(&sh->cow, k);
}

void pskv__cow_presize(pskv__shard *sh, uint32_t n)
{
    if (pskv__keymap_reserve(&sh->cow, n) == 0)
        pskv__keymap_unreserve(&sh->cow, n); /* the capacity stays */
}

/* ---------------------------------------------------------------- marking */

static void list_append(pskv__shard *sh, uint64_t key) { pskv__keylist_append(&sh->dirty, key); }

static uint64_t hash_of(const pskv__shard *sh, uint64_t key)
{
    return pskv__key_hash(key, sh->hash_seed);
}

/* The pre-image of a pending row, from DRAM. */
static void cow_save_row(pskv__shard *sh, uint64_t key, const float *row)
{
    uint32_t at = sh->cow_count++;
    sh->cow_reserved--;
    memcpy(pskv__cow_row(sh, at), row, sh->row_bytes);
    pskv__keymap_insert_reserved(&sh->cow, key, hash_of(sh, key), at);
}

void pskv__row_written(pskv__shard *sh, pskv__entry *e, uint32_t parity)
{
    const uint32_t cur = pskv__flag_dirty(parity), pend = pskv__flag_dirty(parity ^ 1u);
    if (PSKV__LIKELY(e->flags & cur))
        return;
    if (e->flags & pend) {
        cow_save_row(sh, e->key, pskv__shard_row(sh, e->slot));
        e->flags &= ~pend;
    }
    e->flags |= cur;
    list_append(sh, e->key);
}

void pskv__row_created(pskv__shard *sh, pskv__entry *e, uint32_t parity)
{
    e->flags |= pskv__flag_dirty(parity);
    /* Erased and re-created in this generation: the key is listed already. */
    if (sh->tombs.count > 0) {
        pskv__keyval *t = pskv__keymap_find(&sh->tombs, e->key, hash_of(sh, e->key));
        if (t != NULL && t->value == parity)
            return;
    }
    list_append(sh, e->key);
}

static void tomb_set(pskv__shard *sh, uint64_t key, uint32_t parity)
{
    uint64_t h = hash_of(sh, key);
    pskv__keyval *t = pskv__keymap_find(&sh->tombs, key, h);
    if (t != NULL) {
        t->value = parity;
        pskv__keymap_unreserve(&sh->tombs, 1);
    } else {
        pskv__keymap_insert_reserved(&sh->tombs, key, h, parity);
    }
}

void pskv__row_erased(pskv__shard *sh, pskv__entry *e, uint32_t parity, bool tomb)
{
    const uint32_t cur = pskv__flag_dirty(parity), pend = pskv__flag_dirty(parity ^ 1u);
    if (e->flags & pend)
        cow_save_row(sh, e->key, pskv__shard_row(sh, e->slot));
    if (!(e->flags & cur))
        list_append(sh, e->key);
    if (tomb)
        tomb_set(sh, e->key, parity);
}

bool pskv__spilled_erased(pskv__shard *sh, const pskv__keyval *sp, uint32_t parity, bool tomb)
{
    uint32_t marks = sp->value & PSKV__SPILL_DIRTY_ALL;
    uint64_t key = sp->key;
    bool keep_slot = false;
    if (marks & pskv__spill_dirty(parity ^ 1u)) {
        /* The pre-image is the spilled record itself: the slot goes to the
         * COW store and is freed when the checkpoint ends. */
        sh->cow_reserved--;
        pskv__keymap_insert_reserved(&sh->cow, key, hash_of(sh, key),
                                       PSKV__COW_SPILLED | (sp->value & PSKV__SPILL_SLOT_MAX));
        keep_slot = true;
    }
    if (!(marks & pskv__spill_dirty(parity)))
        list_append(sh, key);
    if (tomb)
        tomb_set(sh, key, parity);
    return keep_slot;
}

void pskv__key_erased_cold(pskv__shard *sh, uint64_t key, uint32_t parity)
{
    tomb_set(sh, key, parity);
    list_append(sh, key);
}

bool pskv__tombstoned(pskv__shard *sh, uint64_t key, uint64_t hash)
{
    return sh->tombs.count > 0 && pskv__keymap_find(&sh->tombs, key, hash) != NULL;
}

uint64_t pskv__dirty_dram_bytes(const pskv__shard *sh)
{
    return (uint64_t)sh->dirty.nblocks * PSKV__KEYS_PER_BLOCK * sizeof(uint64_t) +
           pskv__keymap_bytes(&sh->cow) +
           (uint64_t)sh->cow_nblocks * PSKV__COW_BLOCK_ROWS * sh->row_bytes +
           pskv__keymap_bytes(&sh->tombs);
}

static void cow_blocks_free(pskv__shard *sh)
{
    for (uint32_t i = 0; i < sh->cow_nblocks; i++)
        free(sh->cow_blocks[i]);
    free(sh->cow_blocks);
    sh->cow_blocks = NULL;
    sh->cow_nblocks = sh->cow_blocks_cap = 0;
}

void pskv__dirty_free(pskv__shard *sh)
{
    pskv__keylist_free(&sh->dirty);
    pskv__keymap_free(&sh->cow);
    cow_blocks_free(sh);
    sh->cow_count = sh->cow_reserved = 0;
    pskv__keymap_free(&sh->tombs);
}

uint32_t pskv__cow_clear(pskv__shard *sh, uint32_t *slots, uint32_t max)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < sh->cow.cap && n < max; i++) {
        pskv__keyval *e = &sh->cow.e[i];
        if (e->value != PSKV__SLOT_EMPTY && (e->value & PSKV__COW_SPILLED)) {
            slots[n++] = e->value & ~PSKV__COW_SPILLED;
            e->value = 0; /* collected: not handed out again */
        }
    }
    if (n == max)
        return n; /* more may follow: the caller frees these and asks again */
    /* The blocks stay for the next checkpoint: writers that meet pending
     * rows then copy into memory that is already mapped instead of taking
     * page faults under the shard lock. Only a surplus beyond twice this
     * checkpoint's use goes back. */
    uint32_t used = (sh->cow_count + PSKV__COW_BLOCK_ROWS - 1) / PSKV__COW_BLOCK_ROWS;
    uint32_t keep = 2 * used + 1 + (sh->cow_reserved + PSKV__COW_BLOCK_ROWS - 1) / PSKV__COW_BLOCK_ROWS;
    while (sh->cow_nblocks > keep)
        free(sh->cow_blocks[--sh->cow_nblocks]);
    if (sh->cow_reserved == 0) {
        pskv__keymap_free(&sh->cow);
    } else {
        /* A writer holds COW room it will give back: keep the map. */
        for (uint32_t i = 0; i < sh->cow.cap; i++)
            sh->cow.e[i].value = PSKV__SLOT_EMPTY;
        sh->cow.count = 0;
    }
    sh->cow_count = 0;
    return n;
}

/* ---------------------------------------------------------------- reshard */

int pskv__dirty_move(const pskv_table *t, const pskv_ring *ring, pskv__shard *to, uint32_t nto)
{
    uint32_t *count = calloc(2 * (size_t)nto, sizeof *count); /* [dirty | tombs] */
    if (count == NULL)
        return PSKV_ENOMEM;
    for (uint32_t s = 0; s < t->nshards; s++) {
        pskv__shard *sh = &t->shards[s];
        for (uint32_t i = 0; i < sh->dirty.count; i++)
            count[pskv__table_route(t, ring, pskv__keylist_at(&sh->dirty, i))]++;
        for (uint32_t i = 0; i < sh->tombs.cap; i++)
            if (sh->tombs.e[i].value != PSKV__SLOT_EMPTY)
                count[nto + pskv__table_route(t, ring, sh->tombs.e[i].key)]++;
    }
    int rc = 0;
    for (uint32_t s = 0; s < nto && rc == 0; s++) {
        rc = pskv__dirty_reserve(&to[s], count[s]);
        if (rc == 0)
            rc = pskv__keymap_reserve(&to[s].tombs, count[nto + s]);
    }
    free(count);
    if (rc != 0)
        return rc;
    for (uint32_t s = 0; s < t->nshards; s++) {
        pskv__shard *sh = &t->shards[s];
        for (uint32_t i = 0; i < sh->dirty.count; i++) {
            uint64_t key = pskv__keylist_at(&sh->dirty, i);
            pskv__keylist_append(&to[pskv__table_route(t, ring, key)].dirty, key);
        }
        for (uint32_t i = 0; i < sh->tombs.cap; i++) {
            pskv__keyval e = sh->tombs.e[i];
            if (e.value == PSKV__SLOT_EMPTY)
                continue;
            uint64_t h = pskv__key_hash(e.key, t->opts.seed);
            pskv__keymap_insert_reserved(&to[pskv__ring_route_hash(ring, h)].tombs, e.key, h,
                                           e.value);
        }
    }
    return 0;
}
