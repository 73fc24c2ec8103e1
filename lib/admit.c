/* The admission sketch and window of a shard (see admit.h); the duel
 * itself is CLOCK's victim choice (clock.c).
 * SPDX-License-Identifier: BSD-2-Clause */
#include <stdlib.h>
#include <string.h>

#include "admit.h"
#include "pskv.h"

#define PERIOD_PER_WORD 10u

static uint32_t sketch_words(uint32_t index_cap) { return index_cap > 2 ? index_cap / 2 : 1; }

void pskv__admit_halve(pskv__admit *a)
{
    for (uint32_t i = 0; i <= a->sketch_mask; i++)
        a->sketch[i] = (a->sketch[i] >> 1) & 0x7777777777777777ull;
    a->additions /= 2;
}

unsigned pskv__admit_estimate(const pskv__admit *a, uint64_t hash)
{
    if (a->sketch == NULL)
        return 0;
    uint64_t m = pskv__admit_mix(hash);
    return pskv__admit_least(*pskv__admit_word(a, m), m);
}

static void set_sketch(pskv__admit *a, uint64_t *sketch, uint32_t words)
{
    a->sketch = sketch;
    a->sketch_mask = words - 1;
    uint64_t period = (uint64_t)words * PERIOD_PER_WORD;
    a->period = period > UINT32_MAX ? UINT32_MAX : (uint32_t)period;
}

int pskv__admit_start(pskv__admit *a, uint32_t index_cap)
{
    memset(a, 0, sizeof *a);
    uint32_t words = sketch_words(index_cap);
    uint64_t *sketch = calloc(words, sizeof *sketch);
    if (sketch == NULL)
        return PSKV_ENOMEM;
    set_sketch(a, sketch, words);
    return 0;
}

int pskv__admit_grow(pskv__admit *a, uint32_t index_cap)
{
    uint32_t words = sketch_words(index_cap), old = a->sketch_mask + 1;
    if (a->sketch == NULL || words <= old)
        return 0;
    uint64_t *sketch = malloc((size_t)words * sizeof *sketch);
    if (sketch == NULL)
        return PSKV_ENOMEM;
    /* A key's word is its mixed hash's bits under the mask: under the
     * doubled mask it is either its old word or that word's copy. */
    for (uint32_t i = 0; i < words; i += old)
        memcpy(sketch + i, a->sketch, (size_t)old * sizeof *sketch);
    free(a->sketch);
    set_sketch(a, sketch, words);
    return 0;
}

void pskv__admit_free(pskv__admit *a)
{
    free(a->sketch);
    free(a->window);
    memset(a, 0, sizeof *a);
}

uint64_t pskv__admit_bytes(const pskv__admit *a)
{
    if (a->sketch == NULL)
        return 0;
    return ((uint64_t)a->sketch_mask + 1) * sizeof(uint64_t) +
           (uint64_t)a->win_cap * sizeof(uint64_t);
}

int pskv__admit_window_reserve(pskv__admit *a, uint64_t need)
{
    if (a->sketch == NULL || need <= a->win_cap)
        return 0;
    uint64_t cap = a->win_cap ? a->win_cap : 64;
    while (cap < need)
        cap *= 2;
    if (cap > (1ull << 31))
        return PSKV_ENOMEM;
    uint64_t *ring = malloc((size_t)cap * sizeof *ring);
    if (ring == NULL)
        return PSKV_ENOMEM;
    /* Unroll the ring, oldest first. */
    for (uint32_t i = 0; i < a->win_len; i++)
        ring[i] = a->window[(a->win_head + i) & (a->win_cap - 1)];
    free(a->window);
    a->window = ring;
    a->win_cap = (uint32_t)cap;
    a->win_head = 0;
    return 0;
}
