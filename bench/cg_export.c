/* pskv-cg-export: a fixed export workload for instruction counts: a
 * memory-only Adagrad dim 64 table of 200k rows, three full exports of
 * whole rows (fp32) and a 1% delta. Public calls only, so the same file
 * builds against an older release for a before/after comparison:
 *   valgrind --tool=callgrind build/bench/pskv-cg-export
 * SPDX-License-Identifier: BSD-2-Clause */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include "pskv.h"

int main(void)
{
    enum { N = 200000, DIM = 64 };
    pskv_store *s;
    pskv_table *t;
    if (pskv_open(NULL, NULL, &s) || pskv_table_open(s, "t", "dim=64 optimizer=adagrad", &t))
        return 2;
    uint64_t *keys = malloc(N * sizeof *keys);
    float *rows = malloc((size_t)4096 * DIM * sizeof *rows);
    for (uint64_t i = 0; i < N; i++)
        keys[i] = i * 0x9E3779B97F4A7C15ull;
    for (size_t at = 0; at < N; at += 4096)
        if (pskv_pull(t, keys + at, N - at < 4096 ? N - at : 4096, rows))
            return 3;
    size_t cap = 1 << 20, len, total = 0;
    void *buf = malloc(cap);
    for (int rep = 0; rep < 3; rep++) {
        pskv_export *e;
        if (pskv_export_open(t, 0, "payload=rows", &e))
            return 4;
        int rc;
        while ((rc = pskv_export_next(e, buf, cap, &len)) == 1)
            total += len;
        pskv_export_close(e);
        if (rc != 0)
            return 5;
    }
    uint64_t v = pskv_table_version(t);
    for (size_t at = 0; at < N / 100; at += 512)
        if (pskv_push(t, keys + at * 100 % N, 512, rows))
            return 6;
    pskv_export *e;
    if (pskv_export_open(t, v, "payload=rows", &e))
        return 7;
    int rc;
    while ((rc = pskv_export_next(e, buf, cap, &len)) == 1)
        total += len;
    pskv_export_close(e);
    printf("%zu bytes exported\n", total);
    pskv_close(s);
    return rc;
}
