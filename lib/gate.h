/* A gate (gate.c): readers that never wait, beside one writer at a time.
 *
 * The word counts the readers inside, plus PSKV__GATE_CLOSED while a
 * writer is inside or waits for the readers to leave. A reader enters with
 * a compare-and-swap only while the gate is open and otherwise gives up;
 * it never waits. A writer (one at a time: the caller serializes writers,
 * the shard lock with a mutex) closes the gate, which turns new readers
 * away at once, then sleeps on the word (futex) until the last reader
 * leaves and wakes it.
 *
 * Why not a pthread rwlock: pull's first pass (hits.c) holds every shard
 * of a round shared, 64 with the default table, and ThreadSanitizer
 * follows at most 64 locks held by one thread, then aborts. It follows
 * atomics as such: entering (acquire) and leaving (release) order a
 * reader's reads before the next writer's writes and after the last.
 * SPDX-License-Identifier: BSD-2-Clause */
#ifndef PSKV_GATE_H
#define PSKV_GATE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "common.h"

#define PSKV__GATE_CLOSED 0x80000000u

typedef struct pskv__gate {
    _Atomic uint32_t word;
} pskv__gate;

/* Writer, readers still inside: sleep until the last one leaves. */
PSKV__HIDDEN void pskv__gate_wait(pskv__gate *g);
/* The last reader leaving a closed gate: wake its writer. */
PSKV__HIDDEN void pskv__gate_wake(pskv__gate *g);

static inline void pskv__gate_init(pskv__gate *g)
{
    atomic_init(&g->word, 0);
}

/* Reader: in if no writer is inside or waiting; never waits. */
static inline bool pskv__gate_enter(pskv__gate *g)
{
    uint32_t w = atomic_load_explicit(&g->word, memory_order_relaxed);
    do {
        if (w & PSKV__GATE_CLOSED)
            return false;
    } while (!atomic_compare_exchange_weak_explicit(&g->word, &w, w + 1, memory_order_acquire,
                                                    memory_order_relaxed));
    return true;
}

static inline void pskv__gate_leave(pskv__gate *g)
{
    if (atomic_fetch_sub_explicit(&g->word, 1, memory_order_release) == PSKV__GATE_CLOSED + 1)
        pskv__gate_wake(g);
}

/* Writer (the only one): close, then wait for the readers inside. */
static inline void pskv__gate_close(pskv__gate *g)
{
    if (atomic_fetch_or_explicit(&g->word, PSKV__GATE_CLOSED, memory_order_acquire) != 0)
        pskv__gate_wait(g);
}

/* Writer done: no reader got in meanwhile, so the word is just closed. */
static inline void pskv__gate_open(pskv__gate *g)
{
    PSKV__ASSERT(atomic_load_explicit(&g->word, memory_order_relaxed) == PSKV__GATE_CLOSED);
    atomic_store_explicit(&g->word, 0, memory_order_release);
}

#endif
