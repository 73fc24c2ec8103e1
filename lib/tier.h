/* DRAM <-> lower tiers: rows in motion, spill loads and evictions, cold
 * reads (tier.c); pskv__locate itself is in pskv_internal.h.
 * SPDX-License-Identifier: BSD-2-Clause */
#ifndef PSKV_TIER_H
#define PSKV_TIER_H

#include "cold.h"
#include "pskv_internal.h"
#include "plan.h"

/* The store's "rows moved" generation: read it before looking for BUSY
 * rows, wait for it to change after finding some. */
PSKV__HIDDEN uint64_t pskv__tier_moved_gen(pskv_store *s);
PSKV__HIDDEN void pskv__tier_moved_wake(pskv_store *s);
PSKV__HIDDEN void pskv__tier_moved_wait(pskv_store *s, uint64_t seen);
/* A reader that marked a spilled row BUSY to read its record (an iterator,
 * a checkpoint's capture) gives it back (shard lock held); wake the
 * waiters with pskv__tier_moved_wake after the last one. */
PSKV__HIDDEN void pskv__tier_spilled_release(pskv__shard *sh, uint64_t key, uint64_t hash);
/* n spilled rows, the k-th that of keys[pos[k]] in spill slot slots[k],
 * read from the spill file in one batch into rows + pos[k] * stride; then
 * the ones this caller claimed (pskv__claim_spilled: an iterator's piece,
 * a checkpoint's batch; owned NULL: all, else those with owned[k]) are
 * released, whatever the read did, and the waiters woken. Caller holds
 * the layout lock shared and no shard lock. 0, PSKV_ENOMEM or the read's
 * error. */
PSKV__HIDDEN int pskv__tier_read_claimed(pskv_table *t, uint32_t n, const uint64_t *keys,
                                         const uint32_t *pos, const uint32_t *slots,
                                         const uint8_t *owned, uint8_t *rows, size_t stride);
/* The keys a shard read back from LMDB while iterations ran (shard lock
 * held), by position: where the list ends now, and the keys from `from`
 * on (*keys, the count returned; *end: the position after them). */
PSKV__HIDDEN uint64_t pskv__readback_end(const pskv__shard *sh);
PSKV__HIDDEN uint32_t pskv__readback_since(const pskv__shard *sh, uint64_t from,
                                           const uint64_t **keys, uint64_t *end);
/* Bring the plan's spilled rows back into DRAM (one I/O batch), and wait
 * for rows other callers are moving. Caller holds the layout lock shared and
 * no shard lock, and accounts the rows added to *loaded_rows. 0, PSKV_EIO,
 * PSKV_ECORRUPT (the row stays spilled and unchanged), PSKV_ENOMEM. */
PSKV__HIDDEN int pskv__tier_load(pskv_table *t, const pskv__plan *p, uint64_t *loaded_rows);
/* Write up to a batch of cold rows (CLOCK picks them) of the table's shards
 * first, first + 1, ... to the spill file in one I/O batch and free their
 * DRAM. *visited = the shards looked at (the batch filled up or the last
 * shard was reached). Caller holds the layout lock shared and no shard
 * lock. 0 or PSKV_ENOSPC / PSKV_EIO / PSKV_ENOMEM (the rows stay
 * resident). */
PSKV__HIDDEN int pskv__tier_evict(pskv_table *t, uint32_t first, uint32_t *visited,
                                   uint32_t *evicted);


/* Read a MAYBE_COLD key's row from LMDB into DRAM as a clean row (shard
 * lock held; c's transaction must end before the lock is released). 1
 * with *row_out, 0 if LMDB has no such row, or an error (PSKV_ENOMEM,
 * PSKV_ECORRUPT, an LMDB error). */
PSKV__HIDDEN int pskv__tier_load_cold(pskv_table *t, pskv__shard *sh, pskv__cold *c, uint64_t key,
                                      uint64_t hash, float **row_out);

#endif
