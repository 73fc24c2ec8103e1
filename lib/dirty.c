/* The checkpoint state machine of a durable table's shards, in one place.
 * What a shard remembers between checkpoints: which keys
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

#include "array.h"
#include "dirty.h"
#include "pskv_internal.h"

/* A COW entry's value: an index into cow_blocks, or a spill slot (the
 * pre-image is a spilled record that was erased) with this bit. */
#define COW_SPILLED 0x80000000u

/* ---------------------------------------------------------------- lifetime */

void pskv__dirty_init(pskv__shard *sh)
{
    sh->ck = (pskv__ckpt_state){0};
    pskv__keymap_init(&sh->ck.cow, sh->hash_seed);
    pskv__keymap_init(&sh->ck.tombs, sh->hash_seed);
}

/* ---------------------------------------------------------------- reservations */

static int cow_reserve(pskv__shard *sh, uint32_t k)
{
    if (k == 0)
        return 0;
    uint64_t need = (uint64_t)sh->ck.cow_count + sh->ck.cow_reserved + k;
    while ((uint64_t)sh->ck.cow_nblocks * PSKV__COW_BLOCK_ROWS < need) {
        uint8_t **b = pskv__array_grow(sh->ck.cow_blocks, &sh->ck.cow_blocks_cap,
                                       sh->ck.cow_nblocks + 1ull, sizeof *b, 4);
        if (b == NULL)
            return PSKV_ENOMEM;
        sh->ck.cow_blocks = b;
        if ((b[sh->ck.cow_nblocks] = malloc((size_t)PSKV__COW_BLOCK_ROWS * sh->stored_bytes)) == NULL)
            return PSKV_ENOMEM;
        sh->ck.cow_nblocks++;
    }
    int rc = pskv__keymap_reserve(&sh->ck.cow, k);
    if (rc != 0)
        return rc;
    sh->ck.cow_reserved += k;
    return 0;
}

static void cow_unreserve(pskv__shard *sh, uint32_t k)
{
    sh->ck.cow_reserved -= k;
    pskv__keymap_unreserve(&sh->ck.cow, k);
}

int pskv__dirty_reserve(pskv__shard *sh, pskv__dirty_room want)
{
    int rc = pskv__keylist_reserve(&sh->ck.dirty, want.list);
    if (rc != 0)
        return rc;
    if ((rc = cow_reserve(sh, want.cow)) != 0) {
        sh->ck.dirty.reserved -= want.list;
        return rc;
    }
    if (want.tombs > 0 && (rc = pskv__keymap_reserve(&sh->ck.tombs, want.tombs)) != 0) {
        sh->ck.dirty.reserved -= want.list;
        cow_unreserve(sh, want.cow);
        return rc;
    }
    return 0;
}

void pskv__dirty_unreserve(pskv__shard *sh, pskv__dirty_room held)
{
    sh->ck.dirty.reserved -= held.list;
    cow_unreserve(sh, held.cow);
    pskv__keymap_unreserve(&sh->ck.tombs, held.tombs);
}

pskv__dirty_room pskv__dirty_reserved(const pskv__shard *sh)
{
    return (pskv__dirty_room){sh->ck.dirty.reserved, sh->ck.cow_reserved, sh->ck.tombs.reserved};
}

void pskv__dirty_release_unused(pskv__shard *sh, pskv__dirty_room held, pskv__dirty_room at_start)
{
    /* Every use of room lowers the shard's reservation by one. */
    pskv__dirty_room now = pskv__dirty_reserved(sh);
    PSKV__ASSERT(at_start.list - now.list <= held.list && at_start.cow - now.cow <= held.cow &&
                 at_start.tombs - now.tombs <= held.tombs);
    pskv__dirty_unreserve(sh, (pskv__dirty_room){held.list - (at_start.list - now.list),
                                                 held.cow - (at_start.cow - now.cow),
                                                 held.tombs - (at_start.tombs - now.tombs)});
}

void pskv__dirty_presize(pskv__shard *sh, uint32_t n)
{
    if (pskv__keymap_reserve(&sh->ck.cow, n) == 0)
        pskv__keymap_unreserve(&sh->ck.cow, n); /* the capacity stays */
}

/* ---------------------------------------------------------------- marking */

/* The pre-image at COW index i. */
static uint8_t *cow_row(const pskv__shard *sh, uint32_t i)
{
    return sh->ck.cow_blocks[i / PSKV__COW_BLOCK_ROWS] +
           (size_t)(i % PSKV__COW_BLOCK_ROWS) * sh->stored_bytes;
}

static void list_append(pskv__shard *sh, uint64_t key) { pskv__keylist_append(&sh->ck.dirty, key); }

static uint64_t hash_of(const pskv__shard *sh, uint64_t key)
{
    return pskv__key_hash(key, sh->hash_seed);
}

/* The pre-image of a pending row, from DRAM. */
static void cow_save_row(pskv__shard *sh, uint64_t key, const float *row)
{
    uint32_t at = sh->ck.cow_count++;
    PSKV__ASSERT(sh->ck.cow_reserved > 0);
    sh->ck.cow_reserved--;
    memcpy(cow_row(sh, at), row, sh->stored_bytes);
    pskv__keymap_insert_reserved(&sh->ck.cow, key, hash_of(sh, key), at);
}

void pskv__dirty_written(pskv__shard *sh, pskv__entry *e, uint32_t parity)
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

void pskv__dirty_created(pskv__shard *sh, pskv__entry *e, uint32_t parity)
{
    e->flags |= pskv__flag_dirty(parity);
    /* Erased and re-created in this generation: the key is listed already. */
    if (sh->ck.tombs.count > 0) {
        pskv__keyval *t = pskv__keymap_find(&sh->ck.tombs, e->key, hash_of(sh, e->key));
        if (t != NULL && t->value == parity)
            return;
    }
    list_append(sh, e->key);
}

static void tomb_set(pskv__shard *sh, uint64_t key, uint32_t parity)
{
    uint64_t h = hash_of(sh, key);
    pskv__keyval *t = pskv__keymap_find(&sh->ck.tombs, key, h);
    if (t != NULL) {
        t->value = parity;
        pskv__keymap_unreserve(&sh->ck.tombs, 1);
    } else {
        pskv__keymap_insert_reserved(&sh->ck.tombs, key, h, parity);
    }
}

void pskv__dirty_erased(pskv__shard *sh, pskv__entry *e, uint32_t parity, bool tomb)
{
    const uint32_t cur = pskv__flag_dirty(parity), pend = pskv__flag_dirty(parity ^ 1u);
    if (e->flags & pend)
        cow_save_row(sh, e->key, pskv__shard_row(sh, e->slot));
    if (!(e->flags & cur))
        list_append(sh, e->key);
    if (tomb)
        tomb_set(sh, e->key, parity);
}

bool pskv__dirty_erased_spilled(pskv__shard *sh, const pskv__keyval *sp, uint32_t parity, bool tomb)
{
    uint32_t marks = sp->value & PSKV__SPILL_DIRTY_ALL;
    uint64_t key = sp->key;
    bool keep_slot = false;
    if (marks & pskv__spill_dirty(parity ^ 1u)) {
        /* The pre-image is the spilled record itself: the slot goes to the
         * COW store and is freed when the checkpoint ends. */
        PSKV__ASSERT(sh->ck.cow_reserved > 0);
        sh->ck.cow_reserved--;
        pskv__keymap_insert_reserved(&sh->ck.cow, key, hash_of(sh, key),
                                       COW_SPILLED | (sp->value & PSKV__SPILL_SLOT_MAX));
        keep_slot = true;
    }
    if (!(marks & pskv__spill_dirty(parity)))
        list_append(sh, key);
    if (tomb)
        tomb_set(sh, key, parity);
    return keep_slot;
}

void pskv__dirty_erased_cold(pskv__shard *sh, uint64_t key, uint32_t parity)
{
    tomb_set(sh, key, parity);
    list_append(sh, key);
}

bool pskv__dirty_tombstoned(pskv__shard *sh, uint64_t key, uint64_t hash)
{
    return sh->ck.tombs.count > 0 && pskv__keymap_find(&sh->ck.tombs, key, hash) != NULL;
}

uint64_t pskv__dirty_dram_bytes(const pskv__shard *sh)
{
    return (uint64_t)sh->ck.dirty.nblocks * PSKV__KEYS_PER_BLOCK * sizeof(uint64_t) +
           pskv__keymap_bytes(&sh->ck.cow) +
           (uint64_t)sh->ck.cow_nblocks * PSKV__COW_BLOCK_ROWS * sh->stored_bytes +
           pskv__keymap_bytes(&sh->ck.tombs);
}

static void cow_blocks_free(pskv__shard *sh)
{
    for (uint32_t i = 0; i < sh->ck.cow_nblocks; i++)
        free(sh->ck.cow_blocks[i]);
    free(sh->ck.cow_blocks);
    sh->ck.cow_blocks = NULL;
    sh->ck.cow_nblocks = sh->ck.cow_blocks_cap = 0;
}

void pskv__dirty_free(pskv__shard *sh)
{
    pskv__keylist_free(&sh->ck.dirty);
    pskv__keymap_free(&sh->ck.cow);
    cow_blocks_free(sh);
    sh->ck.cow_count = sh->ck.cow_reserved = 0;
    pskv__keymap_free(&sh->ck.tombs);
}

/* ---------------------------------------------------------------- checkpoints */

uint32_t pskv__dirty_listed(const pskv__shard *sh) { return sh->ck.dirty.count; }

void pskv__dirty_take(pskv__shard *sh, pskv__keylist *out)
{
    *out = sh->ck.dirty; /* no call in flight: nothing reserved */
    sh->ck.dirty = (pskv__keylist){0};
}

/* The pre-image of a key written after the instant, or none: then the key
 * did not exist at the instant. */
static pskv__capture capture_pre_image(pskv__shard *sh, uint64_t key, uint64_t hash)
{
    pskv__keyval *pre = sh->ck.cow.count ? pskv__keymap_find(&sh->ck.cow, key, hash) : NULL;
    if (pre == NULL)
        return (pskv__capture){PSKV__CAPTURE_ERASED, NULL, 0, false};
    if (pre->value & COW_SPILLED)
        return (pskv__capture){PSKV__CAPTURE_SPILL, NULL, pre->value & ~COW_SPILLED, false};
    return (pskv__capture){PSKV__CAPTURE_BYTES, cow_row(sh, pre->value), 0, false};
}

pskv__capture pskv__dirty_capture(pskv_table *t, pskv__shard *sh, uint64_t key, uint64_t hash,
                                  uint32_t parity)
{
    const uint32_t pend = pskv__flag_dirty(parity ^ 1u), cur = pskv__flag_dirty(parity);
    pskv__where w = pskv__locate(t, sh, key, hash, false);
    if (w.e != NULL) {
        /* Pending: unchanged since the instant (rows being written out are
         * stable too). Clean: equal to what LMDB holds. */
        if ((w.e->flags & pend) || !(w.e->flags & cur))
            return (pskv__capture){PSKV__CAPTURE_BYTES, pskv__shard_row(sh, w.e->slot), 0, false};
        return capture_pre_image(sh, key, hash);
    }
    if (w.sp != NULL && !(w.sp->value & pskv__spill_dirty(parity))) {
        /* Pending or clean: the record on disk has the bytes. */
        if (w.place == PSKV__LOADING)
            return (pskv__capture){PSKV__CAPTURE_WAIT, NULL, 0, false};
        return (pskv__capture){PSKV__CAPTURE_SPILL, NULL, pskv__claim_spilled(w.sp), true};
    }
    return capture_pre_image(sh, key, hash);
}

void pskv__dirty_settle(pskv_table *t, pskv__shard *sh, uint64_t key, uint64_t hash,
                        uint32_t parity, bool ok)
{
    const uint32_t pend = pskv__flag_dirty(parity ^ 1u), cur = pskv__flag_dirty(parity);
    pskv__where w = pskv__locate(t, sh, key, hash, false);
    if (w.e != NULL && (w.e->flags & pend))
        w.e->flags = (w.e->flags & ~pend) | (ok ? 0 : cur);
    if (w.sp != NULL && (w.sp->value & pskv__spill_dirty(parity ^ 1u)))
        w.sp->value = (w.sp->value & ~pskv__spill_dirty(parity ^ 1u)) |
                      (ok ? 0 : pskv__spill_dirty(parity));
    pskv__keyval *tomb = sh->ck.tombs.count ? pskv__keymap_find(&sh->ck.tombs, key, hash) : NULL;
    if (tomb != NULL && tomb->value != parity) {
        if (ok)
            pskv__keymap_remove(&sh->ck.tombs, tomb); /* LMDB has deleted it */
        else
            tomb->value = parity;
    }
}

uint32_t pskv__dirty_drop_pre_images(pskv__shard *sh, uint32_t *slots, uint32_t max)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < sh->ck.cow.cap && n < max; i++) {
        pskv__keyval *e = &sh->ck.cow.e[i];
        if (e->value != PSKV__SLOT_EMPTY && (e->value & COW_SPILLED)) {
            slots[n++] = e->value & ~COW_SPILLED;
            e->value = 0; /* collected: not handed out again */
        }
    }
    if (n == max)
        return n; /* more may follow: the caller frees these and asks again */
    /* The blocks stay for the next checkpoint: writers that meet pending
     * rows then copy into memory that is already mapped instead of taking
     * page faults under the shard lock. Only a surplus beyond twice this
     * checkpoint's use goes back. */
    uint32_t used = (sh->ck.cow_count + PSKV__COW_BLOCK_ROWS - 1) / PSKV__COW_BLOCK_ROWS;
    uint32_t keep = 2 * used + 1 + (sh->ck.cow_reserved + PSKV__COW_BLOCK_ROWS - 1) / PSKV__COW_BLOCK_ROWS;
    while (sh->ck.cow_nblocks > keep)
        free(sh->ck.cow_blocks[--sh->ck.cow_nblocks]);
    if (sh->ck.cow_reserved == 0) {
        pskv__keymap_free(&sh->ck.cow);
    } else {
        /* A writer holds COW room it will give back: keep the map. */
        for (uint32_t i = 0; i < sh->ck.cow.cap; i++)
            sh->ck.cow.e[i].value = PSKV__SLOT_EMPTY;
        sh->ck.cow.count = 0;
    }
    sh->ck.cow_count = 0;
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
        for (uint32_t i = 0; i < sh->ck.dirty.count; i++)
            count[pskv__table_route(t, ring, pskv__keylist_at(&sh->ck.dirty, i))]++;
        for (uint32_t i = 0; i < sh->ck.tombs.cap; i++)
            if (sh->ck.tombs.e[i].value != PSKV__SLOT_EMPTY)
                count[nto + pskv__table_route(t, ring, sh->ck.tombs.e[i].key)]++;
    }
    int rc = 0;
    for (uint32_t s = 0; s < nto && rc == 0; s++) {
        rc = pskv__dirty_reserve(&to[s], (pskv__dirty_room){count[s], 0, count[nto + s]});
    }
    free(count);
    if (rc != 0)
        return rc;
    for (uint32_t s = 0; s < t->nshards; s++) {
        pskv__shard *sh = &t->shards[s];
        for (uint32_t i = 0; i < sh->ck.dirty.count; i++) {
            uint64_t key = pskv__keylist_at(&sh->ck.dirty, i);
            pskv__keylist_append(&to[pskv__table_route(t, ring, key)].ck.dirty, key);
        }
        for (uint32_t i = 0; i < sh->ck.tombs.cap; i++) {
            pskv__keyval e = sh->ck.tombs.e[i];
            if (e.value == PSKV__SLOT_EMPTY)
                continue;
            uint64_t h = pskv__key_hash(e.key, t->opts.seed);
            pskv__keymap_insert_reserved(&to[pskv__ring_route_hash(ring, h)].ck.tombs, e.key, h,
                                           e.value);
        }
    }
    return 0;
}
