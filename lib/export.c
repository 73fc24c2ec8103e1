/* Delta export and apply: rows into chunks for another instance, chunks
 * back into rows.
 *
 * An export from since > 0 walks the tables' change logs (changes.c) shard
 * by shard: the keys logged after since, taken under the shard's lock,
 * sorted, deduplicated, filtered by the ring if one was given, then read
 * as they are now (pskv__get_rows: DRAM, spill file or LMDB); a key no
 * longer there becomes a tombstone. An export from 0 is an iteration
 * (iter.c) of every row. The cursor returned is the table's version when
 * the export was opened: a change with a version at or below it was
 * stamped under a shard lock the export takes later, so it is seen.
 * SPDX-License-Identifier: BSD-2-Clause */
#include <stdlib.h>
#include <string.h>

#include "array.h"
#include "changes.h"
#include "chunk.h"
#include "errors.h"
#include "format.h"
#include "iter.h"
#include "options.h"
#include "pskv_internal.h"
#include "rows.h"
#include "sort.h"

#define CHUNK_BYTES_DEFAULT (1u << 20)

struct pskv_export {
    pskv__handle h; /* in the store's list; closed if the store went first */
    pskv_table *t;
    uint64_t since, version, layout_gen;
    uint64_t table_id; /* pskv_fmt_table_id of the table, in every chunk */
    pskv__transfer_options o;
    pskv_ring *ring; /* filter (pskv_export_ring), owned */
    uint32_t node;
    bool started, done;
    uint32_t next_shard; /* delta: the next shard's log */
    pskv_iter *it;       /* full: every row, encoded from the iterator's copy */
    const uint64_t *ikeys;
    const float *irows;
    size_t istride;
    uint32_t in, ipos;
    uint32_t *inode, inode_cap; /* the ring's node of each (with a filter) */
    int failed; /* rows could not be read (a shard's, the iterator's): every call says so */
    /* The batch being sent: rows (row_floats apart) and tombstones, sorted. */
    uint64_t *keys;
    float *rows;
    uint32_t n, pos, cap;
    uint64_t *tombs;
    uint32_t ntombs, tpos, tcap;
    /* Per chunk: its keys sorted, and their rows for the encoder. */
    pskv__keyed *order;
    uint64_t *sorted;
    const float **ptrs;
    const float **src; /* the gathered rows, by position */
    pskv__chunk_scratch scratch; /* lz4's work memory, from chunk to chunk */
    uint32_t per_chunk; /* rows that fit a chunk */
    size_t per_row;     /* the most bytes a row takes in a chunk */
};

static int fail_null(const char *what) { return pskv__fail(PSKV_EINVAL, "%s is NULL", what); }

int pskv_export_open(pskv_table *t, uint64_t since, const char *config, pskv_export **out)
{
    pskv__detail_clear();
    if (t == NULL || out == NULL)
        return fail_null(t == NULL ? "the table" : "out");
    pskv__transfer_options o = {PSKV_CODEC_FP32, false, true, CHUNK_BYTES_DEFAULT, 1.0, 0};
    int rc = pskv__transfer_options_parse(config, PSKV__XFER_EXPORT, &o);
    if (rc != 0)
        return rc;
    pskv_export *e = calloc(1, sizeof *e);
    if (e == NULL)
        return PSKV_ENOMEM;
    e->t = t;
    e->o = o;
    e->since = since;
    e->table_id = pskv_fmt_table_id(t->name);
    /* Read before any shard is visited: every change at or below it is
     * seen by the visits (see the top of this file). */
    pthread_rwlock_rdlock(&t->layout_lock);
    e->layout_gen = atomic_load(&t->layout_gen);
    uint64_t floor;
    const pskv__cursor cursor = pskv__changes_cursor(t, since, &e->version, &floor);
    pthread_rwlock_unlock(&t->layout_lock);
    if (cursor == PSKV__CURSOR_DROPPED) {
        free(e);
        return pskv__fail(PSKV_ESTALE, "since=%llu is older than table '%s' keeps changes for "
                                       "(from %llu): export from 0 and start the consumer "
                                       "empty",
                          (unsigned long long)since, t->name, (unsigned long long)floor);
    }
    if (cursor == PSKV__CURSOR_FOREIGN) {
        uint64_t v = e->version;
        free(e);
        return pskv__fail(PSKV_ESTALE, "since=%llu is newer than table '%s' (version %llu): "
                                       "the cursor comes from another table or an earlier "
                                       "life of this one; export from 0 and start the "
                                       "consumer empty",
                          (unsigned long long)since, t->name, (unsigned long long)v);
    }
    /* Nothing changed after since: no walk. (A table's versions start at
     * a random base, never 0: an export from 0 of a table that never
     * changed walks an empty table and hands out that base, so rows
     * created meanwhile come in the next delta, with their tombstones.) */
    e->done = cursor == PSKV__CURSOR_EMPTY;
    const pskv__chunk_spec probe = {.codec = o.codec, .dim = t->dim,
                                    .state_floats = o.whole_rows ? t->state_floats : 0};
    size_t per_row = pskv__chunk_row_bound(&probe);
    size_t room = o.chunk_bytes - PSKV_FMT_CHUNK_HEAD - PSKV_FMT_CHECK_BYTES;
    e->per_chunk = room / per_row ? (uint32_t)(room / per_row) : 1;
    e->per_row = per_row;
    e->ptrs = malloc(e->per_chunk * sizeof *e->ptrs);
    e->src = malloc(e->per_chunk * sizeof *e->src);
    e->sorted = malloc(e->per_chunk * sizeof *e->sorted);
    e->order = malloc(e->per_chunk * sizeof *e->order);
    rc = e->ptrs && e->src && e->sorted && e->order ? 0 : PSKV_ENOMEM;
    pskv__handle_attach(&t->store->handles, &e->h);
    if (rc == 0 && since == 0 && !e->done)
        rc = pskv_iter_create(t, &e->it);
    if (rc != 0) {
        pskv_export_close(e);
        return rc;
    }
    *out = e;
    return 0;
}

int pskv_export_ring(pskv_export *e, const pskv_ring *r, uint32_t node)
{
    pskv__detail_clear();
    if (e == NULL || r == NULL)
        return fail_null(e == NULL ? "the export" : "the ring");
    int rc = pskv__handle_enter(&e->h, "pskv_export_ring");
    if (rc != 0)
        return rc;
    pskv_ring *copy = NULL;
    if (e->started)
        rc = pskv__fail(PSKV_EINVAL, "the ring filter comes before the first chunk");
    else if (pskv_ring_nodes(r) == 0)
        rc = pskv__fail(PSKV_EINVAL, "the ring has no nodes: no key would be exported");
    else
        rc = pskv__ring_copy(r, &copy);
    if (rc == 0) {
        pskv_ring_destroy(e->ring);
        e->ring = copy;
        e->node = node;
    }
    pskv__handle_leave(&e->h); /* held throughout: next_full reads the ring */
    return rc;
}

uint64_t pskv_export_version(const pskv_export *e) { return e == NULL ? 0 : e->version; }

void pskv_export_close(pskv_export *e)
{
    if (e == NULL)
        return;
    if (!atomic_load(&e->h.closed)) /* else its table and store are gone */
        pskv__handle_detach(&e->t->store->handles, &e->h);
    pskv_iter_destroy(e->it);
    pskv_ring_destroy(e->ring);
    free(e->keys);
    free(e->rows);
    free(e->tombs);
    free(e->ptrs);
    free(e->src);
    free(e->sorted);
    free(e->order);
    free(e->inode);
    pskv__chunk_scratch_free(&e->scratch);
    free(e);
}

/* ---------------------------------------------------------------- batches */

static float *batch_row(const pskv_export *e, size_t i)
{
    return e->rows + i * e->t->row_floats;
}

static int tombs_room(pskv_export *e, uint32_t n)
{
    if (n <= e->tcap)
        return 0;
    uint64_t *k = realloc(e->tombs, (size_t)n * sizeof *k);
    if (k == NULL)
        return PSKV_ENOMEM;
    e->tombs = k;
    e->tcap = n;
    return 0;
}

static int batch_room(pskv_export *e, uint32_t rows)
{
    if (rows <= e->cap)
        return 0;
    uint64_t *k = realloc(e->keys, (size_t)rows * sizeof *k);
    if (k != NULL)
        e->keys = k;
    float *r = realloc(e->rows, (size_t)rows * e->t->row_floats * sizeof(float));
    if (r != NULL)
        e->rows = r;
    if (k == NULL || r == NULL)
        return PSKV_ENOMEM;
    e->cap = rows;
    return 0;
}

/* Keep the keys the ring filter routes to the node (in place). */
static int ring_keep(const pskv_export *e, uint64_t *keys, uint32_t *n)
{
    if (e->ring == NULL || *n == 0)
        return 0;
    uint32_t *node = malloc(*n * sizeof *node);
    if (node == NULL)
        return PSKV_ENOMEM;
    int rc = pskv_ring_route(e->ring, keys, *n, node);
    uint32_t kept = 0;
    for (uint32_t i = 0; i < *n && rc == 0; i++)
        if (node[i] == e->node)
            keys[kept++] = keys[i];
    free(node);
    if (rc == 0)
        *n = kept;
    return rc;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* keys[n] sorted (a radix sort of (key, 0) pairs) and each once: the new
 * count, or PSKV_ENOMEM. */
static int64_t sort_unique(uint64_t *keys, uint32_t n)
{
    pskv__keyed *by = malloc((n ? n : 1) * sizeof *by);
    if (by == NULL)
        return PSKV_ENOMEM;
    for (uint32_t i = 0; i < n; i++)
        by[i] = (pskv__keyed){keys[i], 0};
    int rc = pskv__keyed_sort(by, n);
    uint32_t u = 0;
    for (uint32_t i = 0; i < n && rc == 0; i++)
        if (u == 0 || by[i].key != keys[u - 1])
            keys[u++] = by[i].key;
    free(by);
    return rc != 0 ? (int64_t)rc : (int64_t)u;
}

/* Read shard s's changed keys as they are now (room for them is in the
 * batch): under the shard's lock, a row in DRAM is copied into the batch
 * and a key in no tier becomes a tombstone; the others (spilled, moving,
 * perhaps in LMDB) are left in slow[*nslow] for pskv__get_rows. Lookups
 * run AHEAD keys before the copies, their memory misses in flight
 * together (as in rows.c). */
#define AHEAD 16u /* a power of two */

static int read_resident(pskv_export *e, uint32_t s, const uint64_t *keys, uint32_t n,
                         uint64_t *hash, uint64_t *slow, uint32_t *nslow)
{
    pskv_table *t = e->t;
    const uint32_t bytes = t->row_floats * (uint32_t)sizeof(float);
    int rc = 0;
    *nslow = 0;
    pthread_rwlock_rdlock(&t->layout_lock);
    if (atomic_load(&t->layout_gen) != e->layout_gen) {
        rc = pskv__fail(PSKV_ESTALE, "table '%s' was resharded during the export: export again "
                                     "from the same since", t->name);
    } else {
        pskv__shard *sh = &t->shards[s];
        for (uint32_t i = 0; i < n; i++)
            hash[i] = pskv__key_hash(keys[i], sh->hash_seed);
        const float *ahead[AHEAD];
        pskv__shard_lock(sh);
        for (uint32_t j = 0; j < n && j < AHEAD; j++)
            pskv__prefetch_index(sh, hash[j]);
        for (uint32_t j = 0; j < n + AHEAD; j++) {
            if (j >= AHEAD && ahead[(j - AHEAD) % AHEAD] != NULL) {
                memcpy(batch_row(e, e->n), ahead[(j - AHEAD) % AHEAD], bytes);
                e->keys[e->n++] = keys[j - AHEAD];
            }
            if (j >= n)
                continue;
            if (j + AHEAD < n)
                pskv__prefetch_index(sh, hash[j + AHEAD]);
            pskv__where w = pskv__locate(t, sh, keys[j], hash[j], true);
            ahead[j % AHEAD] = NULL;
            if (w.place == PSKV__IN_DRAM) {
                ahead[j % AHEAD] = pskv__shard_row(sh, w.e->slot);
                pskv__prefetch_row(ahead[j % AHEAD], bytes);
            } else if (w.place == PSKV__ABSENT) {
                e->tombs[e->ntombs++] = keys[j];
            } else {
                slow[(*nslow)++] = keys[j];
            }
        }
        pskv__shard_unlock(sh);
    }
    pthread_rwlock_unlock(&t->layout_lock);
    return rc;
}

/* The next shard's changed keys, read as they are now. */
static int load_delta(pskv_export *e)
{
    pskv_table *t = e->t;
    uint64_t *keys = NULL;
    uint32_t n = 0, s = e->next_shard;
    pthread_rwlock_rdlock(&t->layout_lock);
    int rc = 0;
    if (atomic_load(&t->layout_gen) != e->layout_gen) {
        rc = pskv__fail(PSKV_ESTALE, "table '%s' was resharded during the export: export again "
                                     "from the same since", t->name);
    } else if (s >= t->nshards) {
        e->done = true;
    } else {
        pskv__shard *sh = &t->shards[s];
        e->next_shard++;
        pskv__shard_lock(sh);
        rc = pskv__changes_collect(&sh->log, e->since, &keys, &n);
        pskv__shard_unlock(sh);
        if (rc == PSKV_ESTALE)
            rc = pskv__fail(PSKV_ESTALE, "table '%s' dropped changes after since=%llu during "
                                         "the export: export from 0",
                            t->name, (unsigned long long)e->since);
    }
    pthread_rwlock_unlock(&t->layout_lock);
    if (rc != 0 || n == 0) {
        free(keys);
        return rc;
    }
    int64_t u = sort_unique(keys, n);
    rc = u < 0 ? (int)u : 0;
    n = u < 0 ? 0u : (uint32_t)u;
    if (rc == 0)
        rc = ring_keep(e, keys, &n);
    uint64_t *slow = rc == 0 && n > 0 ? malloc(2 * (size_t)n * sizeof *slow) : NULL;
    uint8_t *found = rc == 0 && n > 0 ? malloc(n) : NULL;
    if (rc == 0 && n > 0)
        rc = slow && found ? batch_room(e, e->n + n) : PSKV_ENOMEM;
    if (rc == 0 && n > 0)
        rc = tombs_room(e, e->ntombs + n);
    uint32_t nslow = 0;
    if (rc == 0 && n > 0)
        rc = read_resident(e, s, keys, n, slow + n, slow, &nslow);
    if (rc == 0 && nslow > 0)
        rc = pskv__get_rows(t, slow, nslow, batch_row(e, e->n), found);
    if (rc == 0 && nslow > 0) {
        /* Rows appended to the batch, tombstones apart. */
        uint32_t live = e->n;
        for (uint32_t i = 0; i < nslow; i++) {
            if (found[i]) {
                if (live != e->n + i)
                    memcpy(batch_row(e, live), batch_row(e, e->n + i),
                           (size_t)t->row_floats * sizeof(float));
                e->keys[live++] = slow[i];
            } else {
                e->tombs[e->ntombs++] = slow[i];
            }
        }
        e->n = live;
    }
    free(slow);
    free(found);
    free(keys);
    return rc;
}


/* Drop what was sent from the front of the batch. */
static void batch_shift(pskv_export *e)
{
    const pskv_table *t = e->t;
    if (e->pos > 0) {
        memmove(e->keys, e->keys + e->pos, (size_t)(e->n - e->pos) * sizeof *e->keys);
        memmove(e->rows, batch_row(e, e->pos),
                (size_t)(e->n - e->pos) * t->row_floats * sizeof(float));
        e->n -= e->pos;
        e->pos = 0;
    }
    if (e->tpos > 0) {
        memmove(e->tombs, e->tombs + e->tpos, (size_t)(e->ntombs - e->tpos) * sizeof *e->tombs);
        e->ntombs -= e->tpos;
        e->tpos = 0;
    }
}


/* Encode the rows e->order[0..k) names (at: index into e->src) and
 * tombstones into one chunk, its checksum left to pskv__chunk_seal when
 * !sealed. */
static int write_chunk(pskv_export *e, uint32_t k, const uint64_t *tombs, uint32_t m, void *buf,
                       size_t cap, size_t *len, bool sealed)
{
    const pskv_table *t = e->t;
    /* A chunk's keys go in order (rows by pointer). */
    int rc = pskv__keyed_sort(e->order, k);
    if (rc != 0)
        return rc;
    for (uint32_t i = 0; i < k; i++) {
        e->sorted[i] = e->order[i].key;
        e->ptrs[i] = e->src[e->order[i].at];
    }
    pskv__chunk_spec sp = {.kind = PSKV_CHUNK_ROWS, .codec = e->o.codec, .lz4 = e->o.lz4,
                           .dim = t->dim,
                           .state_floats = e->o.whole_rows ? t->state_floats : 0,
                           .optimizer = t->opts.optimizer, .since = e->since,
                           .version = e->version, .table_id = e->table_id,
                           .unsealed = !sealed, .scratch = &e->scratch};
    return pskv__chunk_write(&sp, e->sorted, e->ptrs, k, tombs, m, buf, cap, len);
}

static const float *iter_batch_row(const pskv_export *e, uint32_t i)
{
    return (const float *)(const void *)((const uint8_t *)e->irows + (size_t)i * e->istride);
}

/* The iterator's next rows, routed when a ring filters them: 0, 2 when
 * the hook (encode_direct) took them, or an error. */
static int full_load(pskv_export *e)
{
    int rc = pskv__iter_batch(e->it, &e->ikeys, &e->irows, &e->istride, &e->in);
    if (rc == 0)
        e->done = true;
    if (rc <= 0 || rc == 2) {
        e->in = e->ipos = 0;
        if (rc == 2)
            return 2;
        return rc == PSKV_ESTALE ? pskv__fail(PSKV_ESTALE, "table '%s' was resharded during the "
                                                           "export: empty the consumer and "
                                                           "export again from 0",
                                              e->t->name)
                                 : rc;
    }
    e->ipos = 0;
    if (e->ring != NULL) {
        uint32_t *nn = pskv__array_grow(e->inode, &e->inode_cap, e->in, sizeof *nn, 1024);
        if (nn == NULL)
            rc = PSKV_ENOMEM;
        else
            e->inode = nn;
    }
    if (rc > 0 && e->ring != NULL)
        rc = pskv_ring_route(e->ring, e->ikeys, e->in, e->inode);
    if (rc < 0) { /* these rows would be lost: the export is over */
        e->failed = rc;
        return rc;
    }
    return 0;
}

/* Whether a full export's chunks can be encoded where their rows sit
 * (encode_direct): not through lz4, not filtered by a ring. */
static bool direct_able(const pskv_export *e) { return e->ring == NULL && !e->o.lz4; }

/* Rows of a full export's chunk: the byte bound, and when chunks can be
 * encoded in place at most one piece of a shard, so that whole pieces in
 * DRAM are (an int8 chunk of 1 MiB would hold ~14K rows, several pieces
 * copied and sorted together, never encoded in place). */
static uint32_t full_chunk_rows(const pskv_export *e)
{
    return direct_able(e) && e->per_chunk > PSKV__ITER_PIECE_MAX ? PSKV__ITER_PIECE_MAX
                                                                  : e->per_chunk;
}

/* A chunk encoded by the iterator's hook: a whole piece of rows in DRAM,
 * under the shard's lock, where they sit. */
typedef struct direct_chunk {
    pskv_export *e;
    void *buf;
    size_t cap, len;
} direct_chunk;

static int encode_direct(void *arg, const float *const *rows, const pskv__keyed *sorted,
                         uint32_t n)
{
    direct_chunk *d = arg;
    pskv_export *e = d->e;
    if (n != full_chunk_rows(e))
        return 0;
    /* Already in order: write_chunk's sort only checks. */
    memcpy(e->order, sorted, n * sizeof *sorted);
    for (uint32_t i = 0; i < n; i++)
        e->src[i] = rows[i];
    /* Hashed after the lock is released. On an error the rows are copied
     * and the same error comes from encoding the copy. */
    return write_chunk(e, n, NULL, 0, d->buf, d->cap, &d->len, false) == 0;
}

/* A full export's next chunk: a whole piece of DRAM rows encoded where
 * they sit (encode_direct) when nothing is carried, no ring filters and
 * lz4 is off; else encoded from the iterator's copy. Where chunks can be
 * encoded in place, the rows left at the end of a shard's pieces go out
 * as a short chunk when they fill 1/SHORT_CHUNK_PART of one or more;
 * otherwise rows left at the end of one of the iterator's batches are
 * carried in the export's batch to fill the next chunk. (Carrying every
 * shard's tail made each later chunk straddle two shards: rows copied
 * twice and sorted again instead of encoded where they sit.) */
#define SHORT_CHUNK_PART 16u
static int next_full(pskv_export *e, void *buf, size_t cap, size_t *len, uint32_t limit)
{
    const pskv_table *t = e->t;
    if (e->failed != 0)
        return e->failed;
    for (;;) {
        /* Carried rows first (e->pos on: a smaller cap may leave some). */
        uint32_t k = 0;
        for (uint32_t i = e->pos; i < e->n && k < limit; i++) {
            e->order[k] = (pskv__keyed){e->keys[i], k};
            e->src[k++] = batch_row(e, i);
        }
        const uint32_t from_carry = k;
        uint32_t j = e->ipos;
        for (; j < e->in && k < limit; j++) {
            if (e->ring != NULL && e->inode[j] != e->node)
                continue;
            e->order[k] = (pskv__keyed){e->ikeys[j], k};
            e->src[k++] = iter_batch_row(e, j);
        }
        /* A shard's last rows, enough of them, go out as a short chunk
         * (not a batch of the LMDB walk, which mixes shards, and not
         * where no chunk is encoded in place anyway). */
        const bool short_chunk = direct_able(e) && !pskv__iter_cold(e->it) &&
                                 (uint64_t)k * SHORT_CHUNK_PART >= limit;
        if (k < limit && !e->done && !short_chunk) {
            /* The iterator's batch is used up: carry its last rows. */
            batch_shift(e);
            int rc = batch_room(e, e->per_chunk);
            for (uint32_t i = e->ipos; i < e->in && rc == 0; i++) {
                if (e->ring != NULL && e->inode[i] != e->node)
                    continue;
                e->keys[e->n] = e->ikeys[i];
                memcpy(batch_row(e, e->n++), iter_batch_row(e, i),
                       (size_t)t->row_floats * sizeof(float));
            }
            const uint32_t full = full_chunk_rows(e);
            const bool direct = e->n == 0 && direct_able(e) && limit == full;
            direct_chunk d = {e, buf, cap, 0};
            if (rc == 0) {
                e->ipos = e->in;
                /* Pieces of whole chunks, less what is carried: the
                 * chunks line up with the pieces again. */
                uint32_t whole = full >= 1024 ? full : full * (1024 / full);
                pskv__iter_piece(e->it, whole - e->n);
                if (direct)
                    pskv__iter_direct(e->it, encode_direct, &d);
                rc = full_load(e);
                pskv__iter_direct(e->it, NULL, NULL);
            }
            if (rc == 2) {
                pskv__chunk_seal(buf, d.len);
                *len = d.len;
                pskv__count_add(&e->t->n_exported, full);
                return 1;
            }
            if (rc != 0)
                return rc;
            continue;
        }
        if (k == 0)
            return 0;
        int rc = write_chunk(e, k, NULL, 0, buf, cap, len, true);
        if (rc != 0)
            return rc; /* nothing consumed */
        e->pos += from_carry;
        if (e->pos == e->n)
            e->pos = e->n = 0;
        e->ipos = j;
        pskv__count_add(&e->t->n_exported, k);
        return 1;
    }
}

static int next_delta(pskv_export *e, void *buf, size_t cap, size_t *len, uint32_t limit);

int pskv_export_next(pskv_export *e, void *buf, size_t cap, size_t *len)
{
    pskv__detail_clear();
    if (e == NULL || len == NULL || (cap > 0 && buf == NULL))
        return fail_null(e == NULL ? "the export" : len == NULL ? "len" : "buf");
    int rc = pskv__handle_enter(&e->h, "pskv_export_next");
    if (rc != 0)
        return rc;
    e->started = true;
    /* Chunks are cut to the caller's buffer: as many rows as the bound of
     * a row says fit (any cap that holds one row works). */
    const size_t fixed = PSKV_FMT_CHUNK_HEAD + PSKV_FMT_CHECK_BYTES;
    const size_t fit = cap > fixed ? (cap - fixed) / e->per_row : 0;
    const uint32_t most = e->it != NULL ? full_chunk_rows(e) : e->per_chunk;
    const uint32_t limit = fit < most ? (uint32_t)fit : most;
    if (limit == 0) {
        *len = fixed + e->per_row;
        rc = PSKV_ERANGE; /* not one row: nothing consumed */
    } else {
        rc = e->it != NULL ? next_full(e, buf, cap, len, limit)
                           : next_delta(e, buf, cap, len, limit);
    }
    pskv__handle_leave(&e->h);
    return rc;
}

static int next_delta(pskv_export *e, void *buf, size_t cap, size_t *len, uint32_t limit)
{
    /* Gather a chunk's worth of changed rows (shards' batches are small)
     * unless the export is at its end. A shard whose rows could not all be
     * read is behind: the export is over, every call says so. */
    if (e->failed != 0)
        return e->failed;
    while (!e->done && e->n - e->pos < e->per_chunk) {
        batch_shift(e);
        int rc = load_delta(e);
        if (rc != 0) {
            e->failed = rc;
            return rc;
        }
    }
    if (e->pos >= e->n && e->tpos >= e->ntombs)
        return 0;
    uint32_t k = e->n - e->pos < limit ? e->n - e->pos : limit;
    for (uint32_t i = 0; i < k; i++) {
        e->order[i] = (pskv__keyed){e->keys[e->pos + i], i};
        e->src[i] = batch_row(e, e->pos + i);
    }
    /* Tombstones (10 bytes at most each) fill what the batch's last rows
     * leave of the chunk; a chunk carries one at least. */
    uint32_t m = 0;
    if (e->pos + k >= e->n) {
        uint64_t fit = (uint64_t)(limit - k) * e->per_row / 10;
        fit = fit > 0 ? fit : (k == 0);
        m = e->ntombs - e->tpos < fit ? e->ntombs - e->tpos : (uint32_t)fit;
    }
    if (m > 0) /* sorting again is harmless */
        qsort(e->tombs + e->tpos, m, sizeof *e->tombs, cmp_u64);
    int rc = write_chunk(e, k, e->tombs + e->tpos, m, buf, cap, len, true);
    if (rc != 0)
        return rc;
    e->pos += k;
    e->tpos += m;
    pskv__count_add(&e->t->n_exported, (uint64_t)k + m);
    return 1;
}

/* ---------------------------------------------------------------- apply */

/* pskv_apply and pskv_apply_since: since == PSKV_SINCE_ANY asks nothing
 * of the chunk's range. */
static int apply_chunk(pskv_table *t, const void *chunk, size_t len, int mode_flags,
                       uint64_t since)
{
    pskv__detail_clear();
    if (t == NULL || chunk == NULL)
        return fail_null(t == NULL ? "the table" : "the chunk");
    const int mode = mode_flags & ~PSKV_APPLY_ANY_TABLE;
    if (mode != PSKV_APPLY_REPLACE && mode != PSKV_APPLY_PUSH && mode != PSKV_APPLY_ADD)
        return pskv__fail(PSKV_EINVAL, "mode %d: expected PSKV_APPLY_REPLACE, _PUSH or _ADD, "
                                       "with PSKV_APPLY_ANY_TABLE or not",
                          mode_flags);
    pskv_chunk_info in;
    int rc = pskv__chunk_open(chunk, len, &in);
    if (rc != 0)
        return rc;
    const uint64_t from = pskv__chunk_table_id(chunk);
    if (from != 0 && from != pskv_fmt_table_id(t->name) && !(mode_flags & PSKV_APPLY_ANY_TABLE))
        return pskv__fail(PSKV_ESCHEMA, "the chunk was exported from another table than '%s' "
                                        "(table identity %016llx, this name's %016llx): "
                                        "PSKV_APPLY_ANY_TABLE in mode applies it anyway",
                          t->name, (unsigned long long)from,
                          (unsigned long long)pskv_fmt_table_id(t->name));
    if (since != PSKV_SINCE_ANY && in.since != since)
        return pskv__fail(PSKV_ESTALE, "the chunk continues from version %llu, this replica "
                                       "from %llu: %s",
                          (unsigned long long)in.since, (unsigned long long)since,
                          in.since > since ? "a delta between them was missed (export from 0 "
                                             "into an emptied replica: pskv_table_truncate)"
                                           : "an older delta, already applied or superseded");
    if (in.dim != t->dim)
        return pskv__fail(PSKV_ESCHEMA, "the chunk has dim=%u, table '%s' dim=%u", in.dim,
                          t->name, t->dim);
    const bool with_state = mode == PSKV_APPLY_REPLACE && in.state_floats > 0;
    if (with_state && (in.optimizer != t->opts.optimizer || in.state_floats != t->state_floats))
        return pskv__fail(PSKV_ESCHEMA, "the chunk carries the state of another optimizer "
                                        "(%u floats per row; table '%s' keeps %u)",
                          in.state_floats, t->name, t->state_floats);
    if (mode != PSKV_APPLY_REPLACE && in.state_floats > 0)
        return pskv__fail(PSKV_EINVAL, "the chunk carries rows with their optimizer state (an "
                                       "export with payload=rows): its values are weights, not "
                                       "%s; apply it with PSKV_APPLY_REPLACE",
                          mode == PSKV_APPLY_PUSH ? "gradients" : "increments");
    if (mode != PSKV_APPLY_REPLACE && in.tombstones > 0)
        return pskv__fail(PSKV_EINVAL, "a chunk with tombstones applies with "
                                       "PSKV_APPLY_REPLACE only");
    /* REPLACE writes rows from where the chunk holds them (an fp32 chunk
     * without lz4 is not copied); PUSH and ADD take aligned floats. */
    const size_t n = in.rows;
    uint64_t *keys = malloc((n ? n : 1) * sizeof *keys);
    uint64_t *tombs = malloc((in.tombstones ? in.tombstones : 1) * sizeof *tombs);
    float *values = mode != PSKV_APPLY_REPLACE ? malloc((n ? n : 1) * t->dim * sizeof *values)
                                               : NULL;
    if (keys == NULL || tombs == NULL || (mode != PSKV_APPLY_REPLACE && values == NULL))
        rc = PSKV_ENOMEM;
    if (rc == 0 && mode == PSKV_APPLY_REPLACE) {
        pskv__chunk_view v;
        rc = pskv__chunk_view_open(chunk, len, &in, keys, tombs, &v);
        if (rc == 0) {
            if (n > 0)
                rc = pskv__put_rows(t, keys, n, v.weights, with_state ? v.state : NULL);
            pskv__chunk_view_free(&v);
        }
    } else if (rc == 0) {
        rc = pskv__chunk_decode_opened(chunk, len, &in, keys, values, NULL, tombs);
        if (rc == 0 && n > 0)
            rc = mode == PSKV_APPLY_PUSH ? pskv_push(t, keys, n, values)
                                         : pskv__add(t, keys, n, values);
    }
    if (rc == 0 && in.tombstones > 0)
        rc = pskv_erase(t, tombs, in.tombstones);
    free(keys);
    free(values);
    free(tombs);
    return rc;
}

int pskv_apply(pskv_table *t, const void *chunk, size_t len, int mode)
{
    return apply_chunk(t, chunk, len, mode, PSKV_SINCE_ANY);
}

int pskv_apply_since(pskv_table *t, const void *chunk, size_t len, int mode, uint64_t since)
{
    if (since == PSKV_SINCE_ANY)
        return pskv__fail(PSKV_EINVAL, "since=%llu is no version: use pskv_apply",
                          (unsigned long long)since);
    return apply_chunk(t, chunk, len, mode, since);
}
