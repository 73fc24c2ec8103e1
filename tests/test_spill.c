/* Spill files: round trips bit for bit in both I/O backends, slot reuse,
 * the spill_max cap (all or nothing), corruption and misdirected slots
 * caught by the trailer, injected I/O faults. */
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "pskv_internal.h"
#include "test_common.h"

static char dir[64], path[128];

static pskv__spill *make(pskv__io *io, uint32_t row_bytes, uint64_t max_bytes)
{
    strcpy(dir, "pskv-test-spill-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
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
    ck_assert_uint_ge(pskv__spill_slot_bytes(sp), row_floats * 4 + 16);
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
    /* free half, reallocate: the freed slots come back, the file does not grow */
    uint64_t used, bytes_before, bytes_after;
    pskv__spill_usage(sp, &used, &bytes_before);
    ck_assert_uint_eq(used, N);
    ck_assert_ok(pskv__spill_free(sp, slots, N / 2));
    uint32_t again[N / 2];
    ck_assert_ok(pskv__spill_alloc(sp, N / 2, again));
    pskv__spill_usage(sp, &used, &bytes_after);
    ck_assert_uint_eq(bytes_after, bytes_before);
    for (uint32_t i = 0; i < N / 2; i++) {
        ck_assert_uint_lt(again[i], N);
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
    for (uint32_t i = 0; i < N; i++) {
        free(rows[i]);
        free(back[i]);
    }
    done(sp);
    pskv__io_destroy(io);
}

START_TEST(round_trip_uring) { round_trips(false, 128); round_trips(false, 3); round_trips(false, 1100); }
END_TEST
START_TEST(round_trip_sync) { round_trips(true, 128); round_trips(true, 3); }
END_TEST

START_TEST(cap_is_all_or_nothing)
{
    pskv__io *io;
    ck_assert_ok(pskv__io_create(false, 8, &io));
    pskv__spill *sp = make(io, 512, 0);
    uint32_t sb = pskv__spill_slot_bytes(sp);
    done(sp);
    sp = make(io, 512, 10 * (uint64_t)sb);
    uint32_t slots[11];
    ck_assert_err(pskv__spill_alloc(sp, 11, slots), PSKV_ENOSPC);
    ck_assert_ok(pskv__spill_alloc(sp, 6, slots));
    ck_assert_err(pskv__spill_alloc(sp, 5, slots + 6), PSKV_ENOSPC);
    ck_assert_ok(pskv__spill_alloc(sp, 4, slots + 6));
    ck_assert_err(pskv__spill_alloc(sp, 1, slots + 10), PSKV_ENOSPC);
    ck_assert_ok(pskv__spill_free(sp, slots, 2));
    ck_assert_ok(pskv__spill_alloc(sp, 2, slots));
    done(sp);
    pskv__io_destroy(io);
}
END_TEST

START_TEST(corruption_detected)
{
    pskv__io *io;
    ck_assert_ok(pskv__io_create(false, 8, &io));
    pskv__spill *sp = make(io, 256, 0);
    uint32_t sb = pskv__spill_slot_bytes(sp);
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
    off_t off = (off_t)slots[3] * sb + 100;
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
    for (uint32_t i = 0; i < N; i++) {
        free(rows[i]);
        free(back[i]);
    }
    done(sp);
    pskv__io_destroy(io);
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
    tcase_add_test(tc, corruption_detected);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
