/* The row pipeline of the batch calls (pipeline.c): what a call asks of
 * each shard it visits, and the visit itself.
 * SPDX-License-Identifier: BSD-2-Clause */
#ifndef PSKV_PIPELINE_H
#define PSKV_PIPELINE_H

#include <stdbool.h>
#include <stdint.h>

#include "plan.h"
#include "pskv_internal.h"

/* PSKV__ROW_PUT_ROWS writes weights, and state when given, from bytes a chunk
 * holds (an apply in REPLACE mode); PSKV__ROW_ADD adds values to the weights (an
 * apply in ADD mode); PSKV__ROW_STEP applies an update=sync row's accumulator
 * (pskv_step; creates no row). PSKV__ROW_PUSH on an update=sync table adds the
 * gradient to the accumulator instead of stepping. */
enum pskv__row_op {
    PSKV__ROW_READ,
    PSKV__ROW_PUSH,
    PSKV__ROW_PUT,
    PSKV__ROW_PUT_ROWS,
    PSKV__ROW_ADD,
    PSKV__ROW_STEP
};

/* Gradients of repeated keys, summed in order of appearance into a compact
 * buffer that holds rows only for keys that repeat; the other keys use the
 * caller's gradients in place. summed_row[i] names the buffer row of kept
 * position i, or UINT32_MAX. */
typedef struct pskv__dup_sums {
    uint32_t *summed_row; /* [n] */
    float *rows;
} pskv__dup_sums;

/* One batch call's work and tallies, shared by the visits of its shards. */
typedef struct pskv__row_ctx {
    enum pskv__row_op op;
    bool create;       /* PSKV__ROW_READ: pull (true) or get */
    bool whole;        /* PSKV__ROW_READ: weights and state (row_floats per row) */
    bool count_reads;  /* PSKV__ROW_READ: count the reads in the admission sketch (a
                          pull's or get's first pass; not retries, iterations, exports) */
    float *out;        /* PSKV__ROW_READ */
    uint8_t *found;    /* PSKV__ROW_READ, optional */
    const float *src;  /* PSKV__ROW_PUSH: gradients; PSKV__ROW_PUT, PSKV__ROW_ADD:
                          values; by position */
    const uint8_t *wsrc, *ssrc; /* PSKV__ROW_PUT_ROWS: weights, state (or NULL), any alignment */
    const pskv__dup_sums *dups; /* PSKV__ROW_PUSH: sums of repeated keys, or NULL */
    uint64_t misses;
    uint64_t created;
    uint64_t faulted;      /* cold rows read from LMDB */
    uint32_t not_resident; /* keys found spilled or in motion: load and retry */
    const uint32_t *cow_reserved; /* writers: pre-images reserved per shard */
    float *save;       /* PSKV__ROW_PUSH: one row, the row before its step */
    uint64_t nonfinite; /* PSKV__ROW_PUSH: rows whose step would not be finite */
    uint64_t stepped;   /* PSKV__ROW_STEP: accumulators applied */
    bool at_step;       /* PSKV__ROW_PUSH from pskv_push_at: gradients of training step `step` */
    uint64_t step;
    uint64_t stale;     /* PSKV__ROW_PUSH at a step: rows dropped as too old (staleness=S) */
    uint32_t pending_added; /* update=sync PSKV__ROW_PUSH: keys put on this shard's pending list */
    /* The shard visit under way: its shard, the plan's keys, its version. */
    pskv__shard *sh;
    const uint64_t *keys;
    uint64_t version;
} pskv__row_ctx;

/* Row slots a writing batch reserves in a shard of k keys: room for each
 * to be new, or for a step (which creates none) one, which only keeps the
 * evictors away from the shard until the batch is done. */
static inline uint32_t pskv__rows_reserved(enum pskv__row_op op, uint32_t k)
{
    return op == PSKV__ROW_STEP ? 1 : k;
}

/* Called with the shard's lock held for the plan's keys of shard s. */
typedef int (*pskv__shard_visit_fn)(pskv_table *t, const pskv__plan *p, uint32_t s, void *ctx);

/* Visit every shard that has keys in the plan, each under its lock. A
 * shard whose lock is busy is skipped and visited after the others, so
 * concurrent batch calls overlap instead of queueing on one shard after
 * another. Stops at the first error of fn. Layout lock held. */
PSKV__HIDDEN int pskv__visit_shards(pskv_table *t, const pskv__plan *p, pskv__shard_visit_fn fn,
                                    void *ctx);

/* A pskv__shard_visit_fn: the keys of shard s through the pipeline, ctx a
 * pskv__row_ctx. Readers may fail with PSKV_ENOMEM (rows created so far
 * stay); writers cannot fail (their room is reserved). */
PSKV__HIDDEN int pskv__shard_rows(pskv_table *t, const pskv__plan *p, uint32_t s, void *ctx);

#endif
