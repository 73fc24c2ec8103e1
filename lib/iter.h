/* Iteration internals a full export uses (iter.c).
 * SPDX-License-Identifier: BSD-2-Clause */
#ifndef PSKV_ITER_H
#define PSKV_ITER_H

#include "pskv_internal.h"
#include "sort.h"

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
/* Whether the shards' pieces are done and batches now come from the walk
 * of rows only LMDB holds (in key order, across shards). */
PSKV__HIDDEN bool pskv__iter_cold(const pskv_iter *it);
/* The most rows of a piece (a writer waits for one piece at most). */
#define PSKV__ITER_PIECE_MAX 4096u
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

#endif
