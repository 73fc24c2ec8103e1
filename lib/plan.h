/* A batch call's keys hashed and grouped by shard (plan.c).
 * SPDX-License-Identifier: BSD-2-Clause */
#ifndef PSKV_PLAN_H
#define PSKV_PLAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common.h"
#include "pskv.h"

/* A batch call's keys hashed and grouped by shard: order[start[s] ..
 * start[s+1]) lists the input positions of shard s. With dedup, only one
 * position per distinct key is listed (the first or the last occurrence)
 * and kept_of[i] names the listed position that stands for input i. */
enum pskv__dedup { PSKV__DEDUP_NONE, PSKV__DEDUP_FIRST, PSKV__DEDUP_LAST };
typedef struct pskv__plan {
    const uint64_t *keys; /* [n] the caller's keys */
    uint32_t n;
    uint64_t *hash;    /* [n] key hash of every input */
    uint32_t *shard_of; /* [n] shard of every input */
    uint32_t *list;    /* [n] scratch: positions to group (pskv__plan_group) */
    uint32_t *order;   /* [m] */
    uint32_t *start;   /* [shards + 1] */
    uint32_t *kept_of; /* [n], only with dedup */
    uint32_t *busy;    /* [shards] scratch for the shard walk */
    uint32_t m;        /* positions listed */
    bool has_dups;
    void *mem;
} pskv__plan;

PSKV__HIDDEN int pskv__plan_build(pskv__plan *p, const pskv_ring *ring,
                                  uint32_t shards, const uint64_t *keys,
                                  size_t n, enum pskv__dedup dedup);
PSKV__HIDDEN void pskv__plan_free(pskv__plan *p);

/* How many of the grouped keys fall in shard s. */
static inline uint32_t pskv__plan_count(const pskv__plan *p, uint32_t s)
{
    return p->start[s + 1] - p->start[s];
}

/* pskv__plan_build in two steps, for calls that serve some positions
 * before grouping the rest (hits.c): route hashes and routes every input
 * (and with dedup chooses the listed positions, leaving them in p->list,
 * p->m of them, and kept_of); group lists the m positions of list (NULL:
 * 0 .. m-1) by shard in order and start. */
PSKV__HIDDEN int pskv__plan_route(pskv__plan *p, const pskv_ring *ring, uint32_t shards,
                                  const uint64_t *keys, size_t n, enum pskv__dedup dedup);
PSKV__HIDDEN void pskv__plan_group(pskv__plan *p, const uint32_t *list, uint32_t m,
                                   uint32_t shards);

#endif
