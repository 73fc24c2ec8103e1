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
 * it commits. Then each store is opened plainly to read its step, the
 * lowest step is the target, and the ranks ahead reopen at their seq - 1.
 * Every rank's rows are then checked against a replay of its training up
 * to the target step.
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

/* A rank: train, checkpoint every STEPS_PER_CKPT steps, wait for "go". */
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
        char go;
        if (read(from_parent, &go, 1) != 1) /* the parent may stop us here */
            _exit(5);
        if (pskv_checkpoint_start(s, &m, sizeof m, &c) != 0 || pskv_checkpoint_wait(c, &seq) != 0)
            _exit(6);
        if (write(to_parent, &m.step, sizeof m.step) != sizeof m.step)
            _exit(7);
    }
}

/* The step and seq of a rank's last checkpoint (the store opened and closed
 * without a write). */
static int rank_step(const char *root, int r, uint64_t *step, uint64_t *seq)
{
    char dir[512];
    rank_dir(root, r, dir, sizeof dir);
    pskv_store *s;
    int rc = pskv_open(dir, NULL, &s);
    if (rc != 0)
        return rc;
    step_meta m = {0};
    size_t len = 0;
    rc = pskv_checkpoint_meta(s, &m, sizeof m, &len, seq);
    *step = m.step;
    pskv_close(s); /* nothing written: no commit */
    return rc;
}

/* The rows of rank r equal a replay of steps [0, step) on a memory store. */
static int rows_match(const char *root, int r, uint64_t step, const char *at)
{
    char dir[512];
    rank_dir(root, r, dir, sizeof dir);
    pskv_store *s, *ref;
    pskv_table *t, *rt;
    if (pskv_open(dir, at, &s) != 0 || pskv_table_open(s, "emb", NULL, &t) != 0 ||
        pskv_open(NULL, NULL, &ref) != 0 || pskv_table_open(ref, "emb", "dim=8 optimizer=adagrad",
                                                            &rt) != 0 ||
        train(rt, r, 0, step) != 0)
        return 0;
    int same = pskv_table_rows(t) == pskv_table_rows(rt);
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

int main(int argc, char **argv)
{
    char root[256];
    if (argc > 1) {
        snprintf(root, sizeof root, "%s", argv[1]);
        mkdir(root, 0755);
    } else {
        snprintf(root, sizeof root, "/tmp/pskv-ranks-XXXXXX");
        if (mkdtemp(root) == NULL)
            return 1;
    }
    for (int r = 0; r < RANKS; r++) { /* a fresh job: rank stores of a run before go */
        char cmd[600], dir[512];
        rank_dir(root, r, dir, sizeof dir);
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0)
            return 1;
    }
    int up[RANKS][2], down[RANKS][2];
    pid_t pid[RANKS];
    for (int r = 0; r < RANKS; r++) {
        if (pipe(up[r]) != 0 || pipe(down[r]) != 0)
            return 1;
        pid[r] = fork();
        if (pid[r] < 0)
            return 1;
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
            char go = 1;
            uint64_t step = 0;
            if (write(down[r][1], &go, 1) != 1 || read(up[r][0], &step, sizeof step) != sizeof step) {
                fprintf(stderr, "ranks_restart: rank %d failed\n", r);
                return 1;
            }
            printf("rank %d committed step %llu\n", r, (unsigned long long)step);
        }
    }
    for (int r = 0; r < RANKS; r++) {
        if (r != RANKS - 1)
            kill(pid[r], SIGKILL); /* the job goes down */
        waitpid(pid[r], NULL, 0);
    }

    /* Restart: each rank's last step; the target is the lowest. */
    uint64_t step[RANKS], seq[RANKS], target = UINT64_MAX;
    for (int r = 0; r < RANKS; r++) {
        if (rank_step(root, r, &step[r], &seq[r]) != 0) {
            fprintf(stderr, "ranks_restart: rank %d: %s\n", r, pskv_last_error());
            return 1;
        }
        printf("restart: rank %d holds step %llu (checkpoint %llu)\n", r,
               (unsigned long long)step[r], (unsigned long long)seq[r]);
        target = step[r] < target ? step[r] : target;
    }
    int ok = 1;
    for (int r = 0; r < RANKS; r++) {
        char at[64];
        /* One checkpoint ahead at most (rule 2): seq - 1 holds the target. */
        snprintf(at, sizeof at, "at_seq=%llu",
                 (unsigned long long)(step[r] > target ? seq[r] - 1 : seq[r]));
        int same = rows_match(root, r, target, at);
        printf("rank %d opened with %s: rows %s the replay to step %llu\n", r, at,
               same ? "equal" : "DIFFER FROM", (unsigned long long)target);
        ok &= same;
    }
    printf("%s: every rank at step %llu\n", ok ? "ok" : "FAILED", (unsigned long long)target);
    if (argc <= 1) {
        char cmd[512];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
        if (system(cmd) != 0)
            return 1;
    }
    return ok ? 0 : 1;
}
