/* Moving rows between DRAM and the lower tiers: the table's spill file
 * (load, evict; no shard lock held across I/O) and LMDB's cold rows (read
 * back on first use), and the one answer to where a key lives
 * (pskv__locate, in pskv_internal.h).
 *
 * A shard keeps its resident rows in its index and its spilled rows in its
 * spill map (keymap.c); a key is in one of them at most. A row in motion
 * is marked BUSY where it is: PSKV__FLAG_BUSY on the index entry of a row
 * being written out, PSKV__SPILL_BUSY on the spill-map entry of a row being
 * read back (by a loader or an iterator). Whoever sets the bit owns the row
 * until it clears the bit; everybody else leaves BUSY rows alone and, if
 * they need one, waits for the store's "moved" generation to change and
 * looks again. Owners hold the table's layout lock (shared) from marking to
 * clearing, so a reshard never sees a BUSY row.
 *
 *   load:  lock: mark spill-map entries BUSY | I/O: read + verify all of
 *          them in one batch | lock: map entry -> index entry + DRAM slot
 *   evict: lock: pick cold rows (CLOCK), mark BUSY, reserve map room | I/O:
 *          write them in one batch | lock: index entry -> map entry, DRAM
 *          slot freed
 * SPDX-License-Identifier: BSD-2-Clause */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "array.h"
#include "clock.h"
#include "cold.h"
#include "plan.h"
#include "pskv_internal.h"
#include "tier.h"

/* ---------------------------------------------------------------- waiting */

uint64_t pskv__tier_moved_gen(pskv_store *s)
{
    pthread_mutex_lock(&s->moved_lock);
    uint64_t g = s->moved_gen;
    pthread_mutex_unlock(&s->moved_lock);
    return g;
}

void pskv__tier_moved_wake(pskv_store *s)
{
    pthread_mutex_lock(&s->moved_lock);
    s->moved_gen++;
    pthread_cond_broadcast(&s->moved_cv);
    pthread_mutex_unlock(&s->moved_lock);
}

void pskv__tier_moved_wait(pskv_store *s, uint64_t seen)
{
    pthread_mutex_lock(&s->moved_lock);
    while (s->moved_gen == seen)
        pthread_cond_wait(&s->moved_cv, &s->moved_lock);
    pthread_mutex_unlock(&s->moved_lock);
}

/* ---------------------------------------------------------------- BUSY */

void pskv__tier_spilled_release(pskv__shard *sh, uint64_t key, uint64_t hash)
{
    pskv__keyval *sp = pskv__keymap_find(&sh->spilled, key, hash);
    PSKV__ASSERT(sp != NULL && (sp->value & PSKV__SPILL_BUSY)); /* ours while BUSY */
    sp->value &= ~PSKV__SPILL_BUSY;
}

/* Rows a reader claimed (spilled, BUSY: an iterator's piece, a
 * checkpoint's batch) read in one batch, then released, whatever the
 * read did. */
int pskv__tier_read_claimed(pskv_table *t, uint32_t n, const uint64_t *keys, const uint32_t *pos,
                            const uint32_t *slots, const uint8_t *owned, uint8_t *rows,
                            size_t stride)
{
    if (n == 0)
        return 0;
    uint64_t *ks = malloc((size_t)n * sizeof *ks);
    float **to = malloc((size_t)n * sizeof *to);
    int rc = ks && to ? 0 : PSKV_ENOMEM;
    for (uint32_t k = 0; k < n && rc == 0; k++) {
        ks[k] = keys[pos[k]];
        to[k] = (float *)(void *)(rows + (size_t)pos[k] * stride);
    }
    if (rc == 0)
        rc = pskv__spill_read(t->spill, n, ks, slots, to, NULL);
    free(ks);
    free(to);
    pskv__shard *locked = NULL;
    for (uint32_t k = 0; k < n; k++) {
        if (owned != NULL && !owned[k])
            continue;
        const uint64_t key = keys[pos[k]], h = pskv__key_hash(key, t->opts.seed);
        pskv__shard *sh = &t->shards[pskv__ring_route_hash(t->ring, h)];
        if (sh != locked) { /* keys of one shard come together: one lock */
            if (locked != NULL)
                pskv__shard_unlock(locked);
            pskv__shard_lock(sh);
            locked = sh;
        }
        pskv__tier_spilled_release(sh, key, h);
    }
    if (locked != NULL)
        pskv__shard_unlock(locked);
    pskv__tier_moved_wake(t->store);
    return rc;
}

/* ---------------------------------------------------------------- load */

typedef struct load_item {
    uint64_t key, hash;
    uint32_t shard, spill_slot;
} load_item;

int pskv__tier_load(pskv_table *t, const pskv__plan *p, uint64_t *loaded_rows)
{
    pskv_store *s = t->store;
    if (t->spill == NULL)
        return 0;
    uint64_t gen = pskv__tier_moved_gen(s);
    load_item *items = malloc((size_t)p->m * sizeof *items);
    if (items == NULL)
        return PSKV_ENOMEM;
    uint32_t n = 0;
    bool others_busy = false;
    for (uint32_t sd = 0; sd < t->nshards; sd++) {
        if (p->start[sd] == p->start[sd + 1])
            continue;
        pskv__shard *sh = &t->shards[sd];
        pskv__shard_lock(sh);
        for (uint32_t j = p->start[sd]; j < p->start[sd + 1]; j++) {
            uint32_t i = p->order[j];
            pskv__where w = pskv__locate(t, sh, p->keys[i], p->hash[i], false);
            switch (w.place) {
            case PSKV__IN_DRAM:
                /* About to be used (this is a pull's or a prefetch's key):
                 * the evictor must not pick it in the meantime. Rows in the
                 * admission window are not CLOCK's to pick, and must not
                 * carry a bit into the main rows they may join (admit.h). */
                if (!(w.e->flags & (PSKV__FLAG_REF | PSKV__FLAG_WINDOW)))
                    w.e->flags |= PSKV__FLAG_REF;
                break;
            case PSKV__EVICTING:
            case PSKV__LOADING: /* or ours, for a repeated key: the wait ends at once */
                others_busy = true;
                break;
            case PSKV__SPILLED:
                items[n++] = (load_item){p->keys[i], p->hash[i], sd,
                                         pskv__claim_spilled(w.sp)};
                break;
            default:
                break;
            }
        }
        pskv__shard_unlock(sh);
    }
    int rc = 0;
    if (n > 0) {
        float **rows = malloc((size_t)n * sizeof *rows);
        float *buf = malloc((size_t)n * t->stored_bytes);
        int *results = malloc((size_t)n * sizeof *results);
        uint32_t *slots = malloc((size_t)n * sizeof *slots);
        uint64_t *ks = malloc((size_t)n * sizeof *ks);
        bool bufs_ok = rows && buf && results && slots && ks;
        if (!bufs_ok) {
            rc = PSKV_ENOMEM;
        } else {
            for (uint32_t k = 0; k < n; k++) {
                rows[k] = (float *)(void *)((uint8_t *)buf + (size_t)k * t->stored_bytes);
                ks[k] = items[k].key;
                slots[k] = items[k].spill_slot;
            }
            /* All misses of the call in one I/O batch; every row verified. */
            uint64_t t0 = pskv__now_ns();
            rc = pskv__spill_read(t->spill, n, ks, slots, rows, results);
            atomic_fetch_add_explicit(&t->n_spill_read_ns, pskv__now_ns() - t0,
                                      memory_order_relaxed);
        }
        /* Install shard by shard (items are grouped by shard). Rows that
         * failed to read stay spilled, so nothing is lost or made up. */
        uint32_t loaded = 0, nfreed = 0;
        for (uint32_t k = 0; k < n;) {
            pskv__shard *sh = &t->shards[items[k].shard];
            uint32_t end = k;
            while (end < n && items[end].shard == items[k].shard)
                end++;
            uint32_t count = end - k;
            pskv__shard_lock(sh);
            int room = bufs_ok ? pskv__shard_reserve(sh, count) : PSKV_ENOMEM;
            uint32_t taken = 0;
            for (; k < end; k++) {
                /* Ours while BUSY: nobody removed or moved it meanwhile. */
                pskv__keyval *sp = pskv__keymap_find(&sh->spilled, items[k].key, items[k].hash);
                PSKV__ASSERT(sp != NULL && (sp->value & PSKV__SPILL_BUSY));
                if (room == 0 && results[k] == 0) {
                    /* Checkpoint marks as they are now (a checkpoint may
                     * have settled them while the row was read). */
                    uint32_t marks = pskv__marks_to_flags(sp->value);
                    pskv__keymap_remove(&sh->spilled, sp);
                    pskv__entry *e = pskv__shard_insert_entry(sh, items[k].key, items[k].hash);
                    e->flags |= marks;
                    memcpy(pskv__shard_row(sh, e->slot), rows[k], t->stored_bytes);
                    slots[nfreed++] = items[k].spill_slot; /* freed after unlocking */
                    taken++;
                    loaded++;
                } else {
                    sp->value &= ~PSKV__SPILL_BUSY;
                }
            }
            if (room == 0)
                pskv__shard_unreserve(sh, count - taken);
            pskv__shard_unlock(sh);
            if (room != 0 && rc == 0)
                rc = room;
        }
        if (nfreed > 0)
            pskv__spill_free(t->spill, slots, nfreed);
        atomic_fetch_add_explicit(&t->n_spill_reads, loaded, memory_order_relaxed);
        *loaded_rows += loaded;
        free(rows);
        free(buf);
        free(results);
        free(slots);
        free(ks);
        pskv__tier_moved_wake(s);
    }
    free(items);
    if (rc == 0 && others_busy)
        pskv__tier_moved_wait(s, gen);
    return rc;
}

/* ---------------------------------------------------------------- LMDB */

/* While iterations run, note a key read back from LMDB (shard lock held):
 * their walks of LMDB keys return it (iter.c). 0, or PSKV_ENOMEM. */
static int readback_note(pskv_table *t, pskv__shard *sh, uint64_t key)
{
    pskv__readbacks *r = &sh->readback;
    if (atomic_load(&t->iterations) == 0) {
        if (r->keys != NULL) { /* no iteration needs them */
            free(r->keys);
            r->keys = NULL;
            r->base += r->len;
            r->len = r->cap = 0;
        }
        return 0;
    }
    uint64_t *k = pskv__array_grow(r->keys, &r->cap, (uint64_t)r->len + 1, sizeof *k, 64);
    if (k == NULL)
        return PSKV_ENOMEM;
    r->keys = k;
    r->keys[r->len++] = key;
    return 0;
}

uint64_t pskv__readback_end(const pskv__shard *sh) { return sh->readback.base + sh->readback.len; }

uint32_t pskv__readback_since(const pskv__shard *sh, uint64_t from, const uint64_t **keys,
                              uint64_t *end)
{
    const pskv__readbacks *r = &sh->readback;
    *end = r->base + r->len;
    if (from < r->base) /* an iteration keeps the list from being reset */
        from = r->base;
    *keys = r->keys + (from - r->base);
    return from < *end ? (uint32_t)(*end - from) : 0;
}

int pskv__tier_load_cold(pskv_table *t, pskv__shard *sh, pskv__cold *c, uint64_t key,
                         uint64_t hash, float **row_out)
{
    const void *bytes;
    int rc = pskv__cold_find(t, c, key, &bytes);
    if (rc <= 0)
        return rc;
    if ((rc = pskv__shard_reserve(sh, 1)) != 0)
        return rc;
    if ((rc = readback_note(t, sh, key)) != 0) {
        pskv__shard_unreserve(sh, 1);
        return rc;
    }
    float *row = pskv__shard_row(sh, pskv__shard_insert_reserved(sh, key, hash));
    memcpy(row, bytes, t->stored_bytes);
    atomic_fetch_sub_explicit(&t->cold_rows, 1, memory_order_relaxed);
    *row_out = row;
    return 1;
}

/* ---------------------------------------------------------------- evict */

/* Victims one shard gives per visit: spreads eviction over the shards so
 * that each loses its coldest rows rather than one shard losing everything. */
#define EVICT_PER_SHARD 64u
/* Rows written in one I/O batch: enough requests to keep the device queue
 * deep (the I/O layer runs 64 at a time) and, when slots are consecutive,
 * to merge into long writes. */
#define EVICT_BATCH 512u

static void clear_busy(pskv__shard *sh, uint64_t key)
{
    pskv__entry *e = pskv__shard_find(sh, key, pskv__key_hash(key, sh->hash_seed));
    PSKV__ASSERT(e != NULL && (e->flags & PSKV__FLAG_BUSY)); /* ours while BUSY */
    e->flags &= ~PSKV__FLAG_BUSY;
}

/* Pick up to `room` CLOCK victims of one shard, mark them BUSY and reserve
 * spill-map room for them. Returns how many; 0 when the shard has none to
 * give or holds reservations (a writer checked its rows resident and will
 * apply its batch: leave the shard alone until then). */
static uint32_t pick_victims(pskv__shard *sh, uint32_t room, uint64_t *keys, const float **rows,
                             int *rc)
{
    uint32_t n = 0;
    pskv__shard_lock(sh);
    if (sh->reserved == 0) {
        uint64_t steps = (uint64_t)sh->index_mask + 1; /* one turn at most */
        pskv__entry *e;
        while (n < room && (e = pskv__clock_next(sh, &steps)) != NULL) {
            /* The victim stays in the index, marked: step the hand past it
             * (not when it is a newcomer the admission refused). */
            if (e == &sh->index[sh->clock_hand & sh->index_mask])
                sh->clock_hand++;
            pskv__claim_resident(e);
            keys[n] = e->key;
            /* BUSY keeps writers away and slabs never move: the DRAM row
             * can be written out directly after the lock is released. */
            rows[n] = pskv__shard_row(sh, e->slot);
            n++;
        }
        /* Room in the spill map first, so that a written row always has an
         * entry to land in. */
        if (n > 0 && (*rc = pskv__keymap_reserve(&sh->spilled, n)) != 0) {
            for (uint32_t k = 0; k < n; k++)
                clear_busy(sh, keys[k]);
            n = 0;
        }
    }
    pskv__shard_unlock(sh);
    return n;
}

int pskv__tier_evict(pskv_table *t, uint32_t first, uint32_t *visited, uint32_t *evicted)
{
    uint64_t keys[EVICT_BATCH];
    const float *rows[EVICT_BATCH];
    uint32_t spill_slots[EVICT_BATCH];
    uint32_t shard_of[EVICT_BATCH];
    uint32_t n = 0, sd = first;
    int rc = 0;
    *evicted = 0;
    for (; sd < t->nshards && n < EVICT_BATCH && rc == 0; sd++) {
        uint32_t room = EVICT_BATCH - n < EVICT_PER_SHARD ? EVICT_BATCH - n : EVICT_PER_SHARD;
        uint32_t got = pick_victims(&t->shards[sd], room, keys + n, rows + n, &rc);
        for (uint32_t k = 0; k < got; k++)
            shard_of[n + k] = sd;
        n += got;
    }
    *visited = sd - first;
    if (n == 0)
        return rc;
    int io_rc = pskv__spill_alloc(t->spill, n, spill_slots);
    if (io_rc == 0) {
        uint64_t t0 = pskv__now_ns();
        io_rc = pskv__spill_write(t->spill, n, keys, rows, spill_slots);
        atomic_fetch_add_explicit(&t->n_spill_write_ns, pskv__now_ns() - t0, memory_order_relaxed);
        if (io_rc != 0)
            pskv__spill_free(t->spill, spill_slots, n);
    }
    /* Victims are grouped by shard: one lock per shard to install them. */
    for (uint32_t k = 0; k < n;) {
        pskv__shard *sh = &t->shards[shard_of[k]];
        uint32_t begin = k, end = k;
        while (end < n && shard_of[end] == shard_of[begin])
            end++;
        pskv__shard_lock(sh);
        for (; k < end; k++) {
            if (io_rc != 0) {
                clear_busy(sh, keys[k]); /* stays resident: nothing is lost */
                continue;
            }
            uint64_t h = pskv__key_hash(keys[k], sh->hash_seed);
            pskv__entry *e = pskv__shard_find(sh, keys[k], h);
            pskv__keymap_insert_reserved(&sh->spilled, keys[k], h,
                                           spill_slots[k] | pskv__marks_to_spill(e->flags));
            pskv__shard_remove(sh, e);
            sh->evicted++;
        }
        if (io_rc != 0)
            pskv__keymap_unreserve(&sh->spilled, end - begin);
        pskv__shard_unlock(sh);
    }
    pskv__tier_moved_wake(t->store);
    if (io_rc != 0)
        return io_rc;
    atomic_fetch_add_explicit(&t->n_spill_writes, n, memory_order_relaxed);
    *evicted = n;
    return rc;
}
