/* update=sync's pending lists across a reshard (step.c; pskv_step is
 * public).
 * SPDX-License-Identifier: BSD-2-Clause */
#ifndef PSKV_STEP_H
#define PSKV_STEP_H

#include "pskv_internal.h"

/* A reshard (layout lock exclusive): put every pending key of t's shards
 * on the list of the new shard ring routes it to. 0 or PSKV_ENOMEM (the
 * new shards' lists are freed with them). */
PSKV__HIDDEN int pskv__step_pending_move(const pskv_table *t, const pskv_ring *ring,
                                         pskv__shard *to, uint32_t nto);

#endif
