/* A shard: the unit of locking. An open-addressing index (linear probing,
 * 16-byte entries, backward-shift deletion, no tombstones) from key to a
 * slot, and fixed-size row slots in slabs that double in size (the first
 * of 64 KiB, less under a small memory budget: table.c picks) with a free
 * list.
 *
 * Creating rows is split in two steps so that a batch call can fail with
 * PSKV_ENOMEM before it changes anything: pskv__shard_reserve() allocates
 * room for k rows up front, pskv__shard_insert_reserved() then never fails.
 * SPDX-License-Identifier: BSD-2-Clause */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "array.h"
#include "changes.h"
#include "pskv_internal.h"

#define SLAB_BYTES (64u * 1024u)
/* Blocks of 2 MiB and more (big slabs, big indexes) are advised as huge
 * pages: one page fault and one TLB entry per 2 MiB instead of per 4 KiB.
 * On the 2-core VM a pipelined lookup ran 1.6x faster over huge pages. */
#define HUGE_BYTES (2u << 20)
#define INDEX_MIN 16u
/* Grow the index beyond 3/4 full: probes stay short (~2.5 per miss). */
#define INDEX_FULL(cap) ((uint64_t)(cap) / 4u * 3u)

/* malloc, or huge-page-advised 2 MiB-aligned memory for big blocks. */
static void *block_alloc(size_t bytes)
{
    if (bytes < HUGE_BYTES)
        return malloc(bytes);
    size_t rounded = (bytes + HUGE_BYTES - 1) / HUGE_BYTES * HUGE_BYTES;
    void *p = aligned_alloc(HUGE_BYTES, rounded);
    if (p != NULL)
        madvise(p, rounded, MADV_HUGEPAGE); /* advice only: failure is harmless */
    return p;
}

static pskv__entry *index_alloc(uint32_t cap)
{
    pskv__entry *e = block_alloc((size_t)cap * sizeof *e);
    if (e == NULL)
        return NULL;
    for (uint32_t i = 0; i < cap; i++)
        e[i].slot = PSKV__SLOT_EMPTY;
    return e;
}

int pskv__shard_init(pskv__shard *sh, uint32_t stored_bytes, uint32_t slab_bytes, uint64_t hash_seed,
                     bool admit)
{
    memset(sh, 0, sizeof *sh);
    if (pthread_mutex_init(&sh->lock, NULL) != 0)
        return PSKV_ENOMEM;
    pskv__gate_init(&sh->gate);
    sh->index = index_alloc(INDEX_MIN);
    if (sh->index == NULL) {
        pthread_mutex_destroy(&sh->lock);
        return PSKV_ENOMEM;
    }
    sh->index_mask = INDEX_MIN - 1;
    if (admit && pskv__admit_start(&sh->admit, INDEX_MIN) != 0) {
        free(sh->index);
        pthread_mutex_destroy(&sh->lock);
        return PSKV_ENOMEM;
    }
    sh->stored_bytes = stored_bytes;
    sh->hash_seed = hash_seed;
    if (slab_bytes == 0 || slab_bytes > SLAB_BYTES)
        slab_bytes = SLAB_BYTES;
    uint32_t per_slab = stored_bytes >= slab_bytes ? 1 : slab_bytes / stored_bytes;
    while (per_slab & (per_slab - 1))
        per_slab &= per_slab - 1; /* round down to a power of two */
    sh->base_shift = (uint32_t)__builtin_ctz(per_slab);
    sh->free_head = PSKV__SLOT_EMPTY;
    pskv__keymap_init(&sh->spilled, hash_seed);
    return 0;
}

void pskv__shard_free(pskv__shard *sh)
{
    for (uint32_t k = 0; k < sh->nslabs; k++)
        free(sh->slabs[k]);
    free(sh->index);
    pskv__admit_free(&sh->admit);
    pskv__keylist_free(&sh->pending);
    pskv__keymap_free(&sh->spilled);
    pskv__changes_free(&sh->log);
    free(sh->readback.keys);
    pthread_mutex_destroy(&sh->lock);
}

static size_t slab_bytes(const pskv__shard *sh, uint32_t k)
{
    return ((size_t)1 << (sh->base_shift + k)) * sh->stored_bytes;
}

/* Slabs below 2 MiB count whole; bigger ones count the huge pages their
 * slots ever handed out touched (the rest was never faulted in). */
static uint64_t slabs_dram_bytes(const pskv__shard *sh)
{
    uint64_t total = 0;
    for (uint32_t k = 0; k < sh->nslabs; k++) {
        uint64_t bytes = slab_bytes(sh, k);
        if (bytes >= HUGE_BYTES) {
            uint64_t first = (((uint64_t)1 << k) - 1) << sh->base_shift;
            uint64_t used = sh->slots_high > first ? sh->slots_high - first : 0;
            uint64_t touched = (used * sh->stored_bytes + HUGE_BYTES - 1) / HUGE_BYTES * HUGE_BYTES;
            bytes = touched < bytes ? touched : bytes;
        }
        total += bytes;
    }
    return total;
}

uint64_t pskv__shard_dram_bytes(const pskv__shard *sh)
{
    return slabs_dram_bytes(sh) + ((uint64_t)sh->index_mask + 1) * sizeof(pskv__entry) +
           pskv__keymap_bytes(&sh->spilled) + pskv__changes_bytes(&sh->log) +
           (uint64_t)sh->readback.cap * sizeof(uint64_t) + pskv__admit_bytes(&sh->admit);
}

static pskv__entry *index_place(pskv__entry *index, uint32_t mask, pskv__entry e, uint64_t hash)
{
    uint32_t i = pskv__index_pos(hash, mask);
    while (index[i].slot != PSKV__SLOT_EMPTY)
        i = (i + 1) & mask;
    index[i] = e;
    return &index[i];
}

static int index_grow(pskv__shard *sh, uint64_t need)
{
    uint64_t cap = (uint64_t)sh->index_mask + 1;
    while (need > INDEX_FULL(cap))
        cap *= 2;
    if (cap == (uint64_t)sh->index_mask + 1)
        return 0;
    if (cap > (1ull << 31))
        return PSKV_ENOMEM;
    /* The sketch first: if the index then fails, a bigger sketch is harmless. */
    if (pskv__admit_grow(&sh->admit, (uint32_t)cap) != 0)
        return PSKV_ENOMEM;
    pskv__entry *ni = index_alloc((uint32_t)cap);
    if (ni == NULL)
        return PSKV_ENOMEM;
    uint32_t nmask = (uint32_t)cap - 1;
    for (uint32_t i = 0; i <= sh->index_mask; i++)
        if (sh->index[i].slot != PSKV__SLOT_EMPTY)
            index_place(ni, nmask, sh->index[i], pskv__key_hash(sh->index[i].key, sh->hash_seed));
    free(sh->index);
    sh->index = ni;
    sh->index_mask = nmask;
    return 0;
}

static uint64_t slots_available(const pskv__shard *sh)
{
    return sh->free_count + pskv__shard_capacity(sh) - sh->slots_high;
}

static int slabs_grow(pskv__shard *sh, uint64_t need)
{
    while (slots_available(sh) < need) {
        uint32_t k = sh->nslabs;
        /* slot numbers are 32-bit, PSKV__SLOT_EMPTY excluded */
        if (k + 1 >= PSKV__SLABS_MAX || (((2ull << k) - 1) << sh->base_shift) > PSKV__SLOT_EMPTY)
            return PSKV_ENOMEM;
        uint8_t *slab = block_alloc(slab_bytes(sh, k));
        if (slab == NULL)
            return PSKV_ENOMEM;
        sh->slabs[sh->nslabs++] = slab;
    }
    return 0;
}

int pskv__shard_reserve(pskv__shard *sh, uint32_t k)
{
    if (k == 0)
        return 0;
    uint64_t need = (uint64_t)sh->reserved + k;
    int rc = index_grow(sh, (uint64_t)sh->rows + need);
    if (rc == 0)
        rc = slabs_grow(sh, need);
    if (rc == 0) { /* every reserved row may enter the window, which stays bounded */
        uint64_t most = pskv__admit_window_most((uint64_t)sh->rows + need);
        uint64_t keys = (uint64_t)sh->admit.win_len + need;
        rc = pskv__admit_window_reserve(&sh->admit, keys < most ? keys : most);
    }
    if (rc != 0)
        return rc; /* what was allocated stays as spare room; nothing else changed */
    sh->reserved += k;
    return 0;
}

void pskv__shard_unreserve(pskv__shard *sh, uint32_t k) { sh->reserved -= k; }

static uint32_t slot_take(pskv__shard *sh)
{
    uint32_t slot;
    if (sh->free_count > 0) {
        slot = sh->free_head;
        memcpy(&sh->free_head, pskv__shard_row(sh, slot), sizeof sh->free_head);
        sh->free_count--;
    } else {
        slot = sh->slots_high++;
    }
    PSKV__ASSERT(sh->reserved > 0);
    sh->reserved--;
    return slot;
}

static void slot_release(pskv__shard *sh, uint32_t slot)
{
    memcpy(pskv__shard_row(sh, slot), &sh->free_head, sizeof sh->free_head);
    sh->free_head = slot;
    sh->free_count++;
}

/* Without evictions (the budget not reached) nothing drains the window:
 * past twice its size plus a batch's share its oldest rows join the main
 * rows unjudged, as they would in W-TinyLFU while the cache has room. */
static void window_settle(pskv__shard *sh)
{
    pskv__admit *a = &sh->admit;
    while (a->win_len > pskv__admit_window_most(sh->rows) - 1) {
        uint64_t key = pskv__admit_window_oldest(a);
        pskv__admit_window_drop(a);
        pskv__entry *e = pskv__shard_find(sh, key, pskv__key_hash(key, sh->hash_seed));
        if (e != NULL)
            e->flags &= ~PSKV__FLAG_WINDOW;
    }
}

static pskv__entry *insert(pskv__shard *sh, uint64_t key, uint64_t hash, uint32_t flags)
{
    uint32_t slot = slot_take(sh);
    sh->rows++;
    return index_place(sh->index, sh->index_mask, (pskv__entry){key, slot, flags}, hash);
}

pskv__entry *pskv__shard_insert_entry(pskv__shard *sh, uint64_t key, uint64_t hash)
{
    return insert(sh, key, hash, PSKV__FLAG_REF);
}

pskv__entry *pskv__shard_insert_new(pskv__shard *sh, uint64_t key, uint64_t hash)
{
    if (sh->admit.sketch == NULL)
        return insert(sh, key, hash, PSKV__FLAG_REF);
    pskv__admit_window_push(&sh->admit, key);
    /* No reference bit yet: a row admitted to the main rows without a use
     * since it entered is CLOCK's next victim (a one-time key leaves soon). */
    pskv__entry *e = insert(sh, key, hash, PSKV__FLAG_WINDOW);
    window_settle(sh); /* changes flags only: e stays valid */
    return e;
}

uint32_t pskv__shard_insert_reserved(pskv__shard *sh, uint64_t key, uint64_t hash)
{
    return pskv__shard_insert_entry(sh, key, hash)->slot;
}

void pskv__shard_remove(pskv__shard *sh, pskv__entry *e)
{
    slot_release(sh, e->slot);
    sh->rows--;

    /* Backward-shift deletion: pull later entries of the probe run into the
     * hole when their home position allows it. */
    uint32_t mask = sh->index_mask;
    uint32_t hole = (uint32_t)(e - sh->index);
    uint32_t j = hole;
    for (;;) {
        j = (j + 1) & mask;
        pskv__entry *n = &sh->index[j];
        if (n->slot == PSKV__SLOT_EMPTY)
            break;
        uint32_t home = pskv__index_pos(pskv__key_hash(n->key, sh->hash_seed), mask);
        if (((j - home) & mask) >= ((j - hole) & mask)) {
            sh->index[hole] = *n;
            hole = j;
        }
    }
    sh->index[hole].slot = PSKV__SLOT_EMPTY;
}
