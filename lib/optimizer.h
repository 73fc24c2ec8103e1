/* The optimizers' row kernels (optimizer.c) and the float checks they share
 * with the input scan of push and put.
 * SPDX-License-Identifier: BSD-2-Clause */
#ifndef PSKV_OPTIMIZER_H
#define PSKV_OPTIMIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "common.h"
#include "pskv.h"

typedef struct pskv__optimizer {
    int kind;
    uint32_t dim;
    uint32_t state_floats;
    float lr, eps, initial_accumulator, beta1, beta2, l1, l2, lr_power;
} pskv__optimizer;

PSKV__HIDDEN void pskv__optimizer_setup(pskv__optimizer *opt,
                                        const pskv_table_options *o);
PSKV__HIDDEN uint32_t pskv__optimizer_state_floats(int kind, uint32_t dim);
/* A row's payload: dim weights and the state, in bytes. */
PSKV__HIDDEN uint32_t pskv__optimizer_row_bytes(int kind, uint32_t dim);
/* One step on row, unless its result (weights or state) would not be
 * finite: then the row is left as it was and the result is false.
 * save: room for one row (dim + state_floats floats). */
PSKV__HIDDEN bool pskv__optimizer_step(const pskv__optimizer *opt, float *row, const float *g,
                                       float *save);
/* Optimizer state of a freshly created row (state follows the weights). */
PSKV__HIDDEN void pskv__optimizer_init_state(const pskv__optimizer *opt,
                                             float *state);
/* row = [w dim][state]; g = gradient[dim], already summed over duplicates. */
PSKV__HIDDEN void pskv__optimizer_apply(const pskv__optimizer *opt, float *row,
                                        const float *g);

/* The magnitude bits of a float; PSKV__NONFINITE_MAG or more is Inf or NaN
 * (all exponent bits set). One definition for the input scan and the
 * optimizer kernels' checks of what they wrote. */
#define PSKV__NONFINITE_MAG 0x7f800000u
static inline uint32_t pskv__float_mag(float x)
{
    uint32_t b;
    memcpy(&b, &x, sizeof b);
    return b & 0x7fffffffu;
}

/* Any NaN or Inf among n floats at v (any alignment)? */
PSKV__HIDDEN bool pskv__floats_nonfinite(const void *v, size_t n);
/* The same over `rows` rows of optimizer state of `kind` (any alignment),
 * leaving out integer state (Adam's step count). */
PSKV__HIDDEN bool pskv__state_nonfinite(int kind, uint32_t dim, const void *state, size_t rows);

#endif
