/* The core private header of lib/: the structs every module of the row
 * path shares (index entry, shard, table, store), the shard's functions,
 * and pskv__locate, the one answer to "where is this key's row". Each
 * module's functions are in its own header (tier.h, dirty.h, changes.h,
 * ...), included by the files that call them. Never installed.
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

#include "admit.h"
#include "common.h"
#include "env.h"
#include "gate.h"
#include "handles.h"
#include "hash.h"
#include "io.h"
#include "keyfilter.h"
#include "keylist.h"
#include "keymap.h"
#include "optimizer.h"
#include "ring.h"
#include "spill.h"

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
/* The row waits in the admission window (admit.h): CLOCK passes it by. */
#define PSKV__FLAG_WINDOW 32u
static inline uint32_t pskv__flag_dirty(uint32_t parity) { return PSKV__FLAG_DIRTY0 << parity; }

/* ---------------------------------------------------------------- changes.c */


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

/* Slab k holds 1 << (base_shift + k) rows; slot numbers are 32-bit. */
#define PSKV__SLABS_MAX 33u

typedef struct pskv__shard {
    /* Exclusive (pskv__shard_lock: the mutex, then the gate closed) for
     * anything that changes the shard or its rows; shared (the gate
     * entered, gate.h) for the first pass of pull and get (hits.c), which
     * only reads rows and sets reference bits atomically. */
    pthread_mutex_t lock;
    pskv__gate gate;
    pskv__entry *index;   /* open addressing, linear probing */
    uint32_t index_mask;  /* capacity - 1; capacity is a power of two */
    uint32_t rows;        /* rows in the index: resident, or being evicted (BUSY) */
    uint32_t reserved;    /* rows promised to callers by pskv__shard_reserve */
    pskv__keymap spilled; /* rows in the spill file (directory stores) */
    /* Row slots live in slabs of doubling size: slab k holds
     * 1 << (base_shift + k) rows, so a slot's slab is found with one count
     * of leading zeros and the slab table stays in L1 (a row lookup pays
     * no dependent miss on it). Slabs never move: a claimed row's bytes can
     * be written out after the lock is released (tier.c). Slabs of 2 MiB
     * and more are advised as huge pages; untouched parts of the newest
     * slab are never faulted in. */
    uint8_t *slabs[PSKV__SLABS_MAX];
    uint32_t nslabs;
    uint32_t base_shift;  /* slab 0 holds 1 << base_shift rows */
    uint32_t slots_high;  /* slots ever handed out (<= pskv__shard_capacity) */
    uint32_t free_head;   /* erased slots, linked through their first bytes */
    uint32_t free_count;
    uint32_t stored_bytes;
    uint64_t hash_seed;   /* the table's key hash seed, to rehash on growth */
    uint32_t clock_hand;  /* CLOCK position in the index */
    uint64_t created, erased, evicted;
    pskv__ckpt_state ck;  /* durable tables: owned by dirty.c */
    pskv__changes log;    /* keys changed, in version order (changes.c) */
    pskv__readbacks readback; /* keys read back from LMDB during iterations (iter.c) */
    pskv__admit admit;    /* under a budget: sketch and window (admit.h) */
    /* update=sync: keys whose accumulator went from empty to holding a
     * gradient, each once per step (step.c); may name erased keys. */
    pskv__keylist pending;
} __attribute__((aligned(64))) pskv__shard;

/* slab_bytes: the first slab's size (0: 64 KiB, the most); a shard's first
 * row costs one slab. admit: keep an admission sketch and window (tables
 * under a DRAM budget, admit.h). */
PSKV__HIDDEN int pskv__shard_init(pskv__shard *sh, uint32_t stored_bytes, uint32_t slab_bytes,
                                  uint64_t hash_seed, bool admit);
PSKV__HIDDEN void pskv__shard_free(pskv__shard *sh);

/* Slots the shard's slabs hold. */
static inline uint64_t pskv__shard_capacity(const pskv__shard *sh)
{
    return ((1ull << sh->nslabs) - 1) << sh->base_shift;
}

/* The first slot of slab k is base * (2^k - 1): slot s lies in slab
 * floor(log2(s / base + 1)). */
static inline float *pskv__shard_row(const pskv__shard *sh, uint32_t slot)
{
    uint32_t k = 31u - (uint32_t)__builtin_clz((slot >> sh->base_shift) + 1u);
    size_t first = (((size_t)1 << k) - 1) << sh->base_shift;
    return (float *)(void *)(sh->slabs[k] + ((size_t)slot - first) * sh->stored_bytes);
}

static inline uint32_t pskv__index_pos(uint64_t hash, uint32_t mask)
{
    /* The ring consumes the high bits of the hash to pick the shard; the
     * low bits stay uniform inside a shard. */
    return (uint32_t)hash & mask;
}

/* Software prefetch for loops over many keys of a shard: a key's index
 * slot some keys ahead (a row's bytes: pskv__prefetch_row, common.h). */
static inline void pskv__prefetch_index(const pskv__shard *sh, uint64_t hash)
{
    __builtin_prefetch(&sh->index[pskv__index_pos(hash, sh->index_mask)], 0, 3);
}

/* The shard's lock: the mutex, then the gate closed (exclusive), or the
 * gate entered (shared, hits.c only). A thread holds at most one shard's
 * lock exclusively, and none while it waits for another shard's; the only
 * holder of several is hits.c, which takes them shared and never waits
 * for one, so a writer waits for one round of hits.c at most. */
static inline void pskv__shard_lock(pskv__shard *sh)
{
    pthread_mutex_lock(&sh->lock);
    pskv__gate_close(&sh->gate);
}
/* Gives up only when another writer holds the mutex; once it has the
 * mutex it waits for the readers inside (one round of hits.c). */
static inline bool pskv__shard_trylock(pskv__shard *sh)
{
    if (pthread_mutex_trylock(&sh->lock) != 0)
        return false;
    pskv__gate_close(&sh->gate);
    return true;
}
static inline void pskv__shard_unlock(pskv__shard *sh)
{
    pskv__gate_open(&sh->gate);
    pthread_mutex_unlock(&sh->lock);
}
/* Shared, if no writer holds the shard or waits for it; never waits. */
static inline bool pskv__shard_trylock_shared(pskv__shard *sh)
{
    return pskv__gate_enter(&sh->gate);
}
static inline void pskv__shard_unlock_shared(pskv__shard *sh)
{
    pskv__gate_leave(&sh->gate);
}

/* All below: caller holds sh->lock exclusively. */
/* Make room so that k more rows can be created without allocating. */
PSKV__HIDDEN int pskv__shard_reserve(pskv__shard *sh, uint32_t k);
PSKV__HIDDEN void pskv__shard_unreserve(pskv__shard *sh, uint32_t k);
/* Index entry of key, or NULL (also under the lock shared: hits.c). */
static inline pskv__entry *pskv__shard_find(pskv__shard *sh, uint64_t key, uint64_t hash)
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
 * until the index changes): a row that was in DRAM before (read back,
 * moved by a reshard), with a reference bit. */
PSKV__HIDDEN pskv__entry *pskv__shard_insert_entry(pskv__shard *sh, uint64_t key, uint64_t hash);
/* The same for a row created now: under a budget it enters the admission
 * window (admit.h), without a reference bit. */
PSKV__HIDDEN pskv__entry *pskv__shard_insert_new(pskv__shard *sh, uint64_t key, uint64_t hash);


/* dirty.c: erased since LMDB last saw it, not to be read back from there
 * (pskv__locate asks; the rest of dirty.c is in dirty.h). */
PSKV__HIDDEN bool pskv__dirty_tombstoned(pskv__shard *sh, uint64_t key, uint64_t hash);

/* ---------------------------------------------------------------- table.c */

struct pskv_table {
    pskv_store *store;
    char name[PSKV_NAME_MAX + 1];
    pskv_table_options opts;
    pskv__optimizer opt;
    uint32_t dim;
    uint32_t state_floats;
    uint32_t row_floats;
    uint32_t payload_bytes; /* weights + state: the public row_bytes */
    uint32_t extra_bytes;   /* between state and version: update=sync's accumulator
                               (pskv_fmt_row_extra_bytes), else 0 */
    uint32_t version_at;    /* payload + extra: where the version stamp is */
    uint32_t stored_bytes;  /* payload + extra + version stamp: a row as DRAM, the
                               spill file and LMDB hold it */
    uint32_t budget_bytes;  /* what the budget counts per resident row: stored_bytes,
                               plus the admission sketch's share under a budget */

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

    /* update=sync (step.c): steps run one at a time; pending_unknown: the
     * table was reopened with rows in LMDB, whose accumulators the shards'
     * pending lists do not name until a step reads them. */
    bool sync;
    pthread_mutex_t step_lock;
    bool pending_unknown;
    atomic_uint_fast64_t n_stepped;
    /* staleness=S (>= 0; -1: none): each row's newest step applied, a u64
     * at step_at (pskv_push_at, pipeline.c) */
    int32_t staleness;
    uint32_t step_at;
    atomic_uint_fast64_t n_stale_dropped;

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

static inline void pskv__count_add(atomic_uint_fast64_t *c, uint64_t v)
{
    atomic_fetch_add_explicit(c, v, memory_order_relaxed);
}

/* The shard of key under ring (the table's, or a reshard's new one). */
static inline uint32_t pskv__table_route(const pskv_table *t, const pskv_ring *ring, uint64_t key)
{
    return pskv__ring_route_hash(ring, pskv__key_hash(key, t->opts.seed));
}

/* ---------------------------------------------------------------- store.c */

typedef struct pskv__prefetch_job pskv__prefetch_job; /* prefetch.c */

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
    pskv__env lmdb;             /* the LMDB environment (env.c); lmdb.mdb NULL: none */
    unsigned records_dbi;
    unsigned undo_dbi[PSKV_UNDO_KEEP_MAX]; /* the last checkpoints' pre-images, a
                                              generation per slot (undo.c) */
    uint32_t undo_keep;         /* generations kept: 0 with undo=off */
    int lock_fd;
    pthread_mutex_t ckpt_lock;  /* one checkpoint at a time */
    uint64_t ckpt_seq, ckpt_unix_ns; /* last committed checkpoint (ckpt_lock) */
    uint32_t format; /* the store's format record (PSKV_FMT_VERSION_BASE or later) */
    atomic_uint_fast64_t ckpt_seq_pub, ckpt_last_rows, ckpt_last_ns, n_ckpt_failed;
    pskv_table **attached; /* tables with LMDB handles (ckpt_lock) */
    uint32_t nattached, attached_cap;

    /* Open iterators and exports, marked closed by pskv_close (handles.c) */
    pskv__handles handles;
};

/* Rows new to DRAM pass the admission (admit.h): memory-only stores under
 * a budget (caches). The spill tier keeps CLOCK alone: see docs/DESIGN.md. */
static inline bool pskv__store_admits(const pskv_store *s)
{
    return s->opts.memory_budget > 0 && s->dir == NULL;
}

/* Tests: close as a crash leaves a store, without the final checkpoint. */
PSKV__HIDDEN void pskv__close_abandon(pskv_store *s);

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

/* Claiming a row for a move (shard lock held, layout lock shared until
 * the claim is released; tier.c): the claimer owns the row until it
 * clears the bit. A resident row being written out, and a spilled row
 * being read back or read by an iterator or a checkpoint (its slot). */
static inline void pskv__claim_resident(pskv__entry *e)
{
    PSKV__ASSERT(!(e->flags & PSKV__FLAG_BUSY)); /* one owner at a time */
    e->flags |= PSKV__FLAG_BUSY;
}
static inline uint32_t pskv__claim_spilled(pskv__keyval *sp)
{
    PSKV__ASSERT(!(sp->value & PSKV__SPILL_BUSY)); /* one owner at a time */
    sp->value |= PSKV__SPILL_BUSY;
    return sp->value & PSKV__SPILL_SLOT_MAX;
}

#endif
