/* pskv-cg-checkpoint DIR: a fixed durable workload for instruction counts
 * (see cg_rows.c): a 16K-row table put and checkpointed, reopened, every
 * row pulled back from LMDB and pushed, 1K erased, checkpointed, iterated.
 * DIR must be a fresh directory. Exit status 0 when every step worked.
 * SPDX-License-Identifier: BSD-2-Clause */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "pskv.h"
int main(int argc, char **argv)
{
    if (argc < 2) return 1;
    enum { N = 16384, D = 64 };
    uint64_t *keys = malloc(N * sizeof *keys);
    float *v = malloc((size_t)N * D * sizeof *v);
    for (int i = 0; i < N; i++) keys[i] = (uint64_t)i * 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < (size_t)N * D; i++) v[i] = 0.001f * (float)(i % 101);
    pskv_store *s; pskv_table *t;
    if (pskv_open(argv[1], NULL, &s) || pskv_table_open(s, "t", "dim=64", &t)) return 2;
    if (pskv_put(t, keys, N, v) || pskv_checkpoint(s)) return 3;
    pskv_close(s);
    if (pskv_open(argv[1], NULL, &s) || pskv_table_open(s, "t", "dim=64", &t)) return 4;
    if (pskv_pull(t, keys, N, v) || pskv_push(t, keys, N, v) || pskv_erase(t, keys, 1024)) return 5;
    if (pskv_checkpoint(s)) return 6;
    pskv_iter *it; uint64_t k; float w[D]; int rc, n = 0;
    if (pskv_iter_create(t, &it)) return 7;
    while ((rc = pskv_iter_next(it, &k, w, NULL)) == 1) n++;
    pskv_iter_destroy(it);
    pskv_close(s);
    return rc == 0 && n == N - 1024 ? 0 : 8;
}
