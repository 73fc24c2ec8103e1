/* embedding_cache: pskv as a local embedding cache in front of a slow
 * source (say, a remote feature service). Lookups use pskv_get, which never
 * creates rows; misses are fetched from the source and stored with
 * pskv_put; pskv_erase invalidates entries whose source changed.
 *
 *   embedding_cache [--requests N] */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pskv.h"

#define DIM 32
#define BATCH 256
#define ITEMS 100000u

/* The slow source: an embedding for an item, as a remote service would
 * return it (here a deterministic function of the item and its version). */
static void source_fetch(uint64_t item, uint32_t version, float *out)
{
    uint64_t s = item * 0x9e3779b97f4a7c15ull + version;
    for (int j = 0; j < DIM; j++) {
        s ^= s >> 29;
        s *= 0xbf58476d1ce4e5b9ull;
        out[j] = (float)((double)(s >> 40) / (double)(1u << 24) - 0.5);
    }
}

int main(int argc, char **argv)
{
    unsigned long requests = 2000000;
    if (argc == 3 && strcmp(argv[1], "--requests") == 0)
        requests = strtoul(argv[2], NULL, 0);
    else if (argc != 1) {
        fprintf(stderr, "usage: embedding_cache [--requests N]\n");
        return 2;
    }
    pskv_store *s;
    pskv_table *cache;
    int rc = pskv_open(NULL, NULL, &s);
    if (rc == 0)
        rc = pskv_table_open(s, "item_embeddings", "dim=32 optimizer=sgd shards=16", &cache);
    if (rc != 0) {
        fprintf(stderr, "embedding_cache: %s\n", pskv_strerror(rc));
        return 1;
    }
    static uint32_t version[ITEMS];
    uint64_t keys[BATCH], miss_keys[BATCH];
    float rows[BATCH * DIM], fetched[BATCH * DIM], truth[DIM];
    uint8_t found[BATCH];
    unsigned long hits = 0, misses = 0, stale = 0;
    uint64_t rng = 12345;
    for (unsigned long done = 0; done < requests; done += BATCH) {
        /* Requests: Zipf-like popularity by squaring a uniform draw. */
        for (int i = 0; i < BATCH; i++) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            double u = (double)(rng >> 11) * 0x1.0p-53;
            keys[i] = (uint64_t)(u * u * u * ITEMS);
        }
        if ((rc = pskv_get(cache, keys, BATCH, rows, found)) != 0)
            break;
        int n_miss = 0;
        for (int i = 0; i < BATCH; i++) {
            if (found[i]) {
                hits++;
                source_fetch(keys[i], version[keys[i]], truth);
                stale += memcmp(truth, rows + i * DIM, sizeof truth) != 0;
            } else {
                misses++;
                miss_keys[n_miss] = keys[i];
                source_fetch(keys[i], version[keys[i]], fetched + n_miss * DIM);
                n_miss++;
            }
        }
        if (n_miss > 0 && (rc = pskv_put(cache, miss_keys, (size_t)n_miss, fetched)) != 0)
            break;
        /* Now and then the source updates an item: invalidate it. */
        uint64_t changed = (rng >> 20) % ITEMS;
        version[changed]++;
        if ((rc = pskv_erase(cache, &changed, 1)) != 0)
            break;
    }
    if (rc != 0) {
        fprintf(stderr, "embedding_cache: %s\n", pskv_strerror(rc));
        return 1;
    }
    pskv_table_stats st;
    pskv_table_stats_get(cache, &st);
    printf("embedding_cache: %lu lookups, hit rate %.1f%%, %lu stale hits, %llu cached rows, "
           "%.1f MiB DRAM (%.0f bytes/row for %u-byte rows)\n",
           hits + misses, 100.0 * (double)hits / (double)(hits + misses), stale,
           (unsigned long long)st.rows, st.dram_bytes / 1048576.0,
           (double)st.dram_bytes / (double)st.rows, (unsigned)(DIM * sizeof(float)));
    pskv_close(s);
    return stale == 0 ? 0 : 1;
}
