/* Checkpoints (checkpoint.c).
 * SPDX-License-Identifier: BSD-2-Clause */
#ifndef PSKV_CHECKPOINT_H
#define PSKV_CHECKPOINT_H

#include "pskv_internal.h"

/* meta: the caller's bytes to commit with the rows, or NULL (keep the
 * record as it is). */
typedef struct pskv__user_meta {
    const void *bytes;
    size_t len;
} pskv__user_meta;
/* The whole checkpoint on the calling thread; job (may be NULL) is told
 * when the instant has been taken and when the checkpoint has ended.
 * final: pskv_close's (no row call follows; the version records say so). */
PSKV__HIDDEN int pskv__checkpoint_run(pskv_store *s, const pskv__user_meta *meta, pskv_ckpt *job,
                                      bool final);
/* pskv_checkpoint_start, also for pskv_checkpoint (has_meta false: keep
 * the metadata record). Arguments already checked. */
PSKV__HIDDEN int pskv__checkpoint_start(pskv_store *s, const void *meta, size_t len,
                                        bool has_meta, pskv_ckpt **out);
PSKV__HIDDEN int pskv__checkpoint_wait(pskv_ckpt *job, uint64_t *seq);
PSKV__HIDDEN bool pskv__checkpoint_done(pskv_ckpt *job);
/* Tests: called at the checkpoint's instant, with every table's layout
 * lock held exclusive (no row call in flight). */
PSKV__HIDDEN extern void (*pskv__checkpoint_begin_hook)(void *arg);
PSKV__HIDDEN extern void *pskv__checkpoint_begin_hook_arg;

#endif
