/* The checkpoint state machine of durable tables' shards (dirty.c).
 * SPDX-License-Identifier: BSD-2-Clause */
#ifndef PSKV_DIRTY_H
#define PSKV_DIRTY_H

#include "pskv_internal.h"

/* The checkpoint state machine of a durable table's shards (dirty lists,
 * checkpoint marks, pre-images, tombstones) has one owner, dirty.c. All
 * below: the caller holds the shard lock (but pskv__dirty_move, under the
 * layout lock exclusive); parity is the table's current parity. */

PSKV__HIDDEN void pskv__dirty_init(pskv__shard *sh);
PSKV__HIDDEN void pskv__dirty_free(pskv__shard *sh);
PSKV__HIDDEN uint64_t pskv__dirty_dram_bytes(const pskv__shard *sh);

/* Room a call takes before it changes anything, so that marking never
 * fails half-way through a batch: list appends, pre-images, tombstones. */
typedef struct pskv__dirty_room {
    uint32_t list, cow, tombs;
} pskv__dirty_room;
/* All or nothing: 0 or PSKV_ENOMEM. */
PSKV__HIDDEN int pskv__dirty_reserve(pskv__shard *sh, pskv__dirty_room want);
PSKV__HIDDEN void pskv__dirty_unreserve(pskv__shard *sh, pskv__dirty_room held);
/* The shard's outstanding reservations now. A caller that holds `held`
 * notes them once it has the lock, uses some, and gives back the rest with
 * pskv__dirty_release_unused before it lets the lock go. */
PSKV__HIDDEN pskv__dirty_room pskv__dirty_reserved(const pskv__shard *sh);
PSKV__HIDDEN void pskv__dirty_release_unused(pskv__shard *sh, pskv__dirty_room held,
                                             pskv__dirty_room at_start);

/* Does a checkpoint still need this resident row's bytes (a write must
 * save them first: one pre-image of room)? */
static inline bool pskv__dirty_pending(const pskv__entry *e, uint32_t parity)
{
    return (e->flags & pskv__flag_dirty(parity ^ 1u)) != 0;
}
/* A resident row is about to be written: mark it (one list reservation)
 * and, if a checkpoint still needs its bytes, save them first (one COW
 * reservation). */
PSKV__HIDDEN void pskv__dirty_written(pskv__shard *sh, pskv__entry *e, uint32_t parity);
/* A new row: mark it (one list reservation). */
PSKV__HIDDEN void pskv__dirty_created(pskv__shard *sh, pskv__entry *e, uint32_t parity);
/* A resident row is about to be erased (reservations: one list, one COW,
 * one tombstone when tomb). */
PSKV__HIDDEN void pskv__dirty_erased(pskv__shard *sh, pskv__entry *e, uint32_t parity, bool tomb);
/* The same for a spilled row; true if its slot now belongs to the COW
 * store (free it only when the checkpoint ends). */
PSKV__HIDDEN bool pskv__dirty_erased_spilled(pskv__shard *sh, const pskv__keyval *sp,
                                             uint32_t parity, bool tomb);
/* A row that lives only in LMDB was erased (one list, one tombstone). */
PSKV__HIDDEN void pskv__dirty_erased_cold(pskv__shard *sh, uint64_t key, uint32_t parity);

/* The checkpoint's instant (layout lock exclusive, no call in flight):
 * hand the shard's dirty list to the checkpoint (*out) and start an empty
 * one. Its length first, to size the checkpoint's key array. */
PSKV__HIDDEN uint32_t pskv__dirty_listed(const pskv__shard *sh);
PSKV__HIDDEN void pskv__dirty_take(pskv__shard *sh, pskv__keylist *out);
/* Size the COW map for up to n pre-images at once (best effort), so that
 * it does not rehash while writers run into pending rows. */
PSKV__HIDDEN void pskv__dirty_presize(pskv__shard *sh, uint32_t n);

/* A key's bytes as of the checkpoint's instant. */
typedef enum pskv__capture_kind {
    PSKV__CAPTURE_BYTES,  /* bytes: a row in DRAM (the row, or its pre-image) */
    PSKV__CAPTURE_SPILL,  /* slot: a record of the spill file; with owned, the
                           * row was marked BUSY for the read: clear it after */
    PSKV__CAPTURE_WAIT,   /* a loader owns the row: look again once it is in */
    PSKV__CAPTURE_ERASED, /* the key had no row at the instant: delete it */
} pskv__capture_kind;
typedef struct pskv__capture {
    pskv__capture_kind kind;
    const void *bytes;
    uint32_t slot;
    bool owned;
} pskv__capture;
PSKV__HIDDEN pskv__capture pskv__dirty_capture(pskv_table *t, pskv__shard *sh, uint64_t key,
                                               uint64_t hash, uint32_t parity);
/* After the commit (ok) or a failure: the key's pending mark is cleared or
 * becomes a current one (the key is then carried to the next checkpoint),
 * its tombstone dropped (LMDB has deleted the row) or kept. */
PSKV__HIDDEN void pskv__dirty_settle(pskv_table *t, pskv__shard *sh, uint64_t key, uint64_t hash,
                                     uint32_t parity, bool ok);
/* Then no row is pending: drop every pre-image. Hands out up to max spill
 * slots of spilled pre-images (free them, then call again) and returns how
 * many. */
PSKV__HIDDEN uint32_t pskv__dirty_drop_pre_images(pskv__shard *sh, uint32_t *slots, uint32_t max);

/* A reshard (layout lock exclusive, no checkpoint running: no pre-images,
 * no pending marks) moves the dirty keys and tombstones of t's shards into
 * the new shards `to` routed by ring; all or nothing (PSKV_ENOMEM). */
PSKV__HIDDEN int pskv__dirty_move(const pskv_table *t, const pskv_ring *ring, pskv__shard *to,
                                  uint32_t nto);

#endif
