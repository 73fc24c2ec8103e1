/* Shard internals: the open-addressing index with backward-shift deletion
 * and slot reuse, and the spill map (Robin Hood, grow/shrink), each against
 * a plain array model; reservations; batch plans. */
#include <pthread.h>
#include <sched.h>
#include <string.h>

#include "pskv_internal.h"
#include "test_common.h"
#include "plan.h"
#include "sort.h"

START_TEST(index_against_model)
{
    pskv__shard sh;
    ck_assert_ok(pskv__shard_init(&sh, 12, 0, 99, false));
    enum { U = 3000 };
    static uint32_t model_val[U]; /* 0 = absent, else value stored in row[0] */
    memset(model_val, 0, sizeof model_val);
    test_rng r = {1};
    uint32_t live = 0;
    for (int op = 0; op < 200000; op++) {
        uint64_t key = rng_below(&r, U);
        /* clustered keys make long probe runs: the hard case for deletion */
        uint64_t hash = pskv__key_hash(key, 99);
        if (rng_below(&r, 3) == 0) {
            pskv__entry *e = pskv__shard_find(&sh, key, hash);
            ck_assert_int_eq(e != NULL, model_val[key] != 0);
            if (e != NULL) {
                pskv__shard_remove(&sh, e);
                live--;
            }
            model_val[key] = 0;
        } else {
            pskv__entry *e = pskv__shard_find(&sh, key, hash);
            ck_assert_int_eq(e != NULL, model_val[key] != 0);
            if (e == NULL) {
                ck_assert_ok(pskv__shard_reserve(&sh, 1));
                uint32_t slot = pskv__shard_insert_reserved(&sh, key, hash);
                float *row = pskv__shard_row(&sh, slot);
                model_val[key] = (uint32_t)op + 1;
                memcpy(row, &model_val[key], 4);
                live++;
            } else {
                uint32_t v;
                memcpy(&v, pskv__shard_row(&sh, e->slot), 4);
                ck_assert_uint_eq(v, model_val[key]);
            }
        }
        ck_assert_uint_eq(sh.rows, live);
    }
    /* erased slots are reused: the slab high-water mark stays near the peak */
    ck_assert_uint_le(sh.slots_high, U);
    ck_assert_uint_eq(sh.reserved, 0);
    pskv__shard_free(&sh);
}
END_TEST

/* The spill map against a model: inserts, finds, BUSY bits, removals,
 * growth and shrinking, with keys crowded into few probe runs. */
/* The shard lock's gate: a writer waits for the readers inside; readers
 * are turned away while a writer holds the shard or waits for it. */
static pskv__shard gate_shard;
static atomic_int gate_released; /* the readers let go */
static atomic_int gate_writer;    /* 1: the writer holds the shard; 2: let it go */

static void *gate_writer_main(void *arg)
{
    (void)arg;
    pskv__shard_lock(&gate_shard);
    intptr_t after_readers = atomic_load(&gate_released);
    atomic_store(&gate_writer, 1);
    while (atomic_load(&gate_writer) != 2)
        sched_yield();
    pskv__shard_unlock(&gate_shard);
    return (void *)after_readers;
}

START_TEST(gate_orders_readers_and_writers)
{
    ck_assert_ok(pskv__shard_init(&gate_shard, 16, 0, 1, false));
    for (int round = 0; round < 200; round++) {
        atomic_store(&gate_released, 0);
        atomic_store(&gate_writer, 0);
        ck_assert(pskv__shard_trylock_shared(&gate_shard));
        ck_assert(pskv__shard_trylock_shared(&gate_shard)); /* readers share */
        pthread_t w;
        ck_assert_int_eq(pthread_create(&w, NULL, gate_writer_main, NULL), 0);
        /* The writer closes the gate, then waits for both readers. */
        while (!(atomic_load(&gate_shard.gate.word) & PSKV__GATE_CLOSED))
            sched_yield();
        ck_assert(!pskv__shard_trylock_shared(&gate_shard));
        pskv__shard_unlock_shared(&gate_shard);
        ck_assert_int_eq(atomic_load(&gate_writer), 0); /* one reader is still in */
        atomic_store(&gate_released, 1);
        pskv__shard_unlock_shared(&gate_shard);
        while (atomic_load(&gate_writer) != 1)
            sched_yield();
        ck_assert(!pskv__shard_trylock_shared(&gate_shard)); /* held */
        ck_assert(!pskv__shard_trylock(&gate_shard));
        atomic_store(&gate_writer, 2);
        void *after_readers;
        ck_assert_int_eq(pthread_join(w, &after_readers), 0);
        ck_assert_msg(after_readers != NULL, "the writer got in before the readers left");
        ck_assert(pskv__shard_trylock_shared(&gate_shard)); /* open again */
        pskv__shard_unlock_shared(&gate_shard);
        ck_assert_uint_eq(atomic_load(&gate_shard.gate.word), 0);
    }
    pskv__shard_free(&gate_shard);
}
END_TEST

START_TEST(spillmap_against_model)
{
    pskv__keymap m;
    pskv__keymap_init(&m, 7);
    enum { U = 20000 };
    static uint32_t model_slot[U]; /* UINT32_MAX = absent */
    memset(model_slot, 0xff, sizeof model_slot);
    test_rng r = {3};
    uint32_t live = 0, peak = 0;
    for (int op = 0; op < 400000; op++) {
        /* phases: mostly inserting, then mostly removing, then mixed */
        int phase = op / 100000;
        uint32_t remove_pct = phase == 0 ? 20 : phase == 1 ? 80 : 50;
        uint64_t key = rng_below(&r, U);
        uint64_t hash = pskv__key_hash(key, 7);
        pskv__keyval *e = pskv__keymap_find(&m, key, hash);
        ck_assert_int_eq(e != NULL, model_slot[key] != UINT32_MAX);
        if (e != NULL)
            ck_assert_uint_eq(e->value & ~PSKV__SPILL_BUSY, model_slot[key]);
        if (e != NULL && rng_below(&r, 100) < remove_pct) {
            pskv__keymap_remove(&m, e);
            model_slot[key] = UINT32_MAX;
            live--;
        } else if (e != NULL) {
            e->value ^= PSKV__SPILL_BUSY; /* a BUSY bit does not disturb lookups */
        } else if (rng_below(&r, 100) >= remove_pct) {
            ck_assert_ok(pskv__keymap_reserve(&m, 1));
            uint32_t slot = (uint32_t)op;
            pskv__keymap_insert_reserved(&m, key, hash, slot);
            model_slot[key] = slot;
            live++;
        }
        ck_assert_uint_eq(m.count, live);
        ck_assert_uint_eq(m.reserved, 0);
        peak = live > peak ? live : peak;
        if (live > 100) {
            /* 12-byte entries at a load factor of 0.6-0.9 */
            ck_assert_uint_le(pskv__keymap_bytes(&m), (uint64_t)live * 20 + 120);
            ck_assert_uint_ge(pskv__keymap_bytes(&m) * 9, (uint64_t)live * 12 * 10 - 12 * 10);
        }
    }
    ck_assert_uint_gt(peak, U / 2);
    for (uint64_t key = 0; key < U; key++) {
        pskv__keyval *e = pskv__keymap_find(&m, key, pskv__key_hash(key, 7));
        ck_assert_int_eq(e != NULL, model_slot[key] != UINT32_MAX);
        if (e != NULL)
            pskv__keymap_remove(&m, e);
    }
    ck_assert_uint_eq(m.count, 0);
    ck_assert_uint_eq(pskv__keymap_bytes(&m), 0); /* an empty map holds nothing */
    pskv__keymap_free(&m);
}
END_TEST

/* While a map only grows, a spilled row costs at most 16 bytes. */
START_TEST(spillmap_growth_bytes)
{
    pskv__keymap m;
    pskv__keymap_init(&m, 1);
    for (uint64_t k = 0; k < 300000; k++) {
        ck_assert_ok(pskv__keymap_reserve(&m, 1));
        pskv__keymap_insert_reserved(&m, k, pskv__key_hash(k, 1), (uint32_t)k);
        if (k >= 64)
            ck_assert_uint_le(pskv__keymap_bytes(&m), (k + 1) * 16 + 16);
    }
    /* a batch reservation is room for all of it */
    ck_assert_ok(pskv__keymap_reserve(&m, 5000));
    uint64_t cap = m.cap;
    for (uint64_t k = 300000; k < 305000; k++)
        pskv__keymap_insert_reserved(&m, k, pskv__key_hash(k, 1), (uint32_t)k);
    ck_assert_uint_eq(m.cap, cap);
    for (uint64_t k = 0; k < 305000; k += 997)
        ck_assert_uint_eq(pskv__keymap_find(&m, k, pskv__key_hash(k, 1))->value, k);
    ck_assert_ptr_null(pskv__keymap_find(&m, 305000, pskv__key_hash(305000, 1)));
    pskv__keymap_free(&m);
}
END_TEST

/* Slabs double in size: every slot maps to its own bytes inside one slab,
 * across many slabs and a base of one row per slab, and rows never move
 * when later slabs are added. */
START_TEST(slots_own_their_bytes)
{
    static const uint32_t bases[] = {0, 64, 24}; /* 64 KiB slabs; one row per slab */
    for (size_t b = 0; b < sizeof bases / sizeof *bases; b++) {
        pskv__shard sh;
        ck_assert_ok(pskv__shard_init(&sh, 24, bases[b], 7, b == 2));
        enum { ROWS = 70000 };
        float *first_row = NULL;
        for (uint32_t k = 0; k < ROWS; k++) {
            ck_assert_ok(pskv__shard_reserve(&sh, 1));
            uint32_t slot = pskv__shard_insert_reserved(&sh, k, pskv__key_hash(k, 7));
            ck_assert_uint_eq(slot, k);
            uint8_t *row = (uint8_t *)pskv__shard_row(&sh, slot);
            memset(row, (int)(k % 251), 24);
            if (k == 0)
                first_row = (float *)(void *)row;
        }
        ck_assert_ptr_eq(pskv__shard_row(&sh, 0), first_row);
        ck_assert_uint_le(sh.nslabs, PSKV__SLABS_MAX);
        for (uint32_t k = 0; k < ROWS; k++) {
            const uint8_t *row = (const uint8_t *)pskv__shard_row(&sh, k);
            for (int j = 0; j < 24; j++)
                ck_assert_uint_eq(row[j], k % 251);
        }
        /* the slabs hold at least the rows and at most twice them (plus one slab) */
        ck_assert_uint_ge(pskv__shard_capacity(&sh), ROWS);
        ck_assert_uint_le(pskv__shard_capacity(&sh), 2ull * ROWS + (1u << sh.base_shift));
        pskv__shard_free(&sh);
    }
}
END_TEST

START_TEST(reserve_accounting)
{
    pskv__shard sh;
    ck_assert_ok(pskv__shard_init(&sh, 4096 * 4, 0, 1, false));
    ck_assert_ok(pskv__shard_reserve(&sh, 100));
    ck_assert_uint_ge(pskv__shard_capacity(&sh) - sh.slots_high, 100);
    ck_assert_uint_ge((sh.index_mask + 1) / 4 * 3, 100);
    for (uint64_t k = 0; k < 60; k++)
        pskv__shard_insert_reserved(&sh, k, pskv__key_hash(k, 1));
    ck_assert_uint_eq(sh.reserved, 40);
    pskv__shard_unreserve(&sh, 40);
    ck_assert_uint_eq(sh.reserved, 0);
    ck_assert_uint_eq(sh.rows, 60);
    ck_assert_uint_gt(pskv__shard_dram_bytes(&sh), 60 * 4096 * 4);
    pskv__shard_free(&sh);
}
END_TEST

START_TEST(plan_groups_and_dedups)
{
    pskv_ring *ring;
    ck_assert_ok(pskv_ring_create(8, 5, &ring));
    for (uint32_t i = 0; i < 4; i++)
        ck_assert_ok(pskv_ring_add(ring, i, 1.0));
    uint64_t keys[10] = {5, 6, 5, 7, 8, 5, 6, 9, 10, 11};
    uint32_t owner[10];
    ck_assert_ok(pskv_ring_route(ring, keys, 10, owner));
    for (int mode = 0; mode < 3; mode++) {
        pskv__plan p;
        ck_assert_ok(pskv__plan_build(&p, ring, 4, keys, 10, (enum pskv__dedup)mode));
        ck_assert_uint_eq(p.m, mode == 0 ? 10 : 7);
        ck_assert_int_eq(p.has_dups, mode != 0);
        ck_assert_uint_eq(p.start[0], 0);
        ck_assert_uint_eq(p.start[4], p.m);
        for (uint32_t s = 0; s < 4; s++)
            for (uint32_t j = p.start[s]; j < p.start[s + 1]; j++) {
                ck_assert_uint_eq(owner[p.order[j]], s);
                if (j > p.start[s] && mode != PSKV__DEDUP_LAST) /* input order in a shard */
                    ck_assert_uint_lt(p.order[j - 1], p.order[j]);
            }
        if (mode == PSKV__DEDUP_FIRST) {
            ck_assert_uint_eq(p.kept_of[5], 0);
            ck_assert_uint_eq(p.kept_of[6], 1);
        } else if (mode == PSKV__DEDUP_LAST) {
            ck_assert_uint_eq(p.kept_of[0], 5);
            ck_assert_uint_eq(p.kept_of[1], 6);
            ck_assert_uint_eq(p.kept_of[3], 3);
        }
        pskv__plan_free(&p);
    }
    pskv_ring_destroy(ring);
}
END_TEST

START_TEST(nonfinite_scan)
{
    float v[37];
    for (int i = 0; i < 37; i++)
        v[i] = (float)i - 18.0f;
    ck_assert(!pskv__floats_nonfinite(v, 37));
    v[36] = 1.0f / 0.0f;
    ck_assert(pskv__floats_nonfinite(v, 37));
    ck_assert(!pskv__floats_nonfinite(v, 36));
    v[0] = __builtin_nanf("");
    ck_assert(pskv__floats_nonfinite(v, 1));
}
END_TEST

static int keyed_cmp(const void *x, const void *y)
{
    const pskv__keyed *a = x, *b = y;
    if (a->key != b->key)
        return a->key < b->key ? -1 : 1;
    return (a->at > b->at) - (a->at < b->at); /* stable: first in, first out */
}

/* The keyed sort against a stable reference, over the shapes its paths
 * take: tiny, in order, a few runs (merged), hashed ids (spread and
 * insertion), small ids, ids that differ only in low bits under one high
 * outlier (a bucket too big for insertion), many repeats (stability). */
START_TEST(keyed_sort_against_reference)
{
    enum { MOST = 70000 };
    pskv__keyed *a = malloc(MOST * sizeof *a), *want = malloc(MOST * sizeof *want);
    ck_assert(a && want);
    test_rng g = {17};
    static const size_t sizes[] = {0, 1, 2, 47, 48, 49, 50, 100, 1000, 4096, 13107, MOST};
    for (int shape = 0; shape < 8; shape++) {
        for (size_t z = 0; z < sizeof sizes / sizeof sizes[0]; z++) {
            const size_t n = sizes[z];
            for (size_t i = 0; i < n; i++) {
                uint64_t r = rng_next(&g), k;
                switch (shape) {
                case 0: k = r; break;                                  /* hashed ids */
                case 1: k = i; break;                                  /* in order */
                case 2: k = (i % 5) * 1000000 + i; break;              /* 5 runs */
                case 3: k = r % (n + 1); break;                        /* small ids */
                case 4: k = i == n / 2 ? UINT64_MAX : r % 4096; break; /* low bits, one outlier */
                case 5: k = r % 7; break;                              /* many repeats */
                case 6: k = (r & 0xff) << 40 | (r >> 60); break;        /* a few middle bits */
                default: k = n - i; break;                             /* reversed */
                }
                a[i] = (pskv__keyed){k, (uint32_t)i};
            }
            memcpy(want, a, n * sizeof *a);
            if (n > 0)
                qsort(want, n, sizeof *want, keyed_cmp);
            ck_assert_ok(pskv__keyed_sort(a, n));
            for (size_t i = 0; i < n; i++)
                ck_assert_msg(a[i].key == want[i].key && a[i].at == want[i].at,
                              "shape %d, %zu keys: position %zu differs", shape, n, i);
        }
    }
    free(a);
    free(want);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("shard");
    TCase *tc = tcase_create("shard");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, index_against_model);
    tcase_add_test(tc, gate_orders_readers_and_writers);
    tcase_add_test(tc, spillmap_against_model);
    tcase_add_test(tc, spillmap_growth_bytes);
    tcase_add_test(tc, slots_own_their_bytes);
    tcase_add_test(tc, reserve_accounting);
    tcase_add_test(tc, plan_groups_and_dedups);
    tcase_add_test(tc, nonfinite_scan);
    tcase_add_test(tc, keyed_sort_against_reference);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
