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

#endif
