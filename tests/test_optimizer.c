/* Each optimizer against a double-precision reference of its formula
 * (API-CONTRACT.md), one step at a time from the table's own state, with
 * duplicate keys summed first. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "test_common.h"

#define NKEYS 24
#define BATCH 40
#define STEPS 60

typedef struct snapshot {
    uint64_t key[NKEYS];
    float w[NKEYS][64];
    float st[NKEYS][2 * 64 + 1];
    int n;
} snapshot;

static void take(pskv_table *t, snapshot *s)
{
    pskv_iter *it;
    ck_assert_ok(pskv_iter_create(t, &it));
    s->n = 0;
    int rc;
    while ((rc = pskv_iter_next(it, &s->key[s->n], s->w[s->n], s->st[s->n])) == 1)
        s->n++;
    ck_assert_int_eq(rc, 0);
    pskv_iter_destroy(it);
}

static int find(const snapshot *s, uint64_t key)
{
    for (int i = 0; i < s->n; i++)
        if (s->key[i] == key)
            return i;
    return -1;
}

static void close_enough(double ref, float got, const char *what, uint64_t key, uint32_t j)
{
    double tol = 1e-5 * fabs(ref) + 1e-6;
    ck_assert_msg(fabs((double)got - ref) <= tol, "%s key %llu [%u]: got %.9g want %.9g", what,
                  (unsigned long long)key, j, (double)got, ref);
}

/* One step of the formula in double; w and state updated in place. */
static void reference_step(const pskv_table_options *o, uint32_t d, double *w, double *st,
                           const double *g)
{
    switch (o->optimizer) {
    case PSKV_OPT_SGD:
        for (uint32_t j = 0; j < d; j++)
            w[j] -= o->lr * g[j];
        break;
    case PSKV_OPT_ADAGRAD:
        for (uint32_t j = 0; j < d; j++) {
            st[j] += g[j] * g[j];
            w[j] -= o->lr * g[j] / (sqrt(st[j]) + o->eps);
        }
        break;
    case PSKV_OPT_ROWWISE_ADAGRAD: {
        double m = 0;
        for (uint32_t j = 0; j < d; j++)
            m += g[j] * g[j];
        st[0] += m / d;
        for (uint32_t j = 0; j < d; j++)
            w[j] -= o->lr * g[j] / (sqrt(st[0]) + o->eps);
        break;
    }
    case PSKV_OPT_ADAM: {
        double t = st[2 * d] + 1;
        st[2 * d] = t;
        double step = o->lr * sqrt(1 - pow(o->beta2, t)) / (1 - pow(o->beta1, t));
        for (uint32_t j = 0; j < d; j++) {
            st[j] = o->beta1 * st[j] + (1 - o->beta1) * g[j];
            st[d + j] = o->beta2 * st[d + j] + (1 - o->beta2) * g[j] * g[j];
            w[j] -= step * st[j] / (sqrt(st[d + j]) + o->eps);
        }
        break;
    }
    default: {
        double p = -(double)o->lr_power;
        for (uint32_t j = 0; j < d; j++) {
            double n = st[j], z = st[d + j];
            double nn = n + g[j] * g[j];
            double sigma = (pow(nn, p) - pow(n, p)) / o->lr;
            z += g[j] - sigma * w[j];
            st[j] = nn;
            st[d + j] = z;
            w[j] = fabs(z) <= o->l1 ? 0.0
                                    : ((z > 0 ? o->l1 : -o->l1) - z) / (pow(nn, p) / o->lr + 2 * o->l2);
        }
        break;
    }
    }
}

static void run_optimizer(const char *config, uint32_t d, float gscale)
{
    pskv_store *s;
    char cfg[256];
    snprintf(cfg, sizeof cfg, "dim=%u init=uniform:-0.5:0.5 seed=3 %s", d, config);
    pskv_table *t = open_table(&s, cfg);
    pskv_table_info info;
    ck_assert_ok(pskv_table_info_get(t, &info));
    const pskv_table_options *o = &info.options;

    uint64_t keys[NKEYS];
    for (int i = 0; i < NKEYS; i++)
        keys[i] = 1000 + (uint64_t)i * 7919;
    float *buf = malloc((size_t)BATCH * d * sizeof(float));
    ck_assert_ok(pskv_pull(t, keys, NKEYS, buf));

    test_rng rng = {d * 31 + (uint64_t)o->optimizer};
    static snapshot before, after;
    for (int step = 0; step < STEPS; step++) {
        take(t, &before);
        ck_assert_int_eq(before.n, NKEYS);
        uint64_t bk[BATCH];
        for (int i = 0; i < BATCH; i++) {
            bk[i] = keys[rng_below(&rng, NKEYS / 2)]; /* half the keys, many repeats */
            for (uint32_t j = 0; j < d; j++)
                buf[i * d + j] = rng_float(&rng) * gscale;
        }
        ck_assert_ok(pskv_push(t, bk, BATCH, buf));
        take(t, &after);
        for (int r = 0; r < NKEYS; r++) {
            uint64_t key = before.key[r];
            double w[64], st[2 * 64 + 1], g[64] = {0};
            int hits = 0;
            for (int i = 0; i < BATCH; i++)
                if (bk[i] == key) {
                    hits++;
                    for (uint32_t j = 0; j < d; j++)
                        g[j] += buf[i * d + j];
                }
            for (uint32_t j = 0; j < d; j++)
                w[j] = before.w[r][j];
            uint32_t sf = info.state_floats;
            for (uint32_t j = 0; j < sf; j++)
                st[j] = before.st[r][j];
            if (o->optimizer == PSKV_OPT_ADAM) {
                uint32_t tc;
                memcpy(&tc, &before.st[r][2 * d], sizeof tc);
                st[2 * d] = tc;
            }
            if (hits)
                reference_step(o, d, w, st, g);
            int a = find(&after, key);
            ck_assert_int_ge(a, 0);
            for (uint32_t j = 0; j < d; j++)
                close_enough(w[j], after.w[a][j], "weight", key, j);
            uint32_t cmp = o->optimizer == PSKV_OPT_ADAM ? 2 * d : sf;
            for (uint32_t j = 0; j < cmp; j++)
                close_enough(st[j], after.st[a][j], "state", key, j);
            if (o->optimizer == PSKV_OPT_ADAM) {
                uint32_t tc;
                memcpy(&tc, &after.st[a][2 * d], sizeof tc);
                ck_assert_uint_eq(tc, (uint32_t)st[2 * d]);
            }
        }
    }
    free(buf);
    pskv_close(s);
}

START_TEST(sgd) { run_optimizer("optimizer=sgd lr=0.1", 7, 1.0f); run_optimizer("optimizer=sgd", 64, 3.0f); }
END_TEST
START_TEST(adagrad)
{
    run_optimizer("optimizer=adagrad lr=0.1", 7, 1.0f);
    run_optimizer("optimizer=adagrad initial_accumulator=0.5 eps=1e-6", 64, 0.01f);
}
END_TEST
START_TEST(rowwise_adagrad)
{
    run_optimizer("optimizer=rowwise_adagrad lr=0.05", 5, 1.0f);
    run_optimizer("optimizer=rowwise_adagrad", 64, 10.0f);
}
END_TEST
START_TEST(adam)
{
    run_optimizer("optimizer=adam", 9, 1.0f);
    run_optimizer("optimizer=adam lr=0.01 beta1=0.5 beta2=0.9 eps=1e-6", 64, 0.1f);
}
END_TEST
START_TEST(ftrl)
{
    run_optimizer("optimizer=ftrl", 3, 1.0f);
    run_optimizer("optimizer=ftrl lr=0.1 l1=0.01 l2=0.1 lr_power=-0.6 initial_accumulator=0.5", 64, 0.5f);
}
END_TEST

/* A step that would make a value Inf or NaN leaves its row as it was,
 * weights and state to the bit, however far into the row the kernel got
 * (the overflow is in the last element), while the batch's other rows
 * step; PSKV_ERANGE says so. */
static void overflow_undone(const char *cfg, uint32_t d)
{
    pskv_store *s;
    char full[128];
    snprintf(full, sizeof full, "dim=%u %s", d, cfg);
    pskv_table *t = open_table(&s, full);
    uint64_t keys[2] = {11, 12};
    float g[2 * 64];
    for (uint32_t j = 0; j < 2 * d; j++)
        g[j] = 0.25f + 0.01f * (float)j;
    for (int i = 0; i < 3; i++) /* some state to keep */
        ck_assert_ok(pskv_push(t, keys, 2, g));
    snapshot before, after;
    memset(&before, 0, sizeof before);
    memset(&after, 0, sizeof after);
    take(t, &before);
    g[2 * d - 1] = 3e38f; /* key 12's last element: its square, or w - lr * g, overflows */
    if (strstr(cfg, "sgd") != NULL) {
        float w[64] = {0};
        w[d - 1] = 3e38f;
        ck_assert_ok(pskv_put(t, &keys[1], 1, w));
        take(t, &before);
        g[2 * d - 1] = -3e38f;
    }
    ck_assert_err(pskv_push(t, keys, 2, g), PSKV_ERANGE);
    take(t, &after);
    int b11 = find(&before, 11), a11 = find(&after, 11);
    int b12 = find(&before, 12), a12 = find(&after, 12);
    ck_assert(b11 >= 0 && a11 >= 0 && b12 >= 0 && a12 >= 0);
    ck_assert(memcmp(before.w[b11], after.w[a11], d * sizeof(float)) != 0); /* stepped */
    ck_assert_mem_eq(before.w[b12], after.w[a12], d * sizeof(float));
    pskv_table_info info;
    ck_assert_ok(pskv_table_info_get(t, &info));
    ck_assert_mem_eq(before.st[b12], after.st[a12], info.state_floats * sizeof(float));
    pskv_close(s);
}

START_TEST(overflowing_step_undone)
{
    overflow_undone("optimizer=sgd lr=1", 5);
    overflow_undone("optimizer=sgd lr=1", 64);
    overflow_undone("optimizer=adagrad", 7);
    overflow_undone("optimizer=adagrad", 64);
    overflow_undone("optimizer=rowwise_adagrad", 64);
    overflow_undone("optimizer=adam", 9);
    overflow_undone("optimizer=adam", 64);
    overflow_undone("optimizer=ftrl", 3);
    overflow_undone("optimizer=ftrl lr_power=-0.6", 64);
}
END_TEST

START_TEST(state_defaults)
{
    /* Initial optimizer state as documented: ftrl n = 0.1, adam zeros. */
    pskv_store *s;
    pskv_table *t = open_table(&s, "dim=2 optimizer=ftrl");
    uint64_t k = 5, key;
    float w[2], st[4];
    ck_assert_ok(pskv_pull(t, &k, 1, w));
    pskv_iter *it;
    ck_assert_ok(pskv_iter_create(t, &it));
    ck_assert_int_eq(pskv_iter_next(it, &key, w, st), 1);
    ck_assert(st[0] == 0.1f && st[1] == 0.1f && st[2] == 0.0f && st[3] == 0.0f);
    pskv_iter_destroy(it);
    pskv_table_info info;
    ck_assert_ok(pskv_table_info_get(t, &info));
    ck_assert(info.options.lr == 0.05f && info.options.lr_power == -0.5f);
    ck_assert_uint_eq(info.state_floats, 4);
    pskv_close(s);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("optimizer");
    TCase *tc = tcase_create("optimizer");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, sgd);
    tcase_add_test(tc, adagrad);
    tcase_add_test(tc, rowwise_adagrad);
    tcase_add_test(tc, adam);
    tcase_add_test(tc, ftrl);
    tcase_add_test(tc, state_defaults);
    tcase_add_test(tc, overflowing_step_undone);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
