/* pskv.seq and pskv.rollback beside a durable store's data file, and the directory helpers they use (seqfile.c).
 * SPDX-License-Identifier: BSD-2-Clause */
#ifndef PSKV_SEQFILE_H
#define PSKV_SEQFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common.h"

/* "<dir>/<name>" into buf[len]: 0 or PSKV_EINVAL (too long). */
PSKV__HIDDEN int pskv__dir_path(const char *dir, const char *name, char *buf, size_t len);
/* Does <dir>/name exist? */
PSKV__HIDDEN bool pskv__dir_has(const char *dir, const char *name);
/* A failed file write's errno as a code: PSKV_ENOSPC for a full disk, a
 * quota or a file-size limit, else PSKV_EIO. */
PSKV__HIDDEN int pskv__file_err(int err);
/* fsync the directory itself (a rename or unlink in it): 0 or PSKV_EIO. */
PSKV__HIDDEN int pskv__dir_sync(const char *dir);
/* <dir>/pskv.seq: 0 (*seq), PSKV_ENOTFOUND, PSKV_ECORRUPT or PSKV_EIO. */
PSKV__HIDDEN int pskv__seqfile_read(const char *dir, uint64_t *seq);
/* Replace it, whole or not at all, durably. */
PSKV__HIDDEN int pskv__seqfile_write(const char *dir, uint64_t seq);
PSKV__HIDDEN bool pskv__seqfile_exists(const char *dir);
/* Remove it and the temporary a killed write left, durably. */
PSKV__HIDDEN void pskv__seqfile_remove(const char *dir);
/* <dir>/pskv.rollback, the intent of a rollback from one seq to another:
 * read (0, PSKV_ENOTFOUND, PSKV_ECORRUPT, PSKV_EIO), write, remove. */
PSKV__HIDDEN int pskv__seqfile_rollback_read(const char *dir, uint64_t *from, uint64_t *to);
PSKV__HIDDEN int pskv__seqfile_rollback_write(const char *dir, uint64_t from, uint64_t to);
PSKV__HIDDEN void pskv__seqfile_rollback_remove(const char *dir);
/* At open, once the store's last committed seq (store_seq) is known:
 * finish a rollback stopped between its commit and pskv.seq, drop an
 * intent that never began, write a missing pskv.seq; PSKV_ECORRUPT when
 * the store is behind pskv.seq (LMDB opened an older snapshot). */
PSKV__HIDDEN int pskv__seqfile_reconcile(const char *dir, uint64_t store_seq);

#endif
