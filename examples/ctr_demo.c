/* ctr_demo: train a logistic-regression click-through-rate model whose
 * weights live in a pskv table, on a deterministic synthetic click stream.
 *
 * The stream has 8 categorical fields; each example draws one value per
 * field from a Zipf distribution over the field's vocabulary, turns it into
 * a feature id with pskv_feature_id(field, value), and clicks with the
 * probability a planted logistic model gives. Training pulls the batch's
 * weights, computes the log-loss gradient and pushes it (Adagrad; repeated
 * features in a batch are summed by pskv). At the end the trained model and
 * the planted one are scored on held-out examples: the trained model's AUC
 * should come within 0.01 of the planted model's own AUC.
 *
 *   ctr_demo [--examples N] [--batch B] [--threads T] [--check-gap G] [--store DIR]
 * --check-gap makes the exit status 1 when the AUC gap exceeds G.
 * --store DIR trains on a durable store in DIR instead of in memory: a
 * checkpoint at every tenth of the stream while the trainers keep going,
 * then the store is closed, reopened, and the held-out examples are scored
 * on the rows read back from disk. Run it again to resume training from the
 * last checkpoint. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pskv.h"

#define FIELDS 8
#define BIAS_KEY 0 /* feature id of the always-on bias feature */

static const char *const field_names[FIELDS] = {"site",   "app",    "device", "hour",
                                                "adslot", "banner", "region", "user_segment"};
static const uint32_t vocab[FIELDS] = {500, 2000, 5000, 24, 50, 300, 1000, 10000};
static const double planted_bias = -1.6;
static const double planted_scale = 0.6;
static const double zipf_s = 1.05;

static struct {
    uint64_t examples;
    uint32_t batch;
    int threads;
    double check_gap;
    const char *store;
} cfg = {3000000, 512, 1, -1, NULL};

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---------------------------------------------------------------- stream */

static uint64_t mix(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double unit(uint64_t *s)
{
    *s += 0x9e3779b97f4a7c15ull;
    return (double)(mix(*s) >> 11) * 0x1.0p-53;
}

static double *zipf_cdf[FIELDS];

static void stream_init(void)
{
    for (int f = 0; f < FIELDS; f++) {
        zipf_cdf[f] = malloc(vocab[f] * sizeof(double));
        double sum = 0;
        for (uint32_t k = 0; k < vocab[f]; k++)
            zipf_cdf[f][k] = sum += pow(k + 1.0, -zipf_s);
        for (uint32_t k = 0; k < vocab[f]; k++)
            zipf_cdf[f][k] /= sum;
    }
}

static uint32_t draw(int f, uint64_t *s)
{
    double u = unit(s);
    uint32_t lo = 0, hi = vocab[f] - 1;
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        if (zipf_cdf[f][mid] < u)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* The planted weight of (field, value): standard normal from a hash. */
static double planted_weight(int f, uint32_t v)
{
    uint64_t s = mix(((uint64_t)f << 32) ^ v ^ 0x1234567ull);
    double u1 = 1.0 - unit(&s), u2 = unit(&s);
    return planted_scale * sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2);
}

typedef struct example {
    uint64_t ids[FIELDS + 1]; /* bias + one feature per field */
    double true_p;
    float label;
} example;

/* Example number i of a stream: a pure function of (stream, i). */
static void make_example(uint64_t stream, uint64_t i, example *e)
{
    uint64_t s = mix(stream * 0x9e3779b97f4a7c15ull + i);
    double logit = planted_bias;
    e->ids[0] = BIAS_KEY;
    for (int f = 0; f < FIELDS; f++) {
        uint32_t v = draw(f, &s);
        e->ids[f + 1] = pskv_feature_id(field_names[f], &v, sizeof v);
        logit += planted_weight(f, v);
    }
    e->true_p = 1.0 / (1.0 + exp(-logit));
    e->label = unit(&s) < e->true_p ? 1.0f : 0.0f;
}

/* ---------------------------------------------------------------- AUC */

typedef struct scored {
    double score;
    float label;
} scored;

static int by_score(const void *a, const void *b)
{
    double x = ((const scored *)a)->score, y = ((const scored *)b)->score;
    return x < y ? -1 : x > y;
}

/* Area under the ROC curve by the rank-sum formula (ties share ranks). */
static double auc(scored *v, size_t n)
{
    qsort(v, n, sizeof *v, by_score);
    double pos = 0, rank_sum = 0;
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j < n && v[j].score == v[i].score)
            j++;
        double mid_rank = (i + 1 + j) / 2.0;
        for (size_t k = i; k < j; k++)
            if (v[k].label > 0.5f) {
                pos++;
                rank_sum += mid_rank;
            }
        i = j;
    }
    double neg = (double)n - pos;
    return (rank_sum - pos * (pos + 1) / 2) / (pos * neg);
}

/* ---------------------------------------------------------------- training */

typedef struct trainer {
    pskv_table *t;
    uint64_t first, count; /* examples [first, first + count) of stream 1 */
    double loss;
    uint64_t seen;
    int rc;
    pthread_t thread;
} trainer;

static _Atomic uint64_t progress;

static void *train(void *arg)
{
    trainer *tr = arg;
    const uint32_t per = FIELDS + 1;
    example *ex = malloc(cfg.batch * sizeof *ex);
    uint64_t *keys = malloc(cfg.batch * per * sizeof *keys);
    float *w = malloc(cfg.batch * per * sizeof *w);
    float *g = malloc(cfg.batch * per * sizeof *g);
    for (uint64_t b = 0; b < tr->count && tr->rc == 0; b += cfg.batch) {
        uint32_t n = tr->count - b < cfg.batch ? (uint32_t)(tr->count - b) : cfg.batch;
        for (uint32_t i = 0; i < n; i++) {
            make_example(1, tr->first + b + i, &ex[i]);
            memcpy(keys + i * per, ex[i].ids, sizeof ex[i].ids);
        }
        tr->rc = pskv_pull(tr->t, keys, (size_t)n * per, w);
        if (tr->rc != 0)
            break;
        for (uint32_t i = 0; i < n; i++) {
            double logit = 0;
            for (uint32_t k = 0; k < per; k++)
                logit += w[i * per + k];
            double p = 1.0 / (1.0 + exp(-logit));
            double y = ex[i].label;
            tr->loss -= y * log(p + 1e-12) + (1 - y) * log(1 - p + 1e-12);
            float grad = (float)(p - y);
            for (uint32_t k = 0; k < per; k++)
                g[i * per + k] = grad;
        }
        tr->rc = pskv_push(tr->t, keys, (size_t)n * per, g);
        tr->seen += n;
        progress += n;
    }
    free(ex);
    free(keys);
    free(w);
    free(g);
    return NULL;
}

static int usage(void)
{
    fprintf(stderr, "usage: ctr_demo [--examples N] [--batch B] [--threads T] [--check-gap G] "
                    "[--store DIR]\n");
    return 2;
}

int main(int argc, char **argv)
{
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
        else
            return usage();
    }
    if (cfg.examples < 1000 || cfg.batch < 1 || cfg.batch > 65536 || cfg.threads < 1 ||
        cfg.threads > 64)
        return usage();
    stream_init();

    pskv_store *s;
    pskv_table *t;
    const char *table_cfg = "dim=1 optimizer=adagrad lr=0.05 init=zeros";
    int rc = pskv_open(cfg.store, NULL, &s);
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
           (unsigned long long)cfg.examples, FIELDS, cfg.batch, cfg.threads, pskv_version_string());

    trainer *tr = calloc((size_t)cfg.threads, sizeof *tr);
    uint64_t per_thread = cfg.examples / (uint64_t)cfg.threads;
    double t0 = now();
    for (int i = 0; i < cfg.threads; i++) {
        tr[i] = (trainer){t, per_thread * (uint64_t)i, per_thread, 0, 0, 0, 0};
        pthread_create(&tr[i].thread, NULL, train, &tr[i]);
    }
    /* Progress from the main thread while trainers run. */
    uint64_t total = per_thread * (uint64_t)cfg.threads, next = total / 10;
    while (progress < total) {
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
        uint64_t p = progress;
        if (p >= next && p < total) {
            printf("  %3.0f%%  %9llu examples  %6.0fk examples/s  %zu rows in table",
                   100.0 * (double)p / (double)total, (unsigned long long)p, p / (now() - t0) / 1e3,
                   (size_t)pskv_table_rows(t));
            if (cfg.store != NULL) {
                /* The trainers keep pulling and pushing meanwhile: the
                 * start returns once the instant is taken, with the
                 * examples seen so far as the checkpoint's metadata. */
                double c0 = now();
                pskv_ckpt *c;
                uint64_t seen = p, seq = 0;
                int crc = pskv_checkpoint_start(s, &seen, sizeof seen, &c);
                double instant = now() - c0;
                if (crc == 0)
                    crc = pskv_checkpoint_wait(c, &seq);
                pskv_store_stats ss;
                pskv_store_stats_get(s, &ss);
                if (crc != 0) {
                    fprintf(stderr, "\nctr_demo: checkpoint: %s\n", pskv_strerror(crc));
                    return 1;
                }
                printf("  checkpoint %llu: %llu rows, instant after %.2f ms, committed in %.1f ms",
                       (unsigned long long)seq, (unsigned long long)ss.checkpoint_rows,
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
    for (int i = 0; i < cfg.threads; i++) {
        pthread_join(tr[i].thread, NULL);
        if (tr[i].rc != 0) {
            fprintf(stderr, "ctr_demo: %s\n", pskv_strerror(tr[i].rc));
            return 1;
        }
        loss += tr[i].loss;
    }
    double train_s = now() - t0;
    double rows = (double)total * (FIELDS + 1) * 2; /* pulled + pushed */
    printf("trained %llu examples in %.2f s: %.0fk examples/s, %.2fM rows/s pulled+pushed, "
           "mean train log-loss %.4f\n",
           (unsigned long long)total, train_s, total / train_s / 1e3, rows / train_s / 1e6,
           loss / (double)total);

    if (cfg.store != NULL) {
        /* Close (a final checkpoint) and score what reopening gives back. */
        double c0 = now();
        pskv_close(s);
        double close_s = now() - c0;
        c0 = now();
        rc = pskv_open(cfg.store, NULL, &s);
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
    enum { HELD_OUT = 200000 };
    scored *mine = malloc(HELD_OUT * sizeof *mine), *planted = malloc(HELD_OUT * sizeof *planted);
    uint64_t keys[FIELDS + 1];
    float w[FIELDS + 1];
    uint8_t found[FIELDS + 1];
    for (uint32_t i = 0; i < HELD_OUT; i++) {
        example e;
        make_example(2, i, &e);
        memcpy(keys, e.ids, sizeof keys);
        /* get, not pull: evaluation must not create rows */
        pskv_get(t, keys, FIELDS + 1, w, found);
        double logit = 0;
        for (int k = 0; k <= FIELDS; k++)
            logit += w[k];
        mine[i] = (scored){logit, e.label};
        planted[i] = (scored){e.true_p, e.label};
    }
    double auc_mine = auc(mine, HELD_OUT), auc_planted = auc(planted, HELD_OUT);
    double gap = auc_planted - auc_mine;
    pskv_table_stats st;
    pskv_table_stats_get(t, &st);
    printf("held-out AUC %.4f (planted model %.4f, gap %.4f) on %d examples; table: %llu rows, "
           "%.1f MiB DRAM\n",
           auc_mine, auc_planted, gap, HELD_OUT, (unsigned long long)st.rows,
           st.dram_bytes / 1048576.0);
    free(mine);
    free(planted);
    free(tr);
    pskv_close(s);
    for (int f = 0; f < FIELDS; f++)
        free(zipf_cdf[f]);
    if (cfg.check_gap >= 0 && gap > cfg.check_gap) {
        fprintf(stderr, "ctr_demo: AUC gap %.4f exceeds %.4f\n", gap, cfg.check_gap);
        return 1;
    }
    return 0;
}
