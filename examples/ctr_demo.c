/* ctr_demo: train a logistic-regression click-through-rate model whose
 * weights live in a pskv table, on a deterministic synthetic click stream
 * (ctr_stream.h: 8 categorical fields, Zipf values, a planted logistic
 * model). Training pulls the batch's
 * weights, computes the log-loss gradient and pushes it (Adagrad; repeated
 * features in a batch are summed by pskv). At the end the trained model and
 * the planted one are scored on held-out examples: the trained model's AUC
 * should come within 0.01 of the planted model's own AUC.
 *
 *   ctr_demo [--examples N] [--batch B] [--threads T] [--check-gap G]
 *            [--store DIR [--budget BYTES]]
 * --check-gap makes the exit status 1 when the AUC gap exceeds G.
 * --store DIR trains on a durable store in DIR instead of in memory: at every
 * tenth of the stream the trainers stop at a step boundary, an asynchronous
 * checkpoint takes its instant with their stream positions as metadata, and
 * they go on while it is written (pskv_checkpoint_start, then
 * pskv_checkpoint_wait before the next one). At the end the store is
 * closed, reopened, and the held-out examples are scored on the rows read
 * back from disk. Run it again (after a crash, say) and it resumes from the
 * last checkpoint: its rows and, from its metadata, each trainer's
 * position in the stream. --budget BYTES sets the store's memory_budget:
 * rows over it spill, and the trainers prefetch each next batch's rows
 * while they train on the current one.
 *
 * ctr_demo --workers W [...] trains an embedding model with simulated
 * workers, the update modes and compressed gradients instead
 * (ctr_workers.c says how). */
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ctr_stream.h"
#include "ctr_workers.h"
#include "pskv.h"

static struct {
    uint64_t examples;
    uint32_t batch;
    int threads;
    double check_gap;
    const char *store;
    const char *budget; /* memory_budget of the store, e.g. 4M */
} cfg = {3000000, 512, 1, -1, NULL, NULL};

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---------------------------------------------------------------- training */

typedef struct trainer {
    pskv_table *t;
    uint64_t first, count; /* examples [first, first + count) of stream 1 */
    double loss;
    uint64_t seen;         /* examples of its range trained (resumed from a checkpoint) */
    int rc;
    bool finished;         /* (ck_lock) */
    pthread_t thread;
} trainer;

static _Atomic uint64_t progress;

/* --store: checkpoints between steps. The main thread asks (ck_want), every
 * trainer stops at its next batch boundary (ck_stopped), the main thread
 * takes the checkpoint's instant with the trainers' positions as metadata
 * and lets them go on (ck_gen) while the transaction is written. */
static pthread_mutex_t ck_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t ck_cv = PTHREAD_COND_INITIALIZER;
static _Atomic int ck_want;
static int ck_stopped; /* trainers stopped or finished */
static uint64_t ck_gen;

static void step_boundary(trainer *tr, bool finished)
{
    if (!finished && !ck_want)
        return;
    pthread_mutex_lock(&ck_lock);
    tr->finished = finished;
    ck_stopped++;
    pthread_cond_broadcast(&ck_cv);
    uint64_t gen = ck_gen;
    while (!finished && ck_gen == gen)
        pthread_cond_wait(&ck_cv, &ck_lock);
    pthread_mutex_unlock(&ck_lock);
}

/* The checkpoint metadata: where each trainer is in the stream. */
#define RESUME_MAGIC "CTRDEMO1"
typedef struct resume_state {
    char magic[8];
    uint64_t examples;
    uint32_t batch, threads;
    uint64_t seen[64];
    double loss[64];
} resume_state;

static void make_batch(const trainer *tr, uint64_t b, uint32_t n, ctr_example *ex, uint64_t *keys)
{
    const uint32_t per = CTR_PER;
    for (uint32_t i = 0; i < n; i++) {
        ctr_make_example(1, tr->first + b + i, &ex[i]);
        memcpy(keys + i * per, ex[i].ids, sizeof ex[i].ids);
    }
}

static void *train(void *arg)
{
    trainer *tr = arg;
    const uint32_t per = CTR_PER;
    ctr_example *ex[2] = {malloc(cfg.batch * sizeof(ctr_example)),
                          malloc(cfg.batch * sizeof(ctr_example))};
    uint64_t *keys[2] = {malloc(cfg.batch * per * sizeof(uint64_t)),
                         malloc(cfg.batch * per * sizeof(uint64_t))};
    float *w = malloc(cfg.batch * per * sizeof *w);
    float *g = malloc(cfg.batch * per * sizeof *g);
    uint64_t b = tr->seen;
    uint32_t n = tr->count - b < cfg.batch ? (uint32_t)(tr->count - b) : cfg.batch;
    int cur = 0;
    if (b < tr->count)
        make_batch(tr, b, n, ex[cur], keys[cur]);
    while (b < tr->count && tr->rc == 0) {
        /* The next batch's rows start coming in (from the spill file, on a
         * store over its budget) while this one trains. */
        uint64_t nb = b + n;
        uint32_t nn = tr->count - nb < cfg.batch ? (uint32_t)(tr->count - nb) : cfg.batch;
        if (nb < tr->count) {
            make_batch(tr, nb, nn, ex[!cur], keys[!cur]);
            (void)pskv_prefetch(tr->t, keys[!cur], (size_t)nn * per); /* a hint: pull checks */
        }
        tr->rc = pskv_pull(tr->t, keys[cur], (size_t)n * per, w);
        if (tr->rc != 0)
            break;
        tr->loss += ctr_gradients(ex[cur], n, w, g);
        tr->rc = pskv_push(tr->t, keys[cur], (size_t)n * per, g);
        tr->seen += n;
        progress += n;
        b = nb;
        n = nn;
        cur = !cur;
        step_boundary(tr, false);
    }
    step_boundary(tr, true);
    for (int k = 0; k < 2; k++) {
        free(ex[k]);
        free(keys[k]);
    }
    free(w);
    free(g);
    return NULL;
}

static void state_of(const trainer *tr, resume_state *st)
{
    memset(st, 0, sizeof *st);
    memcpy(st->magic, RESUME_MAGIC, 8);
    st->examples = cfg.examples;
    st->batch = cfg.batch;
    st->threads = (uint32_t)cfg.threads;
    for (int i = 0; i < cfg.threads; i++) {
        st->seen[i] = tr[i].seen;
        st->loss[i] = tr[i].loss;
    }
}

/* Stop the trainers at a step boundary, start a checkpoint carrying their
 * positions, let them go on: 0, or the start's error. */
static int checkpoint_between_steps(pskv_store *s, trainer *tr, pskv_ckpt **c, double *instant)
{
    pthread_mutex_lock(&ck_lock);
    ck_want = 1;
    while (ck_stopped < cfg.threads)
        pthread_cond_wait(&ck_cv, &ck_lock);
    resume_state st;
    state_of(tr, &st);
    double c0 = now();
    int rc = pskv_checkpoint_start(s, &st, sizeof st, c); /* returns at the instant */
    *instant = now() - c0;
    ck_want = 0;
    /* Finished trainers stay counted as stopped. */
    int finished = 0;
    for (int i = 0; i < cfg.threads; i++)
        finished += tr[i].finished;
    ck_stopped = finished;
    ck_gen++;
    pthread_cond_broadcast(&ck_cv);
    pthread_mutex_unlock(&ck_lock);
    return rc;
}

/* The positions of the last checkpoint, when it was made by this same
 * configuration: 1 resumed, 0 starting afresh. */
static int resume_from(pskv_store *s, trainer *tr)
{
    resume_state st;
    size_t len = 0;
    uint64_t seq = 0;
    if (pskv_checkpoint_meta(s, &st, sizeof st, &len, &seq) != 0 || len != sizeof st ||
        memcmp(st.magic, RESUME_MAGIC, 8) != 0)
        return 0;
    if (st.examples != cfg.examples || st.batch != cfg.batch ||
        st.threads != (uint32_t)cfg.threads) {
        printf("checkpoint %llu was made with --examples %llu --batch %u --threads %u: "
               "training this configuration from the start over its rows\n",
               (unsigned long long)seq, (unsigned long long)st.examples, st.batch, st.threads);
        return 0;
    }
    uint64_t done = 0;
    for (int i = 0; i < cfg.threads; i++) {
        tr[i].seen = st.seen[i] < tr[i].count ? st.seen[i] : tr[i].count;
        tr[i].loss = st.loss[i];
        done += tr[i].seen;
    }
    printf("resuming from checkpoint %llu at example %llu of %llu (the stream position is the "
           "checkpoint's metadata)\n",
           (unsigned long long)seq, (unsigned long long)done, (unsigned long long)cfg.examples);
    progress = done;
    return 1;
}

static int usage(void)
{
    fprintf(stderr, "usage: ctr_demo [--examples N] [--batch B] [--threads T] [--check-gap G] "
                    "[--store DIR [--budget BYTES]]\n");
    return 2;
}

int main(int argc, char **argv)
{
    if (ctr_workers_wanted(argc, argv))
        return ctr_workers_main(argc, argv);
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc)
            return usage();
        if (strcmp(argv[i], "--examples") == 0)
            cfg.examples = strtoull(argv[++i], NULL, 0);
        else if (strcmp(argv[i], "--batch") == 0)
            cfg.batch = (uint32_t)strtoul(argv[++i], NULL, 0);
        else if (strcmp(argv[i], "--threads") == 0)
            cfg.threads = atoi(argv[++i]);
        else if (strcmp(argv[i], "--check-gap") == 0)
            cfg.check_gap = atof(argv[++i]);
        else if (strcmp(argv[i], "--store") == 0)
            cfg.store = argv[++i];
        else if (strcmp(argv[i], "--budget") == 0)
            cfg.budget = argv[++i];
        else
            return usage();
    }
    if (cfg.examples < 1000 || cfg.batch < 1 || cfg.batch > 65536 || cfg.threads < 1 ||
        cfg.threads > 64)
        return usage();
    ctr_stream_init();

    pskv_store *s;
    pskv_table *t;
    const char *table_cfg = CTR_TABLE_CONFIG;
    char store_cfg[64] = "";
    if (cfg.budget != NULL)
        snprintf(store_cfg, sizeof store_cfg, "memory_budget=%s", cfg.budget);
    int rc = pskv_open(cfg.store, store_cfg, &s);
    if (rc == 0)
        rc = pskv_table_open(s, "ctr_lr", table_cfg, &t);
    if (rc != 0) {
        fprintf(stderr, "ctr_demo: %s%s%s%s%s\n", cfg.store ? cfg.store : "",
                cfg.store ? ": " : "", pskv_strerror(rc), pskv_last_error()[0] ? ": " : "",
                pskv_last_error());
        return 1;
    }
    if (cfg.store != NULL) {
        pskv_store_stats ss;
        pskv_store_stats_get(s, &ss);
        printf("durable store %s: %llu rows at checkpoint %llu%s\n", cfg.store,
               (unsigned long long)pskv_table_rows(t), (unsigned long long)ss.checkpoint_seq,
               ss.checkpoint_seq ? " (training resumes from there)" : "");
    }
    printf("ctr_demo: logistic regression on %llu synthetic clicks, %d fields + bias, "
           "batch %u, %d thread(s), pskv %s\n",
           (unsigned long long)cfg.examples, CTR_FIELDS, cfg.batch, cfg.threads,
           pskv_version_string());

    trainer *tr = calloc((size_t)cfg.threads, sizeof *tr);
    uint64_t per_thread = cfg.examples / (uint64_t)cfg.threads;
    for (int i = 0; i < cfg.threads; i++)
        tr[i] = (trainer){.t = t, .first = per_thread * (uint64_t)i, .count = per_thread};
    if (cfg.store != NULL)
        resume_from(s, tr);
    uint64_t total = per_thread * (uint64_t)cfg.threads, next = total / 10;
    while (next <= progress && next < total)
        next += total / 10;
    uint64_t resumed_at = progress;
    double t0 = now();
    for (int i = 0; i < cfg.threads; i++)
        pthread_create(&tr[i].thread, NULL, train, &tr[i]);
    /* Progress from the main thread while trainers run. */
    pskv_ckpt *pending = NULL; /* the checkpoint being written */
    while (progress < total) {
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
        uint64_t p = progress;
        if (p >= next && p < total) {
            printf("  %3.0f%%  %9llu examples  %6.0fk examples/s  %zu rows in table",
                   100.0 * (double)p / (double)total, (unsigned long long)p,
                   (double)(p - resumed_at) / (now() - t0) / 1e3,
                   (size_t)pskv_table_rows(t));
            if (cfg.store != NULL) {
                /* One checkpoint at a time: the previous one's commit first,
                 * then a new instant between two steps; the trainers wait
                 * only for the instant. */
                double c0 = now(), instant = 0;
                uint64_t seq = 0;
                int crc = pending ? pskv_checkpoint_wait(pending, &seq) : 0;
                pending = NULL;
                if (crc == 0)
                    crc = checkpoint_between_steps(s, tr, &pending, &instant);
                if (crc != 0) {
                    fprintf(stderr, "\nctr_demo: checkpoint: %s\n", pskv_strerror(crc));
                    return 1;
                }
                printf("  checkpoint: trainers paused %.2f ms for its instant (%.1f ms in all)",
                       instant * 1e3, (now() - c0) * 1e3);
            }
            printf("\n");
            fflush(stdout);
            next += total / 10;
        }
        int any_failed = 0;
        for (int i = 0; i < cfg.threads; i++)
            any_failed |= tr[i].rc != 0;
        if (any_failed)
            break;
    }
    double loss = 0;
    if (pending != NULL) {
        uint64_t seq = 0;
        int crc = pskv_checkpoint_wait(pending, &seq);
        if (crc != 0) {
            fprintf(stderr, "ctr_demo: checkpoint: %s\n", pskv_strerror(crc));
            return 1;
        }
    }
    for (int i = 0; i < cfg.threads; i++) {
        pthread_join(tr[i].thread, NULL);
        if (tr[i].rc != 0) {
            fprintf(stderr, "ctr_demo: %s\n", pskv_strerror(tr[i].rc));
            return 1;
        }
        loss += tr[i].loss;
    }
    double train_s = now() - t0;
    double rows = (double)(total - resumed_at) * CTR_PER * 2; /* pulled + pushed */
    printf("trained %llu examples in %.2f s: %.0fk examples/s, %.2fM rows/s pulled+pushed, "
           "mean train log-loss %.4f\n",
           (unsigned long long)(total - resumed_at), train_s,
           (total - resumed_at) / train_s / 1e3, rows / train_s / 1e6,
           loss / (double)total);

    if (cfg.store != NULL) {
        /* The last checkpoint carries the final positions (a plain close
         * would checkpoint the rows and keep older metadata); then score
         * what reopening gives back. */
        double c0 = now();
        resume_state st;
        state_of(tr, &st);
        rc = pskv_checkpoint_with_meta(s, &st, sizeof st);
        if (rc != 0) {
            fprintf(stderr, "ctr_demo: checkpoint: %s\n", pskv_strerror(rc));
            return 1;
        }
        pskv_close(s);
        double close_s = now() - c0;
        c0 = now();
        rc = pskv_open(cfg.store, store_cfg, &s);
        if (rc == 0)
            rc = pskv_table_open(s, "ctr_lr", NULL, &t);
        if (rc != 0) {
            fprintf(stderr, "ctr_demo: reopen: %s\n", pskv_strerror(rc));
            return 1;
        }
        printf("closed (final checkpoint) in %.1f ms, reopened in %.2f ms: %llu rows on disk\n",
               close_s * 1e3, (now() - c0) * 1e3, (unsigned long long)pskv_table_rows(t));
    }

    /* Held-out evaluation on stream 2. */
    double auc_mine, auc_planted;
    if ((rc = ctr_evaluate(t, &auc_mine, &auc_planted)) != 0) {
        fprintf(stderr, "ctr_demo: evaluate: %s\n", pskv_strerror(rc));
        return 1;
    }
    double gap = auc_planted - auc_mine;
    pskv_table_stats st;
    pskv_table_stats_get(t, &st);
    printf("held-out AUC %.4f (planted model %.4f, gap %.4f) on %d examples; table: %llu rows, "
           "%.1f MiB DRAM\n",
           auc_mine, auc_planted, gap, CTR_HELD_OUT, (unsigned long long)st.rows,
           st.dram_bytes / 1048576.0);
    free(tr);
    pskv_close(s);
    ctr_stream_free();
    if (cfg.check_gap >= 0 && gap > cfg.check_gap) {
        fprintf(stderr, "ctr_demo: AUC gap %.4f exceeds %.4f\n", gap, cfg.check_gap);
        return 1;
    }
    return 0;
}
