/* The store's DRAM budget (budget.c).
 * SPDX-License-Identifier: BSD-2-Clause */
#ifndef PSKV_BUDGET_H
#define PSKV_BUDGET_H

#include "pskv_internal.h"

/* Bring the store's resident bytes back under its budget (no locks held by
 * the caller). 0, or PSKV_ENOSPC / PSKV_EIO when cold rows could not be
 * written to the spill tier (they stay resident). */
PSKV__HIDDEN int pskv__budget_enforce(pskv_store *s);
/* The same, stopping between eviction batches once yield(s) returns true
 * (the prefetch worker: a queued job's reads come before evictions). */
PSKV__HIDDEN int pskv__budget_evict(pskv_store *s, bool (*yield)(pskv_store *s));
/* Before a call that may add rows: 0, or the error of an eviction that
 * could not keep up (the store is over budget by more than 1/16). */
PSKV__HIDDEN int pskv__budget_admit(pskv_store *s);
/* Account rows brought into DRAM (+) or removed from it (-). */
PSKV__HIDDEN void pskv__budget_account(pskv_store *s, int64_t bytes);

#endif
