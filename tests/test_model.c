/* Seeded randomized model test: random sequences of pull, push, get, put,
 * erase and reshard against a small, obviously correct reference (an array
 * of rows searched linearly), compared bit for bit.
 *
 * The reference builds rows with the library's initializer and optimizer
 * step functions (those are checked against their formulas in
 * test_optimizer); everything else — hashing, shards, index, slots, dedup,
 * batching, resharding — is what this test checks.
 *
 *   test_model [--seeds N] [--first S] [--ops M] [--seed S]
 * A failure names the seed and operation; `--seed S --ops M` replays it. */
#include <math.h>
#include <string.h>

#include "pskv_internal.h"
#include "test_common.h"

static unsigned n_seeds = 6, first_seed = 1, n_ops = 10000;
static long only_seed = -1;

typedef struct ref_row {
    uint64_t key;
    float *row;
} ref_row;

typedef struct model {
    pskv_table_options opts;
    pskv__optimizer opt;
    uint32_t dim, row_floats;
    ref_row *rows;
    uint32_t n, cap;
} model;

static ref_row *model_find(model *m, uint64_t key)
{
    for (uint32_t i = 0; i < m->n; i++)
        if (m->rows[i].key == key)
            return &m->rows[i];
    return NULL;
}

static ref_row *model_create(model *m, uint64_t key)
{
    if (m->n == m->cap) {
        m->cap = m->cap ? m->cap * 2 : 64;
        m->rows = realloc(m->rows, m->cap * sizeof *m->rows);
    }
    ref_row *r = &m->rows[m->n++];
    r->key = key;
    r->row = malloc(m->row_floats * sizeof(float));
    pskv__init_weights(&m->opts, key, r->row, m->dim);
    pskv__optimizer_init_state(&m->opt, r->row + m->dim);
    return r;
}

static void model_erase(model *m, uint64_t key)
{
    ref_row *r = model_find(m, key);
    if (r == NULL)
        return;
    free(r->row);
    *r = m->rows[--m->n];
}

static void model_free(model *m)
{
    for (uint32_t i = 0; i < m->n; i++)
        free(m->rows[i].row);
    free(m->rows);
}

static uint64_t pick_key(test_rng *r)
{
    /* Mostly a small universe (many hits and duplicates), some fresh ids. */
    uint32_t c = rng_below(r, 10);
    if (c < 8)
        return rng_below(r, 200) * 0x100000001ull;
    if (c < 9)
        return rng_below(r, 4); /* keys 0..3 including 0 */
    return rng_next(r);
}

typedef struct failure {
    unsigned op;
    char what[200];
} failure;

#define FAIL(...)                                                              \
    do {                                                                       \
        snprintf(f->what, sizeof f->what, __VA_ARGS__);                        \
        return false;                                                          \
    } while (0)

static bool full_compare(pskv_table *t, model *m, failure *f)
{
    if (pskv_table_rows(t) != m->n)
        FAIL("row count %llu, model %u", (unsigned long long)pskv_table_rows(t), m->n);
    pskv_iter *it;
    if (pskv_iter_create(t, &it) != 0)
        FAIL("iter_create");
    float *buf = malloc(m->row_floats * sizeof(float) + 4);
    uint64_t key;
    uint32_t seen = 0;
    int rc;
    bool ok = true;
    while (ok && (rc = pskv_iter_next(it, &key, buf, buf + m->dim)) == 1) {
        ref_row *r = model_find(m, key);
        if (r == NULL || memcmp(r->row, buf, m->row_floats * sizeof(float)) != 0) {
            snprintf(f->what, sizeof f->what, "iter row %llu differs or is extra",
                     (unsigned long long)key);
            ok = false;
        }
        seen++;
    }
    if (ok && (rc != 0 || seen != m->n)) {
        snprintf(f->what, sizeof f->what, "iter end rc %d seen %u of %u", rc, seen, m->n);
        ok = false;
    }
    free(buf);
    pskv_iter_destroy(it);
    return ok;
}

/* Run one seed for ops operations; false and *f filled on the first mismatch. */
static bool run_seed(unsigned seed, unsigned ops, failure *f)
{
    test_rng r = {seed * 0x2545f4914f6cdd1dull};
    static const uint32_t dims[] = {1, 3, 8, 17};
    static const char *const opt_names[] = {"sgd", "adagrad", "rowwise_adagrad", "adam", "ftrl"};
    char cfg[160];
    uint32_t dim = dims[seed % 4];
    snprintf(cfg, sizeof cfg, "dim=%u optimizer=%s init=uniform:-1:1 seed=%u shards=%u lr=0.05",
             dim, opt_names[seed % 5], seed, 1 + rng_below(&r, 16));
    pskv_store *s;
    pskv_table *t;
    if (pskv_open(NULL, NULL, &s) != 0 || pskv_table_open(s, "m", cfg, &t) != 0) {
        f->op = 0;
        snprintf(f->what, sizeof f->what, "open %.150s", cfg);
        return false;
    }
    model m = {0};
    pskv_table_info info;
    pskv_table_info_get(t, &info);
    m.opts = info.options;
    pskv__optimizer_setup(&m.opt, &m.opts);
    m.dim = dim;
    m.row_floats = dim + info.state_floats;

    enum { MAXB = 64 };
    uint64_t keys[MAXB];
    float *vals = malloc(MAXB * dim * sizeof(float));
    float *out = malloc(MAXB * dim * sizeof(float));
    float *sum = malloc(MAXB * dim * sizeof(float));
    uint8_t found[MAXB];
    bool ok = true;
    for (unsigned op = 0; op < ops && ok; op++) {
        f->op = op;
        uint32_t n = 1 + rng_below(&r, rng_below(&r, 4) == 0 ? MAXB : 8);
        for (uint32_t i = 0; i < n; i++)
            keys[i] = pick_key(&r);
        for (uint32_t i = 0; i < n * dim; i++)
            vals[i] = rng_float(&r);
        uint32_t kind = rng_below(&r, 100);
        int rc;
        if (kind < 30) { /* pull */
            rc = pskv_pull(t, keys, n, out);
            for (uint32_t i = 0; i < n && rc == 0; i++) {
                ref_row *x = model_find(&m, keys[i]);
                if (x == NULL)
                    x = model_create(&m, keys[i]);
                if (memcmp(out + i * dim, x->row, dim * sizeof(float)) != 0) {
                    snprintf(f->what, sizeof f->what, "pull key %llu", (unsigned long long)keys[i]);
                    ok = false;
                    break;
                }
            }
        } else if (kind < 60) { /* push, with a poisoned batch now and then */
            bool poison = rng_below(&r, 20) == 0;
            if (poison)
                vals[rng_below(&r, n * dim)] = rng_below(&r, 2) ? NAN : -INFINITY;
            rc = pskv_push(t, keys, n, vals);
            if (poison) {
                if (rc != PSKV_EINVAL)
                    FAIL("poisoned push returned %d", rc);
                rc = 0;
            } else if (rc == 0) {
                /* reference: sum duplicates in order of appearance, apply once */
                for (uint32_t i = 0; i < n; i++) {
                    uint32_t first = i;
                    for (uint32_t k = 0; k < i; k++)
                        if (keys[k] == keys[i]) {
                            first = k;
                            break;
                        }
                    if (first == i)
                        memcpy(sum + i * dim, vals + i * dim, dim * sizeof(float));
                    else
                        for (uint32_t j = 0; j < dim; j++)
                            sum[first * dim + j] += vals[i * dim + j];
                }
                for (uint32_t i = 0; i < n; i++) {
                    bool is_first = true;
                    for (uint32_t k = 0; k < i; k++)
                        is_first &= keys[k] != keys[i];
                    if (!is_first)
                        continue;
                    ref_row *x = model_find(&m, keys[i]);
                    if (x == NULL)
                        x = model_create(&m, keys[i]);
                    pskv__optimizer_apply(&m.opt, x->row, sum + i * dim);
                }
            }
        } else if (kind < 75) { /* get */
            rc = pskv_get(t, keys, n, out, found);
            for (uint32_t i = 0; i < n && rc == 0; i++) {
                ref_row *x = model_find(&m, keys[i]);
                bool same = x ? found[i] == 1 && memcmp(out + i * dim, x->row, dim * 4) == 0
                              : found[i] == 0 && out[i * dim] == 0.0f;
                if (!same) {
                    snprintf(f->what, sizeof f->what, "get key %llu", (unsigned long long)keys[i]);
                    ok = false;
                    break;
                }
            }
        } else if (kind < 87) { /* put: last value wins */
            rc = pskv_put(t, keys, n, vals);
            for (uint32_t i = 0; i < n && rc == 0; i++) {
                ref_row *x = model_find(&m, keys[i]);
                if (x == NULL) {
                    x = model_create(&m, keys[i]);
                }
                memcpy(x->row, vals + i * dim, dim * sizeof(float));
            }
        } else if (kind < 98) { /* erase */
            rc = pskv_erase(t, keys, n);
            for (uint32_t i = 0; i < n && rc == 0; i++)
                model_erase(&m, keys[i]);
        } else { /* reshard */
            rc = pskv_table_reshard(t, 1 + rng_below(&r, 33));
        }
        if (rc != 0 && ok)
            FAIL("op kind %u returned %d", kind, rc);
        if (ok && (op % 500 == 499 || op + 1 == ops))
            ok = full_compare(t, &m, f);
    }
    free(vals);
    free(out);
    free(sum);
    model_free(&m);
    pskv_close(s);
    return ok;
}

START_TEST(random_sequences)
{
    unsigned lo = only_seed >= 0 ? (unsigned)only_seed : first_seed;
    unsigned hi = only_seed >= 0 ? lo + 1 : first_seed + n_seeds;
    for (unsigned seed = lo; seed < hi; seed++) {
        failure f = {0, ""};
        if (!run_seed(seed, n_ops, &f))
            ck_abort_msg("seed %u fails at op %u: %s; replay with: test_model --seed %u --ops %u",
                         seed, f.op, f.what, seed, f.op + 1);
    }
}
END_TEST

int main(int argc, char **argv)
{
    for (int i = 1; i + 1 < argc; i += 2) {
        unsigned long v = strtoul(argv[i + 1], NULL, 0);
        if (strcmp(argv[i], "--seeds") == 0)
            n_seeds = (unsigned)v;
        else if (strcmp(argv[i], "--first") == 0)
            first_seed = (unsigned)v;
        else if (strcmp(argv[i], "--ops") == 0)
            n_ops = (unsigned)v;
        else if (strcmp(argv[i], "--seed") == 0)
            only_seed = (long)v;
    }
    Suite *s = suite_create("model");
    TCase *tc = tcase_create("model");
    tcase_set_timeout(tc, 3600);
    tcase_add_test(tc, random_sequences);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
