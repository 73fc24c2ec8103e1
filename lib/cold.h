/* A durable table's rows read from LMDB (cold.c).
 * SPDX-License-Identifier: BSD-2-Clause */
#ifndef PSKV_COLD_H
#define PSKV_COLD_H

#include <stdbool.h>
#include <stdint.h>

#include "pskv_internal.h"

struct MDB_txn;
typedef struct pskv__cold {
    struct MDB_txn *txn; /* begun on first use; holds the store's lmdb.lock shared */
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

#endif
