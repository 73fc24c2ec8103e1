/* Admission under a DRAM budget (admit.c): which rows a shard of a
 * memory-only store (a cache) keeps when the budget makes it drop one.
 * Directory stores keep CLOCK alone (pskv__store_admits; docs/DESIGN.md
 * has the measurement).
 *
 * After W-TinyLFU: every read of a key (pull, get; found or not; once per
 * call) counts in a frequency sketch; writes, iterations and exports do
 * not, so a cache's get-then-put of a missing key, or a trainer's pull and
 * push of one key, is one use. A row created in DRAM waits in a small
 * window (about 0.5% of the shard's rows, oldest first) without a CLOCK
 * reference bit; a row moved by a reshard joins the main rows at once.
 * When the window is over its size and the budget asks for a victim, the
 * window's oldest row duels the main rows' CLOCK victim: the one the
 * sketch counts more often stays (ties keep the resident row). A one-pass
 * scan of new keys therefore leaves through the window instead of pushing
 * out the hot rows, and a scanned key that does win a duel (against a row
 * nobody read lately) has no reference bit: CLOCK takes it next. Without
 * evictions (the budget not reached) the window's oldest rows join the
 * main rows unjudged once it holds twice its size plus 64. A reshard
 * starts the new shards' sketches empty.
 *
 * The sketch is a count-min sketch of 4-bit counters, 16 per 64-bit word
 * and one word per key (4 counters in it, one from each quarter), one
 * word per two index slots of the shard: 5.3-10.7 bytes per resident row
 * as the index fills; the budget counts PSKV__ADMIT_ROW_BYTES per row for
 * it and the window. Counters are halved when the additions reach 10 per
 * sketch word, and the count of additions with them, so later halvings
 * come every 5 per word (aging: old popularity fades). Increments are
 * conservative (only the smallest of the key's counters grow), which keeps
 * the estimates of rare keys low. The shard's lock guards all of it.
 * SPDX-License-Identifier: BSD-2-Clause */
#ifndef PSKV_ADMIT_H
#define PSKV_ADMIT_H

#include <stdbool.h>
#include <stdint.h>

#include "common.h"

/* What the budget counts per resident row for the sketch and the window. */
#define PSKV__ADMIT_ROW_BYTES 8u

/* The window's size for a shard of `rows` resident rows: 0.5%, at least 1
 * (0.5% and 1% were within 0.2 points of each other on the cache bench). */
static inline uint32_t pskv__admit_window_target(uint32_t rows)
{
    return rows >= 400 ? rows / 200 : 1;
}

typedef struct pskv__admit {
    uint64_t *sketch;     /* NULL: admission off (no budget) */
    uint32_t sketch_mask; /* words - 1 */
    uint32_t additions;   /* since the last halving */
    uint32_t period;      /* additions between halvings */
    uint64_t *window;     /* keys of rows in the window, a ring, oldest at head */
    uint32_t win_head, win_len, win_cap; /* win_cap a power of two (or 0) */
} pskv__admit;

/* The sketch's own bits of a key's hash: the word from the high half, the
 * counters from the low byte, every bit depending on every bit of hash
 * (a multiply alone left the low byte a function of the hash's low byte,
 * and keys equal there collided on all four counters too often). */
static inline uint64_t pskv__admit_mix(uint64_t hash)
{
    uint64_t z = (hash ^ (hash >> 31)) * 0x7FB5D329728EA185ull;
    return z ^ (z >> 27);
}

static inline uint64_t *pskv__admit_word(const pskv__admit *a, uint64_t mixed)
{
    return &a->sketch[(uint32_t)(mixed >> 32) & a->sketch_mask];
}

/* Bit offset of the key's counter in quarter i of its word. */
static inline unsigned pskv__admit_offset(uint64_t mixed, unsigned i)
{
    return (i * 4u + (unsigned)((mixed >> (2u * i)) & 3u)) * 4u;
}

static inline void pskv__admit_prefetch(const pskv__admit *a, uint64_t hash)
{
    if (a->sketch != NULL)
        __builtin_prefetch(pskv__admit_word(a, pskv__admit_mix(hash)), 1, 3);
}

PSKV__HIDDEN void pskv__admit_halve(pskv__admit *a);

/* The smallest of a key's four counters in its word v: its estimate. */
static inline unsigned pskv__admit_least(uint64_t v, uint64_t mixed)
{
    unsigned least = 15;
    for (unsigned i = 0; i < 4; i++) {
        unsigned c = (unsigned)(v >> pskv__admit_offset(mixed, i)) & 15u;
        least = c < least ? c : least;
    }
    return least;
}

/* Count one access of the key of this hash (no-op when admission is off). */
static inline void pskv__admit_record(pskv__admit *a, uint64_t hash)
{
    if (a->sketch == NULL)
        return;
    uint64_t m = pskv__admit_mix(hash);
    uint64_t *w = pskv__admit_word(a, m);
    uint64_t v = *w;
    unsigned least = pskv__admit_least(v, m);
    if (least < 15) {
        for (unsigned i = 0; i < 4; i++) {
            unsigned off = pskv__admit_offset(m, i);
            if (((unsigned)(v >> off) & 15u) == least)
                v += 1ull << off;
        }
        *w = v;
    }
    if (++a->additions >= a->period)
        pskv__admit_halve(a);
}

/* How often the sketch has seen the key of this hash (0..15). */
PSKV__HIDDEN unsigned pskv__admit_estimate(const pskv__admit *a, uint64_t hash);

/* Turn admission on for a shard whose index has index_cap slots. */
PSKV__HIDDEN int pskv__admit_start(pskv__admit *a, uint32_t index_cap);
/* The index grew to index_cap slots: the sketch doubles along, keeping
 * every estimate (the new words repeat the old ones). PSKV_ENOMEM leaves
 * the old sketch. */
PSKV__HIDDEN int pskv__admit_grow(pskv__admit *a, uint32_t index_cap);
PSKV__HIDDEN void pskv__admit_free(pskv__admit *a);
PSKV__HIDDEN uint64_t pskv__admit_bytes(const pskv__admit *a);

/* The most keys the window ring of a shard of `rows` rows holds: the
 * shard drains it past twice the window's size plus 64 (shard.c), before
 * the next push. */
static inline uint64_t pskv__admit_window_most(uint64_t rows)
{
    return 2ull * pskv__admit_window_target(rows > UINT32_MAX ? UINT32_MAX : (uint32_t)rows) + 65;
}

/* The window ring: room for `keys` keys in all (so that a push never
 * allocates), push at the tail, look at and drop the head. */
PSKV__HIDDEN int pskv__admit_window_reserve(pskv__admit *a, uint64_t keys);
static inline void pskv__admit_window_push(pskv__admit *a, uint64_t key)
{
    PSKV__ASSERT(a->win_len < a->win_cap);
    a->window[(a->win_head + a->win_len++) & (a->win_cap - 1)] = key;
}
static inline uint64_t pskv__admit_window_oldest(const pskv__admit *a)
{
    PSKV__ASSERT(a->win_len > 0);
    return a->window[a->win_head];
}
static inline void pskv__admit_window_drop(pskv__admit *a)
{
    a->win_head = (a->win_head + 1) & (a->win_cap - 1);
    a->win_len--;
}

#endif
