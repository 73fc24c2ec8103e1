/* ranks_restart: three ranks of a job, each with its own durable store,
 * checkpoint at the same training steps; one dies before it commits a
 * step the others committed; the restart agrees on the step every rank
 * holds and rolls the ranks that are ahead back to it (store config
 * at_seq), the protocol of docs/API.md "Consistent checkpoints across
 * instances".
 *
 * Each rank is a process (fork) that trains its own rows and, every
 * STEPS_PER_CKPT steps, starts an asynchronous checkpoint whose metadata is
 * its step; it waits for the commit and tells the parent (the job's
 * coordinator here; MPI_Allreduce or torch.distributed in a real job),
 * which lets the ranks go on only once all of them committed (rule 2 of
 * the protocol). At step 3 * STEPS_PER_CKPT the parent kills rank 2 before
 * it commits. Two endings of the job follow, one per run:
 *   killed  the other ranks are killed too;
 *   closed  the other ranks hear of the failure and close, as a launcher's
 *           SIGTERM makes them: rank 0 with pskv_close (which commits one
 *           more checkpoint, without metadata, of the steps it trained
 *           since), rank 1 with pskv_close_discard (nothing written).
 * Then each store is opened plainly to read its step and the seq that
 * wrote it, the lowest step is the target, and every rank reopens at the
 * seq that holds the target (its metadata's seq, or the one before when
 * it is a step ahead), checks the metadata it reopened at, and its rows
 * against a replay of its training up to the target step.
 *
 *   ranks_restart [DIR]   (default: a new directory under /tmp; DIR/rank* are
 *                          made afresh)
 * SPDX-License-Identifier: BSD-2-Clause */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pskv.h"

#define RANKS 3
#define STEPS_PER_CKPT 20
#define KEYS 64   /* keys per step */
#define DIM 8

typedef struct step_meta {
    uint64_t step;
} step_meta;

/* Step s of rank r: its keys and gradients, a pure function of (r, s). */
static void step_batch(int r, uint64_t s, uint64_t *keys, float *grads)
{
    uint64_t x = (uint64_t)r * 0x9e3779b97f4a7c15ull + s * 0xbf58476d1ce4e5b9ull;
    for (int i = 0; i < KEYS; i++) {
        x ^= x >> 29;
        x *= 0x94d049bb133111ebull;
        keys[i] = (uint64_t)r << 32 | (x >> 40) % 5000; /* each rank its own keys */
        for (int j = 0; j < DIM; j++)
            grads[i * DIM + j] = (float)((x >> (j * 4)) & 15) / 64.0f - 0.1f;
    }
}

static int train(pskv_table *t, int r, uint64_t from, uint64_t to)
{
    uint64_t keys[KEYS];
    float grads[KEYS * DIM];
    for (uint64_t s = from; s < to; s++) {
        step_batch(r, s, keys, grads);
        int rc = pskv_push(t, keys, KEYS, grads);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static void rank_dir(const char *root, int r, char *buf, size_t len)
{
    snprintf(buf, len, "%s/rank%d", root, r);
}

enum { CMD_CHECKPOINT = 1, CMD_CLOSE = 2, CMD_CLOSE_DISCARD = 3 };

/* A rank: train, then wait for the parent's word: checkpoint (every
 * STEPS_PER_CKPT steps), or close, cleanly or on the failure path. */
static void rank_main(const char *root, int r, int to_parent, int from_parent)
{
    char dir[512];
    rank_dir(root, r, dir, sizeof dir);
    pskv_store *s;
    pskv_table *t;
    if (pskv_open(dir, NULL, &s) != 0 || pskv_table_open(s, "emb", "dim=8 optimizer=adagrad", &t))
        _exit(3);
    for (uint64_t step = 0;; step += STEPS_PER_CKPT) {
        if (train(t, r, step, step + STEPS_PER_CKPT) != 0)
            _exit(4);
        step_meta m = {step + STEPS_PER_CKPT};
        pskv_ckpt *c;
        uint64_t seq = 0;
        char cmd;
        if (read(from_parent, &cmd, 1) != 1) /* the parent may stop us here */
            _exit(5);
        if (cmd == CMD_CLOSE || cmd == CMD_CLOSE_DISCARD) {
            if (cmd == CMD_CLOSE)
                pskv_close(s);
            else
                pskv_close_discard(s);
            _exit(0);
        }
        if (pskv_checkpoint_start(s, &m, sizeof m, &c) != 0 || pskv_checkpoint_wait(c, &seq) != 0)
            _exit(6);
        if (write(to_parent, &m.step, sizeof m.step) != sizeof m.step)
            _exit(7);
    }
}

/* The step a rank's last metadata names and the seq that wrote it, and the
 * store's last seq (the store opened and closed without a write). */
static int rank_step(const char *root, int r, uint64_t *step, uint64_t *meta_seq,
                     uint64_t *last_seq)
{
    char dir[512];
    rank_dir(root, r, dir, sizeof dir);
    pskv_store *s;
    int rc = pskv_open(dir, NULL, &s);
    if (rc != 0)
        return rc;
    step_meta m = {0};
    size_t len = 0;
    pskv_store_stats st;
    rc = pskv_checkpoint_meta(s, &m, sizeof m, &len, meta_seq);
    if (rc == 0)
        rc = pskv_store_stats_get(s, &st);
    *step = m.step;
    *last_seq = st.checkpoint_seq;
    pskv_close_discard(s); /* nothing written */
    return rc;
}

/* Rank r reopened with `at`: its metadata names step `step`, written by
 * the seq it was opened at, and its rows equal a replay of steps
 * [0, step) on a memory store. */
static int rows_match(const char *root, int r, uint64_t step, uint64_t at_seq)
{
    char dir[512], at[64];
    rank_dir(root, r, dir, sizeof dir);
    snprintf(at, sizeof at, "at_seq=%llu", (unsigned long long)at_seq);
    pskv_store *s, *ref;
    pskv_table *t, *rt;
    if (pskv_open(dir, at, &s) != 0) {
        fprintf(stderr, "rank %d: %s: %s\n", r, at, pskv_last_error());
        return 0;
    }
    step_meta m = {0};
    size_t len = 0;
    uint64_t meta_seq = 0;
    int same = pskv_checkpoint_meta(s, &m, sizeof m, &len, &meta_seq) == 0 && m.step == step &&
               meta_seq == at_seq; /* the protocol's check after the reopen */
    if (pskv_table_open(s, "emb", NULL, &t) != 0 || pskv_open(NULL, NULL, &ref) != 0 ||
        pskv_table_open(ref, "emb", "dim=8 optimizer=adagrad", &rt) != 0 ||
        train(rt, r, 0, step) != 0)
        return 0;
    same = same && pskv_table_rows(t) == pskv_table_rows(rt);
    pskv_iter *it;
    uint64_t key;
    float w[DIM], st[DIM], w2[DIM];
    uint8_t found;
    if (pskv_iter_create(rt, &it) != 0)
        return 0;
    while (same && pskv_iter_next(it, &key, w, st) == 1)
        same = pskv_get(t, &key, 1, w2, &found) == 0 && found && memcmp(w, w2, sizeof w) == 0;
    pskv_iter_destroy(it);
    pskv_close(ref);
    pskv_close(s);
    return same;
}

/* One job: three ranks, rank 2 killed at the third checkpoint, then the
 * others killed (closing = 0) or closed (1); the restart. 1 when every
 * rank restarts at the common step. */
static int run_job(const char *root, int closing)
{
    printf("-- the job ends with the other ranks %s\n", closing ? "closing" : "killed");
    for (int r = 0; r < RANKS; r++) { /* a fresh job: rank stores of a run before go */
        char cmd[600], dir[512];
        rank_dir(root, r, dir, sizeof dir);
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0)
            return 0;
    }
    int up[RANKS][2], down[RANKS][2];
    pid_t pid[RANKS];
    fflush(NULL);
    for (int r = 0; r < RANKS; r++) {
        if (pipe(up[r]) != 0 || pipe(down[r]) != 0)
            return 0;
        pid[r] = fork();
        if (pid[r] < 0)
            return 0;
        if (pid[r] == 0) {
            rank_main(root, r, up[r][1], down[r][0]);
            _exit(0);
        }
    }
    /* Three checkpoints everywhere; at the third, rank 2 dies first. */
    const int kill_at = 3;
    for (int k = 1; k <= kill_at; k++) {
        for (int r = 0; r < RANKS; r++) {
            if (k == kill_at && r == RANKS - 1) {
                kill(pid[r], SIGKILL); /* before it commits step 60 */
                continue;
            }
            char go = CMD_CHECKPOINT;
            uint64_t step = 0;
            if (write(down[r][1], &go, 1) != 1 || read(up[r][0], &step, sizeof step) != sizeof step) {
                fprintf(stderr, "ranks_restart: rank %d failed\n", r);
                return 0;
            }
            printf("rank %d committed step %llu\n", r, (unsigned long long)step);
        }
    }
    for (int r = 0; r < RANKS; r++) {
        if (r != RANKS - 1 && !closing) {
            kill(pid[r], SIGKILL); /* the job goes down */
        } else if (r != RANKS - 1) {
            char cmd = r == 0 ? CMD_CLOSE : CMD_CLOSE_DISCARD; /* it trained 20 more steps */
            if (write(down[r][1], &cmd, 1) != 1)
                return 0;
            printf("rank %d closes with %s\n", r, r == 0 ? "pskv_close" : "pskv_close_discard");
        }
        int status = 0;
        waitpid(pid[r], &status, 0);
        close(up[r][0]);
        close(up[r][1]);
        close(down[r][0]);
        close(down[r][1]);
        if (closing && r != RANKS - 1 && !(WIFEXITED(status) && WEXITSTATUS(status) == 0))
            return 0;
    }

    /* Restart: each rank's last step; the target is the lowest. */
    uint64_t step[RANKS], meta_seq[RANKS], last_seq[RANKS], target = UINT64_MAX;
    for (int r = 0; r < RANKS; r++) {
        if (rank_step(root, r, &step[r], &meta_seq[r], &last_seq[r]) != 0) {
            fprintf(stderr, "ranks_restart: rank %d: %s\n", r, pskv_last_error());
            return 0;
        }
        printf("restart: rank %d holds step %llu (metadata of checkpoint %llu; last checkpoint "
               "%llu)\n",
               r, (unsigned long long)step[r], (unsigned long long)meta_seq[r],
               (unsigned long long)last_seq[r]);
        target = step[r] < target ? step[r] : target;
    }
    int ok = 1;
    for (int r = 0; r < RANKS; r++) {
        /* The seq that holds the target: the metadata's own, or the one
         * before it when the rank is a step ahead (rule 2: one at most). A
         * checkpoint without metadata after it (pskv_close) is undone too. */
        uint64_t at = step[r] > target ? meta_seq[r] - 1 : meta_seq[r];
        int same = rows_match(root, r, target, at);
        printf("rank %d opened with at_seq=%llu: metadata and rows %s step %llu\n", r,
               (unsigned long long)at, same ? "match" : "DO NOT MATCH", (unsigned long long)target);
        ok &= same;
    }
    printf("%s: every rank at step %llu\n", ok ? "ok" : "FAILED", (unsigned long long)target);
    return ok;
}

int main(int argc, char **argv)
{
    char root[256];
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc > 1) {
        snprintf(root, sizeof root, "%s", argv[1]);
        mkdir(root, 0755);
    } else {
        snprintf(root, sizeof root, "/tmp/pskv-ranks-XXXXXX");
        if (mkdtemp(root) == NULL)
            return 1;
    }
    int ok = run_job(root, 0) && run_job(root, 1);
    if (argc <= 1) {
        char cmd[512];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
        if (system(cmd) != 0)
            return 1;
    }
    return ok ? 0 : 1;
}
