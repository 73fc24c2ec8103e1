/* A checkpoint's capture (capture.c): each table's keys of the checkpoint,
 * sorted, in batches of at most PSKV__BATCH_KEYS_MAX keys or a few MB of
 * rows; each key's bytes as of the instant (dirty.c's pskv__dirty_capture,
 * the spill file through tier.c), checked; a helper thread capturing one
 * batch ahead of the writer (checkpoint.c), which puts them into LMDB.
 * SPDX-License-Identifier: BSD-2-Clause */
#ifndef PSKV_CAPTURE_H
#define PSKV_CAPTURE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "format.h"
#include "pskv_internal.h"

#define PSKV__BATCH_KEYS_MAX 4096u

/* A table's count record: rows in LMDB and the sum of their checks. */
typedef struct pskv__row_count {
    uint64_t rows, digest;
} pskv__row_count;

typedef struct pskv__ckpt_table {
    pskv_table *t;
    uint64_t *keys; /* sorted, unique */
    size_t n;
    pskv__row_count count; /* its count record once committed */
    uint64_t version; /* the table's version at the instant */
    bool final;       /* pskv_close's checkpoint: no version follows it */
} pskv__ckpt_table;

/* A batch of a table's sorted keys, grouped by shard (at[start[s] ..
 * start[s+1]) are the positions of shard s's keys), and what capture
 * found for each. */
typedef struct pskv__batch {
    const uint64_t *keys;
    uint32_t n;
    uint64_t *hash;
    uint32_t *shard_of, *at, *start, *fill;
    /* capture results */
    uint8_t *vals;     /* [n][stored_bytes + 8] */
    uint8_t *present;  /* [n] 1 = put, 0 = delete */
    uint8_t *waiting;  /* [n] a loader owns the row: look again */
    uint32_t *spill_pos, *spill_slot;
    uint8_t *spill_owned; /* BUSY set by us: clear after the read */
    uint32_t nspill;
} pskv__batch;

/* The batch's i-th captured value: stored_bytes bytes of the row, then its
 * XXH3 check (PSKV_FMT_CHECK_BYTES). */
static inline uint8_t *pskv__batch_val(const pskv_table *t, const pskv__batch *c, uint32_t i)
{
    return c->vals + (size_t)i * (t->stored_bytes + PSKV_FMT_CHECK_BYTES);
}
/* Room for keys_max keys over up to shards_max shards, rows up to
 * stored_bytes: 0 or PSKV_ENOMEM (nothing to free). */
PSKV__HIDDEN int pskv__batch_alloc(pskv__batch *c, uint32_t keys_max, uint32_t shards_max,
                                   uint32_t stored_bytes);
PSKV__HIDDEN void pskv__batch_free(pskv__batch *c);
/* Route n sorted keys (layout lock held) and group them by shard. */
PSKV__HIDDEN void pskv__batch_group(pskv_table *t, pskv__batch *c, const uint64_t *keys,
                                    uint32_t n);
/* Keys per batch of table t, and the batches of a table's keys. */
PSKV__HIDDEN uint32_t pskv__batch_keys(const pskv_table *t);
PSKV__HIDDEN size_t pskv__batch_count(const pskv__ckpt_table *ct);

/* Capture runs on a helper thread one batch ahead of the LMDB writes, so
 * that the writer thread (the checkpoint's bottleneck) only puts. */
typedef struct pskv__batches {
    pskv__ckpt_table *ct;
    uint32_t nt;
    pskv__batch *c; /* [2]: batch k of the checkpoint goes to c[k & 1] */
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cv;
    bool full[2];
    bool stop;      /* the writer gave up: capture no more */
    int capture_rc; /* first capture error; no batch after it */
} pskv__batches;

/* Start the capture thread over the tables' batches, into c[2] by turns:
 * 0 or PSKV_ENOMEM. The writer takes batch k with pskv__batches_wait (0,
 * or the capture's error), gives it back with pskv__batches_done, and ends
 * with pskv__batches_stop (after an error too: the thread captures no
 * more, and is joined). */
PSKV__HIDDEN int pskv__batches_start(pskv__batches *p, pskv__ckpt_table *ct, uint32_t nt,
                                     pskv__batch c[2]);
PSKV__HIDDEN int pskv__batches_wait(pskv__batches *p, uint64_t k);
PSKV__HIDDEN void pskv__batches_done(pskv__batches *p, uint64_t k);
PSKV__HIDDEN void pskv__batches_stop(pskv__batches *p);

#endif
