/* Batch planning: hash every key once, optionally keep one position per
 * distinct key, and group positions by shard with a counting sort so that a
 * batch call takes each shard lock once.
 * SPDX-License-Identifier: BSD-2-Clause */
#include <stdlib.h>
#include <string.h>

#include "hash.h"
#include "plan.h"
#include "pskv.h"
#include "ring.h"

static size_t align8(size_t x) { return (x + 7) & ~(size_t)7; }

/* Mark positions to keep in p->order (as a flat list, m entries). */
static void dedup_positions(pskv__plan *p, const uint64_t *keys, size_t n, enum pskv__dedup mode,
                            uint32_t *tab, uint32_t tmask)
{
    /* tab holds position+1 of the key's representative; 0 = empty. */
    for (size_t i = 0; i < n; i++) {
        uint32_t h = (uint32_t)p->hash[i] & tmask;
        for (;;) {
            uint32_t v = tab[h];
            if (v == 0) {
                tab[h] = (uint32_t)i + 1;
                p->kept_of[i] = (uint32_t)i;
                break;
            }
            if (keys[v - 1] == keys[i]) {
                p->has_dups = true;
                if (mode == PSKV__DEDUP_LAST)
                    tab[h] = (uint32_t)i + 1;
                p->kept_of[i] = v - 1;
                break;
            }
            h = (h + 1) & tmask;
        }
    }
    uint32_t m = 0;
    if (mode == PSKV__DEDUP_FIRST) {
        for (size_t i = 0; i < n; i++)
            if (p->kept_of[i] == i)
                p->order[m++] = (uint32_t)i;
    } else {
        for (uint32_t h = 0; h <= tmask; h++)
            if (tab[h] != 0)
                p->order[m++] = tab[h] - 1;
        /* kept_of must name the final (last) position of each key. */
        for (uint32_t k = 0; k < m; k++)
            p->kept_of[p->order[k]] = p->order[k];
        for (size_t i = 0; i < n; i++) {
            uint32_t h = (uint32_t)p->hash[i] & tmask;
            while (keys[tab[h] - 1] != keys[i])
                h = (h + 1) & tmask;
            p->kept_of[i] = tab[h] - 1;
        }
    }
    p->m = m;
}

int pskv__plan_route(pskv__plan *p, const pskv_ring *ring, uint32_t shards, const uint64_t *keys,
                     size_t n, enum pskv__dedup dedup)
{
    memset(p, 0, sizeof *p);
    if (n > UINT32_MAX - 1)
        return PSKV_EINVAL;
    uint32_t tcap = 16;
    while (dedup != PSKV__DEDUP_NONE && tcap < 2 * n)
        tcap *= 2;
    /* The list of positions to group: the dedup table once it is done
     * with, else an array of its own. */
    size_t list_bytes = dedup ? (size_t)tcap * sizeof(uint32_t) : n * sizeof(uint32_t);
    size_t off_hash = 0;
    size_t off_order = align8(off_hash + n * sizeof(uint64_t));
    size_t off_start = align8(off_order + n * sizeof(uint32_t));
    size_t off_busy = align8(off_start + ((size_t)shards + 1) * sizeof(uint32_t));
    size_t off_shard = align8(off_busy + (size_t)shards * sizeof(uint32_t));
    size_t off_kept = align8(off_shard + n * sizeof(uint32_t));
    size_t off_list = align8(off_kept + (dedup ? n * sizeof(uint32_t) : 0));
    size_t total = off_list + list_bytes;
    uint8_t *mem = malloc(total ? total : 1);
    if (mem == NULL)
        return PSKV_ENOMEM;
    p->mem = mem;
    p->keys = keys;
    p->n = (uint32_t)n;
    p->hash = (uint64_t *)(void *)(mem + off_hash);
    p->order = (uint32_t *)(void *)(mem + off_order);
    p->start = (uint32_t *)(void *)(mem + off_start);
    p->busy = (uint32_t *)(void *)(mem + off_busy);
    p->shard_of = (uint32_t *)(void *)(mem + off_shard);
    p->list = (uint32_t *)(void *)(mem + off_list);

    pskv__key_hashes(keys, n, pskv__ring_seed(ring), p->hash);
    if (shards == 1)
        memset(p->shard_of, 0, n * sizeof *p->shard_of);
    else
        pskv__ring_route_hashes(ring, p->hash, n, p->shard_of); /* by input position */

    if (dedup != PSKV__DEDUP_NONE) {
        p->kept_of = (uint32_t *)(void *)(mem + off_kept);
        memset(p->list, 0, (size_t)tcap * sizeof *p->list);
        dedup_positions(p, keys, n, dedup, p->list, tcap - 1);
        /* The table is no longer needed: it becomes the list. */
        memcpy(p->list, p->order, p->m * sizeof *p->list);
    }
    return 0;
}

void pskv__plan_group(pskv__plan *p, const uint32_t *list, uint32_t m, uint32_t shards)
{
    const uint32_t *shard_of = p->shard_of;
    p->m = m;
    uint32_t *count = p->start; /* counts first, then turned into starts */
    memset(count, 0, ((size_t)shards + 1) * sizeof *count);
    if (list == NULL) {
        for (uint32_t i = 0; i < m; i++)
            count[shard_of[i] + 1]++;
    } else {
        for (uint32_t k = 0; k < m; k++)
            count[shard_of[list[k]] + 1]++;
    }
    for (uint32_t s = 0; s < shards; s++)
        count[s + 1] += count[s];
    /* Scatter using a running cursor per shard kept in start[s] shifted by one. */
    if (list == NULL) {
        for (uint32_t i = 0; i < m; i++)
            p->order[p->start[shard_of[i]]++] = i;
    } else {
        for (uint32_t k = 0; k < m; k++)
            p->order[p->start[shard_of[list[k]]]++] = list[k];
    }
    /* start[s] now holds the end of shard s: shift back to starts. */
    for (uint32_t s = shards; s > 0; s--)
        p->start[s] = p->start[s - 1];
    p->start[0] = 0;
}

int pskv__plan_build(pskv__plan *p, const pskv_ring *ring, uint32_t shards, const uint64_t *keys,
                     size_t n, enum pskv__dedup dedup)
{
    int rc = pskv__plan_route(p, ring, shards, keys, n, dedup);
    if (rc != 0)
        return rc;
    if (dedup != PSKV__DEDUP_NONE)
        pskv__plan_group(p, p->list, p->m, shards);
    else
        pskv__plan_group(p, NULL, (uint32_t)n, shards);
    return 0;
}

void pskv__plan_free(pskv__plan *p)
{
    free(p->mem);
    p->mem = NULL;
}
