/* Every hash of pskv is XXH3: key hashes for routing and indexing, and the
 * public feature-id helper.
 * SPDX-License-Identifier: BSD-2-Clause */
#include <string.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "pskv_internal.h"

uint64_t pskv__key_hash(uint64_t key, uint64_t seed)
{
    /* Hash the little-endian bytes so that every platform routes alike. */
    uint8_t b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(key >> (8 * i));
    return XXH3_64bits_withSeed(b, sizeof b, seed);
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
