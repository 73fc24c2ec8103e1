/* The consistent-hash ring's internal calls (ring.c; the public ones are in pskv.h).
 * SPDX-License-Identifier: BSD-2-Clause */
#ifndef PSKV_RING_H
#define PSKV_RING_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"
#include "pskv.h"

/* Route a key whose pskv__key_hash(key, ring seed) is already known. The
 * ring must have at least one node. */
PSKV__HIDDEN uint32_t pskv__ring_route_hash(const pskv_ring *r, uint64_t hash);
/* The same for n hashes: node[i] routes hash[i]. */
PSKV__HIDDEN void pskv__ring_route_hashes(const pskv_ring *r, const uint64_t *hash, size_t n,
                                          uint32_t *node);
PSKV__HIDDEN uint64_t pskv__ring_seed(const pskv_ring *r);
/* A copy of r (the same routes): 0 or PSKV_ENOMEM. */
PSKV__HIDDEN int pskv__ring_copy(const pskv_ring *r, pskv_ring **out);
/* A ring of nodes 0..nodes-1 of weight 1, built in one pass. */
PSKV__HIDDEN int pskv__ring_create_uniform(unsigned vnodes, uint64_t seed, uint32_t nodes,
                                           pskv_ring **out);

#endif
