/* A shard: the unit of locking. An open-addressing index (linear probing,
 * 16-byte entries, backward-shift deletion, no tombstones) from key to a
 * slot, and fixed-size row slots in slabs of 64 KiB (less under a small
 * memory budget: table.c picks) with a free list.
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
/* Big shards take their slabs from 2 MiB regions advised as huge pages: one
 * page fault and one TLB entry per 2 MiB instead of per 4 KiB. Measured on
 * the dram bench (4M rows): see docs/DESIGN.md. Below REGIONS_FROM bytes of
 * slabs a shard uses plain 64 KiB slabs, so small tables stay small. */
#define HUGE_BYTES (2u << 20)
#define REGIONS_FROM (4u << 20)
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

int pskv__shard_init(pskv__shard *sh, uint32_t stored_bytes, uint32_t slab_bytes, uint64_t hash_seed)
{
    memset(sh, 0, sizeof *sh);
    if (pthread_mutex_init(&sh->lock, NULL) != 0)
        return PSKV_ENOMEM;
    sh->index = index_alloc(INDEX_MIN);
    if (sh->index == NULL) {
        pthread_mutex_destroy(&sh->lock);
        return PSKV_ENOMEM;
    }
    sh->index_mask = INDEX_MIN - 1;
    sh->stored_bytes = stored_bytes;
    sh->hash_seed = hash_seed;
    if (slab_bytes == 0 || slab_bytes > SLAB_BYTES)
        slab_bytes = SLAB_BYTES;
    uint32_t per_slab = stored_bytes >= slab_bytes ? 1 : slab_bytes / stored_bytes;
    while (per_slab & (per_slab - 1))
        per_slab &= per_slab - 1; /* round down to a power of two */
    sh->slab_shift = (uint32_t)__builtin_ctz(per_slab);
    sh->free_head = PSKV__SLOT_EMPTY;
    pskv__keymap_init(&sh->spilled, hash_seed);
    return 0;
}

void pskv__shard_free(pskv__shard *sh)
{
    for (uint32_t i = 0; i < sh->small_slabs; i++)
        free(sh->slabs[i]);
    for (uint32_t i = 0; i < sh->nregions; i++)
        free(sh->regions[i]);
    free(sh->regions);
    free(sh->slabs);
    free(sh->index);
    pskv__keymap_free(&sh->spilled);
    pskv__changes_free(&sh->log);
    free(sh->readback.keys);
    pthread_mutex_destroy(&sh->lock);
}

uint64_t pskv__shard_dram_bytes(const pskv__shard *sh)
{
    return (uint64_t)sh->small_slabs * ((size_t)sh->stored_bytes << sh->slab_shift) +
           (uint64_t)sh->nregions * HUGE_BYTES +
           ((uint64_t)sh->index_mask + 1) * sizeof(pskv__entry) +
           (uint64_t)sh->slabs_cap * sizeof(uint8_t *) + (uint64_t)sh->regions_cap * sizeof(void *) +
           pskv__keymap_bytes(&sh->spilled) + pskv__changes_bytes(&sh->log) +
           (uint64_t)sh->readback.cap * sizeof(uint64_t);
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
    return sh->free_count + ((uint64_t)sh->nslabs << sh->slab_shift) - sh->slots_high;
}

static int slabs_grow(pskv__shard *sh, uint64_t need)
{
    while (slots_available(sh) < need) {
        if ((((uint64_t)sh->nslabs + 1) << sh->slab_shift) >= PSKV__SLOT_EMPTY)
            return PSKV_ENOMEM; /* slot numbers are 32-bit */
        uint8_t **ns = pskv__array_grow(sh->slabs, &sh->slabs_cap, sh->nslabs + 1ull,
                                        sizeof *ns, 4);
        if (ns == NULL)
            return PSKV_ENOMEM;
        sh->slabs = ns;
        size_t slab_bytes = (size_t)sh->stored_bytes << sh->slab_shift;
        uint8_t *slab;
        if (sh->region_left > 0) {
            slab = sh->region_next;
            sh->region_next += slab_bytes;
            sh->region_left--;
        } else if (slab_bytes <= HUGE_BYTES && (uint64_t)sh->nslabs * slab_bytes >= REGIONS_FROM) {
            void **nc = pskv__array_grow(sh->regions, &sh->regions_cap, sh->nregions + 1ull,
                                         sizeof *nc, 8);
            if (nc == NULL)
                return PSKV_ENOMEM;
            sh->regions = nc;
            uint8_t *region = block_alloc(HUGE_BYTES);
            if (region == NULL)
                return PSKV_ENOMEM;
            sh->regions[sh->nregions++] = region;
            slab = region;
            sh->region_next = region + slab_bytes;
            sh->region_left = (uint32_t)(HUGE_BYTES / slab_bytes) - 1;
        } else {
            slab = malloc(slab_bytes);
            if (slab == NULL)
                return PSKV_ENOMEM;
            sh->small_slabs++; /* only before the first region: freed one by one */
        }
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
    if (rc != 0)
        return rc; /* what was allocated stays as spare room; nothing else changed */
    sh->reserved += k;
    return 0;
}

void pskv__shard_unreserve(pskv__shard *sh, uint32_t k) { sh->reserved -= k; }

pskv__entry *pskv__shard_find(pskv__shard *sh, uint64_t key, uint64_t hash)
{
    uint32_t mask = sh->index_mask;
    uint32_t i = pskv__index_pos(hash, mask);
    for (;;) {
        pskv__entry *e = &sh->index[i];
        if (e->slot == PSKV__SLOT_EMPTY)
            return NULL;
        if (e->key == key)
            return e;
        i = (i + 1) & mask;
    }
}

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

pskv__entry *pskv__shard_insert_entry(pskv__shard *sh, uint64_t key, uint64_t hash)
{
    uint32_t slot = slot_take(sh);
    sh->rows++;
    return index_place(sh->index, sh->index_mask, (pskv__entry){key, slot, PSKV__FLAG_REF}, hash);
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
