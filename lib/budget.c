/* The DRAM budget: exact accounting of resident row bytes, the admission
 * check, and the eviction loop. The evictor's hand walks the shards of
 * every table in turn; inside a shard CLOCK (clock.c) picks the rows. In a
 * memory-only store a dropped row is gone (cache semantics); a directory
 * store writes it to the spill file (tier.c). Only this file changes the
 * byte account.
 * SPDX-License-Identifier: BSD-2-Clause */
#include "budget.h"
#include "clock.h"
#include "pskv_internal.h"
#include "tier.h"

/* Rows one shard visit may drop: spreads eviction over shards so that each
 * loses its coldest rows rather than one shard losing everything. */
#define EVICT_PER_VISIT 64u

void pskv__budget_account(pskv_store *s, int64_t bytes)
{
    if (bytes != 0)
        atomic_fetch_add_explicit(&s->resident_bytes, bytes, memory_order_relaxed);
}

static bool over(pskv_store *s, uint64_t limit)
{
    return (uint64_t)atomic_load_explicit(&s->resident_bytes, memory_order_relaxed) > limit;
}

int pskv__budget_admit(pskv_store *s)
{
    /* Calls evict after they add rows; this gate only acts when that has
     * fallen behind by more than 1/16 of the budget, i.e. when evictions
     * fail (spill full, I/O errors): the error then stops the call before
     * it changes anything. */
    uint64_t budget = s->opts.memory_budget;
    if (budget == 0 || !over(s, budget + budget / 16))
        return 0;
    return pskv__budget_enforce(s);
}

int pskv__budget_enforce(pskv_store *s) { return pskv__budget_evict(s, NULL); }

int pskv__budget_evict(pskv_store *s, bool (*yield)(pskv_store *s))
{
    uint64_t budget = s->opts.memory_budget;
    if (budget == 0 || !over(s, budget))
        return 0;
    /* Evict a little below the budget so that the next few creations do
     * not each start an eviction. */
    uint64_t slack = budget / 64 < (1u << 20) ? budget / 64 : (1u << 20);
    uint64_t target = budget - slack;
    /* One evictor at a time, and nobody queues behind it: a call that finds
     * eviction under way goes on (the store may be over budget by the rows
     * of calls in flight) instead of waiting for another thread's writes. */
    if (pthread_mutex_trylock(&s->evict_lock) != 0)
        return 0;
    uint32_t idle_turns = 0; /* tables swept whole since the last eviction */
    int rc = 0;
    while (rc == 0 && over(s, target) && (yield == NULL || !yield(s))) {
        pthread_mutex_lock(&s->lock);
        uint32_t ntables = s->ntables;
        pskv_table *t = ntables ? s->tables[s->hand_table % ntables] : NULL;
        pthread_mutex_unlock(&s->lock);
        if (t == NULL)
            break;
        pthread_rwlock_rdlock(&t->layout_lock);
        uint32_t shard = s->hand_shard % t->nshards;
        uint32_t n, visited = 1;
        if (t->spill != NULL) {
            /* Directory store: cold rows of a few shards go to the spill
             * file in one batch. */
            rc = pskv__tier_evict(t, shard, &visited, &n);
        } else {
            /* Memory-only cache: cold rows are dropped. */
            pskv__shard *sh = &t->shards[shard];
            pskv__shard_lock(sh);
            n = pskv__clock_sweep(t, sh, EVICT_PER_VISIT);
            pskv__shard_unlock(sh);
        }
        pskv__budget_account(s, -(int64_t)n * t->budget_bytes);
        const bool turned = shard + visited >= t->nshards;
        if (turned) {
            s->hand_shard = 0;
            s->hand_table++;
        } else {
            s->hand_shard = shard + visited;
        }
        pthread_rwlock_unlock(&t->layout_lock);
        /* Nothing left to evict anywhere (all rows in use by calls in
         * flight, in the admission window, or tables empty) after two
         * turns over every table: stop rather than spin. Spinning took
         * the CPU from the threads whose I/O would free rows (a spill
         * stress test with pread I/O ran 19 s to over 200 s). */
        idle_turns = n ? 0 : idle_turns + turned;
        if (idle_turns > 2 * ntables)
            break;
    }
    pthread_mutex_unlock(&s->evict_lock);
    return rc;
}
