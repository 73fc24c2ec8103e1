/* A table's filter of persisted keys: after a reopen, a miss in DRAM and
 * the spill file asks LMDB only if the filter says the key may be there,
 * so brand-new keys (the common case in CTR training) cost no B-tree
 * lookup.
 *
 * A series of blocked Bloom filters (lib/format.h has the layout and the
 * probe): each checkpoint adds the keys it puts to the newest filter, and a
 * full filter gets a successor of twice its capacity (or of twice the keys
 * the checkpoint adding to it brings), so that no filter is ever rebuilt and a checkpoint rewrites only the filters it added to.
 * Erased keys stay in (a false "maybe" costs one lookup). A filter that
 * cannot be trusted to hold every persisted key (a damaged record, a
 * failed allocation) makes the whole series invalid: then every miss asks
 * LMDB, and checkpoints delete the records.
 *
 * Threads: row calls probe while the checkpointer adds. Bits are only ever
 * set, with atomic operations; a filter is published (n) only once it is
 * complete. Row calls never need the keys being added (those rows are in
 * DRAM or the spill file).
 * SPDX-License-Identifier: BSD-2-Clause */
#include <stdlib.h>
#include <string.h>

#include "format.h"
#include "keyfilter.h"
#include "pskv.h"

#define FIRST_CAPACITY 65536u

static int bloom_init(pskv__bloom *b, uint64_t capacity)
{
    uint64_t blocks = (capacity * PSKV_FMT_FILTER_BITS_PER_KEY + 511) / 512;
    if (blocks == 0 || blocks > UINT32_MAX)
        return PSKV_ENOMEM;
    b->words = calloc(blocks * 8, sizeof *b->words);
    if (b->words == NULL)
        return PSKV_ENOMEM;
    b->capacity = capacity;
    b->count = 0;
    b->blocks = (uint32_t)blocks;
    b->dirty = true;
    return 0;
}

static bool bloom_maybe(const pskv__bloom *b, uint64_t h)
{
    const _Atomic uint64_t *w = b->words + (size_t)pskv_fmt_filter_block(h, b->blocks) * 8;
    uint64_t g = pskv_fmt_filter_bits_of(h);
    for (unsigned j = 0; j < PSKV_FMT_FILTER_K; j++) {
        uint32_t bit = (uint32_t)(g >> (9 * j)) & 511u;
        if (!(atomic_load_explicit(&w[bit >> 6], memory_order_relaxed) & (1ull << (bit & 63))))
            return false;
    }
    return true;
}

static void bloom_set(pskv__bloom *b, uint64_t h)
{
    _Atomic uint64_t *w = b->words + (size_t)pskv_fmt_filter_block(h, b->blocks) * 8;
    uint64_t g = pskv_fmt_filter_bits_of(h);
    for (unsigned j = 0; j < PSKV_FMT_FILTER_K; j++) {
        uint32_t bit = (uint32_t)(g >> (9 * j)) & 511u;
        atomic_fetch_or_explicit(&w[bit >> 6], 1ull << (bit & 63), memory_order_relaxed);
    }
    b->count++;
    b->dirty = true;
}

void pskv__keyfilter_init(pskv__keyfilter *kf, bool valid)
{
    memset(kf, 0, sizeof *kf);
    atomic_init(&kf->n, 0);
    kf->valid = valid;
}

void pskv__keyfilter_free(pskv__keyfilter *kf)
{
    for (uint32_t i = 0; i < PSKV_FMT_FILTER_MAX; i++)
        free(kf->f[i].words);
    memset(kf->f, 0, sizeof kf->f);
    atomic_store(&kf->n, 0);
}

bool pskv__keyfilter_maybe(const pskv__keyfilter *kf, uint64_t key)
{
    if (!kf->valid)
        return true;
    uint32_t n = atomic_load_explicit(&kf->n, memory_order_acquire);
    uint64_t h = pskv_fmt_filter_hash(key);
    for (uint32_t i = 0; i < n; i++)
        if (bloom_maybe(&kf->f[i], h))
            return true;
    return false;
}

void pskv__keyfilter_add(pskv__keyfilter *kf, uint64_t key)
{
    if (!kf->valid)
        return;
    uint64_t h = pskv_fmt_filter_hash(key);
    uint32_t n = atomic_load_explicit(&kf->n, memory_order_relaxed);
    for (uint32_t i = 0; i < n; i++)
        if (bloom_maybe(&kf->f[i], h))
            return; /* already answers "maybe" */
    if (n == 0 || kf->f[n - 1].count >= kf->f[n - 1].capacity) {
        /* Twice the last one, or room for what this checkpoint brings:
         * few filters, so a miss probes few blocks. */
        uint64_t cap = n == 0 ? FIRST_CAPACITY : 2 * kf->f[n - 1].capacity;
        if (cap < 2 * kf->expected)
            cap = 2 * kf->expected;
        if (n == PSKV_FMT_FILTER_MAX || bloom_init(&kf->f[n], cap) != 0) {
            kf->valid = false; /* it would miss this key: trust none of it */
            kf->drop_records = true;
            return;
        }
        atomic_store_explicit(&kf->n, ++n, memory_order_release);
    }
    bloom_set(&kf->f[n - 1], h);
}

void pskv__keyfilter_prefetch(const pskv__keyfilter *kf, uint64_t key)
{
    uint32_t n = atomic_load_explicit(&kf->n, memory_order_acquire);
    uint64_t h = pskv_fmt_filter_hash(key);
    for (uint32_t i = 0; i < n; i++)
        __builtin_prefetch(kf->f[i].words + (size_t)pskv_fmt_filter_block(h, kf->f[i].blocks) * 8);
}

void pskv__keyfilter_expect(pskv__keyfilter *kf, uint64_t keys) { kf->expected = keys; }

uint64_t pskv__keyfilter_bytes(const pskv__keyfilter *kf)
{
    uint64_t bytes = 0;
    uint32_t n = atomic_load_explicit(&kf->n, memory_order_acquire);
    for (uint32_t i = 0; i < n; i++)
        bytes += (uint64_t)kf->f[i].blocks * 64;
    return bytes;
}

size_t pskv__bloom_encoded_bytes(const pskv__bloom *b)
{
    return PSKV_FMT_FILTER_HEADER + (size_t)b->blocks * 64;
}

void pskv__bloom_encode(const pskv__bloom *b, uint8_t *out)
{
    pskv_fmt_put64(out, b->capacity);
    pskv_fmt_put64(out + 8, b->count);
    uint32_t blocks = b->blocks, zero = 0;
    memcpy(out + 16, &blocks, 4);
    memcpy(out + 20, &zero, 4);
    for (size_t i = 0; i < (size_t)b->blocks * 8; i++)
        pskv_fmt_put64(out + PSKV_FMT_FILTER_HEADER + 8 * i,
                       atomic_load_explicit(&b->words[i], memory_order_relaxed));
}

int pskv__keyfilter_decode(pskv__keyfilter *kf, const uint8_t *in, size_t len)
{
    uint32_t n = atomic_load(&kf->n), blocks;
    uint64_t capacity, count;
    const uint8_t *bits;
    if (n == PSKV_FMT_FILTER_MAX ||
        pskv_fmt_filter_get(in, len, &capacity, &count, &blocks, &bits) != 0)
        return PSKV_ECORRUPT;
    pskv__bloom *b = &kf->f[n];
    b->words = malloc((size_t)blocks * 64);
    if (b->words == NULL)
        return PSKV_ENOMEM;
    for (size_t i = 0; i < (size_t)blocks * 8; i++)
        atomic_init(&b->words[i], pskv_fmt_get64(bits + 8 * i));
    b->capacity = capacity;
    b->count = count;
    b->blocks = blocks;
    b->dirty = false;
    atomic_store_explicit(&kf->n, n + 1, memory_order_release);
    return 0;
}
