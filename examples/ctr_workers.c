/* ctr_demo --workers W: simulated workers training an embedding model with
 * the update modes and compressed gradients (the seed's hybrid).
 *
 * The model: every feature of an example (the bias and one value per
 * field, 9 in all) has an embedding of --dim floats in the table "emb",
 * and every slot has a dense vector of the same size in the table "dense";
 * logit = sum over slots of <embedding, dense vector>. Each worker is a
 * thread training on its own share of the stream in batches of --batch
 * examples: it pulls its batch's embeddings and the dense vectors,
 * computes the log-loss gradients, and sends
 *   - the embeddings' gradients as a message: pskv_grad_encode (--codec,
 *     --topk, error feedback into its own residual table unless --no-ef),
 *     then pskv_apply(PUSH) on "emb" (pskv_push_at with the step the batch
 *     was pulled at when --staleness S is given);
 *   - the dense gradients as a push on "dense" (fp32).
 * --link GBPS charges each message its transfer time (bytes / bandwidth,
 * slept by the worker, as a real link would hold it).
 * --update:
 *   async   both tables update=async: every push steps at once;
 *   sync    both tables update=sync: the workers meet at a barrier every
 *           --dense-batch examples (over all workers) and one of them
 *           steps both tables;
 *   hybrid  "emb" async, "dense" sync (stepped at the barrier).
 * At the end the held-out stream is scored: AUC and log-loss, against the
 * planted model's AUC; examples/s; gradient bytes per example, against
 * fp32 messages of every row.
 * SPDX-License-Identifier: BSD-2-Clause */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ctr_stream.h"
#include "ctr_workers.h"
#include "pskv.h"

enum { MAX_WORKERS = 64, MAX_DIM = 64 };

static struct {
    uint64_t examples;
    uint32_t workers, batch, dense_batch, dim;
    const char *update; /* async, sync, hybrid */
    int staleness;      /* -1: none */
    const char *codec;
    double topk;
    bool ef;
    double link_gbps;   /* 0: no link charged */
    double check_gap;
} opt = {2000000, 4, 512, 4096, 8, "hybrid", -1, "fp32", 1.0, true, 0, -1};

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

typedef struct worker {
    int id;
    pskv_table *emb, *dense, *residual;
    uint64_t first, count;
    double loss;
    uint64_t bytes, bytes_fp32, messages;
    int rc;
    pthread_t thread;
} worker;

static pthread_barrier_t meet;
static bool sync_dense, sync_emb;
static _Atomic uint64_t global_step; /* steps taken (sync/hybrid), or batches (async) */
static char grad_cfg[96];

static void charge_link(uint64_t bytes)
{
    if (opt.link_gbps <= 0)
        return;
    double sec = (double)bytes * 8.0 / (opt.link_gbps * 1e9);
    struct timespec ts = {(time_t)sec, (long)((sec - (double)(time_t)sec) * 1e9)};
    nanosleep(&ts, NULL);
}

/* One batch: pull, gradients, messages. */
static int train_batch(worker *w, const ctr_example *ex, uint32_t n, uint64_t *keys, float *e,
                       float *ge, float *msg, size_t cap)
{
    const uint32_t D = opt.dim, P = CTR_PER;
    uint64_t slots[CTR_PER];
    for (uint32_t k = 0; k < P; k++)
        slots[k] = k;
    float u[CTR_PER * MAX_DIM], gu[CTR_PER * MAX_DIM];
    memset(gu, 0, sizeof gu);
    for (uint32_t i = 0; i < n; i++)
        memcpy(keys + i * P, ex[i].ids, sizeof ex[i].ids);
    const uint64_t step = atomic_load(&global_step);
    int rc = pskv_pull(w->emb, keys, (size_t)n * P, e);
    if (rc == 0)
        rc = pskv_pull(w->dense, slots, P, u);
    if (rc != 0)
        return rc;
    for (uint32_t i = 0; i < n; i++) {
        double logit = 0;
        for (uint32_t k = 0; k < P; k++)
            for (uint32_t j = 0; j < D; j++)
                logit += (double)e[(i * P + k) * D + j] * u[k * D + j];
        double p = 1.0 / (1.0 + exp(-logit)), y = ex[i].label;
        w->loss -= y * log(p + 1e-12) + (1 - y) * log(1 - p + 1e-12);
        float gl = (float)(p - y);
        for (uint32_t k = 0; k < P; k++)
            for (uint32_t j = 0; j < D; j++) {
                ge[(i * P + k) * D + j] = gl * u[k * D + j];
                gu[k * D + j] += gl * e[(i * P + k) * D + j];
            }
    }
    /* The embeddings' message. */
    size_t len, len32;
    rc = pskv_grad_encode(opt.ef ? w->residual : NULL, keys, (size_t)n * P, ge, grad_cfg, msg,
                          cap, &len);
    if (rc != 0)
        return rc;
    /* What the same rows would take as fp32, all of them (the reference). */
    char ref[32];
    snprintf(ref, sizeof ref, "dim=%u", D);
    if (pskv_grad_encode(NULL, keys, (size_t)n * P, ge, ref, NULL, 0, &len32) != PSKV_ERANGE)
        return PSKV_EINVAL;
    const uint64_t dense_bytes = (uint64_t)P * D * sizeof(float); /* sent as fp32 */
    w->bytes += len + dense_bytes;
    w->bytes_fp32 += len32 + dense_bytes;
    w->messages++;
    charge_link(len + dense_bytes);
    if (opt.staleness >= 0) {
        /* A bounded-staleness push carries the step the rows were read at. */
        pskv_chunk_info in;
        rc = pskv_chunk_info_get(msg, len, &in);
        float *vals = rc == 0 ? malloc(((size_t)in.rows * D + 1) * sizeof *vals) : NULL;
        uint64_t *mk = rc == 0 ? malloc((in.rows + 1) * sizeof *mk) : NULL;
        if (rc == 0 && (vals == NULL || mk == NULL))
            rc = PSKV_ENOMEM;
        if (rc == 0)
            rc = pskv_chunk_decode(msg, len, mk, in.rows, vals, (size_t)in.rows * D, NULL, 0,
                                   NULL, 0);
        if (rc == 0)
            rc = pskv_push_at(w->emb, mk, in.rows, vals, step);
        free(vals);
        free(mk);
    } else {
        rc = pskv_apply(w->emb, msg, len, PSKV_APPLY_PUSH);
    }
    if (rc == 0)
        rc = pskv_push(w->dense, slots, P, gu);
    return rc;
}

static void *work(void *arg)
{
    worker *w = arg;
    const uint32_t P = CTR_PER, D = opt.dim;
    ctr_example *ex = malloc(opt.batch * sizeof *ex);
    uint64_t *keys = malloc((size_t)opt.batch * P * sizeof *keys);
    float *e = malloc((size_t)opt.batch * P * D * sizeof *e);
    float *ge = malloc((size_t)opt.batch * P * D * sizeof *ge);
    const size_t cap = (size_t)opt.batch * P * (D * 4 + 16) + 4096;
    float *msg = malloc(cap);
    /* Batches between meetings: every dense_batch examples over all workers. */
    uint32_t per_meet = opt.dense_batch / (opt.batch * opt.workers);
    per_meet = per_meet ? per_meet : 1;
    uint64_t batches = (w->count + opt.batch - 1) / opt.batch;
    /* Every worker meets as often: the same number of batches each. */
    for (uint64_t b = 0; b < batches; b++) {
        uint64_t at = b * opt.batch;
        uint32_t n = w->count - at < opt.batch ? (uint32_t)(w->count - at) : opt.batch;
        for (uint32_t i = 0; i < n; i++)
            ctr_make_example(1, w->first + at + i, &ex[i]);
        if (w->rc == 0)
            w->rc = train_batch(w, ex, n, keys, e, ge, (float *)msg, cap);
        if (!sync_dense && !sync_emb) {
            atomic_fetch_add(&global_step, 1);
            continue;
        }
        if ((b + 1) % per_meet == 0 || b + 1 == batches) {
            /* The step boundary: every worker has pushed; one steps. */
            if (pthread_barrier_wait(&meet) == PTHREAD_BARRIER_SERIAL_THREAD) {
                int rc = sync_dense ? pskv_step(w->dense) : 0;
                if (rc == 0 && sync_emb)
                    rc = pskv_step(w->emb);
                if (rc != 0 && rc != PSKV_ERANGE && w->rc == 0)
                    w->rc = rc;
                atomic_fetch_add(&global_step, 1);
            }
            pthread_barrier_wait(&meet);
        }
    }
    free(ex);
    free(keys);
    free(e);
    free(ge);
    free(msg);
    return NULL;
}

/* AUC and mean log-loss of the trained model on the held-out stream. */
static int evaluate(pskv_table *emb, pskv_table *dense, double *auc, double *logloss,
                    double *planted_auc)
{
    const uint32_t P = CTR_PER, D = opt.dim;
    ctr_scored *mine = malloc(CTR_HELD_OUT * sizeof *mine);
    ctr_scored *planted = malloc(CTR_HELD_OUT * sizeof *planted);
    float u[CTR_PER * MAX_DIM], e[CTR_PER * MAX_DIM];
    uint64_t slots[CTR_PER];
    for (uint32_t k = 0; k < P; k++)
        slots[k] = k;
    int rc = mine == NULL || planted == NULL ? PSKV_ENOMEM : pskv_get(dense, slots, P, u, NULL);
    double loss = 0;
    for (uint32_t i = 0; i < CTR_HELD_OUT && rc == 0; i++) {
        ctr_example ex;
        ctr_make_example(2, i, &ex);
        rc = pskv_get(emb, ex.ids, P, e, NULL); /* unseen features: zeros */
        double logit = 0;
        for (uint32_t k = 0; k < P * D; k++)
            logit += (double)e[k] * u[k];
        double p = 1.0 / (1.0 + exp(-logit));
        loss -= ex.label * log(p + 1e-12) + (1 - ex.label) * log(1 - p + 1e-12);
        mine[i] = (ctr_scored){logit, ex.label};
        planted[i] = (ctr_scored){ex.true_p, ex.label};
    }
    if (rc == 0) {
        *auc = ctr_auc(mine, CTR_HELD_OUT);
        *planted_auc = ctr_auc(planted, CTR_HELD_OUT);
        *logloss = loss / CTR_HELD_OUT;
    }
    free(mine);
    free(planted);
    return rc;
}

static int usage(void)
{
    fprintf(stderr, "usage: ctr_demo --workers W [--examples N] [--batch B] [--dense-batch D] "
                    "[--dim E] [--update async|sync|hybrid] [--staleness S] "
                    "[--codec fp32|fp16|bf16|int8] [--topk F] [--no-ef] [--link GBPS] "
                    "[--check-gap G]\n");
    return 2;
}

bool ctr_workers_wanted(int argc, char **argv)
{
    static const char *const mine[] = {"--workers", "--update", "--staleness", "--codec",
                                       "--topk", "--no-ef", "--link", "--dense-batch", "--dim"};
    for (int i = 1; i < argc; i++)
        for (size_t k = 0; k < sizeof mine / sizeof *mine; k++)
            if (strcmp(argv[i], mine[k]) == 0)
                return true;
    return false;
}

int ctr_workers_main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--no-ef") == 0) {
            opt.ef = false;
            continue;
        }
        if (v == NULL)
            return usage();
        i++;
        if (strcmp(a, "--workers") == 0)
            opt.workers = (uint32_t)strtoul(v, NULL, 0);
        else if (strcmp(a, "--examples") == 0)
            opt.examples = strtoull(v, NULL, 0);
        else if (strcmp(a, "--batch") == 0)
            opt.batch = (uint32_t)strtoul(v, NULL, 0);
        else if (strcmp(a, "--dense-batch") == 0)
            opt.dense_batch = (uint32_t)strtoul(v, NULL, 0);
        else if (strcmp(a, "--dim") == 0)
            opt.dim = (uint32_t)strtoul(v, NULL, 0);
        else if (strcmp(a, "--update") == 0)
            opt.update = v;
        else if (strcmp(a, "--staleness") == 0)
            opt.staleness = atoi(v);
        else if (strcmp(a, "--codec") == 0)
            opt.codec = v;
        else if (strcmp(a, "--topk") == 0)
            opt.topk = atof(v);
        else if (strcmp(a, "--link") == 0)
            opt.link_gbps = atof(v);
        else if (strcmp(a, "--check-gap") == 0)
            opt.check_gap = atof(v);
        else
            return usage();
    }
    bool async = strcmp(opt.update, "async") == 0, sync = strcmp(opt.update, "sync") == 0;
    bool hybrid = strcmp(opt.update, "hybrid") == 0;
    if (opt.workers < 1 || opt.workers > MAX_WORKERS || opt.batch < 1 || opt.dim < 1 ||
        opt.dim > MAX_DIM || opt.examples < opt.workers || !(async || sync || hybrid) ||
        !(opt.topk > 0 && opt.topk <= 1) || (opt.staleness >= 0 && sync))
        return usage();
    sync_dense = !async;
    sync_emb = sync;
    snprintf(grad_cfg, sizeof grad_cfg, "codec=%s topk=%g dim=%u", opt.codec, opt.topk, opt.dim);
    ctr_stream_init();
    pskv_store *s;
    pskv_table *emb, *dense;
    char emb_cfg[160], dense_cfg[160], stale[32] = "";
    if (opt.staleness >= 0)
        snprintf(stale, sizeof stale, " staleness=%d", opt.staleness);
    snprintf(emb_cfg, sizeof emb_cfg, "dim=%u optimizer=adagrad lr=0.05 init=normal:0:0.1 seed=3%s%s",
             opt.dim, sync_emb ? " update=sync" : "", stale);
    snprintf(dense_cfg, sizeof dense_cfg, "dim=%u optimizer=adagrad lr=0.05 init=constant:0.1%s",
             opt.dim, sync_dense ? " update=sync" : "");
    int rc = pskv_open(NULL, NULL, &s);
    if (rc == 0)
        rc = pskv_table_open(s, "emb", emb_cfg, &emb);
    if (rc == 0)
        rc = pskv_table_open(s, "dense", dense_cfg, &dense);
    worker *w = calloc(opt.workers, sizeof *w);
    if (rc != 0 || w == NULL) {
        fprintf(stderr, "ctr_demo: %s (%s)\n", pskv_strerror(rc), pskv_last_error());
        return 1;
    }
    uint64_t per = opt.examples / opt.workers;
    for (uint32_t i = 0; i < opt.workers && rc == 0; i++) {
        char name[32], rcfg[64];
        snprintf(name, sizeof name, "residual%u", i);
        snprintf(rcfg, sizeof rcfg, "dim=%u optimizer=none", opt.dim);
        w[i] = (worker){.id = (int)i, .emb = emb, .dense = dense, .first = i * per, .count = per};
        rc = pskv_table_open(s, name, rcfg, &w[i].residual);
    }
    pthread_barrier_init(&meet, NULL, opt.workers);
    printf("ctr_demo: %llu examples, %u workers, batch %u, dim %u, update=%s%s, codec %s, "
           "top-k %g, error feedback %s, link %s\n",
           (unsigned long long)per * opt.workers, opt.workers, opt.batch, opt.dim, opt.update,
           stale, opt.codec, opt.topk, opt.ef ? "on" : "off",
           opt.link_gbps > 0 ? "charged" : "free");
    double t0 = now();
    for (uint32_t i = 0; i < opt.workers; i++)
        pthread_create(&w[i].thread, NULL, work, &w[i]);
    double loss = 0;
    uint64_t bytes = 0, bytes32 = 0;
    for (uint32_t i = 0; i < opt.workers; i++) {
        pthread_join(w[i].thread, NULL);
        rc = rc ? rc : w[i].rc;
        loss += w[i].loss;
        bytes += w[i].bytes;
        bytes32 += w[i].bytes_fp32;
    }
    double sec = now() - t0;
    pthread_barrier_destroy(&meet);
    if (rc != 0) {
        fprintf(stderr, "ctr_demo: training failed: %s (%s)\n", pskv_strerror(rc),
                pskv_last_error());
        return 1;
    }
    double auc, logloss, planted;
    rc = evaluate(emb, dense, &auc, &logloss, &planted);
    if (rc != 0)
        return 1;
    pskv_table_stats st;
    pskv_table_stats_get(emb, &st);
    uint64_t trained = per * opt.workers;
    printf("train log-loss %.4f, %.0f examples/s (%.2f s)\n", loss / (double)trained,
           (double)trained / sec, sec);
    printf("gradient bytes per example %.1f, fp32 of every row %.1f: %.3fx (%.2fx fewer)\n",
           (double)bytes / (double)trained, (double)bytes32 / (double)trained,
           (double)bytes / (double)bytes32, (double)bytes32 / (double)bytes);
    if (opt.staleness >= 0)
        printf("stale gradients dropped: %llu rows\n", (unsigned long long)st.stale_dropped);
    printf("held-out AUC %.4f (planted model %.4f, gap %.4f), log-loss %.4f\n", auc, planted,
           planted - auc, logloss);
    printf("RESULT update=%s staleness=%d codec=%s topk=%g ef=%d link=%g auc=%.5f "
           "logloss=%.5f examples_per_s=%.0f bytes_ratio=%.4f stale_dropped=%llu\n",
           opt.update, opt.staleness, opt.codec, opt.topk, opt.ef, opt.link_gbps, auc, logloss,
           (double)trained / sec, (double)bytes / (double)bytes32,
           (unsigned long long)st.stale_dropped);
    pskv_close(s);
    ctr_stream_free();
    free(w);
    if (opt.check_gap >= 0 && planted - auc > opt.check_gap) {
        fprintf(stderr, "ctr_demo: AUC gap %.4f above %.4f\n", planted - auc, opt.check_gap);
        return 1;
    }
    return 0;
}
