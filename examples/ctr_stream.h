/* The synthetic click stream and the logistic-regression model that
 * ctr_demo and federation_mpi train: the same examples, the same gradient
 * and the same held-out score, so that their AUCs compare.
 *
 * The stream has CTR_FIELDS categorical fields; each example draws one value
 * per field from a Zipf distribution over the field's vocabulary, turns it
 * into a feature id with pskv_feature_id(field, value), and clicks with the
 * probability a planted logistic model gives. Example i of stream s is a pure
 * function of (s, i): stream 1 trains, stream 2 is held out. */
#ifndef CTR_STREAM_H
#define CTR_STREAM_H

#include <stddef.h>
#include <stdint.h>

#include "pskv.h"

#define CTR_FIELDS 8
#define CTR_PER (CTR_FIELDS + 1) /* features per example: bias + one per field */
#define CTR_BIAS_KEY 0           /* feature id of the always-on bias feature */
#define CTR_HELD_OUT 200000      /* held-out examples scored */
/* The table ctr_demo trains: one weight per feature. */
#define CTR_TABLE_CONFIG "dim=1 optimizer=adagrad lr=0.05 init=zeros"

typedef struct ctr_example {
    uint64_t ids[CTR_PER];
    double true_p; /* the planted model's click probability */
    float label;
} ctr_example;

void ctr_stream_init(void); /* before any ctr_make_example */
void ctr_stream_free(void);
void ctr_make_example(uint64_t stream, uint64_t i, ctr_example *e);

/* The log-loss gradient of n examples given the weights w[n * CTR_PER] of
 * their features: g[n * CTR_PER] (one per feature occurrence). Returns the
 * batch's summed log-loss. */
double ctr_gradients(const ctr_example *ex, uint32_t n, const float *w, float *g);

/* AUC of the rank-sum formula over scores and labels (sorts v). */
typedef struct ctr_scored {
    double score;
    float label;
} ctr_scored;
double ctr_auc(ctr_scored *v, size_t n);

/* Score the model held in t (pskv_get: no row is created) and the planted
 * model on the CTR_HELD_OUT examples of stream 2. 0 or a PSKV_E* code. */
int ctr_evaluate(pskv_table *t, double *model_auc, double *planted_auc);

#endif
