/* The synthetic click stream, the logistic-regression gradient and the
 * held-out score shared by ctr_demo and federation_mpi (ctr_stream.h). */
#include "ctr_stream.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const field_names[CTR_FIELDS] = {
    "site", "app", "device", "hour", "adslot", "banner", "region", "user_segment"};
static const uint32_t vocab[CTR_FIELDS] = {500, 2000, 5000, 24, 50, 300, 1000, 10000};
static const double planted_bias = -1.6;
static const double planted_scale = 0.6;
static const double zipf_s = 1.05;

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

static double *zipf_cdf[CTR_FIELDS];

void ctr_stream_init(void)
{
    for (int f = 0; f < CTR_FIELDS; f++) {
        zipf_cdf[f] = malloc(vocab[f] * sizeof(double));
        double sum = 0;
        for (uint32_t k = 0; k < vocab[f]; k++)
            zipf_cdf[f][k] = sum += pow(k + 1.0, -zipf_s);
        for (uint32_t k = 0; k < vocab[f]; k++)
            zipf_cdf[f][k] /= sum;
    }
}

void ctr_stream_free(void)
{
    for (int f = 0; f < CTR_FIELDS; f++) {
        free(zipf_cdf[f]);
        zipf_cdf[f] = NULL;
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

void ctr_make_example(uint64_t stream, uint64_t i, ctr_example *e)
{
    uint64_t s = mix(stream * 0x9e3779b97f4a7c15ull + i);
    double logit = planted_bias;
    e->ids[0] = CTR_BIAS_KEY;
    for (int f = 0; f < CTR_FIELDS; f++) {
        uint32_t v = draw(f, &s);
        e->ids[f + 1] = pskv_feature_id(field_names[f], &v, sizeof v);
        logit += planted_weight(f, v);
    }
    e->true_p = 1.0 / (1.0 + exp(-logit));
    e->label = unit(&s) < e->true_p ? 1.0f : 0.0f;
}

double ctr_gradients(const ctr_example *ex, uint32_t n, const float *w, float *g)
{
    double loss = 0;
    for (uint32_t i = 0; i < n; i++) {
        double logit = 0;
        for (uint32_t k = 0; k < CTR_PER; k++)
            logit += w[i * CTR_PER + k];
        double p = 1.0 / (1.0 + exp(-logit));
        double y = ex[i].label;
        loss -= y * log(p + 1e-12) + (1 - y) * log(1 - p + 1e-12);
        float grad = (float)(p - y);
        for (uint32_t k = 0; k < CTR_PER; k++)
            g[i * CTR_PER + k] = grad;
    }
    return loss;
}

static int by_score(const void *a, const void *b)
{
    double x = ((const ctr_scored *)a)->score, y = ((const ctr_scored *)b)->score;
    return x < y ? -1 : x > y;
}

double ctr_auc(ctr_scored *v, size_t n)
{
    qsort(v, n, sizeof *v, by_score);
    double pos = 0, rank_sum = 0;
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j < n && v[j].score == v[i].score)
            j++;
        double mid_rank = (i + 1 + j) / 2.0; /* ties share ranks */
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

int ctr_evaluate(pskv_table *t, double *model_auc, double *planted_auc)
{
    ctr_scored *mine = malloc(CTR_HELD_OUT * sizeof *mine);
    ctr_scored *planted = malloc(CTR_HELD_OUT * sizeof *planted);
    int rc = mine == NULL || planted == NULL ? PSKV_ENOMEM : 0;
    for (uint32_t i = 0; i < CTR_HELD_OUT && rc == 0; i++) {
        ctr_example e;
        ctr_make_example(2, i, &e);
        float w[CTR_PER];
        uint8_t found[CTR_PER];
        rc = pskv_get(t, e.ids, CTR_PER, w, found); /* get, not pull: no row is created */
        double logit = 0;
        for (int k = 0; k < CTR_PER; k++)
            logit += w[k];
        mine[i] = (ctr_scored){logit, e.label};
        planted[i] = (ctr_scored){e.true_p, e.label};
    }
    if (rc == 0) {
        *model_auc = ctr_auc(mine, CTR_HELD_OUT);
        *planted_auc = ctr_auc(planted, CTR_HELD_OUT);
    }
    free(mine);
    free(planted);
    return rc;
}
