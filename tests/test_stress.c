/* Multithreaded stress: pushers, pullers, private put/erase owners, a
 * resharder and an iterator run at once on one table. SGD with lr=1 and
 * small integer gradients makes every sum exact, so the final weights must
 * equal minus the sum of what all threads pushed, whatever the interleaving.
 *   test_stress [--rounds N] */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "pskv_internal.h"
#include "test_common.h"

#define THREADS 4
#define SHARED_KEYS 1000
#define PRIVATE_KEYS 500
#define DIM 4
#define BATCH 256

static unsigned rounds = 25;
static pskv_table *table;
static atomic_int stop_background;
/* Worker iterations done, and how many the resharder lets pass between two
 * reshards: it paces itself by the workers' progress as well as by the
 * clock, so a slower build (ThreadSanitizer runs the workers 100x slower,
 * the sleeps not) reshards as often per worker operation, not 30x more. */
static atomic_uint worker_progress;
static unsigned reshard_every;

typedef struct worker {
    pthread_t thread;
    unsigned id;
    int64_t pushed[SHARED_KEYS][DIM];
    float priv[PRIVATE_KEYS][DIM];
    uint8_t priv_live[PRIVATE_KEYS];
    int error;
} worker;

/* Push small integer gradients to n shared keys (half of the time among
 * the first `hot` keys) and remember their sums. */
static int push_shared(worker *w, test_rng *r, uint32_t n, uint32_t hot)
{
    uint64_t keys[BATCH];
    float vals[BATCH * DIM];
    for (uint32_t i = 0; i < n; i++) {
        uint32_t k = rng_below(r, rng_below(r, 2) ? hot : SHARED_KEYS);
        keys[i] = k;
        for (int j = 0; j < DIM; j++) {
            int g = (int)rng_below(r, 5) - 2;
            vals[i * DIM + j] = (float)g;
            w->pushed[k][j] += g;
        }
    }
    return pskv_push(table, keys, n, vals);
}

static uint64_t private_key(unsigned id, uint32_t i) { return ((uint64_t)(id + 1) << 40) | i; }

static void *worker_main(void *arg)
{
    worker *w = arg;
    test_rng r = {w->id * 7919u + 1};
    uint64_t keys[BATCH];
    float vals[BATCH * DIM], out[BATCH * DIM];
    uint8_t found[BATCH];
    for (unsigned it = 0; it < rounds * 400 && !w->error; it++) {
        atomic_fetch_add(&worker_progress, 1);
        uint32_t n = 1 + rng_below(&r, BATCH);
        switch (rng_below(&r, 4)) {
        case 0:
        case 1: /* push shared keys, duplicates included */
            w->error = push_shared(w, &r, n, 20);
            break;
        case 2: /* pull shared keys */
            for (uint32_t i = 0; i < n; i++)
                keys[i] = rng_below(&r, SHARED_KEYS);
            w->error = pskv_pull(table, keys, n, out);
            break;
        default: { /* private keys: put, erase or check */
            uint32_t c = rng_below(&r, 3);
            for (uint32_t i = 0; i < n; i++)
                keys[i] = private_key(w->id, (uint32_t)i * 7 % PRIVATE_KEYS);
            n = n < PRIVATE_KEYS / 7 ? n : PRIVATE_KEYS / 7;
            if (c == 0) {
                for (uint32_t i = 0; i < n * DIM; i++)
                    vals[i] = (float)rng_below(&r, 1000);
                w->error = pskv_put(table, keys, n, vals);
                for (uint32_t i = 0; i < n; i++) {
                    memcpy(w->priv[i * 7 % PRIVATE_KEYS], vals + i * DIM, sizeof(float) * DIM);
                    w->priv_live[i * 7 % PRIVATE_KEYS] = 1;
                }
            } else if (c == 1) {
                n = 1 + n / 4;
                w->error = pskv_erase(table, keys, n);
                for (uint32_t i = 0; i < n; i++)
                    w->priv_live[i * 7 % PRIVATE_KEYS] = 0;
            } else {
                w->error = pskv_get(table, keys, n, out, found);
                for (uint32_t i = 0; i < n && !w->error; i++) {
                    uint32_t p = i * 7 % PRIVATE_KEYS;
                    if (found[i] != w->priv_live[p] ||
                        (found[i] && memcmp(out + i * DIM, w->priv[p], sizeof(float) * DIM) != 0))
                        w->error = -1000;
                }
            }
            break;
        }
        }
    }
    return NULL;
}

static void *resharder_main(void *arg)
{
    (void)arg;
    test_rng r = {99};
    unsigned last = 0;
    while (!atomic_load(&stop_background)) {
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
        unsigned now = atomic_load(&worker_progress);
        if (now - last < reshard_every)
            continue;
        last = now;
        int rc = pskv_table_reshard(table, 1 + rng_below(&r, 40));
        if (rc != 0)
            return (void *)(intptr_t)rc;
    }
    return NULL;
}

static void *iterator_main(void *arg)
{
    (void)arg;
    float row[DIM];
    uint64_t key;
    while (!atomic_load(&stop_background)) {
        pskv_iter *it;
        if (pskv_iter_create(table, &it) != 0)
            return (void *)1;
        int rc;
        while ((rc = pskv_iter_next(it, &key, row, NULL)) == 1)
            ;
        pskv_iter_destroy(it);
        if (rc != 0 && rc != PSKV_ESTALE) /* a reshard meanwhile */
            return (void *)2;
        pskv_table_stats st;
        pskv_table_stats_get(table, &st);
    }
    return NULL;
}

/* Durable stores: checkpoints in a loop beside everything else. */
static pskv_store *checkpoint_store;
static atomic_uint checkpoints_done;

static void *checkpointer_main(void *arg)
{
    (void)arg;
    while (!atomic_load(&stop_background)) {
        int rc = pskv_checkpoint(checkpoint_store);
        if (rc != 0)
            return (void *)(intptr_t)rc;
        atomic_fetch_add(&checkpoints_done, 1);
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

/* The shared keys: w = -(sum of every thread's gradients). */
static void check_sums(const worker *w)
{
    uint64_t keys[SHARED_KEYS];
    static float out[SHARED_KEYS * DIM];
    uint8_t found[SHARED_KEYS];
    for (uint32_t k = 0; k < SHARED_KEYS; k++)
        keys[k] = k;
    ck_assert_ok(pskv_get(table, keys, SHARED_KEYS, out, found));
    for (uint32_t k = 0; k < SHARED_KEYS; k++) {
        for (int j = 0; j < DIM; j++) {
            int64_t total = 0;
            for (unsigned i = 0; i < THREADS; i++)
                total += w[i].pushed[k][j];
            if (found[k])
                ck_assert_msg(out[k * DIM + j] == (float)-total, "key %u[%d] %f vs %lld", k, j,
                              (double)out[k * DIM + j], (long long)-total);
            else
                ck_assert_int_eq(total, 0);
        }
    }
}

/* Run the workers (with a resharder, an iterator and, for durable stores,
 * a checkpointer beside them), then check the shared keys. The resharder
 * waits for `every` worker iterations between reshards (besides 2 ms). */
static void run_and_check_sums(worker *w, void *(*work)(void *), unsigned every)
{
    reshard_every = every;
    memset(w, 0, THREADS * sizeof *w);
    atomic_store(&stop_background, 0);
    atomic_store(&worker_progress, 0);
    pthread_t resharder, iterator, checkpointer;
    ck_assert_int_eq(pthread_create(&resharder, NULL, resharder_main, NULL), 0);
    ck_assert_int_eq(pthread_create(&iterator, NULL, iterator_main, NULL), 0);
    if (checkpoint_store != NULL)
        ck_assert_int_eq(pthread_create(&checkpointer, NULL, checkpointer_main, NULL), 0);
    for (unsigned i = 0; i < THREADS; i++) {
        w[i].id = i;
        ck_assert_int_eq(pthread_create(&w[i].thread, NULL, work, &w[i]), 0);
    }
    for (unsigned i = 0; i < THREADS; i++)
        pthread_join(w[i].thread, NULL);
    atomic_store(&stop_background, 1);
    void *res_r, *res_i, *res_c = NULL;
    pthread_join(resharder, &res_r);
    pthread_join(iterator, &res_i);
    if (checkpoint_store != NULL)
        pthread_join(checkpointer, &res_c);
    ck_assert_ptr_null(res_r);
    ck_assert_ptr_null(res_i);
    ck_assert_msg(res_c == NULL, "checkpoint returned %d", (int)(intptr_t)res_c);
    for (unsigned i = 0; i < THREADS; i++)
        ck_assert_msg(w[i].error == 0, "worker %u error %d", i, w[i].error);
    check_sums(w);
}

START_TEST(concurrent_ops_sum_up)
{
    pskv_store *s;
    table = open_table(&s, "dim=4 optimizer=sgd lr=1 init=zeros shards=8");
    static worker w[THREADS];
    run_and_check_sums(w, worker_main, 200);
    /* Private keys: exactly what their owner left. */
    for (unsigned i = 0; i < THREADS; i++)
        for (uint32_t p = 0; p < PRIVATE_KEYS; p++) {
            uint64_t k = private_key(i, p);
            float row[DIM];
            uint8_t f;
            ck_assert_ok(pskv_get(table, &k, 1, row, &f));
            ck_assert_int_eq(f, w[i].priv_live[p]);
            if (f)
                ck_assert(memcmp(row, w[i].priv[p], sizeof row) == 0);
        }
    pskv_close(s);
}
END_TEST

/* Cache stores under concurrency: creations, erases and evictions from
 * many threads keep the resident-bytes account exact. */
static pskv_store *budget_store;
static unsigned budget_iters;

static void *budget_worker(void *arg)
{
    unsigned id = (unsigned)(uintptr_t)arg;
    test_rng r = {id + 100};
    uint64_t keys[BATCH];
    float vals[BATCH * DIM];
    memset(vals, 0, sizeof vals);
    for (unsigned it = 0; it < budget_iters; it++) {
        uint32_t n = 1 + rng_below(&r, BATCH);
        for (uint32_t i = 0; i < n; i++)
            keys[i] = rng_below(&r, 50000);
        int rc;
        switch (rng_below(&r, 4)) {
        case 0: rc = pskv_put(table, keys, n, vals); break;
        case 1: rc = pskv_erase(table, keys, n / 4 + 1); break;
        case 2: rc = pskv_push(table, keys, n, vals); break;
        default: rc = pskv_pull(table, keys, n, vals); break;
        }
        if (rc != 0)
            return (void *)(intptr_t)rc;
    }
    return NULL;
}

static void budget_run(bool spill)
{
    /* dim 4 adagrad: 32 bytes and the version, plus 8 bytes of admission
     * in a memory-only store */
    enum { BUDGET_ROWS = 3000 };
    const unsigned ROW = DIM * 4 * 2 + 8 + (spill ? 0 : 8);
    char cfg[96], dir[64] = "";
    snprintf(cfg, sizeof cfg, "memory_budget=%u%s", BUDGET_ROWS * ROW,
             spill ? " durability=none" : "");
    if (spill)
        test_mkdtemp(dir, "stress");
    budget_iters = rounds * (spill ? 8 : 200);
    ck_assert_ok(pskv_open(spill ? dir : NULL, cfg, &budget_store));
    ck_assert_ok(pskv_table_open(budget_store, "c", "dim=4 shards=8", &table));
    pthread_t th[THREADS];
    for (unsigned i = 0; i < THREADS; i++)
        ck_assert_int_eq(pthread_create(&th[i], NULL, budget_worker, (void *)(uintptr_t)i), 0);
    for (unsigned i = 0; i < THREADS; i++) {
        void *res;
        pthread_join(th[i], &res);
        ck_assert_ptr_null(res);
    }
    uint64_t key = 1;
    float row[DIM];
    ck_assert_ok(pskv_pull(table, &key, 1, row)); /* settles any overshoot */
    pskv_store_stats st;
    pskv_table_stats ts;
    ck_assert_ok(pskv_store_stats_get(budget_store, &st));
    ck_assert_ok(pskv_table_stats_get(table, &ts));
    ck_assert_uint_eq(st.resident_bytes, (ts.rows - ts.rows_spilled) * ROW);
    ck_assert_uint_eq(st.rows, ts.rows);
    ck_assert_uint_le(st.resident_bytes, BUDGET_ROWS * ROW);
    ck_assert_uint_gt(st.rows_evicted, 0);
    pskv_close(budget_store);
    if (spill)
        rmdir(dir);
}

START_TEST(budget_under_concurrency) { budget_run(false); }
END_TEST

/* Spilling store: the same mix plus exact sums on shared keys, with most
 * rows moving between DRAM and the spill file while threads use them. */
static void *spill_worker(void *arg)
{
    worker *w = arg;
    test_rng r = {w->id * 31u + 5};
    uint64_t keys[BATCH];
    float out[BATCH * DIM];
    for (unsigned it = 0; it < rounds * 20 && !w->error; it++) {
        atomic_fetch_add(&worker_progress, 1);
        uint32_t n = 1 + rng_below(&r, BATCH);
        if (rng_below(&r, 2)) {
            w->error = push_shared(w, &r, n, SHARED_KEYS);
        } else {
            for (uint32_t i = 0; i < n; i++)
                keys[i] = rng_below(&r, SHARED_KEYS);
            w->error = rng_below(&r, 2) ? pskv_pull(table, keys, n, out)
                                        : pskv_get(table, keys, n, out, NULL);
        }
    }
    return NULL;
}

START_TEST(spill_under_concurrency)
{
    char dir[64];
    test_mkdtemp(dir, "stress");
    pskv_store *s;
    /* sgd dim 4: 16-byte rows; room for 100 of 1000 shared keys */
    ck_assert_ok(pskv_open(dir, "durability=none memory_budget=1600", &s));
    ck_assert_ok(pskv_table_open(s, "t", "dim=4 optimizer=sgd lr=1 init=zeros shards=8", &table));
    static worker w[THREADS];
    run_and_check_sums(w, spill_worker, 4);
    pskv_table_stats st;
    ck_assert_ok(pskv_table_stats_get(table, &st));
    ck_assert_uint_gt(st.spill_reads, 0);
    ck_assert_uint_gt(st.spill_writes, 0);
    ck_assert_uint_gt(pskv__spill_rewrites(table->spill), 0); /* holes were refilled */
    pskv_close(s);
    budget_run(true);
    rmdir(dir);
}
END_TEST

/* A durable spilling store with a checkpointer thread: the sums hold
 * during the run and again after a reopen, where the rows come back from
 * LMDB. */
START_TEST(durable_under_concurrency)
{
    char dir[64];
    test_mkdtemp(dir, "stress");
    pskv_store *s;
    ck_assert_ok(pskv_open(dir, "memory_budget=1600", &s));
    ck_assert_ok(pskv_table_open(s, "t", "dim=4 optimizer=sgd lr=1 init=zeros shards=8", &table));
    static worker w[THREADS];
    checkpoint_store = s;
    atomic_store(&checkpoints_done, 0);
    run_and_check_sums(w, spill_worker, 4);
    checkpoint_store = NULL;
    ck_assert_uint_gt(atomic_load(&checkpoints_done), 0);
    pskv_close(s); /* the final checkpoint */
    ck_assert_ok(pskv_open(dir, "memory_budget=1600", &s));
    ck_assert_ok(pskv_table_open(s, "t", NULL, &table));
    check_sums(w);
    pskv_close(s);
    test_remove_dir(dir);
}
END_TEST

/* Whole rows only: writers put and push rows whose values are all equal
 * (sgd, uniform gradients), readers pull and get batches of the same keys
 * from several threads at once and check that every row they see is
 * uniform: a row copied while a writer changed it would show two values.
 * With a budget, rows also move to the spill file and back meanwhile. */
#define TORN_KEYS 512
#define TORN_DIM 64
static atomic_int torn_rows, torn_errors;

static void *torn_writer(void *arg)
{
    test_rng r = {(uint32_t)(uintptr_t)arg * 131u + 7};
    static _Thread_local uint64_t keys[64];
    static _Thread_local float vals[64 * TORN_DIM];
    for (unsigned it = 0; it < rounds * 4; it++) {
        uint32_t n = 1 + rng_below(&r, 64);
        for (uint32_t i = 0; i < n; i++) {
            keys[i] = rng_below(&r, TORN_KEYS);
            float v = (float)rng_below(&r, 1000);
            for (int j = 0; j < TORN_DIM; j++)
                vals[i * TORN_DIM + j] = v;
        }
        int rc = rng_below(&r, 2) ? pskv_put(table, keys, n, vals)
                                  : pskv_push(table, keys, n, vals);
        if (rc != 0)
            atomic_fetch_add(&torn_errors, 1);
    }
    return NULL;
}

static void *torn_reader(void *arg)
{
    test_rng r = {(uint32_t)(uintptr_t)arg * 977u + 3};
    static _Thread_local uint64_t keys[TORN_KEYS];
    static _Thread_local float out[TORN_KEYS * TORN_DIM];
    static _Thread_local uint8_t found[TORN_KEYS];
    for (unsigned it = 0; it < rounds * 4; it++) {
        uint32_t n = 1 + rng_below(&r, TORN_KEYS);
        for (uint32_t i = 0; i < n; i++)
            keys[i] = rng_below(&r, TORN_KEYS);
        bool get = rng_below(&r, 2);
        int rc = get ? pskv_get(table, keys, n, out, found) : pskv_pull(table, keys, n, out);
        if (rc != 0)
            atomic_fetch_add(&torn_errors, 1);
        for (uint32_t i = 0; i < n; i++)
            for (int j = 1; j < TORN_DIM; j++)
                if (out[i * TORN_DIM + j] != out[i * TORN_DIM]) {
                    atomic_fetch_add(&torn_rows, 1);
                    break;
                }
    }
    return NULL;
}

static void torn_run(const char *dir, const char *store_opts)
{
    pskv_store *s;
    ck_assert_ok(pskv_open(dir, store_opts, &s));
    ck_assert_ok(pskv_table_open(s, "t", "dim=64 optimizer=sgd lr=1 init=zeros shards=48",
                                 &table));
    atomic_store(&torn_rows, 0);
    atomic_store(&torn_errors, 0);
    pthread_t th[4];
    for (uintptr_t k = 0; k < 4; k++)
        ck_assert_int_eq(pthread_create(&th[k], NULL, k < 2 ? torn_reader : torn_writer,
                                        (void *)k), 0);
    for (int k = 0; k < 4; k++)
        pthread_join(th[k], NULL);
    ck_assert_int_eq(atomic_load(&torn_errors), 0);
    ck_assert_int_eq(atomic_load(&torn_rows), 0);
    pskv_table_stats st;
    ck_assert_ok(pskv_table_stats_get(table, &st));
    ck_assert_uint_gt(st.pulled + st.got, 0);
    if (dir != NULL) /* rows moved while read */
        ck_assert_uint_gt(st.spill_writes, 0);
    pskv_close(s);
}

START_TEST(readers_never_see_a_torn_row)
{
    torn_run(NULL, NULL);
    char dir[64];
    test_mkdtemp(dir, "stress");
    torn_run(dir, "durability=none memory_budget=65536"); /* about 250 of 512 rows */
    test_remove_dir(dir);
}
END_TEST

int main(int argc, char **argv)
{
    for (int i = 1; i + 1 < argc; i += 2)
        if (strcmp(argv[i], "--rounds") == 0)
            rounds = (unsigned)strtoul(argv[i + 1], NULL, 0);
    Suite *s = suite_create("stress");
    TCase *tc = tcase_create("stress");
    tcase_set_timeout(tc, 3600);
    tcase_add_test(tc, concurrent_ops_sum_up);
    tcase_add_test(tc, budget_under_concurrency);
    tcase_add_test(tc, spill_under_concurrency);
    tcase_add_test(tc, durable_under_concurrency);
    tcase_add_test(tc, readers_never_see_a_torn_row);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
