/* Pull's and get's first pass over a batch: resident rows, in input
 * order, their shards entered shared (hits.c).
 * SPDX-License-Identifier: BSD-2-Clause */
#ifndef PSKV_HITS_H
#define PSKV_HITS_H

#include "plan.h"
#include "pskv_internal.h"

/* p is routed (pskv__plan_route, no dedup) and the caller holds the
 * table's layout lock shared. Copies the weights of every input whose row
 * is resident in DRAM and idle to out[i] (found[i] = 1 when found is not
 * NULL), setting its reference bit, with its shard's lock taken shared
 * (pskv__shard_trylock_shared: never waited for). The other inputs
 * (absent, spilled, cold, being moved, of a shard busy with a writer) are
 * listed in p->list, in input order, for the full path; returns how many.
 * Not for stores with an admission sketch, whose reads count in the sketch
 * under the exclusive lock (pipeline.c). */
/* Batches up to this many keys (the pass counts inputs in 32 bits). */
#define PSKV__HITS_MAX (1u << 31)
PSKV__HIDDEN uint32_t pskv__read_hits(pskv_table *t, pskv__plan *p, float *out, uint8_t *found);

#endif
