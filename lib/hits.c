/* Pull's and get's first pass: every input whose row is resident is
 * served here, in input order, with no grouping by shard.
 *
 * Why a separate pass: the full path (rows.c, pipeline.c) groups keys by
 * shard so that it takes each shard's lock once, and so writes its output
 * in a scattered order and pays a counting sort per batch. A read that finds its row in
 * DRAM changes nothing but the row's reference bit, so this pass walks the
 * batch in rounds of ROUND inputs: it try-locks the round's shards shared
 * (the pass never waits for a lock: a shard that a writer holds or waits
 * for is skipped), runs the round through a software pipeline (an input's
 * index entry is prefetched, AHEAD inputs later it is resolved and its row
 * prefetched, AHEAD inputs after that the row is copied out, so about
 * 2 * AHEAD misses are in flight) and releases the locks. A writer waits
 * for one round at most; concurrent pulls share the locks.
 *
 * Under a shared lock only this pass touches the shard: index entries and
 * rows are read, and the reference bit is set with an atomic or (two
 * readers may set it at once); the flags are read atomically for that
 * reason. Everything else (absent keys, creation, spilled, cold or moving
 * rows, skipped shards) is left to the full path, which sees the batch's
 * other inputs only.
 * SPDX-License-Identifier: BSD-2-Clause */
#include <string.h>

#include "hits.h"

/* Inputs between an index prefetch and the row prefetch, and between the
 * row prefetch and the copy. */
#define AHEAD 16u

/* Inputs per round of locks: a writer waits for one round at most, never
 * for a whole batch, and a round copies at most ROUND_BYTES of rows (but
 * at least 2 * AHEAD rows, one pipeline's fill). A batch whose first round
 * mostly missed (a pull that creates rows, a cache's misses) leaves the
 * rest to the full path at once instead of looking each key up twice. */
#define ROUND 1024u
#define ROUND_BYTES (256u * 1024u)

/* Shards of one round: a bit per shard. */
#define SHARD_WORDS (PSKV_SHARDS_MAX / 64u)

/* The plan's arrays are copied in, not reached through the plan: one load
 * fewer per input. */
typedef struct pass {
    pskv_table *t;
    pskv__shard *shards;
    const uint32_t *shard_of;
    const uint64_t *keys, *hash;
    uint32_t *list;
    float *out;
    uint8_t *found;
    size_t row_bytes;
    uint32_t rest;
    bool all_held;                /* every shard of the round is locked */
    uint64_t held[SHARD_WORDS];   /* the round's shards locked shared: bits */
    const float *rows[2 * AHEAD]; /* resolved, not copied yet */
} pass;

/* Lock the shards of inputs [from, to) shared, those that can be had now:
 * the pass never waits for a lock (a writer holds or wants the others, and
 * their inputs go to the full path, which waits). */
static void lock_round(pass *ps, uint32_t from, uint32_t to)
{
    uint64_t used[SHARD_WORDS] = {0};
    const uint32_t *shard_of = ps->shard_of;
    for (uint32_t i = from; i < to; i++)
        used[shard_of[i] / 64] |= 1ull << (shard_of[i] % 64);
    ps->all_held = true;
    for (uint32_t w = 0; w < (ps->t->nshards + 63) / 64; w++)
        for (uint64_t bits = used[w]; bits != 0; bits &= bits - 1) {
            uint32_t b = (uint32_t)__builtin_ctzll(bits);
            if (pskv__shard_trylock_shared(&ps->shards[w * 64 + b]))
                ps->held[w] |= 1ull << b;
            else
                ps->all_held = false;
        }
}

static void unlock_round(pass *ps)
{
    for (uint32_t w = 0; w < (ps->t->nshards + 63) / 64; w++) {
        for (uint64_t bits = ps->held[w]; bits != 0; bits &= bits - 1)
            pskv__shard_unlock_shared(&ps->shards[w * 64 + (uint32_t)__builtin_ctzll(bits)]);
        ps->held[w] = 0;
    }
}

/* The row of a key if it is resident and idle (reference bit set), else
 * NULL. */
static const float *resolve(pskv__shard *sh, uint64_t key, uint64_t hash)
{
    pskv__entry *e = pskv__shard_find(sh, key, hash);
    if (e == NULL)
        return NULL;
    uint32_t flags = __atomic_load_n(&e->flags, __ATOMIC_RELAXED);
    if (flags & PSKV__FLAG_BUSY)
        return NULL; /* being written to the spill file: the full path waits */
    /* Do not dirty the line when the bit is set; rows in the admission
     * window earn no bit (there is none without a sketch, see hits.h). */
    if (!(flags & (PSKV__FLAG_REF | PSKV__FLAG_WINDOW)))
        __atomic_fetch_or(&e->flags, PSKV__FLAG_REF, __ATOMIC_RELAXED);
    return pskv__shard_row(sh, e->slot);
}

/* The pipeline: inputs enter at fetch_index, AHEAD later reach fetch_row,
 * AHEAD after that copy_out. */
/* A shard not held may be changing its index: not even its address is
 * read then. */
static inline bool held(const pass *ps, uint32_t s)
{
    return PSKV__LIKELY(ps->all_held) || (ps->held[s / 64] >> (s % 64) & 1);
}

/* Inlined into its callers, which write: GCC marks a function that only
 * reads and prefetches as pure, and a call to a pure function returning
 * nothing as dead, prefetch included. */
static inline __attribute__((always_inline)) void fetch_index(pass *ps, uint32_t i)
{
    const uint32_t s = ps->shard_of[i];
    if (held(ps, s))
        pskv__prefetch_index(&ps->shards[s], ps->hash[i]);
}

static inline void fetch_row(pass *ps, uint32_t i)
{
    const uint32_t s = ps->shard_of[i];
    const float *row = NULL;
    if (held(ps, s)) {
        row = resolve(&ps->shards[s], ps->keys[i], ps->hash[i]);
        if (row != NULL)
            pskv__prefetch_row(row, (uint32_t)ps->row_bytes);
    }
    ps->rows[i % (2 * AHEAD)] = row;
}

static inline void copy_out(pass *ps, uint32_t i)
{
    const float *row = ps->rows[i % (2 * AHEAD)];
    if (row == NULL) {
        ps->list[ps->rest++] = i;
        return;
    }
    memcpy((char *)ps->out + i * ps->row_bytes, row, ps->row_bytes);
    if (ps->found != NULL)
        ps->found[i] = 1;
}

/* Step j of the pipeline over inputs [from, to), where a stage may be
 * empty. */
static void edge_step(pass *ps, uint32_t from, uint32_t to, uint32_t j)
{
    if (j < to)
        fetch_index(ps, j);
    if (j >= from + AHEAD && j - AHEAD < to)
        fetch_row(ps, j - AHEAD);
    if (j >= from + 2 * AHEAD && j - 2 * AHEAD < to)
        copy_out(ps, j - 2 * AHEAD);
}

/* Inputs [from, to) through the whole pipeline. */
static void pipeline(pass *ps, uint32_t from, uint32_t to)
{
    uint32_t j = from;
    for (; j < to + 2 * AHEAD && j < from + 2 * AHEAD; j++)
        edge_step(ps, from, to, j);
    for (; j < to; j++) { /* every stage full */
        fetch_index(ps, j);
        fetch_row(ps, j - AHEAD);
        copy_out(ps, j - 2 * AHEAD);
    }
    for (; j < to + 2 * AHEAD; j++)
        edge_step(ps, from, to, j);
}

uint32_t pskv__read_hits(pskv_table *t, pskv__plan *p, float *out, uint8_t *found)
{
    const uint32_t n = p->n;
    pass ps = {.t = t, .shards = t->shards, .shard_of = p->shard_of, .keys = p->keys,
               .hash = p->hash, .list = p->list, .out = out, .found = found,
               .row_bytes = (size_t)t->dim * sizeof(float)};
    const size_t fit = ROUND_BYTES / ps.row_bytes;
    const uint32_t round = fit >= ROUND ? ROUND : fit <= 2 * AHEAD ? 2 * AHEAD : (uint32_t)fit;
    for (uint32_t from = 0; from < n; from += round) {
        const uint32_t to = n - from < round ? n : from + round;
        lock_round(&ps, from, to);
        pipeline(&ps, from, to);
        unlock_round(&ps);
        if (from == 0 && to < n && ps.rest > round - round / 8) {
            for (uint32_t k = to; k < n; k++)
                p->list[ps.rest++] = k;
            break;
        }
    }
    return ps.rest;
}
