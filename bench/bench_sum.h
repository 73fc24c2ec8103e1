/* What every push loop of pskv-bench dram shares (bench_sum.c): the
 * Adagrad step and the summing of a batch's repeated keys. pskv sums the
 * gradients of keys that repeat inside a batch and steps each distinct row
 * once; the flat loops (C) and the hash-map peers (peers_maps.cc, C++) do
 * the same work through this one helper, so no contender is spared it.
 * SPDX-License-Identifier: BSD-2-Clause */
#ifndef PSKV_BENCH_SUM_H
#define PSKV_BENCH_SUM_H

#include <stddef.h>
#include <stdint.h>

/* The rows of the dram workload (here, not in bench.h, which C++ cannot
 * include: the C++ peers need them too). */
#define DIM 64
#define ROW_FLOATS (2 * DIM) /* weights + adagrad state */
#define LR 0.01f
#define EPS 1e-10f

#ifdef __cplusplus
extern "C" {
#endif

/* The Adagrad step of pskv's kernel for one row (DIM, LR, EPS):
 * s += g*g; w -= lr*g/(sqrt(s)+eps). */
void bench_adagrad(float *w, float *s, const float *g);

/* Scratch for one thread's batches of at most cap keys. */
typedef struct bench_sum {
    uint32_t *tab;      /* open addressing: distinct index + 1, 0 = empty */
    unsigned shift;     /* 64 - log2(table size) */
    uint32_t *first;    /* [cap] each distinct key's first position */
    const float **grad; /* [cap] its gradient: the caller's row, or a sum in rows */
    float *rows;        /* [cap][dim] sums of the keys that repeat */
    size_t cap, m;      /* m: distinct keys of the last batch */
} bench_sum;

/* 0, or -1 when out of memory (then nothing to free). */
int bench_sum_init(bench_sum *s, size_t cap);
void bench_sum_free(bench_sum *s);
/* keys[n] (n <= cap) with gradients grads[n][dim]: s->m distinct keys in
 * order of first appearance, the d-th at position s->first[d] with the sum
 * of its gradients at s->grad[d]. A key seen once keeps the caller's row in
 * place, as pskv does. */
void bench_sum_batch(bench_sum *s, const uint64_t *keys, size_t n, const float *grads);

#ifdef __cplusplus
}
#endif

#endif
