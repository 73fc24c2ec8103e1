/* Helpers shared by the check-based tests. */
#ifndef PSKV_TEST_COMMON_H
#define PSKV_TEST_COMMON_H

#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "pskv.h"

/* Deterministic test randomness (splitmix64). */
typedef struct test_rng {
    uint64_t s;
} test_rng;

static inline uint64_t rng_next(test_rng *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline uint32_t rng_below(test_rng *r, uint32_t n) { return (uint32_t)(rng_next(r) % n); }

/* Uniform float in [-1, 1). */
static inline float rng_float(test_rng *r)
{
    return (float)((double)(rng_next(r) >> 11) * 0x1.0p-52 - 1.0);
}

#define ck_assert_ok(expr)                                                     \
    do {                                                                       \
        int rc__ = (expr);                                                     \
        ck_assert_msg(rc__ == 0, "%s returned %d (%s)", #expr, rc__,           \
                      pskv_err_name(rc__));                                    \
    } while (0)

#define ck_assert_err(expr, code)                                              \
    do {                                                                       \
        int rc__ = (expr);                                                     \
        ck_assert_msg(rc__ == (code), "%s returned %d (%s), expected %s", #expr, \
                      rc__, pskv_err_name(rc__), #code);                       \
    } while (0)

/* Run a suite; exit status for meson. */
static inline int run_suite(Suite *s)
{
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

static inline pskv_table *open_table(pskv_store **s, const char *config)
{
    pskv_table *t = NULL;
    ck_assert_ok(pskv_open(NULL, NULL, s));
    ck_assert_ok(pskv_table_open(*s, "t", config, &t));
    return t;
}

/* Rows first..first+n-1 with values base + i + j/64 (put), and the check
 * that a table holds exactly those. */
static inline void test_fill(pskv_table *t, uint64_t first, uint32_t n, uint32_t dim, float base)
{
    uint64_t *keys = malloc(n * sizeof *keys);
    float *vals = malloc((size_t)n * dim * sizeof(float));
    for (uint32_t i = 0; i < n; i++) {
        keys[i] = first + i;
        for (uint32_t j = 0; j < dim; j++)
            vals[(size_t)i * dim + j] = base + (float)i + (float)j / 64.0f;
    }
    ck_assert_ok(pskv_put(t, keys, n, vals));
    free(keys);
    free(vals);
}

/* The first row of first..first+n-1 that does not hold test_fill's values
 * (or is missing), or -1; a failed call gives -2. No check assertions: this
 * runs in forked children and over millions of floats. */
static inline int64_t test_rows_differ(pskv_table *t, uint64_t first, uint32_t n, uint32_t dim,
                                       float base)
{
    uint64_t *keys = malloc(n * sizeof *keys);
    float *out = malloc((size_t)n * dim * sizeof(float));
    uint8_t *found = malloc(n);
    int64_t bad = -1;
    for (uint32_t i = 0; i < n; i++)
        keys[i] = first + i;
    if (keys == NULL || out == NULL || found == NULL || pskv_get(t, keys, n, out, found) != 0)
        bad = -2;
    for (uint32_t i = 0; i < n && bad == -1; i++) {
        if (!found[i])
            bad = i;
        for (uint32_t j = 0; j < dim && bad == -1; j++)
            if (out[(size_t)i * dim + j] != base + (float)i + (float)j / 64.0f)
                bad = i;
    }
    free(keys);
    free(out);
    free(found);
    return bad;
}

static inline void test_expect_rows(pskv_table *t, uint64_t first, uint32_t n, uint32_t dim,
                                    float base)
{
    int64_t bad = test_rows_differ(t, first, n, dim, base);
    ck_assert_msg(bad == -1, "%s: key %llu", bad == -2 ? "pskv_get failed" : "row differs",
                  (unsigned long long)(first + (uint64_t)(bad < 0 ? 0 : bad)));
}

/* A fresh directory pskv-test-<name>-XXXXXX in the working directory (the
 * build directory under meson: a real file system, where O_DIRECT works). */
#define test_mkdtemp(buf, name) test_mkdtemp_((buf), sizeof(buf), (name))
static inline void test_mkdtemp_(char *buf, size_t cap, const char *name)
{
    int n = snprintf(buf, cap, "pskv-test-%s-XXXXXX", name);
    ck_assert(n > 0 && (size_t)n < cap);
    ck_assert_ptr_nonnull(mkdtemp(buf));
}

static inline void test_remove_dir(const char *d)
{
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", d);
    ck_assert_int_eq(system(cmd), 0);
}

#endif
