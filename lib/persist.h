/* A durable store in LMDB (persist.c): open over the environment of env.c
 * (format check, upgrade, undo databases, pskv.seq) and close, a reader
 * beside the owner, a table's rows database and schema, and recovery
 * after LMDB gave up on its environment.
 * SPDX-License-Identifier: BSD-2-Clause */
#ifndef PSKV_PERSIST_H
#define PSKV_PERSIST_H

#include <stdbool.h>

#include "pskv_internal.h"

PSKV__HIDDEN int pskv__persist_open(pskv_store *s);
PSKV__HIDDEN void pskv__persist_close(pskv_store *s);
/* A store handle holding only dir's environment, opened read-only beside
 * its owner (listing, compaction; dir is borrowed): 0, PSKV_ENOTFOUND (no
 * data file), PSKV_ECORRUPT, PSKV_EVERSION, PSKV_ENOMEM, an LMDB error. */
PSKV__HIDDEN int pskv__persist_reader(const char *dir, pskv_store **out);
PSKV__HIDDEN void pskv__persist_reader_close(pskv_store *s);
/* The persisted schema of table name: 0, PSKV_ENOTFOUND or an error. */
PSKV__HIDDEN int pskv__persist_table_schema(pskv_store *s, const char *name,
                                            pskv_table_options *o);
/* Open (or create, writing its schema) the table's rows database; the
 * version resume rule of changes.c decides where its versions go on. */
PSKV__HIDDEN int pskv__persist_table_attach(pskv_store *s, pskv_table *t, bool create);
/* A table's count record as of LMDB snapshot txnid (after an attach or a
 * commit; cold.c compares a whole walk of that snapshot with it). */
PSKV__HIDDEN void pskv__persist_count_seen(pskv_table *t, uint64_t rows, uint64_t digest,
                                           uint64_t txnid);
/* After a commit that moved the store to checkpoint seq (a checkpoint, or
 * a rollback step; ckpt_lock held or the store not yet shared): the
 * store's seq and time, published, then pskv.seq. 0, or pskv.seq's write
 * error (the commit stands). */
PSKV__HIDDEN int pskv__persist_seq_committed(pskv_store *s, uint64_t seq, uint64_t time_ns);
/* After a failed write transaction (ckpt_lock held): if LMDB marked its
 * environment fatal (a meta page write failed), reopen it from the file,
 * which holds the last commit, with the store's database handles (env.c's
 * pskv__env_restart). 0, or the error (lmdb.lost set). */
PSKV__HIDDEN int pskv__persist_recover(pskv_store *s);

#endif
