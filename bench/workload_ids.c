/* pskv-bench ids: feature ids of string features, one call per id
 * (pskv_feature_id) against one call per batch (pskv_feature_ids), beside
 * the limit: XXH3-64 of the same bytes with the namespace's seed computed
 * once, in a plain loop. 1M strings like "user:123456", batches of 1024
 * (--keys: the strings).
 * SPDX-License-Identifier: BSD-2-Clause */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "bench.h"

int workload_ids(uint64_t n, int json)
{
    char *bytes = malloc(n * 16);
    uint64_t *offsets = malloc((n + 1) * sizeof *offsets), *ids = malloc(n * sizeof *ids);
    if (bytes == NULL || offsets == NULL || ids == NULL)
        return 1;
    offsets[0] = 0;
    for (uint64_t i = 0; i < n; i++) {
        int len = snprintf(bytes + offsets[i], 16, "user:%llu",
                           (unsigned long long)(bench_scramble(i) % 10000000u));
        offsets[i + 1] = offsets[i] + (uint64_t)len;
    }
    const size_t batch = 1024;
    double best[3] = {1e9, 1e9, 1e9};
    uint64_t sink = 0;
    for (int rep = 0; rep < 5; rep++) {
        double t0 = bench_now();
        for (uint64_t i = 0; i < n; i++)
            ids[i] = pskv_feature_id("user", bytes + offsets[i], offsets[i + 1] - offsets[i]);
        double one = bench_now() - t0;
        sink += ids[n / 2];
        t0 = bench_now();
        for (uint64_t at = 0; at < n; at += batch)
            if (pskv_feature_ids("user", bytes, offsets + at, n - at < batch ? n - at : batch,
                                 ids + at) != 0)
                return 1;
        double batched = bench_now() - t0;
        sink += ids[n / 3];
        t0 = bench_now();
        uint64_t seed = XXH3_64bits("user", 4);
        for (uint64_t i = 0; i < n; i++)
            ids[i] = XXH3_64bits_withSeed(bytes + offsets[i], offsets[i + 1] - offsets[i], seed);
        double limit = bench_now() - t0;
        sink += ids[n / 4];
        best[0] = one < best[0] ? one : best[0];
        best[1] = batched < best[1] ? batched : best[1];
        best[2] = limit < best[2] ? limit : best[2];
    }
    if (json)
        printf("{\"workload\":\"ids\",\"strings\":%llu,\"per_call_ids_per_s\":%.0f,"
               "\"batched_ids_per_s\":%.0f,\"xxh3_loop_ids_per_s\":%.0f,\"sink\":%llu}\n",
               (unsigned long long)n, n / best[0], n / best[1], n / best[2],
               (unsigned long long)(sink & 1));
    else
        printf("workload ids: %llu strings like user:123456 (best of 5)\n"
               "  pskv_feature_id, one call per id   %.1fM ids/s (%.2fx the limit)\n"
               "  pskv_feature_ids, batches of %zu  %.1fM ids/s (%.2fx the limit)\n"
               "  limit: XXH3-64 loop, seed once      %.1fM ids/s\n",
               (unsigned long long)n, n / best[0] / 1e6, best[2] / best[0], batch,
               n / best[1] / 1e6, best[2] / best[1], n / best[2] / 1e6);
    free(bytes);
    free(offsets);
    free(ids);
    return sink == 42 ? 1 : 0; /* keeps the loops */
}
