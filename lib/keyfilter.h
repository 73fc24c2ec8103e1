/* The keys LMDB may hold: a series of blocked Bloom filters (keyfilter.c).
 * SPDX-License-Identifier: BSD-2-Clause */
#ifndef PSKV_KEYFILTER_H
#define PSKV_KEYFILTER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common.h"

typedef struct pskv__bloom {
    uint64_t capacity, count; /* keys it is sized for / holds */
    uint32_t blocks;          /* 64-byte blocks */
    bool dirty;               /* changed since its record was written */
    _Atomic uint64_t *words;  /* blocks * 8 */
} pskv__bloom;

typedef struct pskv__keyfilter {
    pskv__bloom f[32];  /* PSKV_FMT_FILTER_MAX */
    atomic_uint n;      /* filters published */
    bool valid;         /* holds every persisted key; else every miss asks LMDB */
    bool drop_records;  /* became invalid: the next checkpoint deletes the records */
    uint64_t expected;  /* keys the running checkpoint may add (sizes a new filter) */
} pskv__keyfilter;

PSKV__HIDDEN void pskv__keyfilter_init(pskv__keyfilter *kf, bool valid);
PSKV__HIDDEN void pskv__keyfilter_free(pskv__keyfilter *kf);
/* May LMDB hold key? Any thread. */
PSKV__HIDDEN bool pskv__keyfilter_maybe(const pskv__keyfilter *kf, uint64_t key);
/* The checkpointer (one at a time): key is being persisted. */
PSKV__HIDDEN void pskv__keyfilter_add(pskv__keyfilter *kf, uint64_t key);
/* Bring the blocks a later add or probe of key touches into cache. */
PSKV__HIDDEN void pskv__keyfilter_prefetch(const pskv__keyfilter *kf, uint64_t key);
/* The checkpointer: up to `keys` adds follow. */
PSKV__HIDDEN void pskv__keyfilter_expect(pskv__keyfilter *kf, uint64_t keys);
PSKV__HIDDEN uint64_t pskv__keyfilter_bytes(const pskv__keyfilter *kf);
/* Records (format.h): size, encoding, and decoding the next filter of the
 * series (0, PSKV_ECORRUPT, PSKV_ENOMEM). */
PSKV__HIDDEN size_t pskv__bloom_encoded_bytes(const pskv__bloom *b);
PSKV__HIDDEN void pskv__bloom_encode(const pskv__bloom *b, uint8_t *out);
PSKV__HIDDEN int pskv__keyfilter_decode(pskv__keyfilter *kf, const uint8_t *in, size_t len);

#endif
