/* The records of a durable store's meta database (records.c): each one
 * head | body | XXH3 (format.h), put in one piece, read checked and
 * bounded by the mapped file (read transactions only; a body is valid
 * until its transaction ends).
 * SPDX-License-Identifier: BSD-2-Clause */
#ifndef PSKV_RECORDS_H
#define PSKV_RECORDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pskv_internal.h"

struct MDB_txn;

PSKV__HIDDEN int pskv__record_put(struct MDB_txn *txn, unsigned dbi, const char *name,
                                  const void *body, size_t len);
PSKV__HIDDEN int pskv__record_get(pskv_store *s, struct MDB_txn *txn, const char *name,
                                  const uint8_t **body, size_t *len);
/* "<prefix><table>": a table's record or database name (PSKV_FMT_*_PREFIX)
 * into buf[len] (PSKV__RECORD_NAME_MAX is enough). */
#define PSKV__RECORD_NAME_MAX (PSKV_NAME_MAX + 16)
PSKV__HIDDEN int pskv__record_name(const char *prefix, const char *table, char *buf, size_t len);

/* The checkpoint record: the last committed seq and its wall-clock time
 * (now, into *time_ns; or the given one). */
PSKV__HIDDEN int pskv__record_put_checkpoint(pskv_store *s, struct MDB_txn *txn, uint64_t seq,
                                             uint64_t *time_ns);
PSKV__HIDDEN int pskv__record_put_checkpoint_at(pskv_store *s, struct MDB_txn *txn,
                                                uint64_t seq, uint64_t time_ns);
/* After a checkpoint's commit: a small transaction so that the next one
 * may reuse the pages this one freed; *txnid = its snapshot (the same
 * rows). Failing it costs file space only. */
PSKV__HIDDEN int pskv__record_tick(pskv_store *s, uint64_t *txnid);

/* A table's schema record (its canonical config string), and decoding one
 * (PSKV_ECORRUPT when it does not parse). */
PSKV__HIDDEN int pskv__record_put_table(pskv_store *s, struct MDB_txn *txn, const pskv_table *t);
PSKV__HIDDEN int pskv__record_schema_decode(const uint8_t *body, size_t len,
                                            pskv_table_options *o);
/* The count record of table: rows in LMDB and the sum of their checks
 * (get: PSKV_ECORRUPT when it is missing or damaged). */
PSKV__HIDDEN int pskv__record_put_count(pskv_store *s, struct MDB_txn *txn, const char *table,
                                        uint64_t rows, uint64_t digest);
PSKV__HIDDEN int pskv__record_count_get(pskv_store *s, struct MDB_txn *txn, const char *table,
                                        uint64_t *rows, uint64_t *digest);
/* The table's version record (clean: written by the close's final
 * checkpoint: no version was handed out after it). Get: 0 (*version,
 * *clean), PSKV_ENOTFOUND, PSKV_ECORRUPT; read before the transaction
 * writes. */
PSKV__HIDDEN int pskv__record_put_version(pskv_store *s, struct MDB_txn *txn, const char *table,
                                          uint64_t version, bool clean);
PSKV__HIDDEN int pskv__record_version_get(pskv_store *s, struct MDB_txn *txn, const char *table,
                                          uint64_t *version, bool *clean);
/* The table's key filter records: the changed ones put (or all deleted,
 * once the filter is invalid); after the commit, marked as written;
 * loaded at attach (rows: LMDB's count, to size a filter to rebuild). */
PSKV__HIDDEN int pskv__record_put_filters(pskv_store *s, struct MDB_txn *txn, pskv_table *t);
PSKV__HIDDEN void pskv__record_filters_written(pskv_table *t);
PSKV__HIDDEN int pskv__record_filters_load(pskv_store *s, struct MDB_txn *txn, pskv_table *t,
                                           uint64_t rows);
/* The caller's metadata record, written by checkpoint seq. */
PSKV__HIDDEN int pskv__record_put_user(pskv_store *s, struct MDB_txn *txn, uint64_t seq,
                                       const void *meta, size_t len);

#endif
