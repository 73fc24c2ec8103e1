/* The Adagrad step and the per-batch summing of repeated keys that every
 * push loop of pskv-bench dram runs (bench_sum.h).
 * SPDX-License-Identifier: BSD-2-Clause */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "bench_sum.h"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define KERNEL __attribute__((target_clones("avx2", "default")))
#else
#define KERNEL
#endif

/* The same Adagrad step as pskv's kernel; one copy for all contenders, so
 * that none gets other code for the arithmetic. */
KERNEL void bench_adagrad(float *restrict w, float *restrict s, const float *restrict g)
{
    for (int j = 0; j < DIM; j++) {
        float gj = g[j];
        float sj = s[j] + gj * gj;
        s[j] = sj;
        w[j] -= LR * gj / (sqrtf(sj) + EPS);
    }
}

int bench_sum_init(bench_sum *s, size_t cap)
{
    /* At most half full: short probes. */
    unsigned bits = 1;
    while (((size_t)1 << bits) < 2 * cap)
        bits++;
    *s = (bench_sum){.tab = malloc(((size_t)1 << bits) * sizeof *s->tab),
                     .shift = 64 - bits,
                     .first = malloc(cap * sizeof *s->first),
                     .grad = malloc(cap * sizeof *s->grad),
                     .rows = malloc(cap * DIM * sizeof *s->rows),
                     .cap = cap};
    if (s->tab == NULL || s->first == NULL || s->grad == NULL || s->rows == NULL) {
        bench_sum_free(s);
        return -1;
    }
    return 0;
}

void bench_sum_free(bench_sum *s)
{
    free(s->tab);
    free(s->first);
    free((void *)s->grad);
    free(s->rows);
    *s = (bench_sum){0};
}

void bench_sum_batch(bench_sum *s, const uint64_t *keys, size_t n, const float *grads)
{
    const size_t mask = ((size_t)1 << (64 - s->shift)) - 1;
    memset(s->tab, 0, (mask + 1) * sizeof *s->tab);
    size_t m = 0, summed = 0;
    for (size_t i = 0; i < n; i++) {
        const float *g = grads + i * DIM;
        /* Multiplicative hash, top bits: ids need not be spread already. */
        size_t h = (size_t)((keys[i] * 0xff51afd7ed558ccdull) >> s->shift);
        for (;; h = (h + 1) & mask) {
            uint32_t v = s->tab[h];
            if (v == 0) {
                s->tab[h] = (uint32_t)m + 1;
                s->first[m] = (uint32_t)i;
                s->grad[m++] = g;
                break;
            }
            if (keys[s->first[v - 1]] == keys[i]) {
                float *sum = (float *)s->grad[v - 1];
                if (s->grad[v - 1] == grads + (size_t)s->first[v - 1] * DIM) {
                    /* Second sight: the sum moves out of the caller's row. */
                    sum = s->rows + summed++ * DIM;
                    memcpy(sum, s->grad[v - 1], DIM * sizeof *sum);
                    s->grad[v - 1] = sum;
                }
                for (int j = 0; j < DIM; j++)
                    sum[j] += g[j];
                break;
            }
        }
    }
    s->m = m;
}
