/* Checkpoints: one LMDB write transaction with every row written since the
 * previous checkpoint, of every open table, committed atomically, while
 * pull/push go on.
 *
 *   begin    all tables' layout locks exclusive, for an instant: each
 *            shard's dirty list is taken and the table's parity flips, so
 *            every row written before this instant carries the "pending"
 *            mark and every later write marks the current generation.
 *   capture  keys sorted (numeric = LMDB byte order), captured as of the
 *            begin instant in batches by a helper thread (capture.c) and
 *            written batch by batch through the transaction.
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

#include "capture.h"
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


void (*pskv__checkpoint_begin_hook)(void *arg);
void *pskv__checkpoint_begin_hook_arg;

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
static int begin(pskv__ckpt_table *ct, uint32_t nt, pskv_ckpt *job)
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
            pskv__shard_lock(sh);
            pskv__dirty_presize(sh, l->count);
            pskv__shard_unlock(sh);
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

/* ---------------------------------------------------------------- write */

/* Put or delete the captured batch, in key order, through the table's
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

static int write_batch(pskv_table *t, MDB_cursor *cur, pskv__undo *undo, uint32_t ti,
                       const pskv__batch *c, pskv__row_count *count, uint8_t *old, tail *tl)
{
    const size_t vlen = (size_t)t->stored_bytes + PSKV_FMT_CHECK_BYTES;
    for (uint32_t i = 0; i < c->n; i++) {
        uint8_t kb[8];
        pskv_fmt_key(kb, c->keys[i]);
        MDB_val k = {8, kb}, v;
        uint64_t old_check = 0;
        size_t old_len = 0; /* the stored value before, for the undo (0: none) */
        bool changed = true;
        int rc;
        if (c->present[i] && (!tl->any || c->keys[i] > tl->last)) {
            uint8_t *val = pskv__batch_val(t, c, i);
            v = (MDB_val){vlen, val};
            rc = mdb_cursor_put(cur, &k, &v, MDB_APPEND);
            count->rows++;
            count->digest += pskv_fmt_get64(val + t->stored_bytes);
            tl->any = true;
            tl->last = c->keys[i];
        } else if (!c->present[i] && (!tl->any || c->keys[i] > tl->last)) {
            rc = 0; /* erased before it was ever persisted */
            changed = false;
        } else if (c->present[i]) {
            uint8_t *val = pskv__batch_val(t, c, i);
            v = (MDB_val){vlen, val};
            rc = mdb_cursor_put(cur, &k, &v, MDB_NOOVERWRITE);
            if (rc == 0) {
                count->rows++;
            } else if (rc == MDB_KEYEXIST) {
                if (pskv_fmt_row_stored_check(v.mv_data, v.mv_size, t->stored_bytes, &old_check) != 0)
                    return PSKV_ECORRUPT;
                memcpy(old, v.mv_data, vlen); /* before the put reuses its page */
                old_len = vlen;
                v = (MDB_val){vlen, val};
                rc = mdb_cursor_put(cur, &k, &v, MDB_CURRENT);
            }
            count->digest += pskv_fmt_get64(val + t->stored_bytes);
        } else {
            rc = mdb_cursor_get(cur, &k, &v, MDB_SET);
            if (rc == 0 &&
                pskv_fmt_row_stored_check(v.mv_data, v.mv_size, t->stored_bytes, &old_check) != 0)
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

/* Every table's batches, put through one cursor per table; each table's
 * count record follows from the committed one. */
static int write_rows(pskv__batches *p, MDB_txn *txn, pskv__undo *undo, pskv_store *s,
                      uint64_t *rows)
{
    int rc = 0;
    uint64_t k = 0;
    uint32_t row_max = 0;
    for (uint32_t i = 0; i < p->nt; i++)
        row_max = p->ct[i].t->stored_bytes > row_max ? p->ct[i].t->stored_bytes : row_max;
    uint8_t *old = malloc((size_t)row_max + PSKV_FMT_CHECK_BYTES);
    if (old == NULL)
        return PSKV_ENOMEM;
    *rows = 0;
    for (uint32_t i = 0; i < p->nt && rc == 0; i++) {
        pskv_table *t = p->ct[i].t;
        MDB_cursor *cur = NULL;
        pskv__row_count *count = &p->ct[i].count; /* from the committed one */
        pthread_mutex_lock(&t->count_lock);
        *count = (pskv__row_count){t->db_rows, t->db_digest};
        pthread_mutex_unlock(&t->count_lock);
        rc = pskv__env_write_err(mdb_cursor_open(txn, t->dbi, &cur));
        tail tl = {false, 0};
        if (rc == 0)
            rc = tail_of(cur, &tl);
        for (size_t c = pskv__batch_count(&p->ct[i]); c > 0; c--, k++) {
            /* After an error every batch is still taken and released:
             * the capture thread must not wait for a slot. */
            int crc = pskv__batches_wait(p, k);
            if (rc == 0 && crc == 0)
                rc = write_batch(t, cur, undo, i, &p->c[k & 1], count, old, &tl);
            else if (rc == 0)
                rc = crc;
            pskv__batches_done(p, k);
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
static int undo_end(pskv_store *s, pskv__undo *undo, const pskv__ckpt_table *ct, uint32_t nt)
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
static int write_txn(pskv_store *s, pskv__ckpt_table *ct, uint32_t nt, pskv__batch c[2],
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
    pskv__batches p;
    rc = pskv__batches_start(&p, ct, nt, c);
    if (rc == 0) {
        rc = write_rows(&p, txn, &undo, s, rows);
        pskv__batches_stop(&p);
    }
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
    pskv__ckpt_table *ct;
    uint32_t nt;
    pskv__batch *c;
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

static void finish(pskv_table *t, pskv__batch *c, pskv__ckpt_table *ct, bool ok)
{
    pthread_rwlock_rdlock(&t->layout_lock);
    const uint32_t parity = t->parity;
    size_t step = PSKV__BATCH_KEYS_MAX;
    for (size_t at = 0; at < ct->n; at += step) {
        uint32_t n = (uint32_t)(ct->n - at < step ? ct->n - at : step);
        pskv__batch_group(t, c, ct->keys + at, n);
        for (uint32_t s = 0; s < t->nshards; s++) {
            if (c->start[s] == c->start[s + 1])
                continue;
            pskv__shard *sh = &t->shards[s];
            pskv__shard_lock(sh);
            for (uint32_t j = c->start[s]; j < c->start[s + 1]; j++)
                pskv__dirty_settle(t, sh, c->keys[c->at[j]], c->hash[c->at[j]], parity, ok);
            pskv__shard_unlock(sh);
        }
    }
    /* No row is pending any more: drop the pre-images. */
    for (uint32_t s = 0; s < t->nshards; s++) {
        pskv__shard *sh = &t->shards[s];
        pskv__shard_lock(sh);
        uint32_t nslots = pskv__dirty_drop_pre_images(sh, c->spill_slot, PSKV__BATCH_KEYS_MAX);
        pskv__shard_unlock(sh);
        while (nslots > 0) { /* pre-images that were spilled records */
            pskv__spill_free(t->spill, c->spill_slot, nslots);
            pskv__shard_lock(sh);
            nslots = pskv__dirty_drop_pre_images(sh, c->spill_slot, PSKV__BATCH_KEYS_MAX);
            pskv__shard_unlock(sh);
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

/* ---------------------------------------------------------------- after the commit */

/* The bookkeeping of a committed checkpoint (snapshot txnid): filters as
 * written, each table's count record as of it, the store's seq (and
 * pskv.seq), then a tick so that the next checkpoint reuses the pages
 * this one freed. */
static void committed(pskv_store *s, pskv__ckpt_table *ct, uint32_t nt, uint64_t txnid,
                      uint64_t time_ns)
{
    for (uint32_t i = 0; i < nt; i++) {
        pskv__record_filters_written(ct[i].t);
        pskv__persist_count_seen(ct[i].t, ct[i].count.rows, ct[i].count.digest, txnid);
    }
    /* A failure to write pskv.seq only weakens the rollback check until
     * the next checkpoint. */
    (void)pskv__persist_seq_committed(s, s->ckpt_seq + 1, time_ns);
    uint64_t tick;
    if (pskv__record_tick(s, &tick) != 0) {
        (void)pskv__persist_recover(s); /* costs file space only */
        return;
    }
    for (uint32_t i = 0; i < nt; i++) /* the same rows, a later snapshot */
        pskv__persist_count_seen(ct[i].t, ct[i].count.rows, ct[i].count.digest, tick);
}

/* ---------------------------------------------------------------- checkpoint */

int pskv__checkpoint_run(pskv_store *s, const pskv__user_meta *meta, pskv_ckpt *job, bool final)
{
    /* The tables open now (lock order: the table list before ckpt_lock,
     * as table creation takes them). */
    pthread_mutex_lock(&s->lock);
    uint32_t nt = s->ntables;
    pskv__ckpt_table *ct = calloc(nt ? nt : 1, sizeof *ct);
    if (ct != NULL)
        for (uint32_t i = 0; i < nt; i++)
            ct[i] = (pskv__ckpt_table){.t = s->tables[i], .final = final};
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
        if (ct[i].t->stored_bytes > row_max)
            row_max = ct[i].t->stored_bytes;
        if (ct[i].t->nshards > shards_max)
            shards_max = ct[i].t->nshards;
    }
    pskv__batch c[2];
    int rc = pskv__batch_alloc(&c[0], PSKV__BATCH_KEYS_MAX, shards_max, row_max);
    if (rc == 0) {
        rc = pskv__batch_alloc(&c[1], PSKV__BATCH_KEYS_MAX, shards_max, row_max);
        if (rc != 0)
            pskv__batch_free(&c[0]);
    }
    if (rc == 0) {
        rc = begin(ct, nt, job);
        if (rc != 0) {
            pskv__batch_free(&c[0]);
            pskv__batch_free(&c[1]);
        }
    }
    if (rc == 0) {
        /* Room for the rows and for the pages LMDB copies on write. */
        uint64_t need = (1u << 20) + (meta ? (uint64_t)meta->len * 2 : 0), rows = 0, time_ns = 0,
                 dirty = 0, txnid = 0;
        for (uint32_t i = 0; i < nt; i++) {
            need += (uint64_t)ct[i].n * (ct[i].t->stored_bytes + 64) * 3; /* rows, undo, copies */
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
        pskv__batch_free(&c[0]);
        pskv__batch_free(&c[1]);
        if (rc == 0 && commit) {
            committed(s, ct, nt, txnid, time_ns);
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

