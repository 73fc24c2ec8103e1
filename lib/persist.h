/* A durable store's LMDB environment and records (persist.c).
 * SPDX-License-Identifier: BSD-2-Clause */
#ifndef PSKV_PERSIST_H
#define PSKV_PERSIST_H

#include "pskv_internal.h"

/* Internal result of LMDB writers: the map is full; grow it and retry. */
#define PSKV__MAP_FULL 1


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

#endif
