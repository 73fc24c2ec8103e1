/* CLOCK (second chance) inside a shard (clock.c).
 * SPDX-License-Identifier: BSD-2-Clause */
#ifndef PSKV_CLOCK_H
#define PSKV_CLOCK_H

#include "pskv_internal.h"

/* The next CLOCK victim of the shard (lock held): moves the hand over at
 * most *steps entries, clearing the reference bits it passes, and returns
 * the first resident, idle row whose bit was already clear, with the hand
 * on it; NULL when the steps run out. Rows being evicted (BUSY) are
 * skipped. Under a budget (admission on, admit.h) rows in the window are
 * skipped too, and while the window is over its size its oldest row duels
 * that victim: the one returned is the loser, which may be the newcomer
 * (not under the hand then). */
PSKV__HIDDEN pskv__entry *pskv__clock_next(pskv__shard *sh, uint64_t *steps);
/* CLOCK sweep over one shard (lock held): clear reference bits, drop rows
 * without one, until max_evict rows are gone or the hand has gone once
 * around. Returns the rows dropped (the caller accounts them); each is
 * logged as gone (changes.c). */
PSKV__HIDDEN uint32_t pskv__clock_sweep(pskv_table *t, pskv__shard *sh, uint32_t max_evict);

#endif
