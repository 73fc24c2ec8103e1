/* Whole-row calls of rows.c that apply uses.
 * SPDX-License-Identifier: BSD-2-Clause */
#ifndef PSKV_ROWS_H
#define PSKV_ROWS_H

#include "plan.h"
#include "pskv_internal.h"

/* Read whole rows (weights then state, row_floats each) as pskv_get
 * reads weights (found[i] 0: absent, zeros). */
PSKV__HIDDEN int pskv__get_rows(pskv_table *t, const uint64_t *keys, size_t n, float *rows,
                                uint8_t *found);
/* Write rows as pskv_put writes weights (all or nothing, repeated keys the
 * last wins) from bytes at any alignment, already checked finite (a chunk
 * view): weights dim floats per row back to back, and state, when not
 * NULL, state_floats per row back to back. */
PSKV__HIDDEN int pskv__put_rows(pskv_table *t, const uint64_t *keys, size_t n,
                                const void *weights, const void *state);
/* Add values[n][dim] to the rows' weights (created like pull first;
 * repeated keys summed); PSKV_ERANGE for rows whose sum is not finite
 * (they stay as they were; the others are applied), as pskv_push. */
PSKV__HIDDEN int pskv__add(pskv_table *t, const uint64_t *keys, size_t n, const float *values);
/* update=sync: apply the accumulators of the rows of keys (distinct; rows
 * absent or with nothing accumulated are left alone) with the optimizer
 * and clear them. PSKV_ERANGE when some steps were not finite (those rows
 * kept their values, their gradients dropped), else as pskv_push. */
PSKV__HIDDEN int pskv__step_rows(pskv_table *t, const uint64_t *keys, size_t n);

/* A batch of distinct keys read and then written under one plan (grad.c's
 * residual: a get, then a put of the same rows), so the keys are hashed
 * and grouped once: the first get or put plans them, and again after a
 * reshard. Each holds the table's layout lock for its own visit only, as
 * the public calls do. keys must stay valid until end; end must follow
 * begin, whatever get and put return (it is harmless twice). */
typedef struct pskv__rows_batch {
    pskv_table *t;
    const uint64_t *keys;
    size_t n;
    pskv__plan plan;
    uint64_t gen;   /* the layout the plan was built for */
    uint64_t added; /* rows brought into DRAM, accounted at the end */
    bool planned;
} pskv__rows_batch;
PSKV__HIDDEN void pskv__batch_begin(pskv_table *t, const uint64_t *keys, size_t n,
                                    pskv__rows_batch *b);
/* As pskv_get without found (absent rows read as zeros). */
PSKV__HIDDEN int pskv__batch_get(pskv__rows_batch *b, float *out);
/* As pskv_put of values already checked finite (all or nothing). */
PSKV__HIDDEN int pskv__batch_put(pskv__rows_batch *b, const float *values);
PSKV__HIDDEN void pskv__batch_end(pskv__rows_batch *b);

#endif
