/* Checkpoints: one LMDB write transaction with every row written since the
 * previous checkpoint, of every open table, committed atomically, while
 * pull/push go on.
 *
 *   begin    all tables' layout locks exclusive, for an instant: each
 *            shard's dirty list is taken and the table's parity flips, so
 *            every row written before this instant carries the "pending"
 *            mark and every later write marks the current generation.
 *   capture  keys sorted (numeric = LMDB byte order) and written in chunks
 *            through the transaction; each key's bytes as of the begin
 *            instant come from the row itself while it is still pending,
 *            from its pre-image (dirty.c saved it before the first later
 *            write), or from the spill file; a key with neither was erased
 *            and is deleted.
 *   commit   the atomic point. On MDB_MAP_FULL the map grows and the whole
 *            transaction is written again: capture changes nothing, marks
 *            stay until the end, so a retry reads the same bytes.
 *   finish   pending marks cleared (success) or turned into current marks
 *            with the keys carried to the next checkpoint (failure);
 *            pre-images and committed tombstones dropped.
 * SPDX-License-Identifier: BSD-2-Clause */
#include <lmdb.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "dirty.h"
#include "format.h"
#include "persist.h"
#include "records.h"
#include "pskv_internal.h"
#include "seqfile.h"
#include "sort.h"
#include "tier.h"
#include "undo.h"

/* Captured bytes per chunk: bounds the checkpointer's buffer. */
#define CHUNK_BYTES (4u << 20)
#define CHUNK_KEYS_MAX 4096u

void (*pskv__checkpoint_begin_hook)(void *arg);
void *pskv__checkpoint_begin_hook_arg;

/* A table's count record: rows in LMDB and the sum of their checks. */
typedef struct row_count {
    uint64_t rows, digest;
} row_count;

typedef struct ckpt_table {
    pskv_table *t;
    uint64_t *keys; /* sorted, unique */
    size_t n;
    row_count count; /* its count record once committed */
    uint64_t version; /* the table's version at the instant */
    bool final;       /* pskv_close's checkpoint: no version follows it */
} ckpt_table;

/* ---------------------------------------------------------------- sorting */

static size_t unique(uint64_t *keys, size_t n)
{
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (m == 0 || keys[m - 1] != keys[i])
            keys[m++] = keys[i];
    return m;
}

/* ---------------------------------------------------------------- jobs */

/* An asynchronous checkpoint (pskv_checkpoint_start): the thread that runs
 * it, and what the caller waits for. The thread owns the store's
 * ckpt_lock from before the instant until after the commit; the caller
 * owns the handle. */
enum job_stage { JOB_STARTING, JOB_TAKEN, JOB_DONE };

struct pskv_ckpt {
    pskv_store *s;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cv;
    enum job_stage stage;
    int taken_rc;    /* the instant's result: not 0, and no instant was taken */
    int rc;          /* JOB_DONE: the checkpoint's result */
    uint64_t seq;    /* JOB_DONE: the store's checkpoint_seq after it */
    bool has_meta;   /* false: keep the metadata record as it is */
    pskv__user_meta meta; /* a copy the job owns */
};

/* seq: the store's checkpoint_seq, with JOB_DONE. */
static void job_advance(pskv_ckpt *job, enum job_stage stage, int rc, uint64_t seq)
{
    if (job == NULL)
        return;
    pthread_mutex_lock(&job->lock);
    if (job->stage < JOB_TAKEN)
        job->taken_rc = rc;
    if (job->stage < stage)
        job->stage = stage;
    if (stage == JOB_DONE) {
        job->rc = rc;
        job->seq = seq;
    }
    pthread_cond_broadcast(&job->cv);
    pthread_mutex_unlock(&job->lock);
}

static void instant_taken(pskv_ckpt *job, int rc) { job_advance(job, JOB_TAKEN, rc, 0); }

/* ---------------------------------------------------------------- begin */

/* The instant of the checkpoint. Called with every table's ckpt_lock held
 * (no reshard), so shard counts are stable. taken(job, rc) is told as soon
 * as the layout locks are released: the instant is then fixed (rc == 0) or
 * was never taken (rc != 0, nothing changed). */
static int begin(ckpt_table *ct, uint32_t nt, pskv_ckpt *job)
{
    pskv__keylist **lists = calloc(nt ? nt : 1, sizeof *lists);
    uint64_t **tmp = calloc(nt ? nt : 1, sizeof *tmp);
    int rc = lists && tmp ? 0 : PSKV_ENOMEM;
    for (uint32_t i = 0; i < nt && rc == 0; i++) {
        lists[i] = calloc(ct[i].t->nshards, sizeof **lists);
        rc = lists[i] ? 0 : PSKV_ENOMEM;
    }
    if (rc == 0) {
        for (uint32_t i = 0; i < nt; i++)
            pthread_rwlock_wrlock(&ct[i].t->layout_lock);
        /* No row call is in flight now: take the lists, flip the parity. */
        for (uint32_t i = 0; i < nt && rc == 0; i++) {
            pskv_table *t = ct[i].t;
            size_t total = t->ncarry;
            for (uint32_t sd = 0; sd < t->nshards; sd++)
                total += pskv__dirty_listed(&t->shards[sd]);
            ct[i].keys = malloc((total ? total : 1) * sizeof *ct[i].keys);
            tmp[i] = malloc((total ? total : 1) * sizeof *tmp[i]);
            ct[i].n = total;
            rc = ct[i].keys && tmp[i] ? 0 : PSKV_ENOMEM;
        }
        if (rc == 0) {
            for (uint32_t i = 0; i < nt; i++) {
                pskv_table *t = ct[i].t;
                for (uint32_t sd = 0; sd < t->nshards; sd++) {
                    pskv__dirty_take(&t->shards[sd], &lists[i][sd]);
                }
                t->parity ^= 1u;
                atomic_store(&t->ckpt_active, true);
                ct[i].version = atomic_load(&t->version);
            }
            if (pskv__checkpoint_begin_hook != NULL)
                pskv__checkpoint_begin_hook(pskv__checkpoint_begin_hook_arg);
        }
        for (uint32_t i = 0; i < nt; i++)
            pthread_rwlock_unlock(&ct[i].t->layout_lock);
    }
    instant_taken(job, rc);
    /* Outside the locks: merge, sort, deduplicate. */
    for (uint32_t i = 0; i < nt && rc == 0; i++) {
        pskv_table *t = ct[i].t;
        size_t at = 0;
        if (t->ncarry > 0)
            memcpy(ct[i].keys, t->carry, t->ncarry * sizeof *t->carry);
        at = t->ncarry;
        free(t->carry);
        t->carry = NULL;
        t->ncarry = 0;
        for (uint32_t sd = 0; sd < t->nshards; sd++) {
            pskv__keylist *l = &lists[i][sd];
            for (uint32_t b = 0; b * PSKV__KEYS_PER_BLOCK < l->count; b++) {
                uint32_t k = l->count - b * PSKV__KEYS_PER_BLOCK;
                k = k < PSKV__KEYS_PER_BLOCK ? k : PSKV__KEYS_PER_BLOCK;
                memcpy(ct[i].keys + at, l->blocks[b], k * sizeof(uint64_t));
                at += k;
            }
            /* Room for the pre-images writers may save: the map must not
             * rehash under a writer meanwhile. */
            pskv__shard *sh = &t->shards[sd];
            pthread_mutex_lock(&sh->lock);
            pskv__dirty_presize(sh, l->count);
            pthread_mutex_unlock(&sh->lock);
            pskv__keylist_free(l);
        }
        pskv__keys_sort(ct[i].keys, tmp[i], ct[i].n);
        ct[i].n = unique(ct[i].keys, ct[i].n);
    }
    for (uint32_t i = 0; i < nt; i++) {
        if (rc != 0) {
            free(ct[i].keys);
            ct[i].keys = NULL;
            ct[i].n = 0;
        }
        if (tmp)
            free(tmp[i]);
        if (lists)
            free(lists[i]);
    }
    free(tmp);
    free(lists);
    return rc;
}

/* ---------------------------------------------------------------- chunks */

/* A chunk of sorted keys grouped by shard: at[start[s] .. start[s+1]) are
 * the chunk positions of shard s's keys. */
typedef struct chunk {
    const uint64_t *keys;
    uint32_t n;
    uint64_t *hash;
    uint32_t *shard_of, *at, *start, *fill;
    /* capture results */
    uint8_t *vals;     /* [n][row_bytes + 8] */
    uint8_t *present;  /* [n] 1 = put, 0 = delete */
    uint8_t *waiting;  /* [n] a loader owns the row: look again */
    uint32_t *spill_pos, *spill_slot;
    uint8_t *spill_owned; /* BUSY set by us: clear after the read */
    uint32_t nspill;
} chunk;

static void chunk_free(chunk *c)
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

static int chunk_alloc(chunk *c, uint32_t keys_max, uint32_t shards_max, uint32_t row_bytes)
{
    memset(c, 0, sizeof *c);
    c->hash = malloc(keys_max * sizeof *c->hash);
    c->shard_of = malloc(keys_max * sizeof *c->shard_of);
    c->at = malloc(keys_max * sizeof *c->at);
    c->start = malloc(((size_t)shards_max + 1) * sizeof *c->start);
    c->fill = malloc(((size_t)shards_max + 1) * sizeof *c->fill);
    /* Captured rows of any table: a chunk holds at most CHUNK_BYTES of them,
     * or 16 rows (chunk_keys). */
    size_t vals_bytes = (size_t)16 * (row_bytes + PSKV_FMT_CHECK_BYTES);
    c->vals = malloc(vals_bytes > CHUNK_BYTES ? vals_bytes : CHUNK_BYTES);
    c->present = malloc(keys_max);
    c->waiting = malloc(keys_max);
    c->spill_pos = malloc(keys_max * sizeof *c->spill_pos);
    c->spill_slot = malloc(keys_max * sizeof *c->spill_slot);
    c->spill_owned = malloc(keys_max);
    if (!c->hash || !c->shard_of || !c->at || !c->start || !c->fill || !c->vals || !c->present ||
        !c->waiting || !c->spill_pos || !c->spill_slot || !c->spill_owned) {
        chunk_free(c);
        return PSKV_ENOMEM;
    }
    return 0;
}

/* Route the chunk's keys (layout lock held) and group them by shard. */
static void chunk_group(pskv_table *t, chunk *c, const uint64_t *keys, uint32_t n)
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

static uint8_t *val_of(const pskv_table *t, const chunk *c, uint32_t i)
{
    return c->vals + (size_t)i * (t->row_bytes + PSKV_FMT_CHECK_BYTES);
}

static void take_bytes(pskv_table *t, chunk *c, uint32_t i, const void *row)
{
    memcpy(val_of(t, c, i), row, t->row_bytes);
    c->present[i] = 1;
}

static void need_spill_read(chunk *c, uint32_t i, uint32_t slot, bool owned)
{
    c->spill_pos[c->nspill] = i;
    c->spill_slot[c->nspill] = slot;
    c->spill_owned[c->nspill++] = owned;
    c->present[i] = 1;
}

/* One key's bytes as of the begin (shard lock held), as dirty.c finds them. */
static void capture_key(pskv_table *t, pskv__shard *sh, chunk *c, uint32_t i, uint32_t parity)
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

/* Read the chunk's spilled bytes in one batch and release what we marked. */
static int read_spilled(pskv_table *t, chunk *c)
{
    if (c->nspill == 0)
        return 0;
    uint64_t *keys = malloc(c->nspill * sizeof *keys);
    float **rows = malloc(c->nspill * sizeof *rows);
    int rc = keys && rows ? 0 : PSKV_ENOMEM;
    if (rc == 0) {
        for (uint32_t k = 0; k < c->nspill; k++) {
            keys[k] = c->keys[c->spill_pos[k]];
            rows[k] = (float *)(void *)val_of(t, c, c->spill_pos[k]);
        }
        rc = pskv__spill_read(t->spill, c->nspill, keys, c->spill_slot, rows, NULL);
    }
    for (uint32_t k = 0; k < c->nspill; k++) {
        if (!c->spill_owned[k])
            continue;
        uint32_t i = c->spill_pos[k];
        pskv__shard *sh = &t->shards[c->shard_of[i]];
        pthread_mutex_lock(&sh->lock);
        pskv__tier_spilled_release(sh, c->keys[i], c->hash[i]);
        pthread_mutex_unlock(&sh->lock);
    }
    pskv__tier_moved_wake(t->store);
    c->nspill = 0;
    free(keys);
    free(rows);
    return rc;
}

/* Capture a chunk of sorted keys: c->present and c->vals (with checks). */
static int capture_chunk(pskv_table *t, chunk *c, const uint64_t *keys, uint32_t n)
{
    pthread_rwlock_rdlock(&t->layout_lock);
    chunk_group(t, c, keys, n);
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
            pthread_mutex_lock(&sh->lock);
            for (uint32_t j = c->start[s]; j < c->start[s + 1]; j++) {
                if (j + 8 < c->start[s + 1]) /* the index entry a few keys ahead */
                    __builtin_prefetch(&sh->index[pskv__index_pos(c->hash[c->at[j + 8]],
                                                                  sh->index_mask)]);
                if (c->waiting[c->at[j]]) {
                    capture_key(t, sh, c, c->at[j], parity);
                    waiting += c->waiting[c->at[j]];
                }
            }
            pthread_mutex_unlock(&sh->lock);
        }
        rc = read_spilled(t, c);
        if (rc != 0 || waiting == 0)
            break;
        pskv__tier_moved_wait(t->store, gen);
    }
    pthread_rwlock_unlock(&t->layout_lock);
    for (uint32_t i = 0; i < n && rc == 0; i++)
        if (c->present[i]) {
            uint8_t *v = val_of(t, c, i);
            pskv_fmt_put64(v + t->row_bytes, pskv_fmt_row_check(keys[i], v, t->row_bytes));
        }
    return rc;
}

/* ---------------------------------------------------------------- write */

static int chunk_keys(const pskv_table *t)
{
    uint32_t k = CHUNK_BYTES / (t->row_bytes + PSKV_FMT_CHECK_BYTES);
    return (int)(k < 16 ? 16 : k > CHUNK_KEYS_MAX ? CHUNK_KEYS_MAX : k);
}


/* Put or delete the captured chunk, in key order, through the table's
 * cursor: a put next to the previous one finds its leaf without a descent
 * from the root. A put is tried as an insert (MDB_NOOVERWRITE); a key that
 * exists comes back with its value, whose check leaves the table digest,
 * and is then replaced at the cursor (MDB_CURRENT): one search either way. */
/* Keys past the table's last LMDB key go in with MDB_APPEND: LMDB then
 * fills each leaf page before it starts the next, where a put in the
 * middle splits pages in half (a table's first checkpoint: 100% full
 * leaves instead of about 75%; later updates of the same keys keep them
 * full). */
typedef struct tail {
    bool any;       /* the table has a row in LMDB */
    uint64_t last;  /* its greatest key */
} tail;

static int tail_of(MDB_cursor *cur, tail *tl)
{
    MDB_val k, v;
    int rc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
    tl->any = rc == 0;
    if (rc == MDB_NOTFOUND)
        return 0;
    if (rc != 0)
        return pskv__env_write_err(rc);
    if (k.mv_size != 8)
        return PSKV_ECORRUPT;
    tl->last = pskv_fmt_key_get(k.mv_data);
    return 0;
}

static int write_chunk(pskv_table *t, MDB_cursor *cur, pskv__undo *undo, uint32_t ti,
                       const chunk *c, row_count *count, uint8_t *old, tail *tl)
{
    const size_t vlen = (size_t)t->row_bytes + PSKV_FMT_CHECK_BYTES;
    for (uint32_t i = 0; i < c->n; i++) {
        uint8_t kb[8];
        pskv_fmt_key(kb, c->keys[i]);
        MDB_val k = {8, kb}, v;
        uint64_t old_check = 0;
        size_t old_len = 0; /* the stored value before, for the undo (0: none) */
        bool changed = true;
        int rc;
        if (c->present[i] && (!tl->any || c->keys[i] > tl->last)) {
            uint8_t *val = val_of(t, c, i);
            v = (MDB_val){vlen, val};
            rc = mdb_cursor_put(cur, &k, &v, MDB_APPEND);
            count->rows++;
            count->digest += pskv_fmt_get64(val + t->row_bytes);
            tl->any = true;
            tl->last = c->keys[i];
        } else if (!c->present[i] && (!tl->any || c->keys[i] > tl->last)) {
            rc = 0; /* erased before it was ever persisted */
            changed = false;
        } else if (c->present[i]) {
            uint8_t *val = val_of(t, c, i);
            v = (MDB_val){vlen, val};
            rc = mdb_cursor_put(cur, &k, &v, MDB_NOOVERWRITE);
            if (rc == 0) {
                count->rows++;
            } else if (rc == MDB_KEYEXIST) {
                if (pskv_fmt_row_stored_check(v.mv_data, v.mv_size, t->row_bytes, &old_check) != 0)
                    return PSKV_ECORRUPT;
                memcpy(old, v.mv_data, vlen); /* before the put reuses its page */
                old_len = vlen;
                v = (MDB_val){vlen, val};
                rc = mdb_cursor_put(cur, &k, &v, MDB_CURRENT);
            }
            count->digest += pskv_fmt_get64(val + t->row_bytes);
        } else {
            rc = mdb_cursor_get(cur, &k, &v, MDB_SET);
            if (rc == 0 &&
                pskv_fmt_row_stored_check(v.mv_data, v.mv_size, t->row_bytes, &old_check) != 0)
                return PSKV_ECORRUPT;
            if (rc == 0) {
                memcpy(old, v.mv_data, vlen);
                old_len = vlen;
                rc = mdb_cursor_del(cur, 0);
                count->rows--;
            } else if (rc == MDB_NOTFOUND) {
                rc = 0; /* erased before it was ever persisted */
                changed = false;
            }
        }
        count->digest -= old_check;
        if (rc == 0 && changed)
            rc = pskv__undo_row(undo, ti, c->keys[i], old, old_len);
        if (rc != 0)
            return pskv__env_write_err(rc);
    }
    return 0;
}

/* Capture runs on a helper thread one chunk ahead of the LMDB writes, so
 * that the writer thread (the checkpoint's bottleneck) only puts. */
typedef struct pipeline {
    ckpt_table *ct;
    uint32_t nt;
    chunk *c; /* [2]: chunk k of the checkpoint goes to c[k & 1] */
    pthread_mutex_t lock;
    pthread_cond_t cv;
    bool full[2];
    bool stop;      /* the writer gave up: capture no more */
    int capture_rc; /* first capture error; no chunk after it */
} pipeline;

static size_t chunks_of(const ckpt_table *ct)
{
    size_t step = (size_t)chunk_keys(ct->t);
    return (ct->n + step - 1) / step;
}

static void *capture_thread(void *arg)
{
    pipeline *p = arg;
    uint64_t k = 0;
    for (uint32_t i = 0; i < p->nt; i++) {
        pskv_table *t = p->ct[i].t;
        size_t step = (size_t)chunk_keys(t);
        pskv__keyfilter_expect(&t->persisted, p->ct[i].n);
        for (size_t at = 0; at < p->ct[i].n; at += step, k++) {
            chunk *c = &p->c[k & 1];
            pthread_mutex_lock(&p->lock);
            while (p->full[k & 1] && !p->stop)
                pthread_cond_wait(&p->cv, &p->lock);
            bool stop = p->stop;
            pthread_mutex_unlock(&p->lock);
            if (stop)
                return NULL;
            uint32_t n = (uint32_t)(p->ct[i].n - at < step ? p->ct[i].n - at : step);
            int rc = capture_chunk(t, c, p->ct[i].keys + at, n);
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

/* The writer's side: chunk k once captured, or the capture's error. */
static int chunk_wait(pipeline *p, uint64_t k)
{
    pthread_mutex_lock(&p->lock);
    while (!p->full[k & 1] && p->capture_rc == 0)
        pthread_cond_wait(&p->cv, &p->lock);
    int rc = p->full[k & 1] ? 0 : p->capture_rc;
    pthread_mutex_unlock(&p->lock);
    return rc;
}

static void chunk_done(pipeline *p, uint64_t k)
{
    pthread_mutex_lock(&p->lock);
    p->full[k & 1] = false;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->lock);
}

/* Every table's chunks, put through one cursor per table; each table's
 * count record follows from the committed one. */
static int write_rows(pipeline *p, MDB_txn *txn, pskv__undo *undo, pskv_store *s,
                      uint64_t *rows)
{
    int rc = 0;
    uint64_t k = 0;
    uint32_t row_max = 0;
    for (uint32_t i = 0; i < p->nt; i++)
        row_max = p->ct[i].t->row_bytes > row_max ? p->ct[i].t->row_bytes : row_max;
    uint8_t *old = malloc((size_t)row_max + PSKV_FMT_CHECK_BYTES);
    if (old == NULL)
        return PSKV_ENOMEM;
    *rows = 0;
    for (uint32_t i = 0; i < p->nt && rc == 0; i++) {
        pskv_table *t = p->ct[i].t;
        MDB_cursor *cur = NULL;
        row_count *count = &p->ct[i].count; /* from the committed one */
        pthread_mutex_lock(&t->count_lock);
        *count = (row_count){t->db_rows, t->db_digest};
        pthread_mutex_unlock(&t->count_lock);
        rc = pskv__env_write_err(mdb_cursor_open(txn, t->dbi, &cur));
        tail tl = {false, 0};
        if (rc == 0)
            rc = tail_of(cur, &tl);
        for (size_t c = chunks_of(&p->ct[i]); c > 0; c--, k++) {
            /* After an error every chunk is still taken and released:
             * the capture thread must not wait for a slot. */
            int crc = chunk_wait(p, k);
            if (rc == 0 && crc == 0)
                rc = write_chunk(t, cur, undo, i, &p->c[k & 1], count, old, &tl);
            else if (rc == 0)
                rc = crc;
            chunk_done(p, k);
            if (rc != 0)
                break;
        }
        if (cur != NULL)
            mdb_cursor_close(cur);
        if (rc == 0)
            rc = pskv__record_put_table(s, txn, t); /* shard count may have changed */
        if (rc == 0)
            rc = pskv__record_put_filters(s, txn, t);
        if (rc == 0)
            rc = pskv__record_put_count(s, txn, t->name, count->rows, count->digest);
        if (rc == 0)
            rc = pskv__record_put_version(s, txn, t->name, p->ct[i].version, p->ct[i].final);
        *rows += p->ct[i].n;
    }
    free(old);
    return rc;
}

/* The undo header's table list: each table's committed count record. */
static int undo_end(pskv_store *s, pskv__undo *undo, const ckpt_table *ct, uint32_t nt)
{
    pskv__undo_table *ut = calloc(nt ? nt : 1, sizeof *ut);
    if (ut == NULL)
        return PSKV_ENOMEM;
    for (uint32_t i = 0; i < nt; i++) {
        pskv_table *t = ct[i].t;
        pthread_mutex_lock(&t->count_lock);
        ut[i] = (pskv__undo_table){t->name, t->db_rows, t->db_digest};
        pthread_mutex_unlock(&t->count_lock);
    }
    int rc = pskv__undo_end(s, undo, ut, nt);
    free(ut);
    return rc;
}

/* The whole transaction, once. PSKV__MAP_FULL asks for a bigger map. */
static int write_txn(pskv_store *s, ckpt_table *ct, uint32_t nt, chunk c[2],
                     const pskv__user_meta *meta, uint64_t *rows, uint64_t *time_ns,
                     uint64_t *txnid)
{
    MDB_txn *txn;
    pskv__undo undo;
    int rc = pskv__env_txn_begin(&s->lmdb, true, &txn);
    if (rc != 0)
        return rc;
    rc = pskv__undo_begin(s, txn, meta != NULL, &undo);
    if (rc != 0) {
        pskv__undo_free(&undo);
        mdb_txn_abort(txn);
        return rc;
    }
    pipeline p = {.ct = ct, .nt = nt, .c = c};
    pthread_t helper;
    pthread_mutex_init(&p.lock, NULL);
    pthread_cond_init(&p.cv, NULL);
    if (pthread_create(&helper, NULL, capture_thread, &p) != 0) {
        rc = PSKV_ENOMEM;
    } else {
        rc = write_rows(&p, txn, &undo, s, rows);
        pthread_mutex_lock(&p.lock);
        p.stop = true; /* after an error: capture nothing more */
        pthread_cond_broadcast(&p.cv);
        pthread_mutex_unlock(&p.lock);
        pthread_join(helper, NULL);
    }
    pthread_cond_destroy(&p.cv);
    pthread_mutex_destroy(&p.lock);
    if (rc == 0)
        rc = undo_end(s, &undo, ct, nt);
    pskv__undo_free(&undo);
    if (rc == 0 && meta != NULL)
        rc = pskv__record_put_user(s, txn, s->ckpt_seq + 1, meta->bytes, meta->len);
    if (rc == 0)
        rc = pskv__record_put_checkpoint(s, txn, s->ckpt_seq + 1, time_ns);
    if (rc != 0) {
        mdb_txn_abort(txn);
        return rc;
    }
    *txnid = mdb_txn_id(txn);
    return pskv__env_write_err(mdb_txn_commit(txn)); /* the atomic point */
}

/* write_txn's arguments, for pskv__env_write: room is reserved
 * ahead for need bytes, then the whole transaction is written. */
typedef struct txn_args {
    pskv_store *s;
    ckpt_table *ct;
    uint32_t nt;
    chunk *c;
    const pskv__user_meta *meta;
    uint64_t need, *rows, *time_ns, *txnid;
} txn_args;

static int txn_once(void *arg)
{
    const txn_args *a = arg;
    pskv_store *s = a->s;
    int rc = pskv__env_reserve_map(&s->lmdb, a->need);
    return rc != 0 ? rc
                   : write_txn(s, a->ct, a->nt, a->c, a->meta, a->rows, a->time_ns, a->txnid);
}

/* pskv_close with nothing to commit: the version records, as of the
 * last checkpoint, marked clean. */
static int clean_once(void *arg)
{
    const txn_args *a = arg;
    pskv_store *s = a->s;
    MDB_txn *txn;
    int rc = pskv__env_txn_begin(&s->lmdb, true, &txn);
    if (rc != 0)
        return rc;
    for (uint32_t i = 0; i < a->nt && rc == 0; i++)
        rc = pskv__record_put_version(s, txn, a->ct[i].t->name, a->ct[i].version, true);
    if (rc != 0) {
        mdb_txn_abort(txn);
        return rc;
    }
    return pskv__env_write_err(mdb_txn_commit(txn));
}

/* ---------------------------------------------------------------- finish */

static void finish(pskv_table *t, chunk *c, ckpt_table *ct, bool ok)
{
    pthread_rwlock_rdlock(&t->layout_lock);
    const uint32_t parity = t->parity;
    size_t step = CHUNK_KEYS_MAX;
    for (size_t at = 0; at < ct->n; at += step) {
        uint32_t n = (uint32_t)(ct->n - at < step ? ct->n - at : step);
        chunk_group(t, c, ct->keys + at, n);
        for (uint32_t s = 0; s < t->nshards; s++) {
            if (c->start[s] == c->start[s + 1])
                continue;
            pskv__shard *sh = &t->shards[s];
            pthread_mutex_lock(&sh->lock);
            for (uint32_t j = c->start[s]; j < c->start[s + 1]; j++)
                pskv__dirty_settle(t, sh, c->keys[c->at[j]], c->hash[c->at[j]], parity, ok);
            pthread_mutex_unlock(&sh->lock);
        }
    }
    /* No row is pending any more: drop the pre-images. */
    for (uint32_t s = 0; s < t->nshards; s++) {
        pskv__shard *sh = &t->shards[s];
        pthread_mutex_lock(&sh->lock);
        uint32_t nslots = pskv__dirty_drop_pre_images(sh, c->spill_slot, CHUNK_KEYS_MAX);
        pthread_mutex_unlock(&sh->lock);
        while (nslots > 0) { /* pre-images that were spilled records */
            pskv__spill_free(t->spill, c->spill_slot, nslots);
            pthread_mutex_lock(&sh->lock);
            nslots = pskv__dirty_drop_pre_images(sh, c->spill_slot, CHUNK_KEYS_MAX);
            pthread_mutex_unlock(&sh->lock);
        }
    }
    atomic_store(&t->ckpt_active, false);
    pthread_rwlock_unlock(&t->layout_lock);
    if (ok) {
        free(ct->keys);
    } else {
        t->carry = ct->keys; /* written by the next checkpoint */
        t->ncarry = ct->n;
    }
    ct->keys = NULL;
}

/* ---------------------------------------------------------------- checkpoint */

int pskv__checkpoint_run(pskv_store *s, const pskv__user_meta *meta, pskv_ckpt *job, bool final)
{
    /* The tables open now (lock order: the table list before ckpt_lock,
     * as table creation takes them). */
    pthread_mutex_lock(&s->lock);
    uint32_t nt = s->ntables;
    ckpt_table *ct = calloc(nt ? nt : 1, sizeof *ct);
    if (ct != NULL)
        for (uint32_t i = 0; i < nt; i++)
            ct[i] = (ckpt_table){.t = s->tables[i], .final = final};
    pthread_mutex_unlock(&s->lock);
    if (ct == NULL) {
        instant_taken(job, PSKV_ENOMEM);
        return PSKV_ENOMEM;
    }
    pthread_mutex_lock(&s->ckpt_lock);
    uint64_t t0 = pskv__now_ns();
    uint32_t row_max = 0, shards_max = 1;
    for (uint32_t i = 0; i < nt; i++) {
        pthread_mutex_lock(&ct[i].t->ckpt_lock); /* no reshard meanwhile */
        if (ct[i].t->row_bytes > row_max)
            row_max = ct[i].t->row_bytes;
        if (ct[i].t->nshards > shards_max)
            shards_max = ct[i].t->nshards;
    }
    chunk c[2];
    int rc = chunk_alloc(&c[0], CHUNK_KEYS_MAX, shards_max, row_max);
    if (rc == 0) {
        rc = chunk_alloc(&c[1], CHUNK_KEYS_MAX, shards_max, row_max);
        if (rc != 0)
            chunk_free(&c[0]);
    }
    if (rc == 0) {
        rc = begin(ct, nt, job);
        if (rc != 0) {
            chunk_free(&c[0]);
            chunk_free(&c[1]);
        }
    }
    if (rc == 0) {
        /* Room for the rows and for the pages LMDB copies on write. */
        uint64_t need = (1u << 20) + (meta ? (uint64_t)meta->len * 2 : 0), rows = 0, time_ns = 0,
                 dirty = 0, txnid = 0;
        for (uint32_t i = 0; i < nt; i++) {
            need += (uint64_t)ct[i].n * (ct[i].t->row_bytes + 64) * 3; /* rows, undo, copies */
            dirty += ct[i].n;
        }
        /* Nothing written and no metadata: nothing to commit. */
        const bool commit = dirty > 0 || meta != NULL;
        txn_args a = {s, ct, nt, c, meta, need, &rows, &time_ns, &txnid};
        if (commit)
            rc = pskv__env_write(&s->lmdb, txn_once, &a, need);
        if (rc != 0 && commit)
            (void)pskv__persist_recover(s); /* LMDB may have given up on its env */
        for (uint32_t i = 0; i < nt; i++)
            finish(ct[i].t, &c[0], &ct[i], rc == 0);
        chunk_free(&c[0]);
        chunk_free(&c[1]);
        if (rc == 0 && commit) {
            for (uint32_t i = 0; i < nt; i++) {
                pskv_table *t = ct[i].t;
                pskv__record_filters_written(t);
                pthread_mutex_lock(&t->count_lock);
                t->db_rows = ct[i].count.rows;
                t->db_digest = ct[i].count.digest;
                t->db_txnid = txnid;
                pthread_mutex_unlock(&t->count_lock);
            }
            s->ckpt_seq++;
            /* After the commit, never before: a crash in between leaves the
             * store one ahead of the file, which opens. A failure to write
             * it only weakens the rollback check until the next one. */
            (void)pskv__seqfile_write(s->dir, s->ckpt_seq);
            atomic_store(&s->ckpt_seq_pub, s->ckpt_seq);
            s->ckpt_unix_ns = time_ns;
            uint64_t tick;
            if (pskv__record_tick(s, &tick) == 0) {
                for (uint32_t i = 0; i < nt; i++) { /* the same rows, a later snapshot */
                    pskv_table *t = ct[i].t;
                    pthread_mutex_lock(&t->count_lock);
                    t->db_txnid = tick;
                    pthread_mutex_unlock(&t->count_lock);
                }
            } else {
                (void)pskv__persist_recover(s); /* costs file space only */
            }
            atomic_store(&s->ckpt_last_rows, rows);
            atomic_store(&s->ckpt_last_ns, pskv__now_ns() - t0);
        } else if (rc != 0) {
            atomic_fetch_add(&s->n_ckpt_failed, 1);
        } else if (final) {
            /* Nothing to commit: the close still says that no version
             * follows the last checkpoint's (no seq, no undo changes). */
            rc = pskv__env_write(&s->lmdb, clean_once, &a, 0);
        }
    }
    instant_taken(job, rc); /* no-op unless an allocation failed before it */
    for (uint32_t i = 0; i < nt; i++)
        pthread_mutex_unlock(&ct[i].t->ckpt_lock);
    free(ct);
    job_advance(job, JOB_DONE, rc, s->ckpt_seq); /* before the next checkpoint can begin */
    pthread_mutex_unlock(&s->ckpt_lock);
    return rc;
}

/* ---------------------------------------------------------------- asynchronous */

static void *job_main(void *arg)
{
    pskv_ckpt *job = arg;
    /* Tells the job it is done; the store is not touched after the run:
     * pskv_close may free it. */
    (void)pskv__checkpoint_run(job->s, job->has_meta ? &job->meta : NULL, job, false);
    return NULL;
}

static void job_free(pskv_ckpt *job)
{
    pthread_cond_destroy(&job->cv);
    pthread_mutex_destroy(&job->lock);
    free((void *)job->meta.bytes);
    free(job);
}

int pskv__checkpoint_start(pskv_store *s, const void *meta, size_t len, bool has_meta,
                           pskv_ckpt **out)
{
    pskv_ckpt *job = calloc(1, sizeof *job);
    void *copy = has_meta ? malloc(len ? len : 1) : NULL;
    if (job == NULL || (has_meta && copy == NULL)) {
        free(job);
        free(copy);
        return PSKV_ENOMEM;
    }
    if (len > 0)
        memcpy(copy, meta, len);
    job->s = s;
    job->has_meta = has_meta;
    job->meta = (pskv__user_meta){copy, has_meta ? len : 0};
    pthread_mutex_init(&job->lock, NULL);
    pthread_cond_init(&job->cv, NULL);
    if (pthread_create(&job->thread, NULL, job_main, job) != 0) {
        job_free(job);
        return PSKV_ENOMEM;
    }
    pthread_mutex_lock(&job->lock);
    while (job->stage == JOB_STARTING)
        pthread_cond_wait(&job->cv, &job->lock);
    int rc = job->taken_rc;
    pthread_mutex_unlock(&job->lock);
    if (rc != 0) { /* no instant: the job ends without a transaction */
        pthread_join(job->thread, NULL);
        job_free(job);
        return rc;
    }
    *out = job;
    return 0;
}

int pskv__checkpoint_wait(pskv_ckpt *job, uint64_t *seq)
{
    pthread_join(job->thread, NULL);
    int rc = job->rc;
    if (seq != NULL)
        *seq = job->seq;
    job_free(job);
    return rc;
}

bool pskv__checkpoint_done(pskv_ckpt *job)
{
    pthread_mutex_lock(&job->lock);
    bool done = job->stage == JOB_DONE;
    pthread_mutex_unlock(&job->lock);
    return done;
}

