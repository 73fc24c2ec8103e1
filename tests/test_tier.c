/* The spill tier through the public API: round trips, I/O errors on load
 * and evict, corruption, the spill_max cap, injected short transfers and
 * EAGAIN. Nothing acknowledged may be lost and no wrong number returned. */
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "pskv_internal.h"
#include "test_common.h"

#define DIM 8 /* sgd: 32-byte rows */
#define N 2000

static char dir[64];

static pskv_table *open_spilling(pskv_store **s, const char *extra)
{
    test_mkdtemp(dir, "tier");
    char cfg[128];
    snprintf(cfg, sizeof cfg, "durability=none memory_budget=3200 %s", extra); /* 100 rows */
    ck_assert_ok(pskv_open(dir, cfg, s));
    pskv_table *t;
    ck_assert_ok(pskv_table_open(*s, "t", "dim=8 optimizer=sgd shards=4", &t));
    return t;
}

static void close_spilling(pskv_store *s)
{
    pskv_close(s);
    char path[128];
    snprintf(path, sizeof path, "%s/t.spill", dir);
    ck_assert_int_ne(access(path, F_OK), 0); /* scratch spill files go with the store */
    ck_assert_int_eq(rmdir(dir), 0);
}

static void values(uint64_t key, float *row)
{
    for (int j = 0; j < DIM; j++)
        row[j] = (float)key + (float)j / 8.0f;
}

static void put_all(pskv_table *t, uint64_t *keys, float *vals)
{
    for (uint64_t k = 0; k < N; k++) {
        keys[k] = k * 7919;
        values(keys[k], vals + k * DIM);
    }
    for (int b = 0; b < N; b += 100)
        ck_assert_ok(pskv_put(t, keys + b, 100, vals + (size_t)b * DIM));
}

static void check_all(pskv_table *t, const uint64_t *keys, const float *vals)
{
    static float out[N * DIM];
    static uint8_t found[N];
    ck_assert_ok(pskv_get(t, keys, N, out, found));
    for (int k = 0; k < N; k++)
        ck_assert(found[k] && memcmp(out + k * DIM, vals + k * DIM, DIM * 4) == 0);
}

START_TEST(round_trip_and_stats)
{
    pskv_store *s;
    pskv_table *t = open_spilling(&s, "");
    static uint64_t keys[N];
    static float vals[N * DIM];
    put_all(t, keys, vals);
    pskv_table_stats ts;
    pskv_store_stats ss;
    ck_assert_ok(pskv_table_stats_get(t, &ts));
    ck_assert_ok(pskv_store_stats_get(s, &ss));
    ck_assert_uint_eq(ts.rows, N);
    ck_assert_uint_gt(ts.rows_spilled, N - 110);
    ck_assert_uint_le(ss.resident_bytes, 3200);
    /* 32 bytes of payload and the 8-byte version (no admission sketch:
     * the spill tier keeps CLOCK alone) */
    ck_assert_uint_eq(ss.resident_bytes, (ts.rows - ts.rows_spilled) * 40);
    ck_assert_uint_ge(ss.spill_bytes, ts.rows_spilled * 48); /* 32-byte row + trailer */
    check_all(t, keys, vals);
    /* erase spilled and resident rows alike; their slots are reused */
    ck_assert_ok(pskv_erase(t, keys, N / 2));
    ck_assert_uint_eq(pskv_table_rows(t), N - N / 2);
    uint64_t bytes_before = ss.spill_bytes;
    put_all(t, keys, vals);
    ck_assert_ok(pskv_store_stats_get(s, &ss));
    ck_assert_uint_le(ss.spill_bytes, bytes_before + bytes_before / 4 + 4096); /* the slack */
    check_all(t, keys, vals);
    /* pushes to spilled rows load them first */
    static float grads[N * DIM];
    for (int i = 0; i < N * DIM; i++)
        grads[i] = 1.0f;
    ck_assert_ok(pskv_push(t, keys, N, grads));
    for (int i = 0; i < N * DIM; i++)
        vals[i] -= 0.01f; /* default sgd lr */
    static float out[N * DIM];
    ck_assert_ok(pskv_get(t, keys, N, out, NULL));
    for (int i = 0; i < N * DIM; i++)
        ck_assert(fabsf(out[i] - vals[i]) <= 1e-3f * fabsf(vals[i]) + 1e-3f);
    close_spilling(s);
}
END_TEST

/* A spilled row costs at most 16 bytes of DRAM while the table grows (15
 * in the spill map, plus the file's allocation state: a bit per slot and 2
 * bytes per page), at most 20 + that state after mass erasure, and the map
 * frees its memory once no row is left. */
START_TEST(spilled_row_dram)
{
    pskv_store *s;
    pskv_table *t = open_spilling(&s, "");
    enum { M = 40000, B = 1000 };
    static uint64_t keys[M];
    static float vals[B * DIM];
    memset(vals, 0, sizeof vals);
    for (uint64_t k = 0; k < M; k++)
        keys[k] = k * 2654435761u + 17;
    pskv_table_stats ts;
    for (int b = 0; b < M; b += B) {
        ck_assert_ok(pskv_put(t, keys + b, B, vals));
        ck_assert_ok(pskv_table_stats_get(t, &ts));
        ck_assert_uint_gt(ts.rows_spilled, 0);
        /* 4 shards, each map at least 16 entries of 12 bytes */
        ck_assert_uint_le(ts.spill_index_bytes, ts.rows_spilled * 16 + 4 * 16 * 12 + 1024);
        ck_assert_uint_ge(ts.dram_bytes, ts.spill_index_bytes);
    }
    ck_assert_uint_le(ts.spill_index_bytes, ts.rows_spilled * 16);
    /* the file's allocation state for 40000 48-byte records (85 a page),
     * with its arrays grown by doubling: under 16 KiB */
    const uint64_t file_state = 16384;
    ck_assert_ok(pskv_erase(t, keys, M * 9 / 10));
    ck_assert_ok(pskv_table_stats_get(t, &ts));
    ck_assert_uint_eq(ts.rows, M - M * 9 / 10);
    ck_assert_uint_le(ts.spill_index_bytes, ts.rows_spilled * 20 + 4 * 16 * 12 + file_state);
    ck_assert_ok(pskv_erase(t, keys + M * 9 / 10, M - M * 9 / 10));
    ck_assert_ok(pskv_table_stats_get(t, &ts));
    ck_assert_uint_eq(ts.rows, 0);
    ck_assert_uint_le(ts.spill_index_bytes, file_state); /* the file's state stays */
    close_spilling(s);
}
END_TEST

START_TEST(io_errors_lose_nothing)
{
    pskv_store *s;
    pskv_table *t = open_spilling(&s, "");
    static uint64_t keys[N];
    static float vals[N * DIM], out[N * DIM];
    put_all(t, keys, vals);
    /* reads fail: get reports EIO, and the rows are still there after */
    pskv__io_faults f = {.eio_every = 1};
    pskv__io_set_faults(s->io, &f);
    ck_assert_err(pskv_get(t, keys, N, out, NULL), PSKV_EIO);
    ck_assert_err(pskv_pull(t, keys, N, out), PSKV_EIO);
    pskv__io_set_faults(s->io, NULL);
    check_all(t, keys, vals);
    /* evictions fail: calls that would add rows fail first, nothing is lost */
    uint64_t more[100];
    static float more_vals[100 * DIM];
    for (int i = 0; i < 100; i++) {
        more[i] = 1000000 + (uint64_t)i;
        values(more[i], more_vals + i * DIM);
    }
    pskv__io_set_faults(s->io, &f);
    int rc = PSKV_EIO, tries = 0;
    for (; tries < 20; tries++) {
        rc = pskv_put(t, more, 100, more_vals);
        if (rc != 0)
            break;
    }
    ck_assert_err(rc, PSKV_EIO);
    pskv__io_set_faults(s->io, NULL);
    check_all(t, keys, vals);
    /* short transfers and EAGAIN everywhere: still exact */
    pskv__io_faults g = {.short_every = 2, .eagain_every = 3};
    pskv__io_set_faults(s->io, &g);
    check_all(t, keys, vals);
    ck_assert_ok(pskv_put(t, more, 100, more_vals));
    check_all(t, keys, vals);
    pskv__io_set_faults(s->io, NULL);
    close_spilling(s);
}
END_TEST

START_TEST(corruption_is_an_error)
{
    pskv_store *s;
    pskv_table *t = open_spilling(&s, "");
    static uint64_t keys[N];
    static float vals[N * DIM], out[N * DIM];
    put_all(t, keys, vals);
    char path[128];
    snprintf(path, sizeof path, "%s/t.spill", dir);
    int fd = open(path, O_RDWR);
    ck_assert_int_ge(fd, 0);
    off_t size = lseek(fd, 0, SEEK_END);
    uint8_t junk[512];
    memset(junk, 0xa5, sizeof junk);
    for (off_t off = 0; off < size; off += 4096) /* one bad block in every 8 */
        ck_assert_int_eq(pwrite(fd, junk, sizeof junk, off), (ssize_t)sizeof junk);
    fsync(fd);
    close(fd);
    int corrupt = 0;
    for (int k = 0; k < N; k++) {
        int rc = pskv_get(t, &keys[k], 1, out, NULL);
        ck_assert(rc == 0 || rc == PSKV_ECORRUPT);
        if (rc == 0)
            ck_assert(memcmp(out, vals + k * DIM, DIM * 4) == 0); /* never wrong numbers */
        corrupt += rc != 0;
    }
    ck_assert_int_gt(corrupt, 0);
    close_spilling(s);
}
END_TEST

START_TEST(spill_cap_reached)
{
    pskv_store *s;
    pskv_table *t = open_spilling(&s, "spill_max=64K"); /* 128 slots of 512 B */
    uint64_t keys[100];
    float v[100 * DIM];
    uint64_t acknowledged = 0;
    int rc = 0;
    for (int b = 0; b < 50 && rc == 0; b++) {
        for (int i = 0; i < 100; i++) {
            keys[i] = (uint64_t)(b * 100 + i);
            values(keys[i], v + i * DIM);
        }
        rc = pskv_put(t, keys, 100, v);
        if (rc == 0)
            acknowledged += 100;
    }
    ck_assert_err(rc, PSKV_ENOSPC);
    pskv_store_stats ss;
    ck_assert_ok(pskv_store_stats_get(s, &ss));
    ck_assert_uint_le(ss.spill_bytes, 64 * 1024);
    /* every acknowledged row is intact; get still works over the budget */
    for (uint64_t k = 0; k < acknowledged; k++) {
        float out[DIM], want[DIM];
        uint8_t found;
        ck_assert_ok(pskv_get(t, &k, 1, out, &found));
        values(k, want);
        ck_assert(found && memcmp(out, want, sizeof out) == 0);
    }
    /* erasing makes room again */
    uint64_t *all = malloc(acknowledged * sizeof *all);
    for (uint64_t k = 0; k < acknowledged; k++)
        all[k] = k;
    ck_assert_ok(pskv_erase(t, all, acknowledged));
    free(all);
    ck_assert_ok(pskv_put(t, keys, 100, v));
    close_spilling(s);
}
END_TEST

START_TEST(prefetch_then_pull)
{
    pskv_store *s;
    pskv_table *t = open_spilling(&s, "");
    static uint64_t keys[N];
    static float vals[N * DIM], out[N * DIM];
    put_all(t, keys, vals);
    pskv_table_stats before, after;
    ck_assert_ok(pskv_table_stats_get(t, &before));
    /* 50 spilled-or-not keys, prefetched then pulled: exact values, each
     * row read from the spill file at most once */
    ck_assert_ok(pskv_prefetch(t, keys + 500, 50));
    ck_assert_ok(pskv_prefetch(t, keys + 500, 50)); /* again: no double loads */
    ck_assert_ok(pskv_pull(t, keys + 500, 50, out));
    for (int i = 0; i < 50; i++)
        ck_assert(memcmp(out + i * DIM, vals + (500 + i) * DIM, DIM * 4) == 0);
    ck_assert_ok(pskv_table_stats_get(t, &after));
    ck_assert_uint_le(after.spill_reads - before.spill_reads, 50);
    ck_assert_uint_gt(after.spill_reads - before.spill_reads, 0);
    ck_assert_uint_eq(after.prefetch_errors, 0);
    ck_assert_uint_eq(after.rows, N); /* prefetch never creates */
    uint64_t absent = 99999999;
    ck_assert_ok(pskv_prefetch(t, &absent, 1));
    /* failing loads are counted; the pull reads again and succeeds */
    pskv__io_faults f = {.eio_every = 1};
    pskv__io_set_faults(s->io, &f);
    ck_assert_ok(pskv_prefetch(t, keys + 1000, 50));
    ck_assert_err(pskv_pull(t, keys + 1000, 50, out), PSKV_EIO); /* waits for the job's rows */
    pskv__io_set_faults(s->io, NULL);
    ck_assert_ok(pskv_pull(t, keys + 1000, 50, out));
    for (int i = 0; i < 50; i++)
        ck_assert(memcmp(out + i * DIM, vals + (1000 + i) * DIM, DIM * 4) == 0);
    ck_assert_err(pskv_prefetch(t, NULL, 1), PSKV_EINVAL);
    /* close with jobs still queued: they finish first */
    for (int b = 0; b < 20; b++)
        ck_assert_ok(pskv_prefetch(t, keys + b * 100, 100));
    close_spilling(s);
}
END_TEST

START_TEST(directory_store_args)
{
    pskv_store *s;
    ck_assert_err(pskv_open("", "durability=none", &s), PSKV_EINVAL);
    ck_assert_err(pskv_open("pskv-no-such-parent/x/y", "durability=none", &s), PSKV_EIO);
    test_mkdtemp(dir, "tier");
    ck_assert_ok(pskv_open(dir, "durability=none", &s)); /* no budget: nothing spills */
    ck_assert_err(pskv_checkpoint(s), PSKV_ENOTSUP);      /* scratch: nothing persists */
    ck_assert_err(pskv_backup(s, "pskv-test-tier-backup"), PSKV_ENOTSUP);
    pskv_table *t;
    ck_assert_ok(pskv_table_open(s, "t", "dim=2", &t));
    uint64_t k = 1;
    float w[2];
    ck_assert_ok(pskv_pull(t, &k, 1, w));
    close_spilling(s);
}
END_TEST

/* One pull (and one get) of a batch that mixes every place a row can be:
 * resident, spilled, only in LMDB (cold), new, with keys repeated and
 * every shard present, in orders that put mostly new or mostly resident
 * keys first, in batch sizes around 32 and 1024 (the depth and round of
 * a first pass over resident rows that was tried: docs/PERFORMANCE.md).
 * Every row must be its put value, or for a new key
 * the initial value a fresh memory-only table gives it. */
#define MIX_OLD 600 /* put, checkpointed, reopened: cold, then some loaded */
#define MIX_BATCH 2500

static void mix_expect(pskv_table *fresh, uint64_t key, float *row)
{
    if (key < 1000000) {
        values(key, row);
        return;
    }
    ck_assert_ok(pskv_pull(fresh, &key, 1, row)); /* a new key's initial value */
}

static void mix_check(pskv_table *t, pskv_table *fresh, const uint64_t *keys, uint32_t n,
                      bool get)
{
    static float out[MIX_BATCH * DIM];
    static uint8_t found[MIX_BATCH];
    float want[DIM];
    if (get)
        ck_assert_ok(pskv_get(t, keys, n, out, found));
    else
        ck_assert_ok(pskv_pull(t, keys, n, out));
    for (uint32_t i = 0; i < n; i++) {
        if (get && !found[i]) { /* get creates nothing: a new key not pulled yet */
            ck_assert_uint_ge(keys[i], 1000000);
            ck_assert(memcmp(out + i * DIM, (float[DIM]){0}, sizeof want) == 0);
            continue;
        }
        mix_expect(fresh, keys[i], want);
        ck_assert_msg(memcmp(out + i * DIM, want, sizeof want) == 0, "input %u key %llu", i,
                      (unsigned long long)keys[i]);
    }
}

START_TEST(pull_mixes_every_place)
{
    test_mkdtemp(dir, "tier");
    const char *tcfg = "dim=8 optimizer=sgd shards=40 init=uniform:-1:1 seed=5";
    pskv_store *s, *mem;
    pskv_table *t, *fresh;
    ck_assert_ok(pskv_open(NULL, NULL, &mem));
    ck_assert_ok(pskv_table_open(mem, "t", tcfg, &fresh));
    static uint64_t keys[MIX_BATCH];
    static float vals[MIX_OLD * DIM];
    ck_assert_ok(pskv_open(dir, "memory_budget=6400", &s)); /* 200 rows */
    ck_assert_ok(pskv_table_open(s, "t", tcfg, &t));
    for (uint32_t k = 0; k < MIX_OLD; k++) {
        keys[k] = k;
        values(k, vals + k * DIM);
    }
    ck_assert_ok(pskv_put(t, keys, MIX_OLD, vals));
    pskv_close(s);
    ck_assert_ok(pskv_open(dir, "memory_budget=6400", &s));
    ck_assert_ok(pskv_table_open(s, "t", NULL, &t));
    test_rng r = {77};
    uint64_t next_new = 1000000, pulled = 0, got = 0;
    for (int round = 0; round < 15; round++) {
        /* Rows the last rounds read are resident or spilled now, the others
         * still cold; new keys go in front (round % 3 == 0), at the end, or
         * spread out; some keys repeat, a few many times. */
        /* Sizes around 32 and 1024, then any. */
        static const uint32_t sizes[] = {1, 31, 33, 1023, 1024, 1025, 1056, 1057, 2100};
        uint32_t n = round < 9 ? sizes[round] : 300 + rng_below(&r, MIX_BATCH - 300);
        uint32_t fresh_n = round % 3 == 0 ? n / 2 : n / 8;
        for (uint32_t i = 0; i < n; i++)
            keys[i] = rng_below(&r, 8) == 0 ? 42 : rng_below(&r, MIX_OLD);
        for (uint32_t i = 0; i < fresh_n; i++) {
            uint32_t at = round % 3 == 0 ? i : round % 3 == 1 ? n - 1 - i : rng_below(&r, n);
            keys[at] = rng_below(&r, 4) == 0 && next_new > 1000000 ? next_new - 1 : next_new++;
        }
        mix_check(t, fresh, keys, n, round % 4 == 3);
        *(round % 4 == 3 ? &got : &pulled) += n;
    }
    pskv_table_stats st;
    ck_assert_ok(pskv_table_stats_get(t, &st));
    ck_assert_uint_gt(st.spill_reads, 0);   /* some rows came back from the spill file */
    ck_assert_uint_gt(st.cold_lookups, 0);  /* and some from LMDB */
    ck_assert_uint_gt(st.rows_evicted, 0);
    ck_assert_uint_eq(st.pulled, pulled); /* each input counted once, served where it was */
    ck_assert_uint_eq(st.got, got);
    pskv_close(s);
    pskv_close(mem);
    test_remove_dir(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("tier");
    TCase *tc = tcase_create("tier");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, round_trip_and_stats);
    tcase_add_test(tc, spilled_row_dram);
    tcase_add_test(tc, io_errors_lose_nothing);
    tcase_add_test(tc, corruption_is_an_error);
    tcase_add_test(tc, spill_cap_reached);
    tcase_add_test(tc, prefetch_then_pull);
    tcase_add_test(tc, directory_store_args);
    tcase_add_test(tc, pull_mixes_every_place);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
