/* pskv-cg-rows: a fixed row workload for instruction counts, the stable
 * figure on a noisy VM: 50 pushes then 50 pulls of 4096 keys (LCG draws
 * over 64K keys) on a memory-only Adagrad dim 64 table. Run it under
 *   valgrind --tool=callgrind build/bench/pskv-cg-rows
 * and compare the "I refs" of two builds.
 * SPDX-License-Identifier: BSD-2-Clause */
#include <stdio.h>
#include <stdlib.h>
#include "pskv.h"
int main(void)
{
    pskv_store *s; pskv_table *t;
    if (pskv_open(NULL, NULL, &s) || pskv_table_open(s, "t", "dim=64,optimizer=adagrad", &t)) return 1;
    enum { N = 4096, K = 65536 };
    uint64_t *keys = malloc(N * sizeof *keys);
    float *g = malloc((size_t)N * 64 * sizeof *g);
    for (size_t i = 0; i < (size_t)N * 64; i++) g[i] = 0.01f * (float)(i % 7);
    uint64_t x = 1;
    for (int b = 0; b < 50; b++) {
        for (int i = 0; i < N; i++) { x = x * 6364136223846793005ull + 1442695040888963407ull; keys[i] = (x >> 33) % K; }
        if (pskv_push(t, keys, N, g) != 0) return 2;
    }
    float *out = malloc((size_t)N * 64 * sizeof *out);
    for (int b = 0; b < 50; b++) {
        for (int i = 0; i < N; i++) { x = x * 6364136223846793005ull + 1442695040888963407ull; keys[i] = (x >> 33) % K; }
        if (pskv_pull(t, keys, N, out) != 0) return 3;
    }
    pskv_close(s);
    return 0;
}
