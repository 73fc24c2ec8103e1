/* The DRAM budget of a memory-only store (cache semantics): exact
 * accounting, the budget held after every call, CLOCK keeping hot rows,
 * the shard sweep itself, and the admission in front of it (a scan does
 * not flush the hot set; the window's duel). */
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
    /* dim 30 adagrad: 240-byte rows, an 8-byte version and 8 bytes of
     * admission sketch; budget for 1000 of them */
    ck_assert_ok(pskv_open(NULL, "memory_budget=256000", &s));
    pskv_table *t;
    ck_assert_ok(pskv_table_open(s, "t", "dim=30 shards=8", &t));
    uint64_t keys[100];
    static float rows[100 * 30];
    for (uint64_t b = 0; b < 200; b++) {
        for (int i = 0; i < 100; i++)
            keys[i] = b * 100 + (uint64_t)i;
        ck_assert_ok(pskv_pull(t, keys, 100, rows));
        ck_assert_uint_le(resident(s), 256000);
    }
    pskv_store_stats st;
    pskv_table_stats ts;
    ck_assert_ok(pskv_store_stats_get(s, &st));
    ck_assert_ok(pskv_table_stats_get(t, &ts));
    ck_assert_uint_eq(st.resident_bytes, ts.rows * 256);
    ck_assert_uint_eq(st.memory_budget, 256000);
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
        ck_assert_uint_eq(resident(s), pskv_table_rows(a) * 80 + pskv_table_rows(b) * 416);
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
    ck_assert_ok(pskv__shard_init(&sh, 8, 0, 5, false));
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

/* Issue 24 item 3: a one-pass scan of new keys, twice the budget, leaves
 * the hot set in DRAM (an LRU or a plain CLOCK would have lost all of it:
 * every scanned row is newer than every hot one). */
START_TEST(scan_leaves_hot_rows)
{
    pskv_store *s;
    pskv_table *t;
    /* dim 16 sgd: 64 B + version + admission = 80 B per row; 1000 rows */
    ck_assert_ok(pskv_open(NULL, "memory_budget=80000", &s));
    ck_assert_ok(pskv_table_open(s, "t", "dim=16 optimizer=sgd shards=4", &t));
    enum { HOT = 500, READS = 8, SCAN = 2000 };
    static uint64_t keys[SCAN];
    static float buf[SCAN * 16];
    static uint8_t found[SCAN];
    for (int r = 0; r < READS; r++) {
        for (int i = 0; i < HOT; i++)
            keys[i] = (uint64_t)((i * 7 + r * 13) % HOT);
        ck_assert_ok(pskv_pull(t, keys, HOT, buf));
    }
    for (int i = 0; i < SCAN; i += 100) { /* get, put on miss: a cache's scan */
        for (int j = 0; j < 100; j++)
            keys[j] = 1000000 + (uint64_t)(i + j);
        ck_assert_ok(pskv_get(t, keys, 100, buf, found));
        ck_assert_ok(pskv_put(t, keys, 100, buf));
    }
    for (int i = 0; i < HOT; i++)
        keys[i] = (uint64_t)i;
    ck_assert_ok(pskv_get(t, keys, HOT, buf, found));
    uint32_t kept = 0;
    for (int i = 0; i < HOT; i++)
        kept += found[i];
    ck_assert_msg(kept >= HOT * 95 / 100, "only %u of %d hot rows survived the scan", kept, HOT);
    pskv_table_stats ts;
    ck_assert_ok(pskv_table_stats_get(t, &ts));
    ck_assert_uint_le(ts.rows, 1000);
    pskv_close(s);
}
END_TEST

/* The duel, white-box: a window row read more often than CLOCK's victim
 * replaces it; one read less often (or as often) leaves; stale ring
 * entries are skipped; without evictions the window stays bounded. */
START_TEST(window_duel_and_bound)
{
    pskv__shard sh;
    ck_assert_ok(pskv__shard_init(&sh, 8, 0, 5, true));
    ck_assert_ptr_nonnull(sh.admit.sketch);
    /* 300 main rows (admitted unjudged once the window is far over), each
     * read twice; the room is reserved first, so that the sketch has its
     * size before the first count (growing it copies the counts of the
     * smaller sketch, collisions included). */
    ck_assert_ok(pskv__shard_reserve(&sh, 304));
    for (uint64_t k = 0; k < 300; k++) {
        uint64_t h = pskv__key_hash(k, 5);
        pskv__shard_insert_new(&sh, k, h);
        pskv__admit_record(&sh.admit, h);
        pskv__admit_record(&sh.admit, h);
    }
    ck_assert_uint_le(sh.admit.win_len, pskv__admit_window_most(sh.rows) - 1);
    ck_assert_uint_le(sh.admit.win_cap, 2 * pskv__admit_window_most(304)); /* not one per row */
    for (uint64_t k = 0; k < 300; k++) /* count-min: never below the count */
        ck_assert_uint_ge(pskv__admit_estimate(&sh.admit, pskv__key_hash(k, 5)), 2);
    /* Settle the rest of the window into the main rows. */
    while (sh.admit.win_len > 0) {
        uint64_t key = pskv__admit_window_oldest(&sh.admit);
        pskv__admit_window_drop(&sh.admit);
        pskv__shard_find(&sh, key, pskv__key_hash(key, 5))->flags &= ~PSKV__FLAG_WINDOW;
    }
    /* A newcomer read 15 times beats any main row (estimates of 4-bit
     * counters stop at 15, and no main row reaches it); the next one, never
     * read (a key whose counters no other key shares), loses; a key erased
     * before its turn is skipped. */
    uint64_t hot = 1000, gone = 1002, later = 1003, cold = 2000;
    while (pskv__admit_estimate(&sh.admit, pskv__key_hash(cold, 5)) != 0)
        cold++;
    for (int r = 0; r < 15; r++)
        pskv__admit_record(&sh.admit, pskv__key_hash(hot, 5));
    for (uint64_t k = 0; k < 300; k++)
        ck_assert_uint_lt(pskv__admit_estimate(&sh.admit, pskv__key_hash(k, 5)), 15);
    pskv__shard_insert_new(&sh, gone, pskv__key_hash(gone, 5));
    pskv__shard_remove(&sh, pskv__shard_find(&sh, gone, pskv__key_hash(gone, 5)));
    pskv__shard_insert_new(&sh, hot, pskv__key_hash(hot, 5));
    pskv__shard_insert_new(&sh, cold, pskv__key_hash(cold, 5));
    pskv__shard_insert_new(&sh, later, pskv__key_hash(later, 5));
    ck_assert_uint_eq(sh.admit.win_len, 4);
    uint64_t steps = 4ull * (sh.index_mask + 1);
    /* the window's size is 1 at 303 rows: the stale entry is skipped, then
     * two duels are due */
    pskv__entry *v = pskv__clock_next(&sh, &steps);
    ck_assert_ptr_nonnull(v);
    ck_assert_uint_lt(v->key, 300); /* hot won: a main row goes */
    ck_assert_uint_eq(pskv__shard_find(&sh, hot, pskv__key_hash(hot, 5))->flags &
                          PSKV__FLAG_WINDOW, 0);
    pskv__shard_remove(&sh, v);
    v = pskv__clock_next(&sh, &steps);
    ck_assert_ptr_nonnull(v);
    ck_assert_uint_eq(v->key, cold); /* never read, against read twice: refused */
    pskv__shard_remove(&sh, v);
    ck_assert_uint_eq(sh.admit.win_len, 1); /* `later` waits: the window has its size */
    v = pskv__clock_next(&sh, &steps);
    ck_assert_ptr_nonnull(v);
    ck_assert_uint_lt(v->key, 300);
    ck_assert_uint_eq(pskv__admit_estimate(&sh.admit, pskv__key_hash(hot, 5)), 15);
    /* A row read back (spill file, LMDB) or moved joins the main rows at
     * once, with its reference bit: it was admitted before. */
    uint32_t win = sh.admit.win_len;
    ck_assert_ok(pskv__shard_reserve(&sh, 1));
    pskv__entry *back = pskv__shard_insert_entry(&sh, 5000, pskv__key_hash(5000, 5));
    ck_assert_uint_eq(back->flags & (PSKV__FLAG_WINDOW | PSKV__FLAG_REF), PSKV__FLAG_REF);
    ck_assert_uint_eq(sh.admit.win_len, win);
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
    tcase_add_test(tc, scan_leaves_hot_rows);
    tcase_add_test(tc, window_duel_and_bound);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
