/* Spill files: round trips bit for bit in both I/O backends, slot reuse
 * (whole pages and holes filled by page rewrites), the spill_max cap (all or
 * nothing), corruption and misdirected slots caught by the trailer,
 * injected I/O faults. */
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "pskv_internal.h"
#include "test_common.h"

static char dir[64], path[128];

static pskv__spill *make(pskv__io *io, uint32_t row_bytes, uint64_t max_bytes)
{
    test_mkdtemp(dir, "spill");
    snprintf(path, sizeof path, "%s/t.spill", dir);
    pskv__spill *sp;
    ck_assert_ok(pskv__spill_open(path, row_bytes, max_bytes, NULL, io, &sp));
    return sp;
}

static void done(pskv__spill *sp)
{
    pskv__spill_close(sp);
    ck_assert_int_ne(access(path, F_OK), 0); /* scratch file removed */
    rmdir(dir);
}

/* Free the test's row buffers, close (and so remove) the file, drop the I/O layer. */
static void finish(pskv__spill *sp, pskv__io *io, float **rows, float **back, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        free(rows[i]);
        free(back[i]);
    }
    done(sp);
    pskv__io_destroy(io);
}

static void fill_row(float *row, uint32_t floats, uint64_t key, uint32_t round)
{
    for (uint32_t j = 0; j < floats; j++)
        row[j] = (float)(key % 1000) + (float)j * 0.25f + (float)round;
}

static void round_trips(bool sync, uint32_t row_floats)
{
    pskv__io *io;
    ck_assert_ok(pskv__io_create(sync, 64, &io));
    pskv__spill *sp = make(io, row_floats * 4, 0);
    ck_assert_uint_eq(pskv__spill_slot_bytes(sp), row_floats * 4 + 16);
    enum { N = 300 };
    uint64_t keys[N];
    uint32_t slots[N];
    float *rows[N], *back[N];
    int results[N];
    for (uint32_t i = 0; i < N; i++) {
        keys[i] = (uint64_t)i * 0x9e3779b97f4a7c15ull;
        rows[i] = malloc(row_floats * 4);
        back[i] = calloc(row_floats, 4);
        fill_row(rows[i], row_floats, keys[i], 0);
    }
    ck_assert_ok(pskv__spill_alloc(sp, N, slots));
    ck_assert_ok(pskv__spill_write(sp, N, keys, (const float *const *)rows, slots));
    ck_assert_ok(pskv__spill_read(sp, N, keys, slots, back, results));
    for (uint32_t i = 0; i < N; i++) {
        ck_assert_int_eq(results[i], 0);
        ck_assert(memcmp(rows[i], back[i], row_floats * 4) == 0);
    }
    /* free half, reallocate: the file grows by its slack at most (1/4 of
     * the rows plus a page; pages are at most 4608 bytes here), and no live
     * slot is handed out */
    uint64_t used, bytes_before, bytes_after;
    pskv__spill_usage(sp, &used, &bytes_before);
    ck_assert_uint_eq(used, N);
    pskv__spill_free(sp, slots, N / 2);
    uint32_t again[N / 2];
    ck_assert_ok(pskv__spill_alloc(sp, N / 2, again));
    pskv__spill_usage(sp, &used, &bytes_after);
    ck_assert_uint_le(bytes_after, bytes_before + (N / 4 + 1) * 4608);
    ck_assert_uint_eq(used, N);
    for (uint32_t i = 0; i < N / 2; i++) {
        for (uint32_t j = N / 2; j < N; j++)
            ck_assert_uint_ne(again[i], slots[j]);
        fill_row(rows[i], row_floats, keys[i], 1);
        slots[i] = again[i];
    }
    ck_assert_ok(pskv__spill_write(sp, N / 2, keys, (const float *const *)rows, slots));
    ck_assert_ok(pskv__spill_read(sp, N, keys, slots, back, NULL));
    for (uint32_t i = 0; i < N; i++)
        ck_assert(memcmp(rows[i], back[i], row_floats * 4) == 0);
    /* with short transfers and EAGAIN injected, still exact */
    pskv__io_faults f = {.short_every = 2, .eagain_every = 3, .short_unit = 512};
    pskv__io_set_faults(io, &f);
    ck_assert_ok(pskv__spill_write(sp, N, keys, (const float *const *)rows, slots));
    ck_assert_ok(pskv__spill_read(sp, N, keys, slots, back, NULL));
    for (uint32_t i = 0; i < N; i++)
        ck_assert(memcmp(rows[i], back[i], row_floats * 4) == 0);
    pskv__io_set_faults(io, NULL);
    finish(sp, io, rows, back, N);
}

START_TEST(round_trip_uring) { round_trips(false, 128); round_trips(false, 3); round_trips(false, 1100); }
END_TEST
START_TEST(round_trip_sync) { round_trips(true, 128); round_trips(true, 3); }
END_TEST

START_TEST(cap_is_all_or_nothing)
{
    pskv__io *io;
    ck_assert_ok(pskv__io_create(false, 8, &io));
    /* 512-byte rows: 528-byte records, 7 to a 4 KiB page; cap = 2 pages */
    pskv__spill *sp = make(io, 512, 2 * 4096);
    uint32_t slots[15];
    uint64_t used, bytes;
    ck_assert_err(pskv__spill_alloc(sp, 15, slots), PSKV_ENOSPC);
    pskv__spill_usage(sp, &used, &bytes);
    ck_assert_uint_eq(used, 0);
    ck_assert_uint_eq(bytes, 0); /* the failed call gave its page back */
    ck_assert_ok(pskv__spill_alloc(sp, 6, slots));
    ck_assert_err(pskv__spill_alloc(sp, 9, slots + 6), PSKV_ENOSPC);
    ck_assert_ok(pskv__spill_alloc(sp, 8, slots + 6));
    ck_assert_err(pskv__spill_alloc(sp, 1, slots + 14), PSKV_ENOSPC);
    pskv__spill_usage(sp, &used, &bytes);
    ck_assert_uint_eq(used, 14);
    ck_assert_uint_eq(bytes, 2 * 4096);
    for (int i = 0; i < 14; i++)
        for (int j = 0; j < i; j++)
            ck_assert_uint_ne(slots[i], slots[j]);
    pskv__spill_free(sp, slots + 3, 2);
    ck_assert_ok(pskv__spill_alloc(sp, 2, slots + 3)); /* holes are reused at the cap */
    done(sp);
    pskv__io_destroy(io);
}
END_TEST

/* Two allocations that share a page, written in the opposite order: the
 * second write keeps the first one's records, and a page never written is
 * not read back (it would lie past the end of the file). */
START_TEST(shared_page_any_order)
{
    pskv__io *io;
    ck_assert_ok(pskv__io_create(false, 8, &io));
    pskv__spill *sp = make(io, 512, 4096); /* one page of 7 records */
    uint64_t keys[6] = {11, 12, 13, 14, 15, 16};
    uint32_t slots[6];
    float *rows[6], *back[6];
    for (int i = 0; i < 6; i++) {
        rows[i] = malloc(512);
        back[i] = calloc(128, 4);
        fill_row(rows[i], 128, keys[i], 7);
    }
    ck_assert_ok(pskv__spill_alloc(sp, 3, slots));
    ck_assert_ok(pskv__spill_alloc(sp, 3, slots + 3));
    ck_assert_uint_eq(slots[0] / 7, slots[3] / 7); /* the same page */
    ck_assert_ok(pskv__spill_write(sp, 3, keys + 3, (const float *const *)rows + 3, slots + 3));
    ck_assert_ok(pskv__spill_write(sp, 3, keys, (const float *const *)rows, slots));
    ck_assert_ok(pskv__spill_read(sp, 6, keys, slots, back, NULL));
    for (int i = 0; i < 6; i++)
        ck_assert(memcmp(rows[i], back[i], 512) == 0);
    finish(sp, io, rows, back, 6);
}
END_TEST

/* Holes left by freed slots: the file grows while it holds little free
 * space, then fills holes by rewriting their pages, and the other records
 * of a rewritten page stay intact. */
START_TEST(holes_are_refilled)
{
    pskv__io *io;
    ck_assert_ok(pskv__io_create(false, 64, &io));
    pskv__spill *sp = make(io, 512, 0);
    enum { N = 7 * 1000, R = 40 };
    static uint64_t keys[N];
    static uint32_t slots[N];
    static float *rows[N], *back[N];
    for (uint32_t i = 0; i < N; i++) {
        keys[i] = i * 7919ull + 1;
        rows[i] = malloc(512);
        back[i] = malloc(512);
        fill_row(rows[i], 128, keys[i], 0);
    }
    ck_assert_ok(pskv__spill_alloc(sp, N, slots));
    ck_assert_ok(pskv__spill_write(sp, N, keys, (const float *const *)rows, slots));
    ck_assert_uint_eq(pskv__spill_rewrites(sp), 0); /* whole fresh pages */
    test_rng r = {9};
    uint64_t used, bytes, peak = 0;
    for (int round = 1; round <= R; round++) {
        /* free a random tenth, then give those rows new slots */
        static uint32_t pick[N / 10], freed[N / 10], fresh[N / 10];
        static uint64_t fkeys[N / 10];
        static const float *frows[N / 10];
        for (uint32_t k = 0; k < N / 10; k++) {
            uint32_t i;
            bool dup;
            do {
                i = rng_below(&r, N);
                dup = false;
                for (uint32_t m = 0; m < k; m++)
                    dup |= pick[m] == i;
            } while (dup);
            pick[k] = i;
            freed[k] = slots[i];
        }
        pskv__spill_free(sp, freed, N / 10);
        ck_assert_ok(pskv__spill_alloc(sp, N / 10, fresh));
        for (uint32_t k = 0; k < N / 10; k++) {
            uint32_t i = pick[k];
            fill_row(rows[i], 128, keys[i], (uint32_t)round);
            slots[i] = fresh[k];
            fkeys[k] = keys[i];
            frows[k] = rows[i];
        }
        ck_assert_ok(pskv__spill_write(sp, N / 10, fkeys, frows, fresh));
        pskv__spill_usage(sp, &used, &bytes);
        ck_assert_uint_eq(used, N);
        peak = bytes > peak ? bytes : peak;
    }
    /* bounded: 1/4 slack plus a page, and holes were filled by rewrites */
    ck_assert_uint_le(peak, (N + N / 4) / 7 * 4096 + 2 * 4096);
    ck_assert_uint_gt(pskv__spill_rewrites(sp), 0);
    static int results[N];
    ck_assert_ok(pskv__spill_read(sp, N, keys, slots, back, results));
    for (uint32_t i = 0; i < N; i++)
        ck_assert(memcmp(rows[i], back[i], 512) == 0);
    finish(sp, io, rows, back, N);
}
END_TEST

START_TEST(corruption_detected)
{
    pskv__io *io;
    ck_assert_ok(pskv__io_create(false, 8, &io));
    pskv__spill *sp = make(io, 256, 0);
    enum { N = 8 };
    uint64_t keys[N];
    uint32_t slots[N];
    float *rows[N], *back[N];
    int results[N];
    for (uint32_t i = 0; i < N; i++) {
        keys[i] = 1000 + i;
        rows[i] = malloc(256);
        back[i] = malloc(256);
        fill_row(rows[i], 64, keys[i], 0);
    }
    ck_assert_ok(pskv__spill_alloc(sp, N, slots));
    ck_assert_ok(pskv__spill_write(sp, N, keys, (const float *const *)rows, slots));
    /* flip one byte inside slot 3's row, through a second (buffered) fd */
    int fd = open(path, O_RDWR);
    ck_assert_int_ge(fd, 0);
    uint8_t b;
    off_t off = (off_t)pskv__spill_slot_offset(sp, slots[3]) + 100;
    ck_assert_int_eq(pread(fd, &b, 1, off), 1);
    b ^= 0x40;
    ck_assert_int_eq(pwrite(fd, &b, 1, off), 1);
    fsync(fd);
    close(fd);
    for (uint32_t i = 0; i < N; i++)
        memset(back[i], 0, 256);
    ck_assert_err(pskv__spill_read(sp, N, keys, slots, back, results), PSKV_ECORRUPT);
    for (uint32_t i = 0; i < N; i++) {
        ck_assert_int_eq(results[i], i == 3 ? PSKV_ECORRUPT : 0);
        if (i != 3)
            ck_assert(memcmp(rows[i], back[i], 256) == 0);
    }
    /* a slot read for the wrong key (misdirected or stale) is caught too */
    uint64_t wrong = keys[5] + 1;
    ck_assert_err(pskv__spill_read(sp, 1, &wrong, &slots[5], &back[5], results), PSKV_ECORRUPT);
    /* injected EIO */
    pskv__io_faults f = {.eio_every = 2};
    pskv__io_set_faults(io, &f);
    ck_assert_err(pskv__spill_read(sp, 2, keys, slots, back, results), PSKV_EIO);
    ck_assert_int_eq(results[0] == PSKV_EIO || results[1] == PSKV_EIO, 1);
    pskv__io_faults g = {.enospc_every = 1};
    pskv__io_set_faults(io, &g);
    ck_assert_err(pskv__spill_write(sp, 1, keys, (const float *const *)rows, slots), PSKV_ENOSPC);
    pskv__io_set_faults(io, NULL);
    finish(sp, io, rows, back, N);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("spill");
    TCase *tc = tcase_create("spill");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, round_trip_uring);
    tcase_add_test(tc, round_trip_sync);
    tcase_add_test(tc, cap_is_all_or_nothing);
    tcase_add_test(tc, holes_are_refilled);
    tcase_add_test(tc, shared_page_any_order);
    tcase_add_test(tc, corruption_detected);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
