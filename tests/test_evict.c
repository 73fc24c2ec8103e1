/* The DRAM budget of a memory-only store (cache semantics): exact
 * accounting, the budget held after every call, CLOCK keeping hot rows,
 * and the shard sweep itself. */
#include <string.h>

#include "pskv_internal.h"
#include "test_common.h"
#include "clock.h"

static uint64_t resident(pskv_store *s)
{
    pskv_store_stats st;
    ck_assert_ok(pskv_store_stats_get(s, &st));
    return st.resident_bytes;
}

START_TEST(budget_held_after_every_call)
{
    pskv_store *s;
    /* dim 30 adagrad: 240-byte rows and an 8-byte version; budget for 1000 of them */
    ck_assert_ok(pskv_open(NULL, "memory_budget=248000", &s));
    pskv_table *t;
    ck_assert_ok(pskv_table_open(s, "t", "dim=30 shards=8", &t));
    uint64_t keys[100];
    static float rows[100 * 30];
    for (uint64_t b = 0; b < 200; b++) {
        for (int i = 0; i < 100; i++)
            keys[i] = b * 100 + (uint64_t)i;
        ck_assert_ok(pskv_pull(t, keys, 100, rows));
        ck_assert_uint_le(resident(s), 248000);
    }
    pskv_store_stats st;
    pskv_table_stats ts;
    ck_assert_ok(pskv_store_stats_get(s, &st));
    ck_assert_ok(pskv_table_stats_get(t, &ts));
    ck_assert_uint_eq(st.resident_bytes, ts.rows * 248);
    ck_assert_uint_eq(st.memory_budget, 248000);
    ck_assert_uint_eq(ts.rows_created, 20000);
    ck_assert_uint_eq(ts.rows_evicted, 20000 - ts.rows);
    ck_assert_uint_eq(st.rows_evicted, ts.rows_evicted);
    ck_assert_uint_ge(ts.rows, 900); /* evicts down to a little below budget */
    pskv_close(s);
}
END_TEST

START_TEST(hot_rows_survive)
{
    pskv_store *s;
    ck_assert_ok(pskv_open(NULL, "memory_budget=64K", &s));
    pskv_table *t;
    ck_assert_ok(pskv_table_open(s, "t", "dim=16 optimizer=sgd shards=4", &t)); /* 64 B rows */
    enum { HOT = 100, ROUNDS = 300, COLD = 50 };
    uint64_t keys[HOT + COLD];
    static float buf[(HOT + COLD) * 16];
    uint8_t found[HOT];
    uint64_t cold = 1000000;
    for (int r = 0; r < ROUNDS; r++) {
        for (int i = 0; i < HOT; i++)
            keys[i] = (uint64_t)i;
        for (int i = 0; i < COLD; i++)
            keys[HOT + i] = cold++;
        ck_assert_ok(pskv_pull(t, keys, HOT + COLD, buf));
    }
    ck_assert_ok(pskv_get(t, keys, HOT, buf, found));
    for (int i = 0; i < HOT; i++)
        ck_assert_msg(found[i], "hot key %d was evicted", i);
    pskv_table_stats ts;
    ck_assert_ok(pskv_table_stats_get(t, &ts));
    ck_assert_uint_gt(ts.rows_evicted, ROUNDS * COLD / 2);
    pskv_close(s);
}
END_TEST

START_TEST(accounting_exact_across_tables)
{
    pskv_store *s;
    ck_assert_ok(pskv_open(NULL, "memory_budget=1M", &s));
    pskv_table *a, *b;
    ck_assert_ok(pskv_table_open(s, "a", "dim=5 optimizer=adam", &a)); /* 64 B + version */
    ck_assert_ok(pskv_table_open(s, "b", "dim=100 optimizer=sgd shards=3", &b)); /* 400 B + version */
    test_rng r = {3};
    static float vals[64 * 100];
    uint64_t keys[64];
    for (int op = 0; op < 3000; op++) {
        pskv_table *t = rng_below(&r, 2) ? a : b;
        uint32_t n = 1 + rng_below(&r, 64);
        for (uint32_t i = 0; i < n; i++)
            keys[i] = rng_below(&r, 5000);
        switch (rng_below(&r, 5)) {
        case 0: ck_assert_ok(pskv_pull(t, keys, n, vals)); break;
        case 1: ck_assert_ok(pskv_put(t, keys, n, vals)); break;
        case 2: ck_assert_ok(pskv_push(t, keys, n, vals)); break;
        case 3: ck_assert_ok(pskv_erase(t, keys, n)); break;
        default: ck_assert_ok(pskv_table_reshard(t, 1 + rng_below(&r, 9))); break;
        }
        ck_assert_uint_eq(resident(s), pskv_table_rows(a) * 72 + pskv_table_rows(b) * 408);
        ck_assert_uint_le(resident(s), 1u << 20);
    }
    pskv_close(s);
}
END_TEST

/* A budget must hold a row; a small one keeps a table's DRAM small. */
START_TEST(small_budgets)
{
    pskv_store *s;
    pskv_table *t;
    ck_assert_ok(pskv_open(NULL, "memory_budget=100", &s));
    ck_assert_err(pskv_table_open(s, "emb", "dim=16", &t), PSKV_EINVAL); /* 128-byte rows */
    ck_assert_ptr_nonnull(strstr(pskv_last_error(), "memory_budget=100 cannot hold one"));
    ck_assert_ok(pskv_table_open(s, "small", "dim=8", &t)); /* 64 bytes fit */
    pskv_close(s);

    /* 512 rows of 128 bytes in 64 shards under 256 KiB: the slabs shrink
     * (64 KiB slabs took 4.2 MB); the budget holds every row. */
    ck_assert_ok(pskv_open(NULL, "memory_budget=256K", &s));
    ck_assert_ok(pskv_table_open(s, "emb", "dim=16", &t));
    test_fill(t, 1, 512, 16, 1.0f);
    pskv_store_stats ss;
    ck_assert_ok(pskv_store_stats_get(s, &ss));
    ck_assert_uint_eq(ss.rows, 512);
    ck_assert_uint_lt(ss.dram_bytes, 512u << 10);
    test_expect_rows(t, 1, 512, 16, 1.0f);
    pskv_close(s);
}
END_TEST

START_TEST(clock_sweep_second_chance)
{
    pskv__shard sh;
    static pskv_table tab; /* what a sweep reads of its table: versions, log size */
    tab.changes_max = 64;
    ck_assert_ok(pskv__shard_init(&sh, 8, 0, 5));
    ck_assert_ok(pskv__shard_reserve(&sh, 10));
    for (uint64_t k = 0; k < 10; k++)
        pskv__shard_insert_reserved(&sh, k, pskv__key_hash(k, 5));
    /* New rows carry a reference bit: the first turn only clears bits. */
    ck_assert_uint_eq(pskv__clock_sweep(&tab, &sh, 3), 0);
    ck_assert_uint_eq(sh.rows, 10);
    ck_assert_uint_eq(pskv__clock_sweep(&tab, &sh, 3), 3);
    ck_assert_uint_eq(sh.rows, 7);
    /* Touch the even keys still present: a turn keeps exactly those. */
    uint32_t touched = 0;
    bool was_touched[10] = {0};
    for (uint64_t k = 0; k < 10; k += 2) {
        pskv__entry *e = pskv__shard_find(&sh, k, pskv__key_hash(k, 5));
        if (e != NULL) {
            e->flags |= PSKV__FLAG_REF;
            was_touched[k] = true;
            touched++;
        }
    }
    ck_assert_uint_eq(pskv__clock_sweep(&tab, &sh, 100), 7 - touched);
    for (uint64_t k = 0; k < 10; k++)
        ck_assert_int_eq(pskv__shard_find(&sh, k, pskv__key_hash(k, 5)) != NULL, was_touched[k]);
    /* That turn cleared their bits (their second chance): the next one
     * drops them. */
    ck_assert_uint_eq(pskv__clock_sweep(&tab, &sh, 100), touched);
    ck_assert_uint_eq(sh.rows, 0);
    ck_assert_uint_eq(pskv__clock_sweep(&tab, &sh, 100), 0);
    /* Every row dropped is in the change log, for exports' tombstones. */
    ck_assert_uint_eq(sh.log.len, 10);
    pskv__shard_free(&sh);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("evict");
    TCase *tc = tcase_create("evict");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, budget_held_after_every_call);
    tcase_add_test(tc, hot_rows_survive);
    tcase_add_test(tc, accounting_exact_across_tables);
    tcase_add_test(tc, clock_sweep_second_chance);
    tcase_add_test(tc, small_budgets);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
