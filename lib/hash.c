/* Every hash of pskv is XXH3: key hashes for routing and indexing, and the
 * public feature-id helper.
 * SPDX-License-Identifier: BSD-2-Clause */
#include <string.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "errors.h"
#include "hash.h"
#include "pskv.h"

static inline uint64_t key_hash(uint64_t key, uint64_t seed)
{
    /* Hash the little-endian bytes so that every platform routes alike. */
    uint8_t b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(key >> (8 * i));
    return XXH3_64bits_withSeed(b, sizeof b, seed);
}

uint64_t pskv__key_hash(uint64_t key, uint64_t seed) { return key_hash(key, seed); }

void pskv__key_hashes(const uint64_t *keys, size_t n, uint64_t seed, uint64_t *out)
{
    for (size_t i = 0; i < n; i++)
        out[i] = key_hash(keys[i], seed);
}

uint64_t pskv_feature_id(const char *ns, const void *data, size_t len)
{
    if (ns == NULL)
        ns = "";
    uint64_t seed = XXH3_64bits(ns, strlen(ns));
    if (data == NULL)
        len = 0;
    return XXH3_64bits_withSeed(data, len, seed);
}

int pskv_feature_ids(const char *ns, const void *data, const uint64_t *offsets, size_t n,
                     uint64_t *ids)
{
    pskv__detail_clear();
    if (n > 0 && (offsets == NULL || ids == NULL))
        return pskv__fail(PSKV_EINVAL, "%s is NULL", offsets == NULL ? "offsets" : "ids");
    if (n == 0)
        return 0;
    if (offsets[n] > offsets[0] && data == NULL)
        return pskv__fail(PSKV_EINVAL, "data is NULL with %llu bytes to hash",
                          (unsigned long long)(offsets[n] - offsets[0]));
    for (size_t i = 0; i < n; i++) /* checked first: nothing is written on an error */
        if (offsets[i + 1] < offsets[i])
            return pskv__fail(PSKV_EINVAL, "offsets[%zu] = %llu is below offsets[%zu] = %llu",
                              i + 1, (unsigned long long)offsets[i + 1], i,
                              (unsigned long long)offsets[i]);
    if (ns == NULL)
        ns = "";
    const uint64_t seed = XXH3_64bits(ns, strlen(ns)); /* once for the batch */
    const uint8_t *bytes = data;
    for (size_t i = 0; i < n; i++)
        ids[i] = XXH3_64bits_withSeed(bytes ? bytes + offsets[i] : NULL,
                                      (size_t)(offsets[i + 1] - offsets[i]), seed);
    return 0;
}
