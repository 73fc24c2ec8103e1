/* The one key hash of pskv (hash.c).
 * SPDX-License-Identifier: BSD-2-Clause */
#ifndef PSKV_HASH_H
#define PSKV_HASH_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"

/* 64-bit XXH3 of an 8-byte key with a seed: the one key hash of pskv. */
PSKV__HIDDEN uint64_t pskv__key_hash(uint64_t key, uint64_t seed);
/* The same for n keys: out[i] = pskv__key_hash(keys[i], seed). */
PSKV__HIDDEN void pskv__key_hashes(const uint64_t *keys, size_t n, uint64_t seed, uint64_t *out);

#endif
