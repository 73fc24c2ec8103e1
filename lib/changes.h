/* Row versions and the change logs of shards (changes.c): the version stamp
 * every row carries, the one rule for taking a version, the logs exports read.
 * SPDX-License-Identifier: BSD-2-Clause */
#ifndef PSKV_CHANGES_H
#define PSKV_CHANGES_H

#include "pskv_internal.h"

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

/* All below, changes.c: caller holds the shard's lock. */
/* Key changed (or vanished) at version; the log keeps at most max entries.
 * The append is inline (a push logs every row it steps); a full log goes
 * to changes.c to grow, compact or drop its oldest half. */
static inline void pskv__changes_append(pskv__changes *c, uint64_t key, uint64_t version)
{
    PSKV__ASSERT(c->len < c->cap);
    PSKV__ASSERT(c->len == 0 || c->e[c->len - 1].version <= version); /* version order */
    c->e[c->len++] = (pskv__change){key, version};
}
PSKV__HIDDEN void pskv__changes_add_full(pskv__shard *sh, uint64_t key, uint64_t version,
                                         uint32_t max);
static inline void pskv__changes_add(pskv__shard *sh, uint64_t key, uint64_t version, uint32_t max)
{
    if (PSKV__LIKELY(sh->log.len < sh->log.cap))
        pskv__changes_append(&sh->log, key, version);
    else
        pskv__changes_add_full(sh, key, version, max);
}
/* Keys changed after since (may repeat; malloc'd *keys, or NULL when
 * none): 0, PSKV_ESTALE (since is below the log's floor), PSKV_ENOMEM. */
PSKV__HIDDEN int pskv__changes_collect(const pskv__changes *c, uint64_t since, uint64_t **keys,
                                       uint32_t *n);
PSKV__HIDDEN void pskv__changes_free(pskv__changes *c);
PSKV__HIDDEN uint64_t pskv__changes_bytes(const pskv__changes *c);
/* ---------------------------------------------------------------- versions and cursors */

struct MDB_txn;
/* The table's versions go on from version (after its last one handed out;
 * exports need cursors at or above it). */
PSKV__HIDDEN void pskv__changes_start(pskv_table *t, uint64_t version);
/* What an export from cursor since gets (layout lock shared held): go,
 * empty (nothing changed after since), or stale: since is below what the
 * logs still hold (DROPPED), or above the table's version (FOREIGN: a
 * cursor of another table or of an earlier life of this one). *version:
 * the table's version now (every change at or below it is in the logs the
 * caller visits next); *floor: the oldest cursor served. */
typedef enum pskv__cursor {
    PSKV__CURSOR_GO,
    PSKV__CURSOR_EMPTY,
    PSKV__CURSOR_DROPPED,
    PSKV__CURSOR_FOREIGN,
} pskv__cursor;
PSKV__HIDDEN pskv__cursor pskv__changes_cursor(pskv_table *t, uint64_t since, uint64_t *version,
                                              uint64_t *floor);
/* The resume rule, in the attach transaction of a durable table: where its
 * versions go on (*version; created: its base), with the version record
 * rewritten as unclean. 0 or an error. */
PSKV__HIDDEN int pskv__changes_resume(pskv_store *s, struct MDB_txn *txn, pskv_table *t,
                                      bool create, uint64_t *version);
/* In a rollback's transaction: table's version record as the rollback
 * leaves it (version, clean: as read before the transaction wrote). */
PSKV__HIDDEN int pskv__changes_rolled_back(pskv_store *s, struct MDB_txn *txn, const char *table,
                                           uint64_t version, bool clean);

/* A reshard (layout lock exclusive) moves the logs into the new shards:
 * 0 or PSKV_ENOMEM (the new shards' logs are freed with them). */
PSKV__HIDDEN int pskv__changes_move(const pskv_table *t, const pskv_ring *ring, pskv__shard *to,
                                    uint32_t nto);


static inline uint64_t pskv__row_version(const pskv_table *t, const void *row)
{
    uint64_t v;
    memcpy(&v, (const uint8_t *)row + t->version_at, sizeof v);
    return v;
}

static inline void pskv__row_stamp(const pskv_table *t, void *row, uint64_t v)
{
    memcpy((uint8_t *)row + t->version_at, &v, sizeof v);
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

#endif
