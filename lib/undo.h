/* Undo generations of a durable store's checkpoints (undo.c): written in
 * each checkpoint's transaction, applied by an open at an earlier seq.
 * SPDX-License-Identifier: BSD-2-Clause */
#ifndef PSKV_UNDO_H
#define PSKV_UNDO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common.h"
#include "pskv.h"

struct MDB_txn;
struct MDB_cursor;
/* A table as the undo header keeps it: its count record before. */
typedef struct pskv__undo_table {
    const char *name;
    uint64_t rows, digest;
} pskv__undo_table;
/* A generation being written: its slot and cursor, and the "user" record
 * before. */
typedef struct pskv__undo {
    uint32_t slot;
    struct MDB_cursor *cur;
    void *user;
    size_t user_len;
    uint32_t user_state; /* PSKV_FMT_UNDO_USER_* */
    bool off;            /* the store keeps no undo (undo=off) */
} pskv__undo;
/* First thing in the checkpoint's transaction: keep the "user" record
 * (writes_user: the checkpoint writes one), empty the slots of the
 * generations no longer kept (all with undo=off) and pick the new one's.
 * Free *u with pskv__undo_free whatever the result. */
PSKV__HIDDEN int pskv__undo_begin(pskv_store *s, struct MDB_txn *txn, bool writes_user,
                                  pskv__undo *u);
PSKV__HIDDEN void pskv__undo_free(pskv__undo *u);
/* Row key of table (its index in the list pskv__undo_end gets) had the
 * stored value old[len] before (len 0: it did not exist). In order of
 * (table, key). */
PSKV__HIDDEN int pskv__undo_row(pskv__undo *u, uint32_t table, uint64_t key, const void *old,
                                size_t len);
/* The header, after every row. */
PSKV__HIDDEN int pskv__undo_end(pskv_store *s, pskv__undo *u, const pskv__undo_table *tables,
                                uint32_t nt);
/* At open, no table attached: roll the store back from its checkpoint to
 * the earlier checkpoint `to`, one generation at a time, newest first
 * (PSKV_ENOTFOUND, nothing changed, when the kept generations do not reach
 * it). *kept: how many checkpoints back the store can go (also on error). */
PSKV__HIDDEN int pskv__undo_rollback(pskv_store *s, uint64_t to, uint32_t *kept);

#endif
