/* CLOCK (second-chance) inside one shard: every row access sets the row's
 * reference bit in its index entry; the hand walks the index, clears a set
 * bit (second chance) and picks a row whose bit was already clear: it was
 * not used for a whole turn. Used by the budget's eviction loop (budget.c)
 * and the spill tier's victim picking (tier.c).
 * SPDX-License-Identifier: BSD-2-Clause */
#include "changes.h"
#include "clock.h"
#include "pskv_internal.h"

pskv__entry *pskv__clock_next(pskv__shard *sh, uint64_t *steps)
{
    while (*steps > 0) {
        (*steps)--;
        pskv__entry *e = &sh->index[sh->clock_hand & sh->index_mask];
        if (e->slot != PSKV__SLOT_EMPTY && !(e->flags & PSKV__FLAG_BUSY)) {
            if (!(e->flags & PSKV__FLAG_REF))
                return e; /* the hand stays on it */
            e->flags &= ~PSKV__FLAG_REF; /* second chance */
        }
        sh->clock_hand++;
    }
    return NULL;
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
