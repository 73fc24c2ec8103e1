/* A checkpoint's capture: the keys of each table, sorted (numeric = LMDB
 * byte order), in batches; each key's bytes as of the begin instant come
 * from the row itself while it is still pending, from its pre-image
 * (dirty.c saved it before the first later write), or from the spill
 * file; a key with neither was erased and is deleted. A helper thread
 * captures one batch ahead of the writer (checkpoint.c), two batches in
 * turn, so that the writer, the checkpoint's bottleneck, only puts.
 * Capture changes nothing the retry of a transaction could see differently:
 * marks stay until the checkpoint ends.
 * SPDX-License-Identifier: BSD-2-Clause */
#include <stdlib.h>
#include <string.h>

#include "capture.h"
#include "dirty.h"
#include "format.h"
#include "keyfilter.h"
#include "pskv_internal.h"
#include "tier.h"

/* Captured bytes per batch: bounds the checkpointer's buffer. */
#define BATCH_BYTES (4u << 20)



void pskv__batch_free(pskv__batch *c)
{
    free(c->hash);
    free(c->shard_of);
    free(c->at);
    free(c->start);
    free(c->fill);
    free(c->vals);
    free(c->present);
    free(c->waiting);
    free(c->spill_pos);
    free(c->spill_slot);
    free(c->spill_owned);
}

int pskv__batch_alloc(pskv__batch *c, uint32_t keys_max, uint32_t shards_max, uint32_t stored_bytes)
{
    memset(c, 0, sizeof *c);
    c->hash = malloc(keys_max * sizeof *c->hash);
    c->shard_of = malloc(keys_max * sizeof *c->shard_of);
    c->at = malloc(keys_max * sizeof *c->at);
    c->start = malloc(((size_t)shards_max + 1) * sizeof *c->start);
    c->fill = malloc(((size_t)shards_max + 1) * sizeof *c->fill);
    /* Captured rows of any table: a batch holds at most BATCH_BYTES of them,
     * or 16 rows (pskv__batch_keys). */
    size_t vals_bytes = (size_t)16 * (stored_bytes + PSKV_FMT_CHECK_BYTES);
    c->vals = malloc(vals_bytes > BATCH_BYTES ? vals_bytes : BATCH_BYTES);
    c->present = malloc(keys_max);
    c->waiting = malloc(keys_max);
    c->spill_pos = malloc(keys_max * sizeof *c->spill_pos);
    c->spill_slot = malloc(keys_max * sizeof *c->spill_slot);
    c->spill_owned = malloc(keys_max);
    if (!c->hash || !c->shard_of || !c->at || !c->start || !c->fill || !c->vals || !c->present ||
        !c->waiting || !c->spill_pos || !c->spill_slot || !c->spill_owned) {
        pskv__batch_free(c);
        return PSKV_ENOMEM;
    }
    return 0;
}

/* Route the batch's keys (layout lock held) and group them by shard. */
void pskv__batch_group(pskv_table *t, pskv__batch *c, const uint64_t *keys, uint32_t n)
{
    c->keys = keys;
    c->n = n;
    memset(c->start, 0, ((size_t)t->nshards + 1) * sizeof *c->start);
    for (uint32_t i = 0; i < n; i++) {
        c->hash[i] = pskv__key_hash(keys[i], t->opts.seed);
        c->shard_of[i] = pskv__ring_route_hash(t->ring, c->hash[i]);
        c->start[c->shard_of[i] + 1]++;
    }
    for (uint32_t s = 0; s < t->nshards; s++)
        c->start[s + 1] += c->start[s];
    memcpy(c->fill, c->start, (size_t)t->nshards * sizeof *c->fill);
    for (uint32_t i = 0; i < n; i++)
        c->at[c->fill[c->shard_of[i]]++] = i;
}

static void take_bytes(pskv_table *t, pskv__batch *c, uint32_t i, const void *row)
{
    memcpy(pskv__batch_val(t, c, i), row, t->stored_bytes);
    c->present[i] = 1;
}

static void need_spill_read(pskv__batch *c, uint32_t i, uint32_t slot, bool owned)
{
    c->spill_pos[c->nspill] = i;
    c->spill_slot[c->nspill] = slot;
    c->spill_owned[c->nspill++] = owned;
    c->present[i] = 1;
}

/* One key's bytes as of the begin (shard lock held), as dirty.c finds them. */
static void capture_key(pskv_table *t, pskv__shard *sh, pskv__batch *c, uint32_t i, uint32_t parity)
{
    pskv__capture cap = pskv__dirty_capture(t, sh, c->keys[i], c->hash[i], parity);
    c->waiting[i] = cap.kind == PSKV__CAPTURE_WAIT;
    switch (cap.kind) {
    case PSKV__CAPTURE_BYTES:
        take_bytes(t, c, i, cap.bytes);
        break;
    case PSKV__CAPTURE_SPILL:
        need_spill_read(c, i, cap.slot, cap.owned);
        break;
    case PSKV__CAPTURE_ERASED:
        c->present[i] = 0;
        break;
    case PSKV__CAPTURE_WAIT:
        break;
    }
}

/* The batch's spilled bytes, read in one I/O batch; tier.c releases the
 * rows this capture claimed. */
static int read_spilled(pskv_table *t, pskv__batch *c)
{
    int rc = pskv__tier_read_claimed(t, c->nspill, c->keys, c->spill_pos, c->spill_slot,
                                     c->spill_owned, c->vals,
                                     (size_t)t->stored_bytes + PSKV_FMT_CHECK_BYTES);
    c->nspill = 0;
    return rc;
}

/* Capture a batch of sorted keys: c->present and c->vals (with checks). */
static int capture_batch(pskv_table *t, pskv__batch *c, const uint64_t *keys, uint32_t n)
{
    pthread_rwlock_rdlock(&t->layout_lock);
    pskv__batch_group(t, c, keys, n);
    const uint32_t parity = t->parity;
    memset(c->waiting, 1, n);
    int rc = 0;
    for (;;) {
        uint64_t gen = pskv__tier_moved_gen(t->store);
        uint32_t waiting = 0;
        c->nspill = 0;
        for (uint32_t s = 0; s < t->nshards; s++) {
            if (c->start[s] == c->start[s + 1])
                continue;
            pskv__shard *sh = &t->shards[s];
            pskv__shard_lock(sh);
            for (uint32_t j = c->start[s]; j < c->start[s + 1]; j++) {
                if (j + 8 < c->start[s + 1]) /* the index entry a few keys ahead */
                    __builtin_prefetch(&sh->index[pskv__index_pos(c->hash[c->at[j + 8]],
                                                                  sh->index_mask)]);
                if (c->waiting[c->at[j]]) {
                    capture_key(t, sh, c, c->at[j], parity);
                    waiting += c->waiting[c->at[j]];
                }
            }
            pskv__shard_unlock(sh);
        }
        rc = read_spilled(t, c);
        if (rc != 0 || waiting == 0)
            break;
        pskv__tier_moved_wait(t->store, gen);
    }
    pthread_rwlock_unlock(&t->layout_lock);
    for (uint32_t i = 0; i < n && rc == 0; i++)
        if (c->present[i]) {
            uint8_t *v = pskv__batch_val(t, c, i);
            pskv_fmt_put64(v + t->stored_bytes, pskv_fmt_row_check(keys[i], v, t->stored_bytes));
        }
    return rc;
}

uint32_t pskv__batch_keys(const pskv_table *t)
{
    uint32_t k = BATCH_BYTES / (t->stored_bytes + PSKV_FMT_CHECK_BYTES);
    return k < 16 ? 16 : k > PSKV__BATCH_KEYS_MAX ? PSKV__BATCH_KEYS_MAX : k;
}



size_t pskv__batch_count(const pskv__ckpt_table *ct)
{
    size_t step = (size_t)pskv__batch_keys(ct->t);
    return (ct->n + step - 1) / step;
}

static void *capture_main(void *arg)
{
    pskv__batches *p = arg;
    uint64_t k = 0;
    for (uint32_t i = 0; i < p->nt; i++) {
        pskv_table *t = p->ct[i].t;
        size_t step = (size_t)pskv__batch_keys(t);
        pskv__keyfilter_expect(&t->persisted, p->ct[i].n);
        for (size_t at = 0; at < p->ct[i].n; at += step, k++) {
            pskv__batch *c = &p->c[k & 1];
            pthread_mutex_lock(&p->lock);
            while (p->full[k & 1] && !p->stop)
                pthread_cond_wait(&p->cv, &p->lock);
            bool stop = p->stop;
            pthread_mutex_unlock(&p->lock);
            if (stop)
                return NULL;
            uint32_t n = (uint32_t)(p->ct[i].n - at < step ? p->ct[i].n - at : step);
            int rc = capture_batch(t, c, p->ct[i].keys + at, n);
            for (uint32_t j = 0; j < n && rc == 0; j++) {
                if (j + 8 < n)
                    pskv__keyfilter_prefetch(&t->persisted, c->keys[j + 8]);
                if (c->present[j]) /* a retry adds them again: harmless */
                    pskv__keyfilter_add(&t->persisted, c->keys[j]);
            }
            pthread_mutex_lock(&p->lock);
            if (rc != 0)
                p->capture_rc = rc;
            else
                p->full[k & 1] = true;
            pthread_cond_broadcast(&p->cv);
            pthread_mutex_unlock(&p->lock);
            if (rc != 0)
                return NULL;
        }
    }
    return NULL;
}

/* The writer's side: batch k once captured, or the capture's error. */
int pskv__batches_wait(pskv__batches *p, uint64_t k)
{
    pthread_mutex_lock(&p->lock);
    while (!p->full[k & 1] && p->capture_rc == 0)
        pthread_cond_wait(&p->cv, &p->lock);
    int rc = p->full[k & 1] ? 0 : p->capture_rc;
    pthread_mutex_unlock(&p->lock);
    return rc;
}

void pskv__batches_done(pskv__batches *p, uint64_t k)
{
    pthread_mutex_lock(&p->lock);
    p->full[k & 1] = false;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->lock);
}

int pskv__batches_start(pskv__batches *p, pskv__ckpt_table *ct, uint32_t nt, pskv__batch c[2])
{
    *p = (pskv__batches){.ct = ct, .nt = nt, .c = c};
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->cv, NULL);
    if (pthread_create(&p->thread, NULL, capture_main, p) == 0)
        return 0;
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->lock);
    return PSKV_ENOMEM;
}

void pskv__batches_stop(pskv__batches *p)
{
    pthread_mutex_lock(&p->lock);
    p->stop = true; /* after an error: capture nothing more */
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->lock);
    pthread_join(p->thread, NULL);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->lock);
}
