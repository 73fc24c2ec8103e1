/* CLOCK (second-chance) inside one shard: every row access sets the row's
 * reference bit in its index entry; the hand walks the index, clears a set
 * bit (second chance) and picks a row whose bit was already clear: it was
 * not used for a whole turn. Under a budget, rows new to DRAM wait in the
 * admission window first (admit.h): the hand passes them by, and a window
 * grown past its size gives its oldest row to a duel with the hand's
 * victim, which the sketch's frequency estimate decides. Used by the
 * budget's eviction loop (budget.c) and the spill tier's victim picking
 * (tier.c).
 * SPDX-License-Identifier: BSD-2-Clause */
#include "changes.h"
#include "clock.h"
#include "pskv_internal.h"

/* The hand's victim among the main rows (not in the window). */
static pskv__entry *clock_main(pskv__shard *sh, uint64_t *steps)
{
    while (*steps > 0) {
        (*steps)--;
        pskv__entry *e = &sh->index[sh->clock_hand & sh->index_mask];
        if (e->slot != PSKV__SLOT_EMPTY && !(e->flags & (PSKV__FLAG_BUSY | PSKV__FLAG_WINDOW))) {
            if (!(e->flags & PSKV__FLAG_REF))
                return e; /* the hand stays on it */
            e->flags &= ~PSKV__FLAG_REF; /* second chance */
        }
        sh->clock_hand++;
    }
    return NULL;
}

pskv__entry *pskv__clock_next(pskv__shard *sh, uint64_t *steps)
{
    pskv__admit *a = &sh->admit;
    if (a->sketch == NULL)
        return clock_main(sh, steps);
    while (a->win_len > pskv__admit_window_target(sh->rows)) {
        uint64_t key = pskv__admit_window_oldest(a);
        uint64_t hash = pskv__key_hash(key, sh->hash_seed);
        pskv__entry *fresh = pskv__shard_find(sh, key, hash);
        if (fresh == NULL || (fresh->flags & (PSKV__FLAG_WINDOW | PSKV__FLAG_BUSY)) !=
                                 PSKV__FLAG_WINDOW) {
            pskv__admit_window_drop(a); /* gone, or already judged: a stale entry */
            continue;
        }
        pskv__entry *old = clock_main(sh, steps);
        /* The turn ran out before CLOCK found a victim: if the shard has
         * main rows (more rows than the ring holds keys), the newcomer waits
         * for the next turn instead of leaving unjudged. */
        if (old == NULL && sh->rows > a->win_len)
            return NULL;
        pskv__admit_window_drop(a);
        fresh->flags &= ~PSKV__FLAG_WINDOW; /* judged: a main row, or the victim */
        /* Ties keep the resident row: a key seen as often as the victim
         * has not shown it is hotter. A refused newcomer leaves. */
        bool admitted = old != NULL &&
                        pskv__admit_estimate(a, hash) >
                            pskv__admit_estimate(a, pskv__key_hash(old->key, sh->hash_seed));
        return admitted ? old : fresh;
    }
    return clock_main(sh, steps);
}

uint32_t pskv__clock_sweep(pskv_table *t, pskv__shard *sh, uint32_t max_evict)
{
    uint32_t evicted = 0;
    uint64_t version = 0;
    /* One turn at most per visit: a second turn would take the second
     * chance away from rows whose bit this visit just cleared. */
    uint64_t steps = (uint64_t)sh->index_mask + 1;
    pskv__entry *e;
    while (evicted < max_evict && sh->rows > 0 && (e = pskv__clock_next(sh, &steps)) != NULL) {
        /* Backward-shift deletion may move a later entry into this
         * position: the hand stays to look at it next. */
        uint64_t key = e->key;
        pskv__shard_remove(sh, e);
        /* A memory-only row dropped is gone: exports send its tombstone. */
        pskv__row_changed(t, sh, key, NULL, pskv__visit_version(t, &version));
        sh->evicted++;
        evicted++;
    }
    return evicted;
}
