/* A growing list of keys in fixed blocks (keylist.c).
 * SPDX-License-Identifier: BSD-2-Clause */
#ifndef PSKV_KEYLIST_H
#define PSKV_KEYLIST_H

#include <stdint.h>

#include "common.h"

/* A growing list of keys in fixed blocks: appending never moves or copies
 * what is there (no stall when many shards grow at once). */
#define PSKV__KEYS_PER_BLOCK 2048u
typedef struct pskv__keylist {
    uint64_t **blocks;
    uint32_t nblocks, blocks_cap;
    uint32_t count, reserved;
} pskv__keylist;

static inline uint64_t pskv__keylist_at(const pskv__keylist *l, uint32_t i)
{
    return l->blocks[i / PSKV__KEYS_PER_BLOCK][i % PSKV__KEYS_PER_BLOCK];
}

/* Key lists (keylist.c): room for k appends (0 or PSKV_ENOMEM), append
 * one, free. */
PSKV__HIDDEN int pskv__keylist_reserve(pskv__keylist *l, uint32_t k);
PSKV__HIDDEN void pskv__keylist_append(pskv__keylist *l, uint64_t key);
/* Give back k reserved appends not made. */
static inline void pskv__keylist_unreserve(pskv__keylist *l, uint32_t k) { l->reserved -= k; }
/* Drop the first k keys (k <= count); the rest move to the front. */
PSKV__HIDDEN void pskv__keylist_drop_front(pskv__keylist *l, uint32_t k);
PSKV__HIDDEN void pskv__keylist_free(pskv__keylist *l);

#endif
