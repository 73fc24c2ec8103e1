/* Optimizer kernels: per-row update rules of sgd, adagrad, rowwise_adagrad,
 * adam and ftrl (formulas in docs/OPTIMIZERS.md). Plain float loops over
 * contiguous rows that the compiler vectorizes (needs -fno-math-errno for
 * sqrtf); on x86-64 an AVX2 clone is picked at load time.
 * Row layout: [weights dim][optimizer state state_floats].
 * SPDX-License-Identifier: BSD-2-Clause */
#include <math.h>
#include <string.h>

#include "optimizer.h"
#include "options.h"
#include "pskv.h"

#define KERNEL PSKV__KERNEL

uint32_t pskv__optimizer_state_floats(int kind, uint32_t dim)
{
    switch (kind) {
    case PSKV_OPT_SGD: return 0;
    case PSKV_OPT_NONE: return 0;
    case PSKV_OPT_ADAGRAD: return dim;
    case PSKV_OPT_ROWWISE_ADAGRAD: return 1;
    case PSKV_OPT_ADAM: return 2 * dim + 1; /* m, v, step count */
    default: return 2 * dim;                /* ftrl: n, z */
    }
}

uint32_t pskv__optimizer_row_bytes(int kind, uint32_t dim)
{
    return (dim + pskv__optimizer_state_floats(kind, dim)) * (uint32_t)sizeof(float);
}

void pskv__optimizer_setup(pskv__optimizer *opt, const pskv_table_options *o)
{
    pskv_table_options r = *o;
    pskv__table_options_resolve(&r);
    opt->kind = r.optimizer;
    opt->dim = r.dim;
    opt->state_floats = pskv__optimizer_state_floats(r.optimizer, r.dim);
    opt->lr = r.lr;
    opt->eps = r.eps;
    opt->initial_accumulator = r.initial_accumulator;
    opt->beta1 = r.beta1;
    opt->beta2 = r.beta2;
    opt->l1 = r.l1;
    opt->l2 = r.l2;
    opt->lr_power = r.lr_power;
}

void pskv__optimizer_init_state(const pskv__optimizer *opt, float *state)
{
    const uint32_t d = opt->dim;
    const float acc0 = opt->initial_accumulator; /* a local: state may alias opt, the loops vectorize */
    switch (opt->kind) {
    case PSKV_OPT_SGD:
    case PSKV_OPT_NONE:
        break;
    case PSKV_OPT_ADAGRAD:
        for (uint32_t j = 0; j < d; j++)
            state[j] = acc0;
        break;
    case PSKV_OPT_ROWWISE_ADAGRAD:
        state[0] = acc0;
        break;
    case PSKV_OPT_ADAM:
        memset(state, 0, (2 * (size_t)d + 1) * sizeof(float));
        break;
    default:
        for (uint32_t j = 0; j < d; j++) {
            state[j] = acc0;     /* n */
            state[d + j] = 0.0f; /* z */
        }
        break;
    }
}

/* Each kernel returns the largest magnitude bits of the values it wrote
 * (PSKV__NONFINITE_MAG or more: one is Inf or NaN), kept in registers
 * beside the step itself, so that checking a result costs no second pass
 * over the row. */
static inline uint32_t most_with(uint32_t most, float x)
{
    uint32_t m = pskv__float_mag(x);
    return m > most ? m : most;
}

/* The kernels below step a row in place. With keep (a constant once
 * inlined), each also writes the values it read to old, in the row's
 * layout, so that a step producing Inf or NaN can be undone without a
 * separate copy of the row (a call to memcpy and the calls around the
 * kernel cost as much as Adagrad's arithmetic at dim 64). */
#define INLINE static inline __attribute__((always_inline))
/* The two entry points: GCC would turn the copies to old into calls to
 * memcpy (loop distribution), two calls per row. */
#if defined(__GNUC__) && !defined(__clang__)
#define STEP_KERNEL KERNEL __attribute__((optimize("no-tree-loop-distribute-patterns")))
#else
#define STEP_KERNEL KERNEL
#endif

INLINE uint32_t sgd_apply(float *restrict w, const float *restrict g, uint32_t d, float lr,
                          float *restrict ow, bool keep)
{
    uint32_t most = 0;
    for (uint32_t j = 0; j < d; j++) {
        float w0 = w[j];
        if (keep)
            ow[j] = w0;
        float wj = w0 - lr * g[j];
        w[j] = wj;
        most = most_with(most, wj);
    }
    return most;
}

INLINE uint32_t adagrad_apply(float *restrict w, float *restrict s, const float *restrict g,
                              uint32_t d, float lr, float eps, float *restrict ow,
                              float *restrict os, bool keep)
{
    uint32_t most = 0;
    for (uint32_t j = 0; j < d; j++) {
        float gj = g[j], w0 = w[j], s0 = s[j];
        if (keep) {
            ow[j] = w0;
            os[j] = s0;
        }
        float sj = s0 + gj * gj;
        s[j] = sj;
        float wj = w0 - lr * gj / (sqrtf(sj) + eps);
        w[j] = wj;
        most = most_with(most_with(most, sj), wj);
    }
    return most;
}

INLINE uint32_t rowwise_adagrad_apply(float *restrict w, float *restrict s,
                                      const float *restrict g, uint32_t d, float lr, float eps,
                                      float *restrict ow, float *restrict os, bool keep)
{
    float sum = 0.0f;
    for (uint32_t j = 0; j < d; j++)
        sum += g[j] * g[j];
    if (keep)
        *os = *s;
    float acc = *s + sum / (float)d;
    *s = acc;
    float den = sqrtf(acc) + eps;
    uint32_t most = most_with(0, acc);
    for (uint32_t j = 0; j < d; j++) {
        float w0 = w[j];
        if (keep)
            ow[j] = w0;
        float wj = w0 - lr * g[j] / den;
        w[j] = wj;
        most = most_with(most, wj);
    }
    return most;
}

INLINE uint32_t adam_apply(float *restrict w, float *restrict m, float *restrict v,
                           const float *restrict g, uint32_t d, float step, float b1, float b2,
                           float eps, float *restrict ow, float *restrict om, float *restrict ov,
                           bool keep)
{
    float c1 = 1.0f - b1, c2 = 1.0f - b2;
    uint32_t most = 0;
    for (uint32_t j = 0; j < d; j++) {
        float gj = g[j], w0 = w[j], m0 = m[j], v0 = v[j];
        if (keep) {
            ow[j] = w0;
            om[j] = m0;
            ov[j] = v0;
        }
        float mj = b1 * m0 + c1 * gj;
        float vj = b2 * v0 + c2 * gj * gj;
        m[j] = mj;
        v[j] = vj;
        float wj = w0 - step * mj / (sqrtf(vj) + eps);
        w[j] = wj;
        most = most_with(most_with(most_with(most, mj), vj), wj);
    }
    return most;
}

/* n^(-lr_power); the common lr_power = -0.5 is a square root. */
static inline float ftrl_pow(float n, float neg_power, bool is_sqrt)
{
    return is_sqrt ? sqrtf(n) : powf(n, neg_power);
}

INLINE uint32_t ftrl_apply(float *restrict w, float *restrict n, float *restrict z,
                           const float *restrict g, uint32_t d, float lr, float l1, float l2,
                           float lr_power, float *restrict ow, float *restrict on,
                           float *restrict oz, bool keep)
{
    bool is_sqrt = lr_power == -0.5f;
    float p = -lr_power;
    uint32_t most = 0;
    for (uint32_t j = 0; j < d; j++) {
        float gj = g[j], w0 = w[j], n_old = n[j], z0 = z[j];
        if (keep) {
            ow[j] = w0;
            on[j] = n_old;
            oz[j] = z0;
        }
        float n_new = n_old + gj * gj;
        float pow_new = ftrl_pow(n_new, p, is_sqrt);
        float sigma = (pow_new - ftrl_pow(n_old, p, is_sqrt)) / lr;
        float zj = z0 + gj - sigma * w0;
        z[j] = zj;
        n[j] = n_new;
        if (fabsf(zj) <= l1)
            w[j] = 0.0f;
        else
            w[j] = (copysignf(l1, zj) - zj) / (pow_new / lr + 2.0f * l2);
        most = most_with(most_with(most_with(most, zj), n_new), w[j]);
    }
    return most;
}

/* One step in place; the largest magnitude bits of what it wrote. With
 * keep, the row as it was is in old (dim + state floats). Inline in the
 * two clones below, so that a step is one call. */
INLINE uint32_t step_in_place(const pskv__optimizer *opt, float *row, const float *g,
                              float *old, bool keep)
{
    uint32_t d = opt->dim;
    float *state = row + d, *ostate = keep ? old + d : NULL;
    switch (opt->kind) {
    case PSKV_OPT_SGD:
        return sgd_apply(row, g, d, opt->lr, old, keep);
    case PSKV_OPT_ADAGRAD:
        return adagrad_apply(row, state, g, d, opt->lr, opt->eps, old, ostate, keep);
    case PSKV_OPT_ROWWISE_ADAGRAD:
        return rowwise_adagrad_apply(row, state, g, d, opt->lr, opt->eps, old, ostate, keep);
    case PSKV_OPT_ADAM: {
        uint32_t t;
        memcpy(&t, &state[2 * d], sizeof t);
        if (keep)
            memcpy(&ostate[2 * d], &t, sizeof t);
        if (t != UINT32_MAX)
            t++;
        memcpy(&state[2 * d], &t, sizeof t);
        /* Bias correction in double once per row. */
        double step = (double)opt->lr * sqrt(1.0 - pow((double)opt->beta2, (double)t)) /
                      (1.0 - pow((double)opt->beta1, (double)t));
        return adam_apply(row, state, state + d, g, d, (float)step, opt->beta1, opt->beta2,
                          opt->eps, old, ostate, keep ? ostate + d : NULL, keep);
    }
    case PSKV_OPT_NONE:
        PSKV__ASSERT(false); /* pskv_push refuses the table's gradients */
        return 0;
    default:
        return ftrl_apply(row, state, state + d, g, d, opt->lr, opt->l1, opt->l2, opt->lr_power,
                          old, ostate, keep ? ostate + d : NULL, keep);
    }
}

STEP_KERNEL static void apply(const pskv__optimizer *opt, float *row, const float *g)
{
    (void)step_in_place(opt, row, g, NULL, false);
}

void pskv__optimizer_apply(const pskv__optimizer *opt, float *row, const float *g)
{
    apply(opt, row, g);
}

STEP_KERNEL static bool step(const pskv__optimizer *opt, float *row, const float *g, float *save)
{
    if (step_in_place(opt, row, g, save, true) < PSKV__NONFINITE_MAG)
        return true;
    /* Inf or NaN: as it was */
    memcpy(row, save, ((size_t)opt->dim + opt->state_floats) * sizeof *row);
    return false;
}

bool pskv__optimizer_step(const pskv__optimizer *opt, float *row, const float *g, float *save)
{
    return step(opt, row, g, save);
}

/* The input scan of push and put (rows.c) and of chunks (chunk.c), whose
 * values sit at any alignment. */
PSKV__KERNEL bool pskv__floats_nonfinite(const void *v, size_t n)
{
    /* The largest magnitude tells; a max-reduction vectorizes (vpmaxud:
     * 8 floats a step). */
    const uint8_t *b = v;
    uint32_t most = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t m;
        memcpy(&m, b + 4 * i, sizeof m);
        m &= 0x7fffffffu;
        most = m > most ? m : most;
    }
    return most >= PSKV__NONFINITE_MAG;
}

bool pskv__state_nonfinite(int kind, uint32_t dim, const void *state, size_t rows)
{
    const uint32_t sf = pskv__optimizer_state_floats(kind, dim);
    if (kind != PSKV_OPT_ADAM)
        return pskv__floats_nonfinite(state, rows * sf);
    /* Adam's step count is an integer in a float's slot (saturating at
     * UINT32_MAX): past 2^31 steps its bits read as Inf or NaN, and it is
     * never judged as a float. */
    const uint8_t *b = state;
    for (size_t r = 0; r < rows; r++)
        if (pskv__floats_nonfinite(b + r * sf * 4, 2 * (size_t)dim))
            return true;
    return false;
}
