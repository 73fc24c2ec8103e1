/* A table: its shards behind a consistent-hash ring (the layout), create
 * and destroy, info and statistics. The batch row calls are in rows.c,
 * resharding in reshard.c, iteration in iter.c.
 * SPDX-License-Identifier: BSD-2-Clause */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "changes.h"
#include "dirty.h"
#include "errors.h"
#include "format.h"
#include "options.h"
#include "pskv_internal.h"
#include "table.h"

/* Virtual nodes per shard in a table's ring: enough for a balanced spread of
 * rows over shards; the ring stays small enough to sit in cache. */
#define TABLE_RING_VNODES 64u

/* ---------------------------------------------------------------- layout */

void pskv__layout_free(pskv__shard *shards, uint32_t n)
{
    if (shards == NULL)
        return;
    for (uint32_t i = 0; i < n; i++) {
        pskv__dirty_free(&shards[i]);
        pskv__shard_free(&shards[i]);
    }
    free(shards);
}

/* Slabs of 64 KiB, unless the store's budget is small for n shards: a
 * shard's first row costs a slab, so under a budget below 4 slabs per
 * shard they shrink (to 4 KiB at least): 64 shards under a 256 KiB budget
 * took 4.2 MB of slabs for 512 rows of 128 bytes. */
static uint32_t slab_bytes_for(const pskv_table *t, uint32_t n)
{
    uint64_t budget = t->store->opts.memory_budget;
    uint32_t slab = 64u << 10;
    if (budget == 0)
        return slab;
    uint64_t per_shard = budget / n;
    while (slab > (4u << 10) && (uint64_t)slab * 4 > per_shard)
        slab /= 2;
    return slab;
}

/* A ring over shards 0..n-1 and the empty shards themselves. */
int pskv__layout_create(const pskv_table *t, uint32_t n, pskv_ring **ring_out,
                         pskv__shard **shards_out)
{
    pskv_ring *ring = NULL;
    int rc = pskv__ring_create_uniform(TABLE_RING_VNODES, t->opts.seed, n, &ring);
    pskv__shard *shards = NULL;
    if (rc == 0) {
        shards = aligned_alloc(64, (size_t)n * sizeof *shards);
        if (shards == NULL)
            rc = PSKV_ENOMEM;
    }
    uint32_t made = 0;
    for (; rc == 0 && made < n; made++)
        if ((rc = pskv__shard_init(&shards[made], t->stored_bytes, slab_bytes_for(t, n),
                                   t->opts.seed, pskv__store_admits(t->store))) == 0)
            pskv__dirty_init(&shards[made]); /* allocates nothing */
    if (rc != 0) {
        if (shards != NULL && made > 0)
            made--; /* the failed init cleaned up after itself */
        pskv__layout_free(shards, made);
        pskv_ring_destroy(ring);
        return rc;
    }
    *ring_out = ring;
    *shards_out = shards;
    return 0;
}

int pskv__table_create(pskv_store *s, const char *name, const pskv_table_options *o,
                       pskv_table **out)
{
    pskv_table *t = calloc(1, sizeof *t);
    if (t == NULL)
        return PSKV_ENOMEM;
    t->store = s;
    memcpy(t->name, name, strlen(name) + 1);
    t->opts = *o;
    pskv__table_options_resolve(&t->opts);
    pskv__optimizer_setup(&t->opt, &t->opts);
    t->dim = o->dim;
    t->state_floats = t->opt.state_floats;
    t->row_floats = t->dim + t->state_floats;
    t->payload_bytes = t->row_floats * (uint32_t)sizeof(float);
    t->sync = o->update == PSKV_UPDATE_SYNC;
    t->extra_bytes = (uint32_t)pskv_fmt_row_extra_bytes(t->dim, o->update, o->staleness_on);
    t->staleness = o->staleness_on ? (int32_t)o->staleness : -1;
    t->step_at = t->payload_bytes + (uint32_t)pskv_fmt_row_extra_bytes(t->dim, o->update, 0);
    t->version_at = t->payload_bytes + t->extra_bytes;
    t->stored_bytes = t->version_at + PSKV__VERSION_BYTES;
    t->budget_bytes = t->stored_bytes + (pskv__store_admits(s) ? PSKV__ADMIT_ROW_BYTES : 0);
    uint64_t changes = s->opts.changes ? s->opts.changes : PSKV__CHANGES_DEFAULT;
    uint64_t per_shard = changes / o->shards;
    t->changes_max = per_shard > UINT32_MAX / 2 ? UINT32_MAX / 2 : (uint32_t)per_shard;
    /* Its first version: past a random point (a durable table persisted
     * earlier goes on by changes.c's resume rule instead). */
    pskv__changes_start(t, pskv__version_base());

    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
    /* A reshard must not starve behind an endless stream of row calls. */
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    int rc = pthread_rwlock_init(&t->layout_lock, &attr) == 0 ? 0 : PSKV_ENOMEM;
    pthread_rwlockattr_destroy(&attr);
    if (rc != 0) {
        free(t);
        return rc;
    }
    rc = pskv__layout_create(t, o->shards, &t->ring, &t->shards);
    if (rc != 0) {
        pthread_rwlock_destroy(&t->layout_lock);
        free(t);
        return rc;
    }
    t->nshards = o->shards;
    t->durable = s->lmdb.mdb != NULL;
    pthread_mutex_init(&t->ckpt_lock, NULL);
    pthread_mutex_init(&t->count_lock, NULL);
    pthread_mutex_init(&t->step_lock, NULL);
    if (s->dir != NULL) {
        size_t len = strlen(s->dir) + strlen(name) + 16;
        char *path = malloc(len);
        rc = path ? 0 : PSKV_ENOMEM;
        if (rc == 0) {
            snprintf(path, len, "%s/%s.spill", s->dir, name);
            rc = pskv__spill_open(path, t->stored_bytes, s->opts.spill_max, &s->spill_bytes, s->io,
                                  &t->spill);
        }
        free(path);
        if (rc != 0) {
            pskv__table_destroy(t);
            return rc;
        }
    }
    *out = t;
    return 0;
}

void pskv__table_destroy(pskv_table *t)
{
    if (t == NULL)
        return;
    pskv__layout_free(t->shards, t->nshards);
    pskv_ring_destroy(t->ring);
    pskv__spill_close(t->spill);
    pthread_rwlock_destroy(&t->layout_lock);
    pthread_mutex_destroy(&t->ckpt_lock);
    pthread_mutex_destroy(&t->count_lock);
    pthread_mutex_destroy(&t->step_lock);
    pskv__keyfilter_free(&t->persisted);
    free(t->carry);
    free(t);
}

/* ---------------------------------------------------------------- info, stats */

int pskv_table_info_get(const pskv_table *t, pskv_table_info *out)
{
    if (t == NULL || out == NULL)
        return PSKV_EINVAL;
    pskv_table *mt = (pskv_table *)t;
    pthread_rwlock_rdlock(&mt->layout_lock);
    memset(out, 0, sizeof *out);
    out->dim = t->dim;
    out->state_floats = t->state_floats;
    out->row_bytes = t->payload_bytes;
    out->shards = t->nshards;
    out->options = t->opts;
    pthread_rwlock_unlock(&mt->layout_lock);
    return 0;
}

void pskv__table_stats_add(pskv_table *t, pskv_table_stats *st)
{
    pthread_rwlock_rdlock(&t->layout_lock);
    for (uint32_t s = 0; s < t->nshards; s++) {
        pskv__shard *sh = &t->shards[s];
        pskv__shard_lock(sh);
        st->rows += (uint64_t)sh->rows + sh->spilled.count;
        st->dram_bytes += pskv__shard_dram_bytes(sh) + pskv__dirty_dram_bytes(sh);
        st->spill_index_bytes += pskv__keymap_bytes(&sh->spilled);
        st->rows_created += sh->created;
        st->rows_erased += sh->erased;
        st->rows_evicted += sh->evicted;
        st->rows_spilled += sh->spilled.count;
        pskv__shard_unlock(sh);
    }
    st->rows += atomic_load(&t->cold_rows);
    st->rows_cold = atomic_load(&t->cold_rows);
    st->dram_bytes += sizeof *t + (uint64_t)t->nshards * sizeof(pskv__shard) +
                      pskv__keyfilter_bytes(&t->persisted);
    if (t->spill != NULL) {
        uint64_t alloc_bytes = pskv__spill_dram_bytes(t->spill);
        st->dram_bytes += alloc_bytes;
        st->spill_index_bytes += alloc_bytes;
    }
    pthread_rwlock_unlock(&t->layout_lock);
    st->row_bytes = st->rows * t->payload_bytes;
}

int pskv_table_stats_get(const pskv_table *t, pskv_table_stats *out)
{
    if (t == NULL || out == NULL)
        return PSKV_EINVAL;
    pskv_table *mt = (pskv_table *)t;
    memset(out, 0, sizeof *out);
    pskv__table_stats_add(mt, out);
    out->pulled = atomic_load(&mt->n_pulled);
    out->pushed = atomic_load(&mt->n_pushed);
    out->got = atomic_load(&mt->n_got);
    out->put = atomic_load(&mt->n_put);
    out->get_misses = atomic_load(&mt->n_get_misses);
    out->reshards = atomic_load(&mt->n_reshards);
    out->spill_reads = atomic_load(&mt->n_spill_reads);
    out->prefetch_errors = atomic_load(&mt->n_prefetch_errors);
    out->spill_read_ns = atomic_load(&mt->n_spill_read_ns);
    out->spill_write_ns = atomic_load(&mt->n_spill_write_ns);
    out->spill_writes = atomic_load(&mt->n_spill_writes);
    out->cold_lookups = atomic_load(&mt->n_cold_lookups);
    out->push_nonfinite = atomic_load(&mt->n_push_nonfinite);
    out->stepped = atomic_load(&mt->n_stepped);
    out->stale_dropped = atomic_load(&mt->n_stale_dropped);
    out->exported = atomic_load(&mt->n_exported);
    return 0;
}

uint64_t pskv_table_rows(const pskv_table *t)
{
    pskv_table_stats st;
    if (pskv_table_stats_get(t, &st) != 0)
        return 0;
    return st.rows;
}

uint64_t pskv_table_version(const pskv_table *t)
{
    return t == NULL ? 0 : atomic_load(&((pskv_table *)t)->version);
}

int pskv_table_truncate(pskv_table *t, uint64_t *erased)
{
    pskv__detail_clear();
    if (erased != NULL)
        *erased = 0;
    if (t == NULL)
        return pskv__fail(PSKV_EINVAL, "the table is NULL");
    enum { BATCH = 4096 };
    uint64_t *keys = malloc(BATCH * sizeof *keys);
    float *row = malloc(((size_t)t->dim + 1) * sizeof *row);
    pskv_iter *it = NULL;
    int rc = keys && row ? pskv_iter_create(t, &it) : PSKV_ENOMEM;
    uint32_t n = 0;
    uint64_t done = 0;
    while (rc == 0) {
        int got = pskv_iter_next(it, &keys[n], row, NULL);
        if (got < 0)
            rc = got;
        else if (got == 1)
            n++;
        if (rc == 0 && n > 0 && (got == 0 || n == BATCH)) {
            rc = pskv_erase(t, keys, n); /* the iterator's copy stays valid */
            done += rc == 0 ? n : 0;
            n = 0;
        }
        if (got == 0)
            break;
    }
    pskv_iter_destroy(it);
    free(keys);
    free(row);
    if (erased != NULL)
        *erased = done;
    return rc;
}
