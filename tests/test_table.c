/* Table semantics through the public API: pull/get/put/erase/push, the
 * initializer, duplicate keys, NaN/Inf rejection, schema checks, reshard,
 * iteration, stats and every PSKV_EINVAL case. */
#include <math.h>
#include <string.h>

#include "test_common.h"

static int row_eq(const float *a, const float *b, uint32_t d) { return memcmp(a, b, d * sizeof *a) == 0; }

START_TEST(pull_creates_deterministic_rows)
{
    pskv_store *s1, *s2;
    pskv_table *a = open_table(&s1, "dim=16 init=normal:0:0.1 seed=9 shards=3");
    pskv_table *b = open_table(&s2, "dim=16 init=normal:0:0.1 seed=9 shards=17");
    uint64_t k1[3] = {1, 2, 3}, k2[3] = {3, 2, 1};
    float r1[48], r2[48], r3[48];
    ck_assert_ok(pskv_pull(a, k1, 3, r1));
    ck_assert_ok(pskv_pull(b, k2, 3, r2)); /* other order, other shard count */
    ck_assert(row_eq(r1, r2 + 32, 16) && row_eq(r1 + 16, r2 + 16, 16) && row_eq(r1 + 32, r2, 16));
    ck_assert_ok(pskv_pull(a, k1, 3, r3));
    ck_assert(row_eq(r1, r3, 48));
    ck_assert(!row_eq(r1, r1 + 16, 16));
    pskv_table *c;
    ck_assert_ok(pskv_table_open(s1, "c", "dim=16 init=normal:0:0.1 seed=10", &c));
    ck_assert_ok(pskv_pull(c, k1, 1, r3));
    ck_assert(!row_eq(r1, r3, 16)); /* seed matters */
    ck_assert_uint_eq(pskv_table_rows(a), 3);
    pskv_close(s1);
    pskv_close(s2);
}
END_TEST

START_TEST(initializer_ranges)
{
    pskv_store *s;
    pskv_table *u = open_table(&s, "dim=100 init=uniform:-0.25:0.5");
    pskv_table *n, *c;
    ck_assert_ok(pskv_table_open(s, "n", "dim=101 init=normal:1:2", &n));
    ck_assert_ok(pskv_table_open(s, "c", "dim=3 init=constant:0.75", &c));
    enum { K = 200 };
    uint64_t keys[K];
    for (int i = 0; i < K; i++)
        keys[i] = (uint64_t)i * 0x9e3779b97f4a7c15ull;
    float *w = malloc(K * 101 * sizeof *w);
    ck_assert_ok(pskv_pull(u, keys, K, w));
    double sum = 0;
    for (int i = 0; i < K * 100; i++) {
        ck_assert(w[i] >= -0.25f && w[i] < 0.5f);
        sum += w[i];
    }
    ck_assert(fabs(sum / (K * 100) - 0.125) < 0.01);
    ck_assert_ok(pskv_pull(n, keys, K, w));
    double m = 0, v = 0;
    for (int i = 0; i < K * 101; i++)
        m += w[i];
    m /= K * 101;
    for (int i = 0; i < K * 101; i++)
        v += (w[i] - m) * (w[i] - m);
    v /= K * 101;
    ck_assert_msg(fabs(m - 1) < 0.05 && fabs(sqrt(v) - 2) < 0.05, "mean %f std %f", m, sqrt(v));
    ck_assert_ok(pskv_pull(c, keys, 1, w));
    ck_assert(w[0] == 0.75f && w[1] == 0.75f && w[2] == 0.75f);
    free(w);
    pskv_close(s);
}
END_TEST

/* Generator 2 of uniform and normal values: the distribution (moments,
 * tails, independence of neighbours in a row and across keys), and some
 * bits: values a release created must come again from every later one. */
START_TEST(generator_2_statistics_and_bits)
{
    pskv_store *s;
    pskv_table *n = open_table(&s, "dim=101 init=normal:1:2 seed=11");
    pskv_table *u;
    ck_assert_ok(pskv_table_open(s, "u", "dim=101 init=uniform:-3:5 seed=11", &u));
    enum { K = 20000, D = 101 };
    uint64_t *keys = malloc(K * sizeof *keys);
    for (int i = 0; i < K; i++)
        keys[i] = (uint64_t)i + 1; /* consecutive keys: the hardest case for a hash */
    float *w = malloc((size_t)K * D * sizeof *w);
    ck_assert_ok(pskv_pull(n, keys, K, w));
    const size_t N = (size_t)K * D;
    double m = 0, m2 = 0, m3 = 0, m4 = 0, in1 = 0, in2 = 0, in3 = 0, row_c = 0, key_c = 0;
    for (size_t i = 0; i < N; i++) {
        const double z = (w[i] - 1.0) / 2.0;
        m += z;
        m2 += z * z;
        m3 += z * z * z;
        m4 += z * z * z * z;
        in1 += fabs(z) < 1;
        in2 += fabs(z) < 2;
        in3 += fabs(z) < 3;
        if (i % D + 1 < D)
            row_c += z * (w[i + 1] - 1.0) / 2.0; /* the next value of the row */
        if (i + D < N)
            key_c += z * (w[i + D] - 1.0) / 2.0; /* the same value of the next key */
    }
    m /= N;
    const double var = m2 / N - m * m;
    ck_assert_msg(fabs(m) < 0.005 && fabs(var - 1) < 0.005, "mean %g var %g", m, var);
    ck_assert_msg(fabs(m3 / N) < 0.01 && fabs(m4 / N - 3) < 0.03, "skew %g kurt %g", m3 / N,
                  m4 / N);
    ck_assert_msg(fabs(in1 / N - 0.682689) < 0.002 && fabs(in2 / N - 0.954500) < 0.0015 &&
                      fabs(in3 / N - 0.997300) < 0.0005,
                  "within 1, 2, 3 sd: %g %g %g", in1 / N, in2 / N, in3 / N);
    ck_assert_msg(fabs(row_c / N) < 0.005 && fabs(key_c / N) < 0.005, "correlations %g %g",
                  row_c / N, key_c / N);
    /* uniform on [-3, 5): inside, and flat (chi-square over 100 bins, 99
     * degrees of freedom: 200 is far beyond any chance) */
    ck_assert_ok(pskv_pull(u, keys, K, w));
    double bins[100] = {0}, chi = 0;
    for (size_t i = 0; i < N; i++) {
        ck_assert(w[i] >= -3.0f && w[i] < 5.0f);
        bins[(int)((w[i] + 3.0) / 8.0 * 100)]++;
    }
    for (int b = 0; b < 100; b++)
        chi += (bins[b] - N / 100.0) * (bins[b] - N / 100.0) / (N / 100.0);
    ck_assert_msg(chi < 200, "chi-square %g", chi);
    /* The bits of key 42 (seed 3), as 0.3 created them. */
    pskv_table *gn, *gu;
    ck_assert_ok(pskv_table_open(s, "gn", "dim=5 init=normal:0:1 seed=3", &gn));
    ck_assert_ok(pskv_table_open(s, "gu", "dim=5 init=uniform:-1:1 seed=3", &gu));
    const uint32_t want_n[5] = {0x3e9617fd, 0x3f9b74ef, 0x3f182ca9, 0xbf8d5f77, 0xbef30a83};
    const uint32_t want_u[5] = {0xbdab45f0, 0xbf134cc4, 0xbdb6bc40, 0x3f283bcc, 0x3ebaca78};
    uint64_t k42 = 42;
    uint32_t bits[5];
    ck_assert_ok(pskv_pull(gn, &k42, 1, w));
    memcpy(bits, w, sizeof bits);
    for (int j = 0; j < 5; j++)
        ck_assert_uint_eq(bits[j], want_n[j]);
    ck_assert_ok(pskv_pull(gu, &k42, 1, w));
    memcpy(bits, w, sizeof bits);
    for (int j = 0; j < 5; j++)
        ck_assert_uint_eq(bits[j], want_u[j]);
    free(keys);
    free(w);
    pskv_close(s);
}
END_TEST

START_TEST(get_put_erase)
{
    pskv_store *s;
    pskv_table *t = open_table(&s, "dim=4 init=constant:1 optimizer=sgd lr=1");
    uint64_t keys[3] = {10, 20, 30};
    float vals[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, out[12];
    uint8_t found[3];
    ck_assert_ok(pskv_get(t, keys, 3, out, found));
    for (int i = 0; i < 12; i++)
        ck_assert(out[i] == 0.0f);
    ck_assert(!found[0] && !found[1] && !found[2]);
    ck_assert_uint_eq(pskv_table_rows(t), 0); /* get never creates */
    ck_assert_ok(pskv_put(t, keys, 2, vals));
    ck_assert_ok(pskv_get(t, keys, 3, out, found));
    ck_assert(found[0] && found[1] && !found[2]);
    ck_assert(row_eq(out, vals, 8));
    ck_assert_ok(pskv_get(t, keys, 3, out, NULL)); /* found is optional */
    /* repeated key in one put: last value wins */
    uint64_t rep[3] = {30, 30, 30};
    ck_assert_ok(pskv_put(t, rep, 3, vals));
    ck_assert_ok(pskv_get(t, rep, 1, out, found));
    ck_assert(row_eq(out, vals + 8, 4));
    /* push on a put row keeps working from the put weights */
    float g[4] = {1, 1, 1, 1};
    ck_assert_ok(pskv_push(t, keys, 1, g));
    ck_assert_ok(pskv_get(t, keys, 1, out, NULL));
    ck_assert(out[0] == 0 && out[3] == 3);
    ck_assert_ok(pskv_erase(t, keys, 3));
    ck_assert_ok(pskv_erase(t, keys, 3)); /* absent keys are ignored */
    ck_assert_uint_eq(pskv_table_rows(t), 0);
    ck_assert_ok(pskv_pull(t, keys, 1, out));
    ck_assert(out[0] == 1.0f && out[3] == 1.0f); /* re-created from the initializer */
    pskv_table_stats st;
    ck_assert_ok(pskv_table_stats_get(t, &st));
    ck_assert_uint_eq(st.rows, 1);
    ck_assert_uint_eq(st.rows_created, 4);
    ck_assert_uint_eq(st.rows_erased, 3);
    ck_assert_uint_eq(st.got, 11);
    ck_assert_uint_eq(st.put, 5);
    ck_assert_uint_eq(st.get_misses, 5);
    ck_assert_uint_eq(st.row_bytes, 16);
    ck_assert_uint_ge(st.dram_bytes, 16);
    pskv_close(s);
}
END_TEST

START_TEST(duplicates_summed_in_push)
{
    pskv_store *s;
    pskv_table *t = open_table(&s, "dim=2 optimizer=adagrad lr=1");
    uint64_t keys[4] = {7, 8, 7, 7};
    float g[8] = {1, 2, 10, 20, 100, 200, 1000, 2000}, out[2];
    ck_assert_ok(pskv_push(t, keys, 4, g));
    ck_assert_ok(pskv_get(t, keys, 1, out, NULL));
    /* one adagrad step with g = (1101, 2202): w = -lr * g / sqrt(g*g) = -1 */
    ck_assert(fabsf(out[0] + 1.0f) < 1e-6f && fabsf(out[1] + 1.0f) < 1e-6f);
    pskv_close(s);
}
END_TEST

START_TEST(nonfinite_rejected_before_change)
{
    pskv_store *s;
    pskv_table *t = open_table(&s, "dim=3 init=constant:2 optimizer=sgd");
    uint64_t keys[2] = {1, 2};
    float ok[6] = {1, 1, 1, 1, 1, 1}, out[6];
    ck_assert_ok(pskv_pull(t, keys, 1, out));
    const float bad_values[] = {NAN, INFINITY, -INFINITY};
    for (int b = 0; b < 3; b++) {
        float g[6] = {1, 1, 1, 1, 1, 1};
        g[5] = bad_values[b];
        ck_assert_err(pskv_push(t, keys, 2, g), PSKV_EINVAL);
        ck_assert_err(pskv_put(t, keys, 2, g), PSKV_EINVAL);
    }
    ck_assert_uint_eq(pskv_table_rows(t), 1); /* key 2 was not created */
    ck_assert_ok(pskv_get(t, keys, 1, out, NULL));
    ck_assert(out[0] == 2 && out[1] == 2 && out[2] == 2);
    ck_assert_ok(pskv_push(t, keys, 2, ok));
    pskv_close(s);
}
END_TEST

START_TEST(einval_cases)
{
    pskv_store *s;
    pskv_table *t = open_table(&s, "dim=2");
    uint64_t k = 1;
    float f[2] = {0, 0};
    uint8_t found;
    ck_assert_err(pskv_pull(NULL, &k, 1, f), PSKV_EINVAL);
    ck_assert_err(pskv_pull(t, NULL, 1, f), PSKV_EINVAL);
    ck_assert_err(pskv_pull(t, &k, 1, NULL), PSKV_EINVAL);
    ck_assert_err(pskv_push(t, NULL, 1, f), PSKV_EINVAL);
    ck_assert_err(pskv_push(t, &k, 1, NULL), PSKV_EINVAL);
    ck_assert_err(pskv_get(t, &k, 1, NULL, &found), PSKV_EINVAL);
    ck_assert_err(pskv_get(NULL, &k, 1, f, &found), PSKV_EINVAL);
    ck_assert_err(pskv_put(t, &k, 1, NULL), PSKV_EINVAL);
    ck_assert_err(pskv_erase(t, NULL, 1), PSKV_EINVAL);
    ck_assert_err(pskv_prefetch(t, NULL, 1), PSKV_EINVAL);
    ck_assert_err(pskv_prefetch(NULL, &k, 1), PSKV_EINVAL);
    ck_assert_ok(pskv_prefetch(t, &k, 1));
    /* n == 0 is a no-op even with NULL arrays */
    ck_assert_ok(pskv_pull(t, NULL, 0, NULL));
    ck_assert_ok(pskv_push(t, NULL, 0, NULL));
    ck_assert_ok(pskv_get(t, NULL, 0, NULL, NULL));
    ck_assert_ok(pskv_put(t, NULL, 0, NULL));
    ck_assert_ok(pskv_erase(t, NULL, 0));
    ck_assert_uint_eq(pskv_table_rows(t), 0);
    ck_assert_err(pskv_table_reshard(t, 0), PSKV_EINVAL);
    ck_assert_err(pskv_table_reshard(t, PSKV_SHARDS_MAX + 1), PSKV_EINVAL);
    ck_assert_err(pskv_table_reshard(NULL, 4), PSKV_EINVAL);
    ck_assert_err(pskv_iter_create(NULL, NULL), PSKV_EINVAL);
    ck_assert_err(pskv_table_info_get(t, NULL), PSKV_EINVAL);
    ck_assert_err(pskv_table_stats_get(NULL, NULL), PSKV_EINVAL);
    ck_assert_err(pskv_store_stats_get(s, NULL), PSKV_EINVAL);

    /* table names and configs */
    pskv_table *x;
    char longname[PSKV_NAME_MAX + 2];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    ck_assert_err(pskv_table_open(s, longname, "dim=1", &x), PSKV_EINVAL);
    longname[PSKV_NAME_MAX] = '\0';
    ck_assert_ok(pskv_table_open(s, longname, "dim=1", &x));
    ck_assert_err(pskv_table_open(s, "", "dim=1", &x), PSKV_EINVAL);
    ck_assert_err(pskv_table_open(s, "a/b", "dim=1", &x), PSKV_EINVAL);
    ck_assert_err(pskv_table_open(s, NULL, "dim=1", &x), PSKV_EINVAL);
    ck_assert_err(pskv_table_open(s, "new", NULL, &x), PSKV_EINVAL); /* no dim */
    ck_assert_err(pskv_table_open(s, "new", "dim=2 lr=x", &x), PSKV_EINVAL);
    ck_assert_err(pskv_table_open(NULL, "new", "dim=2", &x), PSKV_EINVAL);
    ck_assert_err(pskv_table_open(s, "new", "dim=2", NULL), PSKV_EINVAL);
    ck_assert_err(pskv_table_find(s, "new", &x), PSKV_ENOTFOUND);
    pskv_table_options o;
    pskv_table_options_init(&o);
    ck_assert_err(pskv_table_open_opts(s, "new", &o, &x), PSKV_EINVAL); /* dim 0 */
    o.dim = 5;
    o.reserved[0] = 1;
    ck_assert_err(pskv_table_open_opts(s, "new", &o, &x), PSKV_EINVAL);
    o.reserved[0] = 0;
    o.optimizer = 9;
    ck_assert_err(pskv_table_open_opts(s, "new", &o, &x), PSKV_EINVAL);
    o.optimizer = PSKV_OPT_SGD;
    o.lr = NAN;
    ck_assert_err(pskv_table_open_opts(s, "new", &o, &x), PSKV_EINVAL);
    ck_assert_err(pskv_table_find(s, "new", &x), PSKV_ENOTFOUND);
    pskv_store_stats ss;
    ck_assert_ok(pskv_store_stats_get(s, &ss));
    ck_assert_uint_eq(ss.tables, 2);
    pskv_close(s);
}
END_TEST

/* Issue 22, item 9: every failed call says why, and never repeats an
 * older call's detail. */
START_TEST(details_are_the_calls_own)
{
    pskv_store *s;
    pskv_table *t = open_table(&s, "dim=4");
    pskv_table *x;
    ck_assert_err(pskv_table_open(s, "new", "optimiser=adam", &x), PSKV_EINVAL);
    ck_assert_ptr_nonnull(strstr(pskv_last_error(), "optimiser"));
    ck_assert_err(pskv_table_find(s, "nope", &x), PSKV_ENOTFOUND);
    ck_assert_ptr_null(strstr(pskv_last_error(), "optimiser"));
    ck_assert_ptr_nonnull(strstr(pskv_last_error(), "nope"));
    ck_assert_ok(pskv_table_find(s, "t", &x));
    ck_assert_str_eq(pskv_last_error(), "");
    ck_assert_err(pskv_table_reshard(t, 0), PSKV_EINVAL);
    ck_assert_ptr_nonnull(strstr(pskv_last_error(), "shards=0"));
    ck_assert_err(pskv_table_reshard(t, PSKV_SHARDS_MAX + 1), PSKV_EINVAL);
    ck_assert_ptr_nonnull(strstr(pskv_last_error(), "expected 1.."));
    pskv_close(s);
}
END_TEST

START_TEST(schema_checks_on_reopen)
{
    pskv_store *s;
    pskv_table *t = open_table(&s, "dim=8 optimizer=adam lr=0.01 shards=4"), *x;
    ck_assert_ok(pskv_table_open(s, "t", NULL, &x));
    ck_assert_ptr_eq(x, t);
    ck_assert_ok(pskv_table_open(s, "t", "dim=8 optimizer=adam", &x));
    ck_assert_ok(pskv_table_open(s, "t", "shards=9", &x)); /* not part of the schema */
    ck_assert_err(pskv_table_open(s, "t", "dim=9", &x), PSKV_ESCHEMA);
    ck_assert_err(pskv_table_open(s, "t", "optimizer=adagrad", &x), PSKV_ESCHEMA);
    ck_assert_err(pskv_table_open(s, "t", "lr=0.02", &x), PSKV_ESCHEMA);
    ck_assert_err(pskv_table_open(s, "t", "init=constant:1", &x), PSKV_ESCHEMA);
    ck_assert_err(pskv_table_open(s, "t", "seed=1", &x), PSKV_ESCHEMA);
    ck_assert_ok(pskv_table_find(s, "t", &x));
    ck_assert_ptr_eq(x, t);
    pskv_table_options o;
    pskv_table_options_init(&o);
    o.dim = 8;
    o.optimizer = PSKV_OPT_ADAM;
    o.lr = 0.01f;
    ck_assert_ok(pskv_table_open_opts(s, "t", &o, &x));
    o.beta2 = 0.99f;
    ck_assert_err(pskv_table_open_opts(s, "t", &o, &x), PSKV_ESCHEMA);
    pskv_table_info info;
    ck_assert_ok(pskv_table_info_get(t, &info));
    ck_assert_uint_eq(info.shards, 4);
    ck_assert_uint_eq(info.row_bytes, (8 + 17) * 4);
    pskv_close(s);
}
END_TEST

START_TEST(reshard_keeps_every_row)
{
    pskv_store *s;
    pskv_table *t = open_table(&s, "dim=5 init=uniform:-1:1 optimizer=adam shards=8");
    enum { K = 20000 };
    uint64_t *keys = malloc(K * sizeof *keys);
    float *g = malloc(K * 5 * sizeof *g), *a = malloc(K * 5 * sizeof *a), *b = malloc(K * 5 * sizeof *b);
    test_rng r = {77};
    for (int i = 0; i < K; i++)
        keys[i] = rng_next(&r);
    for (int i = 0; i < K * 5; i++)
        g[i] = rng_float(&r);
    ck_assert_ok(pskv_push(t, keys, K, g));
    ck_assert_ok(pskv_pull(t, keys, K, a));
    const uint32_t counts[] = {9, 64, 1, 3, 4096, 8};
    for (size_t c = 0; c < sizeof counts / sizeof counts[0]; c++) {
        ck_assert_ok(pskv_table_reshard(t, counts[c]));
        pskv_table_info info;
        ck_assert_ok(pskv_table_info_get(t, &info));
        ck_assert_uint_eq(info.shards, counts[c]);
        ck_assert_uint_eq(pskv_table_rows(t), K);
        uint8_t *found = malloc(K);
        ck_assert_ok(pskv_get(t, keys, K, b, found));
        for (int i = 0; i < K; i++)
            ck_assert(found[i]);
        ck_assert(memcmp(a, b, K * 5 * sizeof *a) == 0);
        free(found);
    }
    /* optimizer state moved too: the same push on a never-resharded twin agrees */
    pskv_store *s2;
    pskv_table *u = open_table(&s2, "dim=5 init=uniform:-1:1 optimizer=adam shards=8");
    ck_assert_ok(pskv_push(u, keys, K, g));
    ck_assert_ok(pskv_push(u, keys, K, g));
    ck_assert_ok(pskv_push(t, keys, K, g));
    ck_assert_ok(pskv_get(t, keys, K, a, NULL));
    ck_assert_ok(pskv_get(u, keys, K, b, NULL));
    ck_assert(memcmp(a, b, K * 5 * sizeof *a) == 0);
    pskv_table_stats st;
    ck_assert_ok(pskv_table_stats_get(t, &st));
    ck_assert_uint_eq(st.reshards, 6);
    ck_assert_uint_eq(st.rows_created, K);
    free(keys);
    free(g);
    free(a);
    free(b);
    pskv_close(s);
    pskv_close(s2);
}
END_TEST

START_TEST(iterate_all_rows)
{
    pskv_store *s;
    pskv_table *t = open_table(&s, "dim=3 init=constant:4 shards=5");
    enum { K = 1000 };
    uint64_t keys[K];
    float w[K * 3];
    for (int i = 0; i < K; i++)
        keys[i] = (uint64_t)i * 3;
    ck_assert_ok(pskv_pull(t, keys, K, w));
    pskv_iter *it;
    ck_assert_ok(pskv_iter_create(t, &it));
    static uint8_t seen[K * 3];
    uint64_t key;
    float row[3], st[3];
    int n = 0, rc;
    while ((rc = pskv_iter_next(it, &key, row, st)) == 1) {
        ck_assert(key % 3 == 0 && key < K * 3);
        ck_assert(!seen[key]);
        seen[key] = 1;
        ck_assert(row[0] == 4 && row[2] == 4 && st[0] == 0);
        n++;
    }
    ck_assert_int_eq(rc, 0);
    ck_assert_int_eq(n, K);
    ck_assert_int_eq(pskv_iter_next(it, &key, row, NULL), 0);
    pskv_iter_destroy(it);
    /* a reshard invalidates a running iterator */
    ck_assert_ok(pskv_iter_create(t, &it));
    ck_assert_int_eq(pskv_iter_next(it, &key, row, NULL), 1);
    ck_assert_ok(pskv_table_reshard(t, 2));
    for (;;) {
        rc = pskv_iter_next(it, &key, row, NULL);
        if (rc != 1)
            break;
    }
    ck_assert_err(rc, PSKV_ESTALE);
    ck_assert_err(pskv_iter_next(it, NULL, row, NULL), PSKV_EINVAL);
    pskv_iter_destroy(it);
    pskv_iter_destroy(NULL);
    pskv_close(s);
}
END_TEST

/* Issue 24 item 3: optimizer=none keeps weights only; push is refused and
 * changes nothing; chunks move its rows in REPLACE and ADD mode; a durable
 * store keeps the choice. */
START_TEST(optimizer_none_keeps_rows_only)
{
    char dir[256];
    test_mkdtemp(dir, "none");
    pskv_store *s;
    pskv_table *t, *u;
    ck_assert_ok(pskv_open(dir, NULL, &s));
    ck_assert_ok(pskv_table_open(s, "c", "dim=4 optimizer=none", &t));
    pskv_table_info info;
    ck_assert_ok(pskv_table_info_get(t, &info));
    ck_assert_uint_eq(info.state_floats, 0);
    ck_assert_uint_eq(info.row_bytes, 16);
    ck_assert_int_eq(info.options.optimizer, PSKV_OPT_NONE);
    const uint64_t keys[3] = {1, 2, 3};
    const float rows[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    float out[12], grads[12];
    for (int i = 0; i < 12; i++)
        grads[i] = 0.5f;
    ck_assert_ok(pskv_put(t, keys, 3, rows));
    ck_assert_err(pskv_push(t, keys, 3, grads), PSKV_EINVAL);
    ck_assert_ptr_nonnull(strstr(pskv_last_error(), "optimizer=none"));
    ck_assert_ok(pskv_get(t, keys, 3, out, NULL));
    ck_assert_mem_eq(out, rows, sizeof rows);

    /* A chunk of its rows: REPLACE and ADD apply, PUSH is refused whole
     * (its tombstones too). */
    ck_assert_ok(pskv_table_open(s, "d", "dim=4 optimizer=none", &u));
    pskv_export *e;
    ck_assert_ok(pskv_export_open(t, 0, NULL, &e));
    static uint8_t chunk[1 << 16];
    size_t len;
    ck_assert_int_eq(pskv_export_next(e, chunk, sizeof chunk, &len), 1);
    pskv_export_close(e);
    ck_assert_ok(pskv_apply(u, chunk, len, PSKV_APPLY_REPLACE | PSKV_APPLY_ANY_TABLE));
    ck_assert_err(pskv_apply(u, chunk, len, PSKV_APPLY_PUSH | PSKV_APPLY_ANY_TABLE),
                  PSKV_EINVAL);
    ck_assert_ok(pskv_get(u, keys, 3, out, NULL));
    ck_assert_mem_eq(out, rows, sizeof rows);
    ck_assert_ok(pskv_apply(u, chunk, len, PSKV_APPLY_ADD | PSKV_APPLY_ANY_TABLE));
    ck_assert_ok(pskv_get(u, keys, 3, out, NULL));
    for (int i = 0; i < 12; i++)
        ck_assert_float_eq(out[i], 2 * rows[i]);

    /* Durable: the schema says none after a reopen. */
    ck_assert_ok(pskv_checkpoint(s));
    pskv_close(s);
    ck_assert_ok(pskv_open(dir, NULL, &s));
    ck_assert_ok(pskv_table_open(s, "c", NULL, &t));
    ck_assert_ok(pskv_table_info_get(t, &info));
    ck_assert_int_eq(info.options.optimizer, PSKV_OPT_NONE);
    ck_assert_uint_eq(info.row_bytes, 16);
    ck_assert_ok(pskv_get(t, keys, 3, out, NULL));
    ck_assert_mem_eq(out, rows, sizeof rows);
    ck_assert_err(pskv_table_open(s, "c", "optimizer=sgd", &u), PSKV_ESCHEMA);
    pskv_close(s);
    test_remove_dir(dir);
}
END_TEST

START_TEST(large_dims_and_many_rows)
{
    pskv_store *s;
    pskv_table *t = open_table(&s, "dim=4096 optimizer=adam init=uniform:0:1 shards=2");
    uint64_t keys[3] = {1, 2, 1};
    float *g = calloc(3 * 4096, sizeof *g), *w = malloc(3 * 4096 * sizeof *w);
    for (int i = 0; i < 3 * 4096; i++)
        g[i] = 0.5f;
    ck_assert_ok(pskv_push(t, keys, 3, g));
    ck_assert_ok(pskv_pull(t, keys, 3, w));
    ck_assert(row_eq(w, w + 2 * 4096, 4096));
    free(g);
    free(w);
    pskv_table *small;
    ck_assert_ok(pskv_table_open(s, "small", "dim=1 optimizer=sgd shards=1", &small));
    enum { K = 300000 };
    uint64_t *k = malloc(K * sizeof *k);
    float *v = malloc(K * sizeof *v);
    for (int i = 0; i < K; i++) {
        k[i] = (uint64_t)i;
        v[i] = (float)i;
    }
    ck_assert_ok(pskv_put(small, k, K, v));
    ck_assert_ok(pskv_erase(small, k, K / 2));
    ck_assert_uint_eq(pskv_table_rows(small), K - K / 2);
    uint8_t *found = malloc(K);
    ck_assert_ok(pskv_get(small, k, K, v, found));
    for (int i = 0; i < K; i++) {
        ck_assert_int_eq(found[i], i >= K / 2);
        ck_assert(v[i] == (i >= K / 2 ? (float)i : 0.0f));
    }
    free(found);
    free(k);
    free(v);
    pskv_close(s);
}
END_TEST

/* Wide rows: pull's and get's first pass serves them in rounds of fewer
 * keys (at most 256 KiB of rows each), so a batch spans many rounds; a
 * batch whose first round mostly misses leaves the rest to the full path.
 * Every row must come back whole, in input order, present or not. */
START_TEST(wide_rows_served_in_rounds)
{
    enum { DIM = 1000, PUT = 2000, SPAN = 2600, MAXB = 3000 };
    pskv_store *s;
    pskv_table *t = open_table(&s, "dim=1000 optimizer=sgd init=zeros shards=5");
    uint64_t *keys = malloc(MAXB * sizeof *keys);
    float *rows = malloc((size_t)MAXB * DIM * sizeof *rows);
    uint8_t *found = malloc(MAXB);
    for (uint32_t i = 0; i < PUT; i++) {
        keys[i] = i;
        for (uint32_t j = 0; j < DIM; j++)
            rows[(size_t)i * DIM + j] = (float)(i * DIM + j);
    }
    ck_assert_ok(pskv_put(t, keys, PUT, rows));
    test_rng r = {17};
    for (int batch = 0; batch < 40; batch++) {
        uint32_t n = 1 + (uint32_t)rng_below(&r, MAXB);
        for (uint32_t i = 0; i < n; i++) /* the first 100 absent in odd batches */
            keys[i] = (batch & 1) && i < 100 ? PUT + rng_below(&r, SPAN - PUT)
                                              : rng_below(&r, SPAN);
        ck_assert_ok(pskv_get(t, keys, n, rows, found));
        uint32_t wrong = 0; /* one check a batch: check's asserts cost a write each */
        for (uint32_t i = 0; i < n; i++) {
            wrong += found[i] != (keys[i] < PUT);
            for (uint32_t j = 0; j < DIM; j++)
                wrong += rows[(size_t)i * DIM + j] !=
                         (keys[i] < PUT ? (float)(keys[i] * DIM + j) : 0.0f);
        }
        ck_assert_msg(wrong == 0, "batch %d of %u keys: %u values wrong", batch, n, wrong);
    }
    ck_assert_uint_eq(pskv_table_rows(t), PUT); /* get created nothing */
    free(keys);
    free(rows);
    free(found);
    pskv_close(s);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("table");
    TCase *tc = tcase_create("table");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, pull_creates_deterministic_rows);
    tcase_add_test(tc, initializer_ranges);
    tcase_add_test(tc, generator_2_statistics_and_bits);
    tcase_add_test(tc, get_put_erase);
    tcase_add_test(tc, duplicates_summed_in_push);
    tcase_add_test(tc, nonfinite_rejected_before_change);
    tcase_add_test(tc, einval_cases);
    tcase_add_test(tc, details_are_the_calls_own);
    tcase_add_test(tc, schema_checks_on_reopen);
    tcase_add_test(tc, reshard_keeps_every_row);
    tcase_add_test(tc, iterate_all_rows);
    tcase_add_test(tc, large_dims_and_many_rows);
    tcase_add_test(tc, wide_rows_served_in_rounds);
    tcase_add_test(tc, optimizer_none_keeps_rows_only);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
