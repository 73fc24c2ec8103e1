/* The core private header of lib/: the shared structs (table, store,
 * shard) and the declarations of the files that use them. Self-contained
 * modules have their own small headers, included here. Never installed.
 * SPDX-License-Identifier: BSD-2-Clause */
#ifndef PSKV_INTERNAL_H
#define PSKV_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "pskv.h"

#include "array.h"
#include "common.h"
#include "dirlock.h"
#include "errors.h"
#include "handles.h"
#include "hash.h"
#include "io.h"
#include "keyfilter.h"
#include "keylist.h"
#include "keymap.h"
#include "optimizer.h"
#include "options.h"
#include "plan.h"
#include "ring.h"
#include "seqfile.h"
#include "sort.h"
#include "spill.h"
#include "undo.h"

/* ---------------------------------------------------------------- init.c */

/* Fill w[dim] with the key-seeded initial weights of the options. */
PSKV__HIDDEN void pskv__init_weights(const pskv_table_options *o, uint64_t key,
                                     float *w, uint32_t dim);

/* ---------------------------------------------------------------- shard.c */

/* Index entry: 16 bytes. slot == PSKV__SLOT_EMPTY marks a free entry;
 * flags holds the CLOCK, BUSY and checkpoint bits. */
typedef struct pskv__entry {
    uint64_t key;
    uint32_t slot;
    uint32_t flags;
} pskv__entry;
/* flags bits */
#define PSKV__FLAG_REF 1u     /* CLOCK reference bit: used since the hand last passed */
#define PSKV__FLAG_BUSY 4u    /* the row is being written to the spill file: wait for it */
/* Checkpoint marks (durable tables, checkpoint.c): the row was written in
 * the checkpoint generation of parity 0 or 1. The table's current parity
 * marks rows written since the last checkpoint began; the other parity
 * marks rows a running checkpoint has still to persist ("pending"). */
#define PSKV__FLAG_DIRTY0 8u
#define PSKV__FLAG_DIRTY_ALL (8u | 16u)
static inline uint32_t pskv__flag_dirty(uint32_t parity) { return PSKV__FLAG_DIRTY0 << parity; }

/* ---------------------------------------------------------------- changes.c */

/* Every row carries the version of its last change in the 8 bytes after
 * its weights and state (little-endian; DRAM, spill file and LMDB alike). */
#define PSKV__VERSION_BYTES 8u
/* A durable table reopened after a crash or a rollback continues this far
 * past its last checkpoint's version, beyond any version the lost run can
 * have handed out (2^40 shard visits between two checkpoints). */
#define PSKV__VERSION_JUMP (1ull << 40)
/* A new table's versions start at a random multiple of the jump (one of
 * this many), and exports refuse cursors below it: a cursor of another
 * table, or of an earlier life of this one, is PSKV_ESTALE, not a partial
 * delta. */
#define PSKV__VERSION_BASES (1u << 22)
PSKV__HIDDEN uint64_t pskv__version_base(void);
/* Change log entries per table unless the store says (changes=N). */
#define PSKV__CHANGES_DEFAULT (1u << 20)

typedef struct pskv__change {
    uint64_t key, version;
} pskv__change;
/* Keys a shard read back from LMDB while iterations were running (written
 * by tier.c, read by iter.c): an iteration's LMDB walk returns those read
 * back after its copy of their shard, which could not see them. Positions
 * are absolute (base + index) so that the list can be emptied (and freed)
 * when no iteration runs. */
typedef struct pskv__readbacks {
    uint64_t *keys;
    uint32_t len, cap;
    uint64_t base;
} pskv__readbacks;

/* A shard's change log (changes.c): entries in version order. */
typedef struct pskv__changes {
    pskv__change *e;
    uint32_t len, cap;
    uint64_t floor; /* entries at versions <= floor may have been dropped */
} pskv__changes;

/* ---------------------------------------------------------------- keymap.c */

#define PSKV__SPILL_BUSY 0x80000000u
/* The checkpoint marks of a spilled row (as PSKV__FLAG_DIRTY0 << parity). */
#define PSKV__SPILL_DIRTY0 0x20000000u
#define PSKV__SPILL_DIRTY_ALL 0x60000000u
#define PSKV__SPILL_SLOT_MAX 0x1fffffffu /* spill slots per table: 29 bits */
static inline uint32_t pskv__spill_dirty(uint32_t parity) { return PSKV__SPILL_DIRTY0 << parity; }
/* Marks moving with a row between the index and the spill map. */
static inline uint32_t pskv__marks_to_spill(uint32_t meta)
{
    return (meta & PSKV__FLAG_DIRTY_ALL) / PSKV__FLAG_DIRTY0 * PSKV__SPILL_DIRTY0;
}
static inline uint32_t pskv__marks_to_flags(uint32_t slot)
{
    return (slot & PSKV__SPILL_DIRTY_ALL) / PSKV__SPILL_DIRTY0 * PSKV__FLAG_DIRTY0;
}

/* Pre-images are kept in blocks of this many rows, for the same reason. */
#define PSKV__COW_BLOCK_ROWS 64u

/* What a durable table's shard remembers between checkpoints (dirty.c
 * alone reads and changes it). */
typedef struct pskv__ckpt_state {
    pskv__keylist dirty;  /* keys written since the last checkpoint began (may repeat) */
    pskv__keymap cow;     /* pending row -> its pre-image, an index into cow_blocks */
    uint8_t **cow_blocks; /* pre-images, PSKV__COW_BLOCK_ROWS rows per block */
    uint32_t cow_nblocks, cow_blocks_cap;
    uint32_t cow_count, cow_reserved;
    pskv__keymap tombs;   /* erased keys LMDB may still hold -> parity of the erase */
} pskv__ckpt_state;

typedef struct pskv__shard {
    pthread_mutex_t lock;
    pskv__entry *index;   /* open addressing, linear probing */
    uint32_t index_mask;  /* capacity - 1; capacity is a power of two */
    uint32_t rows;        /* rows in the index: resident, or being evicted (BUSY) */
    uint32_t reserved;    /* rows promised to callers by pskv__shard_reserve */
    pskv__keymap spilled; /* rows in the spill file (directory stores) */
    uint8_t **slabs;
    uint32_t nslabs, slabs_cap;
    uint32_t small_slabs; /* slabs[0..small_slabs) are malloc'd one by one */
    void **chunks;        /* huge-page chunks the later slabs are carved from */
    uint32_t nchunks, chunks_cap;
    uint8_t *chunk_next;  /* next unused slab of the newest chunk */
    uint32_t chunk_left;
    uint32_t slots_high;  /* slots ever handed out (< nslabs << slab_shift) */
    uint32_t free_head;   /* erased slots, linked through their first bytes */
    uint32_t free_count;
    uint32_t slab_shift;  /* rows per slab = 1 << slab_shift */
    uint32_t row_bytes;
    uint64_t hash_seed;   /* the table's key hash seed, to rehash on growth */
    uint32_t clock_hand;  /* CLOCK position in the index */
    uint64_t created, erased, evicted;
    pskv__ckpt_state ck;  /* durable tables: owned by dirty.c */
    pskv__changes log;    /* keys changed, in version order (changes.c) */
    pskv__readbacks readback; /* keys read back from LMDB during iterations (iter.c) */
} __attribute__((aligned(64))) pskv__shard;

/* slab_bytes: the row slabs' size (0: 64 KiB, the most); a shard's first
 * row costs one slab. */
PSKV__HIDDEN int pskv__shard_init(pskv__shard *sh, uint32_t row_bytes, uint32_t slab_bytes,
                                  uint64_t hash_seed);
PSKV__HIDDEN void pskv__shard_free(pskv__shard *sh);

static inline float *pskv__shard_row(const pskv__shard *sh, uint32_t slot)
{
    uint32_t mask = (1u << sh->slab_shift) - 1;
    return (float *)(void *)(sh->slabs[slot >> sh->slab_shift] +
                             (size_t)(slot & mask) * sh->row_bytes);
}

static inline uint32_t pskv__index_pos(uint64_t hash, uint32_t mask)
{
    /* The ring consumes the high bits of the hash to pick the shard; the
     * low bits stay uniform inside a shard. */
    return (uint32_t)hash & mask;
}

/* Software prefetches for loops over many keys of a shard: a key's index
 * slot some keys ahead, a row's bytes before it is used. */
static inline void pskv__prefetch_index(const pskv__shard *sh, uint64_t hash)
{
    __builtin_prefetch(&sh->index[pskv__index_pos(hash, sh->index_mask)], 0, 3);
}

static inline void pskv__prefetch_row(const void *row, uint32_t bytes)
{
    const char *p = row;
    for (uint32_t off = 0; off < bytes; off += 64)
        __builtin_prefetch(p + off, 1, 3);
}

/* All below: caller holds sh->lock. */
/* Make room so that k more rows can be created without allocating. */
PSKV__HIDDEN int pskv__shard_reserve(pskv__shard *sh, uint32_t k);
PSKV__HIDDEN void pskv__shard_unreserve(pskv__shard *sh, uint32_t k);
/* Index entry of key, or NULL. */
PSKV__HIDDEN pskv__entry *pskv__shard_find(pskv__shard *sh, uint64_t key,
                                           uint64_t hash);
/* Insert a key absent from the index and the spill map, using one reserved
 * row. Returns its slot (row bytes uninitialized). Never fails; counts no
 * creation (the caller knows whether the row is new or moved). */
PSKV__HIDDEN uint32_t pskv__shard_insert_reserved(pskv__shard *sh, uint64_t key,
                                                  uint64_t hash);
/* Remove an index entry found by pskv__shard_find and free its DRAM slot.
 * Counts nothing (the caller knows whether the row was erased, evicted or
 * moved to the spill file). Invalidates other entry pointers. */
PSKV__HIDDEN void pskv__shard_remove(pskv__shard *sh, pskv__entry *e);
PSKV__HIDDEN uint64_t pskv__shard_dram_bytes(const pskv__shard *sh);

/* Insert like pskv__shard_insert_reserved and return the new entry (valid
 * until the index changes). */
PSKV__HIDDEN pskv__entry *pskv__shard_insert_entry(pskv__shard *sh, uint64_t key, uint64_t hash);

/* All below, changes.c: caller holds the shard's lock. */
/* Key changed (or vanished) at version; the log keeps at most max entries. */
PSKV__HIDDEN void pskv__changes_add(pskv__shard *sh, uint64_t key, uint64_t version,
                                    uint32_t max);
/* Keys changed after since (may repeat; malloc'd *keys, or NULL when
 * none): 0, PSKV_ESTALE (since is below the log's floor), PSKV_ENOMEM. */
PSKV__HIDDEN int pskv__changes_collect(const pskv__changes *c, uint64_t since, uint64_t **keys,
                                       uint32_t *n);
PSKV__HIDDEN void pskv__changes_free(pskv__changes *c);
PSKV__HIDDEN uint64_t pskv__changes_bytes(const pskv__changes *c);
/* A reshard (layout lock exclusive) moves the logs into the new shards:
 * 0 or PSKV_ENOMEM (the new shards' logs are freed with them). */
PSKV__HIDDEN int pskv__changes_move(const pskv_table *t, const pskv_ring *ring, pskv__shard *to,
                                    uint32_t nto);

/* ---------------------------------------------------------------- dirty.c */

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
/* Erased since LMDB last saw it: not to be read back from there. */
PSKV__HIDDEN bool pskv__dirty_tombstoned(pskv__shard *sh, uint64_t key, uint64_t hash);

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

/* ---------------------------------------------------------------- clock.c */

/* The next CLOCK victim of the shard (lock held): moves the hand over at
 * most *steps entries, clearing the reference bits it passes, and returns
 * the first resident, idle row whose bit was already clear, with the hand
 * on it; NULL when the steps run out. Rows being evicted (BUSY) are
 * skipped. */
PSKV__HIDDEN pskv__entry *pskv__clock_next(pskv__shard *sh, uint64_t *steps);
/* CLOCK sweep over one shard (lock held): clear reference bits, drop rows
 * without one, until max_evict rows are gone or the hand has gone once
 * around. Returns the rows dropped (the caller accounts them); each is
 * logged as gone (changes.c). */
PSKV__HIDDEN uint32_t pskv__clock_sweep(pskv_table *t, pskv__shard *sh, uint32_t max_evict);

/* ---------------------------------------------------------------- budget.c */

/* Bring the store's resident bytes back under its budget (no locks held by
 * the caller). 0, or PSKV_ENOSPC / PSKV_EIO when cold rows could not be
 * written to the spill tier (they stay resident). */
PSKV__HIDDEN int pskv__budget_enforce(pskv_store *s);
/* The same, stopping between eviction batches once yield(s) returns true
 * (the prefetch worker: a queued job's reads come before evictions). */
PSKV__HIDDEN int pskv__budget_evict(pskv_store *s, bool (*yield)(pskv_store *s));
/* Before a call that may add rows: 0, or the error of an eviction that
 * could not keep up (the store is over budget by more than 1/16). */
PSKV__HIDDEN int pskv__budget_admit(pskv_store *s);
/* Account rows brought into DRAM (+) or removed from it (-). */
PSKV__HIDDEN void pskv__budget_account(pskv_store *s, int64_t bytes);

/* Monotonic nanoseconds, for time statistics. */
static inline uint64_t pskv__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---------------------------------------------------------------- tier.c */

/* The store's "rows moved" generation: read it before looking for BUSY
 * rows, wait for it to change after finding some. */
PSKV__HIDDEN uint64_t pskv__tier_moved_gen(pskv_store *s);
PSKV__HIDDEN void pskv__tier_moved_wake(pskv_store *s);
PSKV__HIDDEN void pskv__tier_moved_wait(pskv_store *s, uint64_t seen);
/* A reader that marked a spilled row BUSY to read its record (an iterator,
 * a checkpoint's capture) gives it back (shard lock held); wake the
 * waiters with pskv__tier_moved_wake after the last one. */
PSKV__HIDDEN void pskv__tier_spilled_release(pskv__shard *sh, uint64_t key, uint64_t hash);
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

/* ---------------------------------------------------------------- prefetch.c */

typedef struct pskv__prefetch_job pskv__prefetch_job;
PSKV__HIDDEN void pskv__prefetch_init(pskv_store *s);
/* Queue a load of the keys' spilled rows and return (waits only when 64
 * jobs are pending). 0 or PSKV_ENOMEM. */
PSKV__HIDDEN int pskv__prefetch_submit(pskv_table *t, const uint64_t *keys, size_t n);
/* Finish queued jobs and stop the worker; before tables are destroyed. */
PSKV__HIDDEN void pskv__prefetch_stop(pskv_store *s);

/* ---------------------------------------------------------------- table.c */

struct pskv_table {
    pskv_store *store;
    char name[PSKV_NAME_MAX + 1];
    pskv_table_options opts;
    pskv__optimizer opt;
    uint32_t dim;
    uint32_t state_floats;
    uint32_t row_floats;
    uint32_t payload_bytes; /* weights + state */
    uint32_t row_bytes;     /* payload + version: a row in DRAM, spill file, LMDB */

    /* Versions (changes.c, export.c): the last one handed out; exports
     * need since >= changes_floor (the table's first version this run, or
     * above, once logs drop entries); changes_max: log entries per shard. */
    atomic_uint_fast64_t version;
    atomic_uint_fast64_t changes_floor;
    uint32_t changes_max;

    /* Row calls hold it shared; reshard holds it exclusive. */
    pthread_rwlock_t layout_lock;
    pskv_ring *ring;
    pskv__shard *shards;
    uint32_t nshards;
    atomic_uint_fast64_t layout_gen;

    atomic_uint_fast64_t n_push_nonfinite;
    atomic_uint_fast64_t n_pulled, n_pushed, n_got, n_put, n_get_misses,
        n_reshards, n_spill_reads, n_spill_writes, n_prefetch_errors, n_spill_read_ns,
        n_spill_write_ns, n_cold_lookups, n_exported;

    pskv__spill *spill; /* directory stores only */

    /* Persistence (durable stores; persist.c, checkpoint.c) */
    bool durable;
    uint32_t parity;            /* current checkpoint generation; flips under layout_lock exclusive */
    atomic_bool ckpt_active;    /* a checkpoint may still need pending rows */
    pthread_mutex_t ckpt_lock;  /* held by a checkpoint; reshard takes it first */
    unsigned dbi;               /* LMDB rows database */
    /* Its count record as of snapshot db_txnid (count_lock; the
     * checkpointer writes, under ckpt_lock, and iteration reads). */
    pthread_mutex_t count_lock;
    uint64_t db_rows, db_digest, db_txnid;
    atomic_uint_fast64_t cold_rows; /* rows only LMDB holds (not yet read back) */
    atomic_uint_fast64_t iterations; /* live pskv_iter handles (iter.c) */
    pskv__keyfilter persisted;  /* keys LMDB may hold (keyfilter.c) */
    uint64_t *carry;            /* keys of a failed checkpoint, for the next one */
    size_t ncarry;
};

PSKV__HIDDEN int pskv__table_create(pskv_store *s, const char *name,
                                    const pskv_table_options *o,
                                    pskv_table **out);
PSKV__HIDDEN void pskv__table_destroy(pskv_table *t);
PSKV__HIDDEN void pskv__table_stats_add(pskv_table *t, pskv_table_stats *st);
/* A ring over shards 0..n-1 and the empty shards themselves (reshard.c
 * builds a new layout with it), and freeing n shards. */
PSKV__HIDDEN int pskv__layout_create(const pskv_table *t, uint32_t n, pskv_ring **ring_out,
                                     pskv__shard **shards_out);
PSKV__HIDDEN void pskv__layout_free(pskv__shard *shards, uint32_t n);

static inline void pskv__count_add(atomic_uint_fast64_t *c, uint64_t v)
{
    atomic_fetch_add_explicit(c, v, memory_order_relaxed);
}

/* The shard of key under ring (the table's, or a reshard's new one). */
static inline uint32_t pskv__table_route(const pskv_table *t, const pskv_ring *ring, uint64_t key)
{
    return pskv__ring_route_hash(ring, pskv__key_hash(key, t->opts.seed));
}

/* ---------------------------------------------------------------- rows.c (for apply) */

/* Read whole rows (weights then state, row_floats each) as pskv_get
 * reads weights (found[i] 0: absent, zeros). */
PSKV__HIDDEN int pskv__get_rows(pskv_table *t, const uint64_t *keys, size_t n, float *rows,
                                uint8_t *found);
/* Write rows as pskv_put writes weights (all or nothing, repeated keys the
 * last wins) from bytes at any alignment, already checked finite (a chunk
 * view): weights dim floats per row back to back, and state, when not
 * NULL, state_floats per row back to back. */
PSKV__HIDDEN int pskv__put_rows(pskv_table *t, const uint64_t *keys, size_t n,
                                const void *weights, const void *state);
/* Add values[n][dim] to the rows' weights (created like pull first;
 * repeated keys summed); PSKV_ERANGE for rows whose sum is not finite
 * (they stay as they were; the others are applied), as pskv_push. */
PSKV__HIDDEN int pskv__add(pskv_table *t, const uint64_t *keys, size_t n, const float *values);

/* ---------------------------------------------------------------- row versions */

static inline uint64_t pskv__row_version(const pskv_table *t, const void *row)
{
    uint64_t v;
    memcpy(&v, (const uint8_t *)row + t->payload_bytes, sizeof v);
    return v;
}

static inline void pskv__row_stamp(const pskv_table *t, void *row, uint64_t v)
{
    memcpy((uint8_t *)row + t->payload_bytes, &v, sizeof v);
}

/* The version of one shard visit's changes, taken at its first change
 * with the shard's lock held: the rows a call changes in one shard share
 * it, and a shard's versions grow in the order of its visits. */
static inline uint64_t pskv__visit_version(pskv_table *t, uint64_t *v)
{
    if (*v == 0)
        *v = atomic_fetch_add_explicit(&t->version, 1, memory_order_relaxed) + 1;
    return *v;
}

/* Key's row changed at version v (row NULL: the row is gone); shard lock
 * held. A row changed twice in one visit is logged once. */
static inline void pskv__row_changed(pskv_table *t, pskv__shard *sh, uint64_t key, void *row,
                                     uint64_t v)
{
    if (row != NULL) {
        if (pskv__row_version(t, row) == v)
            return;
        pskv__row_stamp(t, row, v);
    }
    pskv__changes_add(sh, key, v, t->changes_max);
}

/* ---------------------------------------------------------------- store.c */

struct pskv_store {
    pthread_mutex_t lock; /* guards the table list */
    pskv_store_options opts;
    pskv_table **tables;
    uint32_t ntables, tables_cap;

    /* DRAM budget (budget.c) */
    atomic_int_fast64_t resident_bytes;
    pthread_mutex_t evict_lock; /* one evictor at a time; guards the hand */
    uint32_t hand_table, hand_shard;

    /* Spill tier (directory stores) */
    char *dir;
    pskv__io *io;
    atomic_uint_fast64_t spill_bytes; /* all spill files' extents, capped by spill_max */
    pthread_mutex_t moved_lock;       /* with moved_cv: rows in motion finished */
    pthread_cond_t moved_cv;
    uint64_t moved_gen;

    /* Prefetch worker (prefetch.c) */
    pthread_mutex_t pf_lock;
    pthread_cond_t pf_cv, pf_room_cv;
    pskv__prefetch_job *pf_head, *pf_tail;
    uint32_t pf_count;
    bool pf_started, pf_stop;
    pthread_t pf_thread;

    /* Persistence (durable directory stores; persist.c, checkpoint.c) */
    struct MDB_env *env;
    unsigned records_dbi;
    unsigned undo_dbi[PSKV_UNDO_KEEP_MAX]; /* the last checkpoints' pre-images, a
                                              generation per slot (undo.c) */
    uint32_t undo_keep;         /* generations kept: 0 with undo=off */
    uint32_t db_psize;          /* LMDB page size */
    const void *map_base;       /* where LMDB mapped data.mdb (NULL: unknown) */
    int lock_fd;
    pthread_rwlock_t env_lock;  /* read transactions shared; map growth exclusive */
    pthread_mutex_t ckpt_lock;  /* one checkpoint at a time */
    uint64_t ckpt_seq, ckpt_unix_ns; /* last committed checkpoint (ckpt_lock) */
    atomic_uint_fast64_t ckpt_seq_pub, ckpt_last_rows, ckpt_last_ns, n_ckpt_failed, n_map_grows,
        n_env_reopens, n_stale_readers;
    /* LMDB's environment is gone: a map grow failed half way (no map), or
     * reopening it after a fatal write failed; calls fail cleanly. */
    atomic_bool env_lost;
    pskv_table **attached; /* tables with LMDB handles (ckpt_lock) */
    uint32_t nattached, attached_cap;

    /* Open iterators and exports, marked closed by pskv_close (handles.c) */
    pskv__handles handles;
};

/* Tests: close as a crash leaves a store, without the final checkpoint. */
PSKV__HIDDEN void pskv__close_abandon(pskv_store *s);

/* ---------------------------------------------------------------- persist.c */

/* Internal result of LMDB writers: the map is full; grow it and retry. */
#define PSKV__MAP_FULL 1

typedef struct pskv__cold {
    struct MDB_txn *txn; /* begun on first use; holds env_lock shared */
    const void *base;    /* the data file's pages in the map, for bounds */
    uint64_t span;
} pskv__cold;

/* A walk over a table's LMDB rows in batches (iteration): what the cursor
 * saw, to compare with the table's count record when the walk is whole. */
typedef struct pskv__cold_walk {
    uint64_t rows, digest;
    uint64_t txnid;  /* the snapshot of the first batch */
    uint64_t last_txnid; /* ...and of the latest one */
    bool one_snapshot; /* every batch read that snapshot */
} pskv__cold_walk;

struct MDB_txn;
PSKV__HIDDEN int pskv__persist_err(int rc);
/* The same for a write: MDB_MAP_FULL becomes PSKV__MAP_FULL. */
PSKV__HIDDEN int pskv__persist_write_err(int rc);
/* Run once(s, arg), a whole write transaction, until it stops asking for
 * a bigger map (PSKV__MAP_FULL), growing the map between tries; then a
 * full map is PSKV_ENOSPC, and so is a PSKV_EIO from a full disk (need:
 * the bytes the write wanted). */
PSKV__HIDDEN int pskv__persist_write_growing(pskv_store *s, int (*once)(pskv_store *s, void *arg),
                                     void *arg, uint64_t need);
/* A transaction (PSKV__MAP_FULL when a write one finds the map full);
 * PSKV_ENOMEM once a failed grow has left LMDB without a map. */
PSKV__HIDDEN int pskv__persist_txn_begin(pskv_store *s, bool write, struct MDB_txn **txn);
/* After a PSKV_EIO from a write into dir: is it really a full disk or a
 * file-size limit (LMDB reports short writes as EIO)? need: bytes wanted. */
PSKV__HIDDEN bool pskv__persist_disk_full(const char *dir, uint64_t need);
/* 0 when dir/data.mdb holds every page env's meta page names, else
 * PSKV_ECORRUPT (a truncated file: reading it would fault). */
PSKV__HIDDEN int pskv__persist_file_check(struct MDB_env *env, const char *dir);
/* Where this process mapped the file at data_path (one mapping of it at
 * offset 0), or NULL. */
PSKV__HIDDEN const void *pskv__persist_map_find(const char *data_path);
/* Compacted copy of env's last commit into dest_dir (backup.c). */
PSKV__HIDDEN int pskv__backup_env(struct MDB_env *env, const char *dest_dir);
/* Remove what a killed backup left in dest_dir (when no data.mdb is there
 * and no one holds its lock). */
PSKV__HIDDEN void pskv__backup_abandon(const char *dest_dir);
/* 0, or PSKV_ECORRUPT when dir holds a killed backup's remains and no data
 * file: an open must not take it for a new store. */
PSKV__HIDDEN int pskv__backup_unfinished(const char *dir);
PSKV__HIDDEN int pskv__persist_open(pskv_store *s);
PSKV__HIDDEN void pskv__persist_close(pskv_store *s);
/* A store handle holding only dir's environment, opened read-only beside
 * its owner (listing, compaction; dir is borrowed): 0, PSKV_ENOTFOUND (no
 * data file), PSKV_ECORRUPT, PSKV_EVERSION, PSKV_ENOMEM, an LMDB error. */
PSKV__HIDDEN int pskv__persist_reader(const char *dir, pskv_store **out);
PSKV__HIDDEN void pskv__persist_reader_close(pskv_store *s);
/* Every table the store holds, in name order, from its schema and count
 * records: *out (malloc'd) and *n. */
PSKV__HIDDEN int pskv__persist_tables(pskv_store *s, pskv_table_desc **out, size_t *n);
/* The persisted schema of table name: 0, PSKV_ENOTFOUND or an error. */
PSKV__HIDDEN int pskv__persist_table_schema(pskv_store *s, const char *name,
                                            pskv_table_options *o);
/* Open (or create, writing its schema) the table's rows database. */
PSKV__HIDDEN int pskv__persist_table_attach(pskv_store *s, pskv_table *t, bool create);
PSKV__HIDDEN int pskv__persist_put_table(pskv_store *s, struct MDB_txn *txn, const pskv_table *t);
/* The table's changed filter records (or their deletion, once invalid). */
PSKV__HIDDEN int pskv__persist_put_filters(pskv_store *s, struct MDB_txn *txn, pskv_table *t);
/* After a commit: the filters are as written. */
PSKV__HIDDEN void pskv__persist_filters_written(pskv_table *t);
/* The count record of table: rows in LMDB and the sum of their checks. */
PSKV__HIDDEN int pskv__persist_put_count(pskv_store *s, struct MDB_txn *txn, const char *table,
                                         uint64_t rows, uint64_t digest);
PSKV__HIDDEN int pskv__persist_put_checkpoint(pskv_store *s, struct MDB_txn *txn, uint64_t seq,
                                              uint64_t *time_ns);
/* After a checkpoint's commit: a small transaction so that the next one
 * may reuse the pages this one freed; *txnid = its snapshot (the same
 * rows). Failing it costs file space only. */
PSKV__HIDDEN int pskv__persist_tick(pskv_store *s, uint64_t *txnid);
PSKV__HIDDEN int pskv__persist_put_checkpoint_at(pskv_store *s, struct MDB_txn *txn,
                                                 uint64_t seq, uint64_t time_ns);
/* The table's version record (clean: written by the close's final
 * checkpoint: no version was handed out after it). */
PSKV__HIDDEN int pskv__persist_put_version(pskv_store *s, struct MDB_txn *txn, const char *table,
                                           uint64_t version, bool clean);
/* The record: 0 (*version, *clean), PSKV_ENOTFOUND, PSKV_ECORRUPT; read
 * before the transaction writes (records are bounds-checked in the map). */
PSKV__HIDDEN int pskv__persist_version_get(pskv_store *s, struct MDB_txn *txn, const char *table,
                                           uint64_t *version, bool *clean);
/* The caller's metadata record, written by checkpoint seq. */
PSKV__HIDDEN int pskv__persist_put_user(pskv_store *s, struct MDB_txn *txn, uint64_t seq,
                                        const void *meta, size_t len);
/* After a failed write transaction (ckpt_lock held): if LMDB marked its
 * environment fatal (a meta page write failed), reopen it from the file,
 * which holds the last commit. 0, or the reopen's error (env_lost set). */
PSKV__HIDDEN int pskv__persist_recover(pskv_store *s);
/* Grow the map ahead so that `more` bytes fit past what is used. */
PSKV__HIDDEN int pskv__persist_reserve_map(pskv_store *s, uint64_t more);
PSKV__HIDDEN uint64_t pskv__persist_file_bytes(pskv_store *s);
/* The data file's pages as mapped: values are read only inside them (a
 * span of UINT64_MAX from base NULL when the map could not be found). */
PSKV__HIDDEN void pskv__persist_file_span(pskv_store *s, const void **base, uint64_t *span);
/* cold.c: */
/* A cold row of key (*row valid until pskv__cold_end; checked): 1 found, 0 absent, or PSKV_ECORRUPT / an
 * LMDB error. Call pskv__cold_end before releasing the shard lock under
 * which the lookups ran (a later commit may delete what it saw). */
PSKV__HIDDEN int pskv__cold_find(pskv_table *t, pskv__cold *c, uint64_t key, const void **row);
/* Up to max keys of the table's LMDB rows in key order, from the first
 * (first) or after `after`; *n = how many (fewer than max at the end). */
PSKV__HIDDEN int pskv__cold_keys(pskv_table *t, uint64_t after, bool first, uint64_t *keys,
                                 uint32_t max, uint32_t *n, pskv__cold_walk *w);
/* After a whole walk: PSKV_ECORRUPT when it read one snapshot and that
 * snapshot's count record disagrees (rows lost from the B-tree), else 0. */
PSKV__HIDDEN int pskv__cold_walk_check(pskv_table *t, const pskv__cold_walk *w);
PSKV__HIDDEN void pskv__cold_end(pskv_table *t, pskv__cold *c);
/* The snapshot a cold lookup read (0 before the first lookup). */
PSKV__HIDDEN uint64_t pskv__cold_txnid(const pskv__cold *c);

/* ---------------------------------------------------------------- checkpoint.c */

/* meta: the caller's bytes to commit with the rows, or NULL (keep the
 * record as it is). */
typedef struct pskv__user_meta {
    const void *bytes;
    size_t len;
} pskv__user_meta;
/* The whole checkpoint on the calling thread; job (may be NULL) is told
 * when the instant has been taken and when the checkpoint has ended.
 * final: pskv_close's (no row call follows; the version records say so). */
PSKV__HIDDEN int pskv__checkpoint_run(pskv_store *s, const pskv__user_meta *meta, pskv_ckpt *job,
                                      bool final);
/* pskv_checkpoint_start, also for pskv_checkpoint (has_meta false: keep
 * the metadata record). Arguments already checked. */
PSKV__HIDDEN int pskv__checkpoint_start(pskv_store *s, const void *meta, size_t len,
                                        bool has_meta, pskv_ckpt **out);
PSKV__HIDDEN int pskv__checkpoint_wait(pskv_ckpt *job, uint64_t *seq);
PSKV__HIDDEN bool pskv__checkpoint_done(pskv_ckpt *job);
/* Tests: called at the checkpoint's instant, with every table's layout
 * lock held exclusive (no row call in flight). */
PSKV__HIDDEN extern void (*pskv__checkpoint_begin_hook)(void *arg);
PSKV__HIDDEN extern void *pskv__checkpoint_begin_hook_arg;

/* ---------------------------------------------------------------- tier.c: where a key lives */

/* The one answer to "where is this key's row" (caller holds the shard's
 * lock). A key is in at most one of the index and the spill map; BUSY
 * rows belong to whoever marked them (see tier.c). */
typedef enum pskv__place {
    PSKV__ABSENT,     /* nowhere (LMDB not asked, or it cannot hold the key) */
    PSKV__IN_DRAM,    /* w.e: resident and idle */
    PSKV__EVICTING,   /* w.e: resident, BUSY: being written to the spill file */
    PSKV__SPILLED,    /* w.sp: in the spill file, idle */
    PSKV__LOADING,    /* w.sp: in the spill file, BUSY: being read back or iterated */
    PSKV__MAYBE_COLD, /* only with ask_lmdb: LMDB may hold it, not read back, not erased */
} pskv__place;

typedef struct pskv__where {
    pskv__place place;
    pskv__entry *e;    /* IN_DRAM, EVICTING */
    pskv__keyval *sp; /* SPILLED, LOADING */
} pskv__where;

static inline pskv__where pskv__locate(pskv_table *t, pskv__shard *sh, uint64_t key,
                                       uint64_t hash, bool ask_lmdb)
{
    pskv__where w = {PSKV__ABSENT, pskv__shard_find(sh, key, hash), NULL};
    if (PSKV__LIKELY(w.e != NULL))
        w.place = PSKV__UNLIKELY(w.e->flags & PSKV__FLAG_BUSY) ? PSKV__EVICTING : PSKV__IN_DRAM;
    else if (sh->spilled.count > 0 && (w.sp = pskv__keymap_find(&sh->spilled, key, hash)))
        w.place = w.sp->value & PSKV__SPILL_BUSY ? PSKV__LOADING : PSKV__SPILLED;
    else if (ask_lmdb && t->durable &&
             atomic_load_explicit(&t->cold_rows, memory_order_relaxed) > 0 &&
             pskv__keyfilter_maybe(&t->persisted, key) && !pskv__dirty_tombstoned(sh, key, hash))
        w.place = PSKV__MAYBE_COLD; /* brand-new keys mostly stop at the filter */
    return w;
}

/* Read a MAYBE_COLD key's row from LMDB into DRAM as a clean row (shard
 * lock held; c's transaction must end before the lock is released). 1
 * with *row_out, 0 if LMDB has no such row, or an error (PSKV_ENOMEM,
 * PSKV_ECORRUPT, an LMDB error). */
PSKV__HIDDEN int pskv__tier_load_cold(pskv_table *t, pskv__shard *sh, pskv__cold *c, uint64_t key,
                                      uint64_t hash, float **row_out);

/* ---------------------------------------------------------------- iter.c */

/* The iterator's next rows as they sit in its copy (a full export encodes
 * from there): keys[n], rows stride bytes apart (weights, state, version).
 * Valid until the next call on it. 1, 2 when a piece went to the hook
 * (pskv__iter_direct) instead, 0 at the end, or an error. */
PSKV__HIDDEN int pskv__iter_batch(pskv_iter *it, const uint64_t **keys, const float **rows,
                                  size_t *stride, uint32_t *n);
/* Rows per piece of a shard for the next loads (0: the default, 1024; at
 * most 4096): a full export asks for whole chunks' rows less the rows it
 * carries, so that its chunks line up with the pieces. */
PSKV__HIDDEN void pskv__iter_piece(pskv_iter *it, uint32_t rows);
/* A hook for whole pieces in DRAM (fn NULL: none): when every row of the
 * next piece is in DRAM and there is a full piece of them, fn(arg, rows,
 * sorted, n) runs under the shard's lock with each row where it sits
 * (weights, state, version), to be read before it returns, and sorted[n]:
 * the keys in ascending order with their rows' positions in rows (sorted
 * before the lock was taken). It returns 1 if it used them:
 * pskv__iter_batch then returns 2 and the piece is done; anything else,
 * and the rows are copied as usual. fn must not call into the table. A
 * full export encodes chunks this way, without the copy. */
typedef int (*pskv__iter_direct_fn)(void *arg, const float *const *rows,
                                    const pskv__keyed *sorted, uint32_t n);
PSKV__HIDDEN void pskv__iter_direct(pskv_iter *it, pskv__iter_direct_fn fn, void *arg);

/* ---------------------------------------------------------------- chunk.c */

typedef struct pskv__chunk_spec {
    uint32_t kind, codec;
    bool lz4;
    uint32_t dim;
    uint32_t state_floats; /* carried per row (0: weights only) */
    int optimizer;
    uint64_t since, version;
    uint64_t table_id; /* rows chunks: pskv_fmt_table_id of the table; 0 */
    bool unsealed; /* the checksum is left to pskv__chunk_seal */
} pskv__chunk_spec;
/* n rows (keys ascending, may repeat; rows[i]: dim weights, then the state
 * when the spec carries it) and ntombs tombstones (ascending) as one chunk
 * into buf[cap]: 0 with *len, PSKV_ERANGE with *len = the size needed (or
 * a value out of the codec's range), PSKV_ENOMEM. */
PSKV__HIDDEN int pskv__chunk_write(const pskv__chunk_spec *sp, const uint64_t *keys,
                                   const float *const *rows, uint32_t n, const uint64_t *tombs,
                                   uint32_t ntombs, void *buf, size_t cap, size_t *len);
/* Write the checksum of a chunk written unsealed (len: its size). A full
 * export encodes rows under their shard's lock, and hashes after. */
PSKV__HIDDEN void pskv__chunk_seal(void *chunk, size_t len);
/* The most bytes such a chunk takes (lz4 off), and the most one row adds
 * (a ten-byte key and its values). */
PSKV__HIDDEN size_t pskv__chunk_bound(const pskv__chunk_spec *sp, uint32_t n, uint32_t ntombs);
PSKV__HIDDEN size_t pskv__chunk_row_bound(const pskv__chunk_spec *sp);
/* Check a chunk and read its header (pskv_chunk_info_get, without
 * clearing the error detail). */
PSKV__HIDDEN int pskv__chunk_open(const void *chunk, size_t len, pskv_chunk_info *info);
/* The table identity a chunk pskv__chunk_open accepted names: 0 for a
 * values chunk and for chunks of formats before tables were named. */
PSKV__HIDDEN uint64_t pskv__chunk_table_id(const void *chunk);
/* The rows of a chunk pskv__chunk_open accepted (opened: its info), where
 * they are: keys and tombstones decoded into the caller's arrays (rows and
 * tombstones of them); weights, dim floats per row back to back, and
 * state, state_floats per row back to back (NULL without), in the chunk
 * itself when its codec is fp32 and lz4 is off (any alignment), else in
 * buffers the view owns. Every value is checked finite. 0 with *v to give
 * to pskv__chunk_view_free, or an error (PSKV_ECORRUPT, PSKV_ENOMEM) with
 * nothing to free. */
typedef struct pskv__chunk_view {
    const uint8_t *weights, *state;
    void *unpacked, *decoded; /* owned */
} pskv__chunk_view;
PSKV__HIDDEN int pskv__chunk_view_open(const void *chunk, size_t len,
                                       const pskv_chunk_info *opened, uint64_t *keys,
                                       uint64_t *tombstones, pskv__chunk_view *v);
PSKV__HIDDEN void pskv__chunk_view_free(pskv__chunk_view *v);
/* pskv_chunk_decode of a chunk pskv__chunk_open accepted (opened: its
 * info): the same checks and errors, the chunk not checked again. */
PSKV__HIDDEN int pskv__chunk_decode_opened(const void *chunk, size_t len,
                                          const pskv_chunk_info *opened, uint64_t *keys,
                                          float *values, float *state, uint64_t *tombstones);

#endif
