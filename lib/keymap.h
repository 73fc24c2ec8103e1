/* A key -> 32-bit value map (keymap.c): Robin Hood probing, 12-byte entries.
 * SPDX-License-Identifier: BSD-2-Clause */
#ifndef PSKV_KEYMAP_H
#define PSKV_KEYMAP_H

#include <stdint.h>

#include "common.h"

/* An entry of a key -> 32-bit value map (keymap.c): 12 bytes, packed;
 * value == PSKV__SLOT_EMPTY marks a free entry. A shard keeps three: its
 * spilled rows (value: the spill slot, with PSKV__SPILL_BUSY set while the
 * row is being read back or iterated, and its checkpoint marks), its
 * pre-images (value: a COW index, dirty.c) and its tombstones (value: the
 * parity of the erase, dirty.c). */
typedef struct __attribute__((packed)) pskv__keyval {
    uint64_t key;
    uint32_t value;
} pskv__keyval;
typedef struct pskv__keymap {
    pskv__keyval *e;
    uint32_t cap;      /* entries; not a power of two */
    uint32_t count;    /* spilled rows */
    uint32_t reserved; /* insertions promised by pskv__keymap_reserve */
    uint64_t seed;     /* the table's key hash seed, to rehash */
} pskv__keymap;

/* All below: caller holds the owning shard's lock. hash is
 * pskv__key_hash(key, seed). */
PSKV__HIDDEN void pskv__keymap_init(pskv__keymap *m, uint64_t seed);
PSKV__HIDDEN void pskv__keymap_free(pskv__keymap *m);
/* Room for k more insertions without allocating: 0 or PSKV_ENOMEM. */
PSKV__HIDDEN int pskv__keymap_reserve(pskv__keymap *m, uint32_t k);
PSKV__HIDDEN void pskv__keymap_unreserve(pskv__keymap *m, uint32_t k);
PSKV__HIDDEN pskv__keyval *pskv__keymap_find(pskv__keymap *m, uint64_t key, uint64_t hash);
/* Insert a key known to be absent, using one reservation. */
PSKV__HIDDEN void pskv__keymap_insert_reserved(pskv__keymap *m, uint64_t key, uint64_t hash,
                                                 uint32_t slot);
/* Remove an entry found by pskv__keymap_find. Invalidates every other
 * entry pointer (entries move; the map may shrink). */
PSKV__HIDDEN void pskv__keymap_remove(pskv__keymap *m, pskv__keyval *e);
PSKV__HIDDEN uint64_t pskv__keymap_bytes(const pskv__keymap *m);

#endif
