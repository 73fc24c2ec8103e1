/* Consistent-hash ring: movement on add/remove, balance, weights, errors. */
#include <math.h>
#include <string.h>

#include "test_common.h"

#define NKEYS 1000000u

static uint64_t *make_keys(uint64_t seed)
{
    uint64_t *k = malloc(NKEYS * sizeof *k);
    ck_assert_ptr_nonnull(k);
    test_rng r = {seed};
    for (uint32_t i = 0; i < NKEYS; i++)
        k[i] = rng_next(&r);
    return k;
}

static pskv_ring *ring_with(uint32_t n, uint64_t seed)
{
    pskv_ring *r;
    ck_assert_ok(pskv_ring_create(0, seed, &r));
    for (uint32_t i = 0; i < n; i++)
        ck_assert_ok(pskv_ring_add(r, i, 1.0));
    return r;
}

START_TEST(add_moves_ideal_share_only_to_new_node)
{
    uint64_t *keys = make_keys(1);
    uint32_t *before = malloc(NKEYS * sizeof *before), *after = malloc(NKEYS * sizeof *after);
    const uint32_t ns[] = {1, 2, 3, 5, 8, 16, 31, 64};
    for (size_t t = 0; t < sizeof ns / sizeof ns[0]; t++) {
        uint32_t n = ns[t];
        pskv_ring *r = ring_with(n, 42);
        ck_assert_ok(pskv_ring_route(r, keys, NKEYS, before));
        ck_assert_ok(pskv_ring_add(r, n, 1.0));
        ck_assert_ok(pskv_ring_route(r, keys, NKEYS, after));
        uint32_t moved = 0;
        for (uint32_t i = 0; i < NKEYS; i++) {
            if (before[i] != after[i]) {
                ck_assert_uint_eq(after[i], n); /* only onto the new node */
                moved++;
            }
        }
        double ideal = (double)NKEYS / (n + 1);
        ck_assert_msg(moved >= 0.9 * ideal && moved <= 1.1 * ideal, "N=%u moved %u ideal %.0f",
                      n, moved, ideal);
        pskv_ring_destroy(r);
    }
    free(before);
    free(after);
    free(keys);
}
END_TEST

START_TEST(remove_moves_only_that_nodes_keys)
{
    uint64_t *keys = make_keys(2);
    uint32_t *before = malloc(NKEYS * sizeof *before), *after = malloc(NKEYS * sizeof *after);
    pskv_ring *r = ring_with(10, 7);
    ck_assert_ok(pskv_ring_route(r, keys, NKEYS, before));
    ck_assert_ok(pskv_ring_remove(r, 3));
    ck_assert_uint_eq(pskv_ring_nodes(r), 9);
    ck_assert_ok(pskv_ring_route(r, keys, NKEYS, after));
    for (uint32_t i = 0; i < NKEYS; i++) {
        if (before[i] != 3)
            ck_assert_uint_eq(after[i], before[i]);
        else
            ck_assert_uint_ne(after[i], 3);
    }
    /* Adding it back restores the original routing exactly. */
    ck_assert_ok(pskv_ring_add(r, 3, 1.0));
    ck_assert_ok(pskv_ring_route(r, keys, NKEYS, after));
    ck_assert(memcmp(before, after, NKEYS * sizeof *after) == 0);
    pskv_ring_destroy(r);
    free(before);
    free(after);
    free(keys);
}
END_TEST

START_TEST(default_vnodes_balance)
{
    uint64_t *keys = make_keys(3);
    uint32_t *owner = malloc(NKEYS * sizeof *owner);
    uint32_t load[64];
    pskv_ring *r = ring_with(1, 0);
    for (uint32_t n = 2; n <= 64; n++) {
        ck_assert_ok(pskv_ring_add(r, n - 1, 1.0));
        ck_assert_ok(pskv_ring_route(r, keys, NKEYS, owner));
        memset(load, 0, sizeof load);
        for (uint32_t i = 0; i < NKEYS; i++)
            load[owner[i]]++;
        uint32_t max = 0;
        for (uint32_t k = 0; k < n; k++)
            max = load[k] > max ? load[k] : max;
        double ratio = max / ((double)NKEYS / n);
        ck_assert_msg(ratio <= 1.10, "N=%u max/mean %.3f", n, ratio);
    }
    pskv_ring_destroy(r);
    free(owner);
    free(keys);
}
END_TEST

START_TEST(weights_scale_share)
{
    uint64_t *keys = make_keys(4);
    uint32_t *owner = malloc(NKEYS * sizeof *owner);
    pskv_ring *r;
    ck_assert_ok(pskv_ring_create(256, 9, &r));
    ck_assert_ok(pskv_ring_add(r, 100, 1.0));
    ck_assert_ok(pskv_ring_add(r, 200, 3.0));
    ck_assert_ok(pskv_ring_route(r, keys, NKEYS, owner));
    uint32_t heavy = 0;
    for (uint32_t i = 0; i < NKEYS; i++) {
        ck_assert(owner[i] == 100 || owner[i] == 200);
        heavy += owner[i] == 200;
    }
    double share = (double)heavy / NKEYS;
    ck_assert_msg(fabs(share - 0.75) < 0.05, "share %.3f", share);
    pskv_ring_destroy(r);
    free(owner);
    free(keys);
}
END_TEST

START_TEST(deterministic_by_seed)
{
    uint64_t keys[1000];
    uint32_t a[1000], b[1000], c[1000];
    test_rng g = {5};
    for (int i = 0; i < 1000; i++)
        keys[i] = rng_next(&g);
    pskv_ring *r1 = ring_with(8, 11), *r2 = ring_with(8, 11), *r3 = ring_with(8, 12);
    ck_assert_ok(pskv_ring_route(r1, keys, 1000, a));
    ck_assert_ok(pskv_ring_route(r2, keys, 1000, b));
    ck_assert_ok(pskv_ring_route(r3, keys, 1000, c));
    ck_assert(memcmp(a, b, sizeof a) == 0);
    ck_assert(memcmp(a, c, sizeof a) != 0);
    pskv_ring_destroy(r1);
    pskv_ring_destroy(r2);
    pskv_ring_destroy(r3);
}
END_TEST

/* Routes are part of federation: instances of different releases must send
 * a key to the same node. Fingerprints of 200,000 routes per ring, written
 * by release 0.4.0 (before buckets named their node). */
START_TEST(routes_are_those_of_release_0_4)
{
    static const struct {
        unsigned vnodes;
        uint32_t nodes;
        uint64_t seed, fingerprint;
    } want[] = {
    {1, 1, 1, 0x23ebf5c6a86a0780ull},
    {1, 5, 2, 0x7aef82cb948181fcull},
    {3, 7, 3, 0x5921d82d405f9d91ull},
    {64, 64, 4, 0x10a574de22d51ac7ull},
    {1024, 2, 5, 0xb5d3a44bee5082e4ull},
    {1024, 64, 6, 0x8a1a8050c090e3f8ull},
    {17, 300, 7, 0x40a7d045d485cd61ull},
    };
    enum { N = 200000 };
    uint64_t *keys = malloc(N * sizeof *keys);
    uint32_t *node = malloc(N * sizeof *node);
    ck_assert(keys && node);
    uint64_t x = 99;
    for (int i = 0; i < N; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        keys[i] = x ^ (x >> 29);
    }
    for (size_t c = 0; c < sizeof want / sizeof want[0]; c++) {
        pskv_ring *r;
        ck_assert_ok(pskv_ring_create(want[c].vnodes, want[c].seed, &r));
        for (uint32_t k = 0; k < want[c].nodes; k++) { /* the largest ids too */
            uint32_t id = k == 0 ? 0xFFFFFFFFu : k == 1 ? 0xFFFFFFFEu : k * 2654435761u;
            ck_assert_ok(pskv_ring_add(r, id, 0.5 + (k % 4) * 0.5));
        }
        ck_assert_ok(pskv_ring_route(r, keys, N, node));
        uint64_t f = 0;
        for (int i = 0; i < N; i++)
            f = f * 1000003u + node[i];
        ck_assert_msg(f == want[c].fingerprint, "ring %zu: routes differ from release 0.4", c);
        pskv_ring_destroy(r);
    }
    free(keys);
    free(node);
}
END_TEST

START_TEST(errors)
{
    pskv_ring *r;
    uint64_t k = 1;
    uint32_t node;
    ck_assert_err(pskv_ring_create(0, 0, NULL), PSKV_EINVAL);
    ck_assert_ok(pskv_ring_create(4, 0, &r));
    ck_assert_err(pskv_ring_route(r, &k, 1, &node), PSKV_ENOTFOUND);
    ck_assert_ok(pskv_ring_route(r, NULL, 0, NULL));
    ck_assert_err(pskv_ring_add(r, 1, 0.0), PSKV_EINVAL);
    ck_assert_err(pskv_ring_add(r, 1, -1.0), PSKV_EINVAL);
    ck_assert_err(pskv_ring_add(r, 1, NAN), PSKV_EINVAL);
    ck_assert_err(pskv_ring_add(r, 1, 1001.0), PSKV_EINVAL);
    ck_assert_ok(pskv_ring_add(r, 1, 0.01)); /* at least one point */
    ck_assert_err(pskv_ring_add(r, 1, 1.0), PSKV_EEXIST);
    ck_assert_err(pskv_ring_remove(r, 2), PSKV_ENOTFOUND);
    ck_assert_err(pskv_ring_route(r, NULL, 1, &node), PSKV_EINVAL);
    ck_assert_err(pskv_ring_route(r, &k, 1, NULL), PSKV_EINVAL);
    ck_assert_ok(pskv_ring_route(r, &k, 1, &node));
    ck_assert_uint_eq(node, 1);
    ck_assert_ok(pskv_ring_remove(r, 1));
    ck_assert_err(pskv_ring_route(r, &k, 1, &node), PSKV_ENOTFOUND);
    ck_assert_err(pskv_ring_add(NULL, 1, 1.0), PSKV_EINVAL);
    ck_assert_err(pskv_ring_remove(NULL, 1), PSKV_EINVAL);
    pskv_ring_destroy(r);
    pskv_ring_destroy(NULL);
    ck_assert_ok(pskv_ring_create(PSKV_RING_MAX_POINTS, 0, &r));
    ck_assert_err(pskv_ring_add(r, 1, 2.0), PSKV_ERANGE);
    ck_assert_uint_eq(pskv_ring_nodes(r), 0);
    pskv_ring_destroy(r);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("ring");
    TCase *tc = tcase_create("ring");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, add_moves_ideal_share_only_to_new_node);
    tcase_add_test(tc, remove_moves_only_that_nodes_keys);
    tcase_add_test(tc, default_vnodes_balance);
    tcase_add_test(tc, weights_scale_share);
    tcase_add_test(tc, deterministic_by_seed);
    tcase_add_test(tc, routes_are_those_of_release_0_4);
    tcase_add_test(tc, errors);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
