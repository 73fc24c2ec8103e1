/* Crash test: a child process trains (pull, push, put, erase; steps of an
 * update=sync table) on a durable store and checkpoints in a loop, telling the parent through a pipe the
 * digest of its reference model before each checkpoint and when each one
 * returns. The parent SIGKILLs it at a random instant, reopens the store
 * and checks that it holds exactly one of the checkpoints that may have
 * committed: at least the last one that returned, at most the one in
 * flight, bit for bit. Every other checkpoint carries metadata (its own
 * sequence number and digest, as a trainer would save its global step):
 * the reopened store's metadata must be that of the last such checkpoint
 * it holds. Every other trial then rolls the store back one checkpoint
 * (at_seq) in a second child, killed at a random instant too: the store
 * must then hold the checkpoint before, exactly, and never the later one
 * again. The next child goes on from the reopened state.
 *
 *   test_crash [--kills N] [--seed S]
 * Some trials run with a budget that spills most rows. */
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <xxhash.h>

#include "ref_model.h"
#include "test_common.h"
#include "pskv_internal.h"

static unsigned n_kills = 30;
static uint64_t base_seed = 1;
static char dir[64];

/* Three tables: a checkpoint must hold them at the same instant. The third
 * is update=sync: its accumulators (pushes not yet stepped) are part of
 * the checkpoint too. Digests of it are taken after a step, so that they
 * cover the accumulators; the parent's check steps it and then abandons
 * the store (the checkpoint stays the state), and each child steps it
 * once before it rebuilds its model from the store. */
#define TABLE_CFG "dim=8 optimizer=adagrad init=uniform:-0.5:0.5 seed=11 shards=8"
#define TABLE2_CFG "dim=3 optimizer=adam init=normal:0:0.1 seed=12 shards=3"
#define TABLE3_CFG "dim=4 optimizer=adagrad init=uniform:-0.5:0.5 seed=13 shards=4 update=sync"

enum { MSG_READY = 1, MSG_BEGIN = 2, MSG_BEGIN_META = 4, MSG_DONE = 3 };
typedef struct msg {
    uint64_t type, seq, digest;
} msg;

/* Order-independent digest of (key, row) pairs. */
static uint64_t row_digest(uint64_t key, const float *row, uint32_t floats)
{
    XXH3_state_t *st = XXH3_createState();
    XXH3_64bits_reset(st);
    XXH3_64bits_update(st, &key, sizeof key);
    XXH3_64bits_update(st, row, floats * sizeof(float));
    uint64_t h = XXH3_64bits_digest(st);
    XXH3_freeState(st);
    return h;
}

static uint64_t model_digest(const ref_model *m)
{
    uint64_t d = m->n;
    for (uint32_t i = 0; i < m->n; i++)
        d += row_digest(m->rows[i].key, m->rows[i].row, m->row_floats);
    return d;
}

/* The digest a sync table's rows would have after a step. */
static uint64_t model_digest_stepped(ref_model *m)
{
    uint64_t d = m->n;
    float *row = malloc(m->row_floats * sizeof(float));
    for (uint32_t i = 0; i < m->n; i++) {
        memcpy(row, m->rows[i].row, m->row_floats * sizeof(float));
        if (m->rows[i].pushes > 0)
            pskv__optimizer_apply(&m->opt, row, m->rows[i].acc);
        d += row_digest(m->rows[i].key, row, m->row_floats);
    }
    free(row);
    return d;
}

static uint64_t models_digest(ref_model *mm)
{
    return model_digest(&mm[0]) + 3 * model_digest(&mm[1]) + 5 * model_digest_stepped(&mm[2]);
}

/* Digest of the store's table; the model is rebuilt from it if m != NULL. */
static uint64_t store_digest(pskv_table *t, ref_model *m, uint32_t row_floats)
{
    pskv_table_info info;
    pskv_table_info_get(t, &info);
    float *row = malloc(row_floats * sizeof(float));
    pskv_iter *it;
    ck_assert_ok(pskv_iter_create(t, &it));
    uint64_t key, d = 0, n = 0;
    int rc;
    while ((rc = pskv_iter_next(it, &key, row, row + info.dim)) == 1) {
        d += row_digest(key, row, row_floats);
        n++;
        if (m != NULL)
            memcpy(ref_find_or_create(m, key)->row, row, row_floats * sizeof(float));
    }
    ck_assert_int_eq(rc, 0);
    pskv_iter_destroy(it);
    free(row);
    return d + n;
}

static void send_msg(int fd, uint64_t type, uint64_t seq, uint64_t digest)
{
    msg mm = {type, seq, digest};
    if (write(fd, &mm, sizeof mm) != (ssize_t)sizeof mm)
        _exit(3);
}

static const char *store_cfg(unsigned trial)
{
    return trial % 3 == 2 ? "memory_budget=24K" : NULL; /* ~170 of ~3000 rows resident */
}

/* The child: train and checkpoint until killed. */
static void child_main(int fd, unsigned trial)
{
    pskv_store *s;
    pskv_table *tt[3];
    if (pskv_open(dir, store_cfg(trial), &s) != 0 || pskv_table_open(s, "t", TABLE_CFG, &tt[0]) != 0 ||
        pskv_table_open(s, "u", TABLE2_CFG, &tt[1]) != 0 ||
        pskv_table_open(s, "v", TABLE3_CFG, &tt[2]) != 0)
        _exit(4);
    /* The accumulators the checkpoint kept, applied (the model below
     * starts from rows without any). */
    if (pskv_step(tt[2]) != 0)
        _exit(8);
    enum { MAXB = 32 };
    ref_model mm[3];
    for (int k = 0; k < 3; k++) {
        ref_open(&mm[k], tt[k], MAXB);
        store_digest(tt[k], &mm[k], mm[k].row_floats);
    }
    pskv_store_stats ss;
    pskv_store_stats_get(s, &ss);
    uint64_t seq = ss.checkpoint_seq;
    send_msg(fd, MSG_READY, seq, models_digest(mm));
    test_rng r = {base_seed * 1000003u + trial};
    uint64_t keys[MAXB];
    float vals[MAXB * 8];
    for (unsigned op = 0;; op++) {
        /* Half of the ops on the first table, a quarter on each other. */
        uint32_t pick = rng_below(&r, 4);
        int k = pick < 2 ? 0 : pick == 2 ? 1 : 2;
        pskv_table *t = tt[k];
        ref_model *mp = &mm[k];
        uint32_t n = 1 + rng_below(&r, MAXB);
        for (uint32_t i = 0; i < n; i++)
            keys[i] = 1 + rng_below(&r, 3000);
        for (uint32_t i = 0; i < n * 8; i++)
            vals[i] = rng_float(&r);
        uint32_t kind = rng_below(&r, 100);
        enum ref_op rop = kind < 35 ? REF_PULL : kind < 70 ? REF_PUSH : kind < 88 ? REF_PUT : REF_ERASE;
        if (k == 2 && rng_below(&r, 6) == 0)
            rop = REF_STEP;
        if (!ref_step(mp, t, rop, keys, n, vals)) {
            fprintf(stderr, "child: %s\n", mp->what);
            _exit(5);
        }
        if (rng_below(&r, 40) == 0) {
            uint64_t digest = models_digest(mm);
            bool with_meta = rng_below(&r, 2) == 0;
            send_msg(fd, with_meta ? MSG_BEGIN_META : MSG_BEGIN, seq + 1, digest);
            uint64_t meta[2] = {seq + 1, digest};
            int rc;
            if (with_meta && rng_below(&r, 2) == 0) { /* asynchronous: start, then wait */
                pskv_ckpt *c;
                rc = pskv_checkpoint_start(s, meta, sizeof meta, &c);
                if (rc == 0)
                    rc = pskv_checkpoint_wait(c, NULL);
            } else {
                rc = with_meta ? pskv_checkpoint_with_meta(s, meta, sizeof meta)
                               : pskv_checkpoint(s);
            }
            if (rc != 0) {
                fprintf(stderr, "child: checkpoint returned %d\n", rc);
                _exit(6);
            }
            pskv_store_stats_get(s, &ss);
            /* Nothing written since the last one: nothing to commit,
             * unless it carries metadata. */
            if (ss.checkpoint_seq != seq + 1 && (with_meta || ss.checkpoint_seq != seq))
                _exit(7);
            seq = ss.checkpoint_seq;
            send_msg(fd, MSG_DONE, seq, 0);
        }
    }
}

/* The store holds checkpoint seq exactly: its rows, and the metadata of
 * the last checkpoint up to seq that carried some. */
static void check_store(pskv_store *s, unsigned trial, uint64_t seq, const uint64_t *digest_of,
                        const bool *meta_at)
{
    pskv_table *t, *u, *v;
    ck_assert_ok(pskv_table_open(s, "t", TABLE_CFG, &t));
    ck_assert_ok(pskv_table_open(s, "u", TABLE2_CFG, &u));
    ck_assert_ok(pskv_table_open(s, "v", TABLE3_CFG, &v));
    pskv_table_info info, info2, info3;
    pskv_table_info_get(t, &info);
    pskv_table_info_get(u, &info2);
    pskv_table_info_get(v, &info3);
    ck_assert_ok(pskv_step(v)); /* the caller abandons the store: the checkpoint stays */
    uint64_t d = store_digest(t, NULL, info.dim + info.state_floats) +
                 3 * store_digest(u, NULL, info2.dim + info2.state_floats) +
                 5 * store_digest(v, NULL, info3.dim + info3.state_floats);
    ck_assert_msg(d == digest_of[seq], "trial %u: checkpoint %llu reopened with different rows",
                  trial, (unsigned long long)seq);
    uint64_t last_meta = 0;
    for (uint64_t q = seq; q > 0 && last_meta == 0; q--)
        if (meta_at[q])
            last_meta = q;
    uint64_t meta[2], meta_seq;
    size_t len;
    int rc = pskv_checkpoint_meta(s, meta, sizeof meta, &len, &meta_seq);
    if (last_meta == 0) {
        ck_assert_err(rc, PSKV_ENOTFOUND);
    } else {
        ck_assert_ok(rc);
        ck_assert_uint_eq(len, sizeof meta);
        ck_assert_msg(meta_seq == last_meta && meta[0] == last_meta &&
                          meta[1] == digest_of[last_meta],
                      "trial %u: metadata of checkpoint %llu, expected %llu", trial,
                      (unsigned long long)meta_seq, (unsigned long long)last_meta);
    }
}

static uint64_t seq_of(pskv_store *s)
{
    pskv_store_stats ss;
    ck_assert_ok(pskv_store_stats_get(s, &ss));
    return ss.checkpoint_seq;
}

/* Roll the store at seq back to seq - 1 in a child killed at a random
 * instant (often during the rollback's transaction or its pskv.seq
 * update); then it is at seq (the kill came first: roll back here) or at
 * seq - 1, and holds checkpoint seq - 1 exactly. */
static bool rollback_killed(unsigned trial, test_rng *r, uint64_t seq, const uint64_t *digest_of,
                            const bool *meta_at)
{
    char cfg[96];
    snprintf(cfg, sizeof cfg, "%s at_seq=%llu", store_cfg(trial) ? store_cfg(trial) : "",
             (unsigned long long)(seq - 1));
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        pskv_store *s;
        if (pskv_open(dir, cfg, &s) != 0)
            _exit(4);
        pskv__close_abandon(s);
        _exit(0);
    }
    struct timespec ts = {0, (long)rng_below(r, 30000) * 1000L};
    nanosleep(&ts, NULL);
    kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    ck_assert_msg(WIFSIGNALED(status) || WEXITSTATUS(status) == 0,
                  "trial %u: rollback child failed (status %d)", trial, status);
    pskv_store *s;
    ck_assert_ok(pskv_open(dir, store_cfg(trial), &s));
    uint64_t at = seq_of(s);
    ck_assert_msg(at == seq || at == seq - 1, "trial %u: store at %llu after a rollback of %llu",
                  trial, (unsigned long long)at, (unsigned long long)seq);
    bool finished_by_child = at == seq - 1;
    if (at == seq) { /* the commit never happened: the undo is still there */
        check_store(s, trial, seq, digest_of, meta_at);
        pskv__close_abandon(s);
        ck_assert_ok(pskv_open(dir, cfg, &s));
    }
    ck_assert_uint_eq(seq_of(s), seq - 1);
    check_store(s, trial, seq - 1, digest_of, meta_at);
    pskv__close_abandon(s);
    /* For good: the later checkpoint cannot come back. */
    snprintf(cfg, sizeof cfg, "%s at_seq=%llu", store_cfg(trial) ? store_cfg(trial) : "",
             (unsigned long long)seq);
    ck_assert_err(pskv_open(dir, cfg, &s), PSKV_ENOTFOUND);
    return finished_by_child;
}

START_TEST(kill_at_random_instants)
{
    test_mkdtemp(dir, "crash");
    test_rng r = {base_seed};
    /* Digest of every checkpoint sequence number announced so far. */
    uint64_t *digest_of = calloc(1, sizeof *digest_of);
    bool *meta_at = calloc(1, sizeof *meta_at); /* that checkpoint carries metadata */
    size_t known = 1; /* seq 0: the empty store */
    digest_of[0] = 0;
    unsigned in_flight_hits = 0, total_checkpoints = 0, rollbacks = 0, rollbacks_in_child = 0;
    bool can_roll = false; /* the store's last commit was a checkpoint (it has an undo) */
    for (unsigned trial = 0; trial < n_kills; trial++) {
        int p[2];
        ck_assert_int_eq(pipe(p), 0);
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
            close(p[0]);
            child_main(p[1], trial);
            _exit(0);
        }
        close(p[1]);
        msg mm;
        ck_assert_int_eq(read(p[0], &mm, sizeof mm), (ssize_t)sizeof mm);
        ck_assert_uint_eq(mm.type, MSG_READY);
        uint64_t done = mm.seq, begun = mm.seq, ready = mm.seq;
        /* Up to 120 ms: under a loaded machine a checkpoint now ends with a
         * second small commit (the tick), and 60 ms let a run of 30 kills
         * pass with no checkpoint returned at all. */
        struct timespec ts = {0, (long)(1 + rng_below(&r, 120)) * 1000000L};
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        int status;
        waitpid(pid, &status, 0);
        ck_assert_msg(WIFSIGNALED(status), "child ended on its own (status %d)", status);
        while (read(p[0], &mm, sizeof mm) == (ssize_t)sizeof mm) {
            if (mm.type == MSG_BEGIN || mm.type == MSG_BEGIN_META) {
                if (mm.seq >= known) {
                    digest_of = realloc(digest_of, (mm.seq + 1) * sizeof *digest_of);
                    meta_at = realloc(meta_at, (mm.seq + 1) * sizeof *meta_at);
                    known = mm.seq + 1;
                }
                /* A checkpoint that commits nothing announces its
                 * number again with the next one. */
                digest_of[mm.seq] = mm.digest;
                meta_at[mm.seq] = mm.type == MSG_BEGIN_META;
                begun = mm.seq;
            } else if (mm.type == MSG_DONE) {
                done = mm.seq;
                total_checkpoints++;
            }
        }
        close(p[0]);

        pskv_store *s;
        ck_assert_ok(pskv_open(dir, store_cfg(trial), &s));
        uint64_t seq = seq_of(s);
        ck_assert_msg(seq >= done && seq <= begun,
                      "trial %u: store at checkpoint %llu, child finished %llu and began %llu",
                      trial, (unsigned long long)seq, (unsigned long long)done,
                      (unsigned long long)begun);
        if (seq > done)
            in_flight_hits++; /* killed after the commit, before the call returned */
        check_store(s, trial, seq, digest_of, meta_at);
        pskv__close_abandon(s);
        can_roll = seq > ready || can_roll;
        /* Every other trial goes back one checkpoint, as a rank ahead of
         * the others does. */
        if (trial % 2 == 1 && seq > 0 && can_roll) {
            rollbacks_in_child += rollback_killed(trial, &r, seq, digest_of, meta_at);
            rollbacks++;
            can_roll = false;
        }
    }
    fprintf(stderr,
            "%u kills, %u checkpoints returned, %u kills between commit and return, "
            "%u rollbacks (%u finished before the kill)\n",
            n_kills, total_checkpoints, in_flight_hits, rollbacks, rollbacks_in_child);
    ck_assert_uint_gt(rollbacks, 0);
    ck_assert_uint_gt(total_checkpoints, 0);
    free(digest_of);
    free(meta_at);
    char cmd[96];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
}
END_TEST

/* ---------------------------------------------------------------- ranks */

/* Issue 22, item 3: ranks of a job checkpoint in lockstep with their step
 * as metadata; one rank is killed at a random instant around a
 * checkpoint, and the others close as a launcher's SIGTERM makes them:
 * pskv_close (one more checkpoint, without metadata) or pskv_close_discard,
 * at random, and sometimes one is killed during its close too. The
 * restart protocol of docs/API.md must then find a step every rank holds
 * (never PSKV_ENOTFOUND) and every rank's rows and metadata at it. With
 * undo_keep=1 (one generation, as before it existed) a clean close of a
 * rank a step ahead strands it: PSKV_ENOTFOUND. */
#define RK_RANKS 3
#define RK_STEP_KEYS 48
#define RK_DIM 4

static void rk_dir(int r, char *buf, size_t len) { snprintf(buf, len, "%s/rank%d", dir, r); }

static int rk_train(pskv_table *t, int r, uint64_t from, uint64_t to)
{
    uint64_t keys[RK_STEP_KEYS];
    float g[RK_STEP_KEYS * RK_DIM];
    for (uint64_t s = from; s < to; s++) {
        test_rng x = {(uint64_t)r * 7919u + s * 104729u + 1};
        for (int i = 0; i < RK_STEP_KEYS; i++) {
            keys[i] = 1 + rng_below(&x, 2000);
            for (int j = 0; j < RK_DIM; j++)
                g[i * RK_DIM + j] = rng_float(&x) * 0.1f;
        }
        int rc = pskv_push(t, keys, RK_STEP_KEYS, g);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* A rank: train a step, then do what the parent says: 'c' checkpoint
 * (metadata: the step), 'x' pskv_close, 'd' pskv_close_discard. */
static void rk_child(int r, int up, int down, unsigned trial)
{
    char d[128];
    rk_dir(r, d, sizeof d);
    pskv_store *s;
    pskv_table *t;
    if (pskv_open(d, trial % 2 ? "memory_budget=16K" : NULL, &s) != 0 ||
        pskv_table_open(s, "t", "dim=4 optimizer=adagrad", &t) != 0)
        _exit(4);
    for (uint64_t step = 1;; step++) {
        if (rk_train(t, r, step - 1, step) != 0)
            _exit(5);
        char cmd;
        if (read(down, &cmd, 1) != 1)
            _exit(6);
        if (cmd == 'x' || cmd == 'd') {
            if (cmd == 'x')
                pskv_close(s);
            else
                pskv_close_discard(s);
            _exit(0);
        }
        int rc;
        if (step % 2) {
            rc = pskv_checkpoint_with_meta(s, &step, sizeof step);
        } else {
            pskv_ckpt *c;
            rc = pskv_checkpoint_start(s, &step, sizeof step, &c);
            if (rc == 0)
                rc = pskv_checkpoint_wait(c, NULL);
        }
        if (rc != 0 || write(up, &step, sizeof step) != sizeof step)
            _exit(7);
    }
}

/* Rank r reopened at at_seq holds step `step`: metadata and rows. */
static void rk_expect(int r, uint64_t at_seq, uint64_t step, unsigned trial)
{
    char d[128], cfg[64];
    rk_dir(r, d, sizeof d);
    snprintf(cfg, sizeof cfg, "at_seq=%llu", (unsigned long long)at_seq);
    pskv_store *s, *ref;
    pskv_table *t, *rt;
    int rc = pskv_open(d, cfg, &s);
    ck_assert_msg(rc == 0, "trial %u rank %d: %s: %s (%s)", trial, r, cfg, pskv_err_name(rc),
                  pskv_last_error());
    uint64_t meta = 0, meta_seq = 0;
    size_t len;
    ck_assert_ok(pskv_checkpoint_meta(s, &meta, sizeof meta, &len, &meta_seq));
    ck_assert_msg(meta == step && meta_seq == at_seq,
                  "trial %u rank %d: reopened at step %llu written by %llu", trial, r,
                  (unsigned long long)meta, (unsigned long long)meta_seq);
    ck_assert_ok(pskv_table_open(s, "t", NULL, &t));
    ck_assert_ok(pskv_open(NULL, NULL, &ref));
    ck_assert_ok(pskv_table_open(ref, "t", "dim=4 optimizer=adagrad", &rt));
    ck_assert_ok(rk_train(rt, r, 0, step));
    ck_assert_uint_eq(pskv_table_rows(t), pskv_table_rows(rt));
    ck_assert_uint_eq(store_digest(t, NULL, 2 * RK_DIM), store_digest(rt, NULL, 2 * RK_DIM));
    pskv_close(ref);
    pskv_close_discard(s);
}

START_TEST(ranks_kill_one_while_others_close)
{
    test_rng r = {base_seed * 31 + 5};
    unsigned trials = n_kills / 5 > 4 ? n_kills / 5 : 4, closed = 0, discarded = 0, killed2 = 0;
    for (unsigned trial = 0; trial < trials; trial++) {
        test_mkdtemp(dir, "ranks");
        int up[RK_RANKS][2], down[RK_RANKS][2];
        pid_t pid[RK_RANKS];
        for (int k = 0; k < RK_RANKS; k++) {
            ck_assert_int_eq(pipe(up[k]), 0);
            ck_assert_int_eq(pipe(down[k]), 0);
            fflush(NULL);
            pid[k] = fork();
            ck_assert_int_ge(pid[k], 0);
            if (pid[k] == 0)
                rk_child(k, up[k][1], down[k][0], trial);
        }
        const unsigned ckpts = 1 + rng_below(&r, 4);
        const int victim = (int)rng_below(&r, RK_RANKS);
        for (unsigned c = 1; c <= ckpts; c++) {
            for (int k = 0; k < RK_RANKS; k++)
                ck_assert_int_eq(write(down[k][1], "c", 1), 1);
            if (c == ckpts) { /* the victim dies around its last checkpoint */
                struct timespec ts = {0, (long)rng_below(&r, 4000) * 1000L};
                nanosleep(&ts, NULL);
                kill(pid[victim], SIGKILL);
            }
            for (int k = 0; k < RK_RANKS; k++) {
                uint64_t step;
                if (c == ckpts && k == victim)
                    continue;
                ck_assert_int_eq(read(up[k][0], &step, sizeof step), (ssize_t)sizeof step);
                ck_assert_uint_eq(step, c);
            }
        }
        /* The others hear of it and close; one may be killed meanwhile. */
        int second = rng_below(&r, 3) == 0 ? (victim + 1 + (int)rng_below(&r, 2)) % RK_RANKS : -1;
        for (int k = 0; k < RK_RANKS; k++) {
            if (k == victim)
                continue;
            const bool discard = rng_below(&r, 2) == 0;
            ck_assert_int_eq(write(down[k][1], discard ? "d" : "x", 1), 1);
            discarded += discard;
            closed += !discard;
            if (k == second) {
                struct timespec ts = {0, (long)rng_below(&r, 3000) * 1000L};
                nanosleep(&ts, NULL);
                kill(pid[k], SIGKILL);
                killed2++;
            }
        }
        for (int k = 0; k < RK_RANKS; k++) {
            int status;
            ck_assert_int_eq(waitpid(pid[k], &status, 0), pid[k]);
            ck_assert_msg(WIFSIGNALED(status) || WEXITSTATUS(status) == 0,
                          "trial %u rank %d: status %d", trial, k, status);
            close(up[k][0]), close(up[k][1]), close(down[k][0]), close(down[k][1]);
        }
        /* The restart protocol (docs/API.md): every rank's step and the
         * seq that wrote it; the lowest step is the target; a rank a step
         * ahead opens at the seq before its metadata's. */
        uint64_t step[RK_RANKS], meta_seq[RK_RANKS], target = UINT64_MAX;
        for (int k = 0; k < RK_RANKS; k++) {
            char d[128];
            rk_dir(k, d, sizeof d);
            pskv_store *s;
            ck_assert_ok(pskv_open(d, NULL, &s));
            size_t len;
            step[k] = 0;
            meta_seq[k] = 0;
            int rc = pskv_checkpoint_meta(s, &step[k], sizeof step[k], &len, &meta_seq[k]);
            ck_assert(rc == 0 || (rc == PSKV_ENOTFOUND && k == victim && ckpts == 1));
            pskv_close_discard(s);
            target = step[k] < target ? step[k] : target;
        }
        for (int k = 0; k < RK_RANKS; k++) {
            ck_assert_uint_le(step[k] - target, 1); /* rule 2: one step ahead at most */
            if (target > 0)
                rk_expect(k, step[k] > target ? meta_seq[k] - 1 : meta_seq[k], target, trial);
        }
        test_remove_dir(dir);
    }
    fprintf(stderr, "%u trials: %u clean closes, %u discarding closes, %u ranks killed during "
                    "their close\n",
            trials, closed, discarded, killed2);
}
END_TEST

int main(int argc, char **argv)
{
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--kills") == 0)
            n_kills = (unsigned)strtoul(argv[i + 1], NULL, 0);
        else if (strcmp(argv[i], "--seed") == 0)
            base_seed = strtoull(argv[i + 1], NULL, 0);
    }
    Suite *s = suite_create("crash");
    TCase *tc = tcase_create("crash");
    tcase_set_timeout(tc, 3600);
    tcase_add_test(tc, kill_at_random_instants);
    tcase_add_test(tc, ranks_kill_one_while_others_close);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
