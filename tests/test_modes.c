/* Update modes: update=sync accumulates pushes and pskv_step applies each
 * row once, equal to a reference that sums every worker's gradients and
 * pushes them once per step; accumulators spill, survive checkpoints and
 * a crash, and follow a reshard.
 * SPDX-License-Identifier: BSD-2-Clause */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "pskv_internal.h"
#include "test_common.h"

enum { DIM = 4, KEYS = 64, WORKERS = 3, BATCH = 40 };

/* The reference: per step, every worker's batch summed per key in the
 * order pskv sums them (a worker's repeats first, then worker after
 * worker), pushed once into an async table. */
typedef struct reference {
    pskv_table *t;
    float acc[KEYS][DIM];
    uint8_t pushed[KEYS];
} reference;

static void ref_worker(reference *r, const uint64_t *keys, uint32_t n, const float *g)
{
    float sum[KEYS][DIM];
    uint8_t seen[KEYS] = {0};
    for (uint32_t i = 0; i < n; i++) {
        uint64_t k = keys[i];
        for (int j = 0; j < DIM; j++)
            sum[k][j] = seen[k] ? sum[k][j] + g[i * DIM + j] : g[i * DIM + j];
        seen[k] = 1;
    }
    for (int k = 0; k < KEYS; k++)
        if (seen[k]) {
            for (int j = 0; j < DIM; j++)
                r->acc[k][j] = r->pushed[k] ? r->acc[k][j] + sum[k][j] : sum[k][j];
            r->pushed[k] = 1;
        }
}

static void ref_step(reference *r)
{
    uint64_t keys[KEYS];
    float g[KEYS * DIM];
    uint32_t m = 0;
    for (int k = 0; k < KEYS; k++)
        if (r->pushed[k]) {
            keys[m] = (uint64_t)k;
            memcpy(g + m * DIM, r->acc[k], sizeof r->acc[k]);
            m++;
        }
    if (m > 0)
        ck_assert_ok(pskv_push(r->t, keys, m, g));
    memset(r->pushed, 0, sizeof r->pushed);
}

static void batch(test_rng *rng, uint64_t *keys, float *g, uint32_t *n)
{
    *n = 1 + rng_below(rng, BATCH);
    for (uint32_t i = 0; i < *n; i++) {
        keys[i] = rng_below(rng, 4) == 0 ? rng_below(rng, 4) : rng_below(rng, KEYS);
        for (int j = 0; j < DIM; j++)
            g[i * DIM + j] = rng_float(rng) * 0.5f;
    }
}

/* Every key's weights in t and r equal, bit for bit. */
static void same_weights(pskv_table *t, pskv_table *r)
{
    uint64_t keys[KEYS];
    float a[KEYS * DIM], b[KEYS * DIM];
    for (int k = 0; k < KEYS; k++)
        keys[k] = (uint64_t)k;
    ck_assert_ok(pskv_get(t, keys, KEYS, a, NULL));
    ck_assert_ok(pskv_get(r, keys, KEYS, b, NULL));
    for (int i = 0; i < KEYS * DIM; i++)
        ck_assert_msg(memcmp(&a[i], &b[i], sizeof a[i]) == 0, "key %d: %a, reference %a",
                      i / DIM, a[i], b[i]);
}

static const char *const SYNC = "dim=4 optimizer=adam lr=0.05 init=uniform:-0.1:0.1 seed=5 "
                                "update=sync shards=8";
static const char *const ASYNC = "dim=4 optimizer=adam lr=0.05 init=uniform:-0.1:0.1 seed=5 "
                                 "shards=8";

/* Several steps of W workers: pulls see the last step's weights until
 * pskv_step; after it, the weights equal the reference's. */
START_TEST(sync_equals_one_step_of_the_sum)
{
    pskv_store *s;
    pskv_table *t;
    reference r = {0};
    ck_assert_ok(pskv_open(NULL, NULL, &s));
    ck_assert_ok(pskv_table_open(s, "sync", SYNC, &t));
    ck_assert_ok(pskv_table_open(s, "ref", ASYNC, &r.t));
    test_rng rng = {11};
    uint64_t keys[BATCH];
    float g[BATCH * DIM];
    uint32_t n;
    uint64_t stepped = 0;
    for (int step = 0; step < 30; step++) {
        for (int w = 0; w < WORKERS; w++) {
            batch(&rng, keys, g, &n);
            ck_assert_ok(pskv_push(t, keys, n, g));
            ref_worker(&r, keys, n, g);
        }
        /* before the step: the weights of the last step (rows created by
         * the pushes have their initial values, as in the reference) */
        uint64_t all[KEYS];
        for (int k = 0; k < KEYS; k++)
            all[k] = (uint64_t)k;
        float before[KEYS * DIM];
        ck_assert_ok(pskv_pull(r.t, all, KEYS, before)); /* every row, created alike */
        ck_assert_ok(pskv_pull(t, all, KEYS, before));
        same_weights(t, r.t);
        for (int k = 0; k < KEYS; k++)
            stepped += r.pushed[k];
        ck_assert_ok(pskv_step(t));
        ref_step(&r);
        same_weights(t, r.t);
        ck_assert_ok(pskv_step(t)); /* nothing pushed since: changes nothing */
        same_weights(t, r.t);
    }
    pskv_table_stats st;
    ck_assert_ok(pskv_table_stats_get(t, &st));
    ck_assert_uint_eq(st.stepped, stepped);
    /* A row erased while it held pushes: the step skips it. */
    keys[0] = 7;
    ck_assert_ok(pskv_push(t, keys, 1, g));
    ck_assert_ok(pskv_erase(t, keys, 1));
    ck_assert_ok(pskv_step(t));
    uint8_t found;
    float v[DIM];
    ck_assert_ok(pskv_get(t, keys, 1, v, &found));
    ck_assert(!found);
    pskv_close(s);
}
END_TEST

START_TEST(sync_options_and_errors)
{
    pskv_store *s;
    pskv_table *t, *a, *x;
    ck_assert_ok(pskv_open(NULL, NULL, &s));
    ck_assert_ok(pskv_table_open(s, "sync", SYNC, &t));
    ck_assert_ok(pskv_table_open(s, "async", ASYNC, &a));
    ck_assert_err(pskv_step(a), PSKV_EINVAL);
    ck_assert_err(pskv_step(NULL), PSKV_EINVAL);
    ck_assert_err(pskv_table_open(s, "sync", "update=async", &x), PSKV_ESCHEMA);
    ck_assert_ok(pskv_table_open(s, "sync", ASYNC, &x)); /* keys not named: the schema's */
    ck_assert_ptr_eq(x, t);
    ck_assert_err(pskv_table_open(s, "async", SYNC, &x), PSKV_ESCHEMA);
    ck_assert_err(pskv_table_open(s, "n", "dim=4 optimizer=none update=sync", &x), PSKV_EINVAL);
    ck_assert_err(pskv_table_open(s, "n", "dim=4 update=later", &x), PSKV_EINVAL);
    /* A memory-only store under a budget drops evicted rows: no sync tables. */
    pskv_store *cache;
    ck_assert_ok(pskv_open(NULL, "memory_budget=1M", &cache));
    ck_assert_err(pskv_table_open(cache, "n", SYNC, &x), PSKV_EINVAL);
    ck_assert_ok(pskv_table_open(cache, "n", ASYNC, &x));
    pskv_close(cache);
    pskv_table_info info;
    ck_assert_ok(pskv_table_info_get(t, &info));
    ck_assert_uint_eq(info.options.update, PSKV_UPDATE_SYNC);
    char buf[512];
    ck_assert_int_gt(pskv_table_options_format(&info.options, buf, sizeof buf), 0);
    ck_assert_ptr_nonnull(strstr(buf, " update=sync"));
    ck_assert_ok(pskv_table_info_get(a, &info));
    ck_assert_int_gt(pskv_table_options_format(&info.options, buf, sizeof buf), 0);
    ck_assert_ptr_null(strstr(buf, "update"));
    /* A gradient whose sum with the accumulator overflows is refused for
     * that row only; a step that would overflow drops the gradient. */
    uint64_t k[2] = {1, 2};
    float g[8] = {3e38f, 0, 0, 0, 1, 1, 1, 1};
    ck_assert_ok(pskv_push(t, k, 2, g));
    ck_assert_err(pskv_push(t, k, 2, g), PSKV_ERANGE); /* key 1: 6e38 */
    float before[8], after[8];
    ck_assert_ok(pskv_get(t, k, 2, before, NULL));
    /* Adam's second moment of 3e38 overflows: key 1 keeps its values and
     * its gradient is dropped; key 2 steps. */
    ck_assert_err(pskv_step(t), PSKV_ERANGE);
    ck_assert_ok(pskv_get(t, k, 2, after, NULL));
    ck_assert(memcmp(before, after, 4 * sizeof *after) == 0);
    ck_assert(memcmp(before + 4, after + 4, 4 * sizeof *after) != 0);
    ck_assert_ok(pskv_step(t)); /* nothing left */
    ck_assert_ok(pskv_get(t, k, 2, before, NULL));
    ck_assert(memcmp(before, after, sizeof after) == 0);
    pskv_close(s);
}
END_TEST

/* Accumulators are row bytes: they spill under a small budget, a
 * checkpoint keeps them, a crash after it loses only later pushes, and a
 * clean reopen finds them again (the first step reads LMDB). A reshard
 * moves the pending lists. */
static void durable_round(bool crash)
{
    char dir[256];
    test_mkdtemp(dir, "modes");
    pskv_store *s, *m;
    pskv_table *t;
    reference r = {0};
    ck_assert_ok(pskv_open(dir, "memory_budget=2K", &s)); /* ~24 rows of 84 bytes */
    ck_assert_ok(pskv_table_open(s, "sync", SYNC, &t));
    ck_assert_ok(pskv_open(NULL, NULL, &m));
    ck_assert_ok(pskv_table_open(m, "ref", ASYNC, &r.t));
    test_rng rng = {crash ? 21u : 22u};
    uint64_t keys[BATCH];
    float g[BATCH * DIM];
    uint32_t n;
    for (int step = 0; step < 6; step++) {
        for (int w = 0; w < WORKERS; w++) {
            batch(&rng, keys, g, &n);
            ck_assert_ok(pskv_push(t, keys, n, g));
            ref_worker(&r, keys, n, g);
        }
        if (step == 2)
            ck_assert_ok(pskv_table_reshard(t, 3));
        if (step < 5) {
            ck_assert_ok(pskv_step(t));
            ref_step(&r);
        }
    }
    /* Step 5's pushes are accumulated, not stepped: checkpoint them. */
    ck_assert_ok(pskv_checkpoint(s));
    if (crash) {
        batch(&rng, keys, g, &n); /* acknowledged after the checkpoint: lost */
        ck_assert_ok(pskv_push(t, keys, n, g));
        pskv__close_abandon(s);
    } else {
        pskv_close(s);
    }
    ck_assert_ok(pskv_open(dir, "memory_budget=2K", &s));
    ck_assert_ok(pskv_table_open(s, "sync", NULL, &t));
    ck_assert_ok(pskv_step(t));
    ref_step(&r);
    same_weights(t, r.t);
    ck_assert_ok(pskv_step(t));
    same_weights(t, r.t);
    pskv_table_stats st;
    ck_assert_ok(pskv_table_stats_get(t, &st));
    ck_assert_uint_gt(st.spill_writes + st.rows_cold, 0);
    pskv_close(s);
    pskv_close(m);
    test_remove_dir(dir);
}

START_TEST(sync_accumulators_are_durable)
{
    durable_round(false);
    durable_round(true);
}
END_TEST

/* Pushes beside steps (TSan in CI): each push lands in one step, once.
 * With SGD the weights after all steps are init - lr x (every gradient
 * pushed), however the pushes were grouped into steps. */
enum { PUSHERS = 2, ROUNDS = 300 };
static pskv_table *conc_table;
static atomic_int pushers_left;
static double pushed_sum[PUSHERS][KEYS][DIM];

static void *pusher(void *arg)
{
    int id = (int)(intptr_t)arg;
    test_rng rng = {100u + (uint64_t)id};
    uint64_t keys[BATCH];
    float g[BATCH * DIM];
    uint32_t n;
    for (int r = 0; r < ROUNDS; r++) {
        batch(&rng, keys, g, &n);
        ck_assert_ok(pskv_push(conc_table, keys, n, g));
        for (uint32_t i = 0; i < n; i++)
            for (int j = 0; j < DIM; j++)
                pushed_sum[id][keys[i]][j] += g[i * DIM + j];
    }
    atomic_fetch_sub(&pushers_left, 1);
    return NULL;
}

static void *stepper(void *arg)
{
    (void)arg;
    while (atomic_load(&pushers_left) > 0)
        ck_assert_ok(pskv_step(conc_table));
    return NULL;
}

START_TEST(sync_pushes_beside_steps)
{
    pskv_store *s;
    ck_assert_ok(pskv_open(NULL, NULL, &s));
    ck_assert_ok(pskv_table_open(s, "sync", "dim=4 optimizer=sgd lr=0.5 update=sync shards=4",
                                 &conc_table));
    memset(pushed_sum, 0, sizeof pushed_sum);
    atomic_store(&pushers_left, PUSHERS);
    pthread_t th[PUSHERS + 1];
    for (int i = 0; i < PUSHERS; i++)
        ck_assert_int_eq(pthread_create(&th[i], NULL, pusher, (void *)(intptr_t)i), 0);
    ck_assert_int_eq(pthread_create(&th[PUSHERS], NULL, stepper, NULL), 0);
    for (int i = 0; i <= PUSHERS; i++)
        pthread_join(th[i], NULL);
    ck_assert_ok(pskv_step(conc_table));
    uint64_t keys[KEYS];
    float w[KEYS * DIM];
    for (int k = 0; k < KEYS; k++)
        keys[k] = (uint64_t)k;
    ck_assert_ok(pskv_get(conc_table, keys, KEYS, w, NULL));
    for (int k = 0; k < KEYS; k++)
        for (int j = 0; j < DIM; j++) {
            double want = -0.5 * (pushed_sum[0][k][j] + pushed_sum[1][k][j]);
            ck_assert_msg(fabs(w[k * DIM + j] - want) <= 1e-3 * (1 + fabs(want)),
                          "key %d: %g, want %g", k, (double)w[k * DIM + j], want);
        }
    ck_assert_ok(pskv_step(conc_table)); /* every accumulator was applied */
    float again[KEYS * DIM];
    ck_assert_ok(pskv_get(conc_table, keys, KEYS, again, NULL));
    ck_assert(memcmp(w, again, sizeof w) == 0);
    pskv_close(s);
}
END_TEST

/* staleness=S: a gradient more than S steps older than the newest step
 * applied to its row is dropped, per row; the step is part of the row
 * (kept across a reopen). */
START_TEST(staleness_drops_old_gradients)
{
    char dir[256];
    test_mkdtemp(dir, "stale");
    pskv_store *s;
    pskv_table *t, *x;
    const char *cfg = "dim=2 optimizer=sgd lr=1 staleness=2 shards=2";
    ck_assert_ok(pskv_open(dir, NULL, &s));
    ck_assert_ok(pskv_table_open(s, "async", "dim=2", &x));
    ck_assert_uint_eq(s->format, 5); /* no format-6 table yet */
    pskv_close(s);
    ck_assert_ok(pskv_open(dir, NULL, &s));
    ck_assert_uint_eq(s->format, 5);
    ck_assert_ok(pskv_table_open(s, "t", cfg, &t));
    ck_assert_uint_eq(s->format, 6);
    uint64_t a = 1, ab[2] = {1, 2};
    float g[4] = {1, 1, 1, 1}, w[4];
    ck_assert_ok(pskv_push_at(t, &a, 1, g, 10)); /* w = -1, step 10 */
    ck_assert_ok(pskv_push_at(t, &a, 1, g, 8));  /* 2 behind: applied, w = -2 */
    ck_assert_ok(pskv_push_at(t, &a, 1, g, 7));  /* 3 behind: dropped */
    ck_assert_ok(pskv_get(t, &a, 1, w, NULL));
    ck_assert(w[0] == -2.0f && w[1] == -2.0f);
    ck_assert_ok(pskv_push(t, &a, 1, g)); /* untagged: applied, step kept */
    ck_assert_ok(pskv_push_at(t, &a, 1, g, 8)); /* still 2 behind 10: applied, w = -4 */
    pskv_table_stats st;
    ck_assert_ok(pskv_table_stats_get(t, &st));
    ck_assert_uint_eq(st.stale_dropped, 1);
    /* Per row: key 1 (step 10) drops step 7, key 2 (new) takes it. */
    ck_assert_ok(pskv_push_at(t, ab, 2, g, 7));
    ck_assert_ok(pskv_get(t, ab, 2, w, NULL));
    ck_assert(w[0] == -4.0f && w[2] == -1.0f);
    ck_assert_ok(pskv_push_at(t, &a, 1, g, 30)); /* newer: w = -5, step 30 */
    ck_assert_ok(pskv_checkpoint(s));
    pskv_close(s);
    ck_assert_ok(pskv_open(dir, NULL, &s));
    ck_assert_uint_eq(s->format, 6);
    ck_assert_ok(pskv_table_open(s, "t", NULL, &t));
    ck_assert_ok(pskv_push_at(t, &a, 1, g, 27)); /* 3 behind the persisted 30: dropped */
    ck_assert_ok(pskv_get(t, &a, 1, w, NULL));
    ck_assert(w[0] == -5.0f);
    ck_assert_ok(pskv_table_stats_get(t, &st));
    ck_assert_uint_eq(st.stale_dropped, 1); /* counters start at the open */
    /* Options. */
    pskv_table_info info;
    ck_assert_ok(pskv_table_info_get(t, &info));
    ck_assert_uint_eq(info.options.staleness_on, 1);
    ck_assert_uint_eq(info.options.staleness, 2);
    /* A zero-filled struct (a 0.3 program) means no bound. */
    pskv_table_options zo;
    memset(&zo, 0, sizeof zo);
    zo.dim = 2;
    zo.shards = 1;
    zo.beta1 = 0.9f;
    zo.beta2 = 0.999f;
    zo.lr = zo.eps = zo.initial_accumulator = -1.0f;
    zo.lr_power = -0.5f;
    ck_assert_ok(pskv_table_open_opts(s, "zeroed", &zo, &x));
    ck_assert_ok(pskv_table_info_get(x, &info));
    ck_assert_uint_eq(info.options.staleness_on, 0);
    zo.staleness = 3; /* a bound without staleness_on */
    ck_assert_err(pskv_table_open_opts(s, "zeroed2", &zo, &x), PSKV_EINVAL);
    ck_assert_ok(pskv_table_info_get(t, &info));
    char buf[512];
    ck_assert_int_gt(pskv_table_options_format(&info.options, buf, sizeof buf), 0);
    ck_assert_ptr_nonnull(strstr(buf, " staleness=2"));
    ck_assert_err(pskv_table_open(s, "t", "staleness=3", &x), PSKV_ESCHEMA);
    ck_assert_err(pskv_table_open(s, "u", "dim=2 staleness=-1", &x), PSKV_EINVAL);
    ck_assert_err(pskv_table_open(s, "u", "dim=2 staleness=1 update=sync", &x), PSKV_EINVAL);
    ck_assert_ok(pskv_table_open(s, "sync", SYNC, &x));
    ck_assert_err(pskv_push_at(x, &a, 1, g, 1), PSKV_EINVAL);
    /* Without a bound, push_at is push. */
    ck_assert_ok(pskv_table_open(s, "plain", "dim=2 optimizer=sgd lr=1", &x));
    ck_assert_ok(pskv_push_at(x, &a, 1, g, 100));
    ck_assert_ok(pskv_push_at(x, &a, 1, g, 1));
    ck_assert_ok(pskv_get(x, &a, 1, w, NULL));
    ck_assert(w[0] == -2.0f);
    pskv_close(s);
    test_remove_dir(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("modes");
    TCase *tc = tcase_create("modes");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, sync_equals_one_step_of_the_sum);
    tcase_add_test(tc, sync_options_and_errors);
    tcase_add_test(tc, sync_accumulators_are_durable);
    tcase_add_test(tc, sync_pushes_beside_steps);
    tcase_add_test(tc, staleness_drops_old_gradients);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
