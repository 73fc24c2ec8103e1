/* The I/O layer, both backends: batches of O_DIRECT page reads and writes,
 * more requests than the queue depth, short transfers, EAGAIN, EIO and
 * ENOSPC injected into completions, and several threads sharing the layer.
 * Files live in a fresh directory under the working directory (meson runs
 * tests in the build directory, on disk rather than tmpfs). */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>

#include "pskv_internal.h"
#include "test_common.h"

#define PAGE 4096u
#define PAGES 256u

static char dir[64];
static char path[128];

static int open_file(void)
{
    test_mkdtemp(dir, "io");
    snprintf(path, sizeof path, "%s/spill", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_DIRECT, 0600);
    if (fd < 0) /* a file system without O_DIRECT: still test the logic */
        fd = open(path, O_RDWR | O_CREAT, 0600);
    ck_assert_int_ge(fd, 0);
    return fd;
}

static void close_file(int fd)
{
    close(fd);
    unlink(path);
    rmdir(dir);
}

static void fill(uint8_t *p, uint32_t page, uint32_t round)
{
    for (uint32_t i = 0; i < PAGE; i++)
        p[i] = (uint8_t)(page * 31 + i * 7 + round);
}

/* Write every page (in a shuffled order), read them all back in one batch
 * and compare; the requested faults apply to both runs. */
static void round_trip(bool sync, const pskv__io_faults *faults, uint32_t round)
{
    pskv__io *io;
    ck_assert_ok(pskv__io_create(sync, 32, &io));
    ck_assert_int_eq(pskv__io_is_uring(io), !sync);
    int fd = open_file();
    uint8_t *buf = aligned_alloc(PAGE, PAGES * PAGE), *back = aligned_alloc(PAGE, PAGES * PAGE);
    pskv__io_req *req = calloc(PAGES, sizeof *req);
    test_rng r = {round + 1};
    uint32_t order[PAGES];
    for (uint32_t i = 0; i < PAGES; i++)
        order[i] = i;
    for (uint32_t i = PAGES - 1; i > 0; i--) {
        uint32_t j = rng_below(&r, i + 1), t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    for (uint32_t i = 0; i < PAGES; i++) {
        uint32_t pg = order[i];
        fill(buf + (size_t)pg * PAGE, pg, round);
        req[i] = (pskv__io_req){.fd = fd, .write = true, .buf = buf + (size_t)pg * PAGE,
                                .len = PAGE, .off = (uint64_t)pg * PAGE};
    }
    pskv__io_set_faults(io, faults);
    ck_assert_ok(pskv__io_run(io, req, PAGES));
    memset(back, 0, PAGES * PAGE);
    for (uint32_t i = 0; i < PAGES; i++)
        req[i] = (pskv__io_req){.fd = fd, .write = false, .buf = back + (size_t)i * PAGE,
                                .len = PAGE, .off = (uint64_t)i * PAGE};
    ck_assert_ok(pskv__io_run(io, req, PAGES));
    ck_assert(memcmp(buf, back, PAGES * PAGE) == 0);
    /* one multi-page transfer too */
    req[0] = (pskv__io_req){.fd = fd, .buf = back, .len = 64 * PAGE, .off = 8 * PAGE};
    ck_assert_ok(pskv__io_run(io, req, 1));
    ck_assert(memcmp(buf + 8 * PAGE, back, 64 * PAGE) == 0);
    pskv__io_stats_t st;
    pskv__io_stats(io, &st);
    ck_assert_uint_eq(st.writes, PAGES);
    ck_assert_uint_eq(st.reads, PAGES + 1);
    ck_assert_uint_eq(st.bytes_read, (PAGES + 64) * PAGE);
    if (faults && faults->short_every)
        ck_assert_uint_gt(st.short_transfers, 0);
    if (faults && faults->eagain_every)
        ck_assert_uint_gt(st.retries, 0);
    free(buf);
    free(back);
    free(req);
    close_file(fd);
    pskv__io_destroy(io);
}

START_TEST(plain_batches)
{
    round_trip(false, NULL, 1);
    round_trip(true, NULL, 2);
}
END_TEST

START_TEST(short_and_eagain_are_continued)
{
    pskv__io_faults f = {.short_every = 3, .eagain_every = 5, .short_unit = 512};
    round_trip(false, &f, 3);
    round_trip(true, &f, 4);
}
END_TEST

static void error_injection(bool sync)
{
    pskv__io *io;
    ck_assert_ok(pskv__io_create(sync, 8, &io));
    int fd = open_file();
    uint8_t *buf = aligned_alloc(PAGE, 40 * PAGE);
    memset(buf, 7, 40 * PAGE);
    pskv__io_req req[40];
    for (int i = 0; i < 40; i++)
        req[i] = (pskv__io_req){.fd = fd, .write = true, .buf = buf + i * PAGE, .len = PAGE,
                                .off = (uint64_t)i * PAGE};
    pskv__io_faults f = {.eio_every = 7};
    pskv__io_set_faults(io, &f);
    ck_assert_err(pskv__io_run(io, req, 40), PSKV_EIO);
    int failed = 0;
    for (int i = 0; i < 40; i++) {
        ck_assert(req[i].result == 0 || req[i].result == PSKV_EIO);
        failed += req[i].result != 0;
    }
    ck_assert_int_eq(failed, 5); /* every 7th of 40 transfers */
    pskv__io_faults g = {.enospc_every = 4};
    pskv__io_set_faults(io, &g);
    ck_assert_err(pskv__io_run(io, req, 40), PSKV_ENOSPC);
    /* reads are not hit by ENOSPC */
    for (int i = 0; i < 40; i++)
        req[i].write = false;
    ck_assert_ok(pskv__io_run(io, req, 40));
    /* endless EAGAIN gives up with EIO instead of hanging */
    pskv__io_faults h = {.eagain_every = 1};
    pskv__io_set_faults(io, &h);
    ck_assert_err(pskv__io_run(io, req, 3), PSKV_EIO);
    pskv__io_set_faults(io, NULL);
    /* a read past the end of the file is an error, not a silent short read */
    req[0].off = 1000 * PAGE;
    ck_assert_err(pskv__io_run(io, req, 1), PSKV_EIO);
    free(buf);
    close_file(fd);
    pskv__io_destroy(io);
}

START_TEST(errors_reported)
{
    error_injection(false);
    error_injection(true);
}
END_TEST

typedef struct thread_arg {
    pskv__io *io;
    int fd;
    uint32_t id;
    int rc;
} thread_arg;

static void *thread_main(void *p)
{
    thread_arg *a = p;
    uint8_t *buf = aligned_alloc(PAGE, 16 * PAGE), *back = aligned_alloc(PAGE, 16 * PAGE);
    pskv__io_req req[16];
    for (uint32_t round = 0; round < 50 && a->rc == 0; round++) {
        for (uint32_t i = 0; i < 16; i++) {
            uint32_t pg = a->id * 16 + i;
            fill(buf + i * PAGE, pg, round);
            req[i] = (pskv__io_req){.fd = a->fd, .write = true, .buf = buf + i * PAGE, .len = PAGE,
                                    .off = (uint64_t)pg * PAGE};
        }
        a->rc = pskv__io_run(a->io, req, 16);
        for (uint32_t i = 0; i < 16; i++) {
            req[i].write = false;
            req[i].buf = back + i * PAGE;
        }
        if (a->rc == 0)
            a->rc = pskv__io_run(a->io, req, 16);
        if (a->rc == 0 && memcmp(buf, back, 16 * PAGE) != 0)
            a->rc = -1000;
    }
    free(buf);
    free(back);
    return NULL;
}

START_TEST(threads_share_the_layer)
{
    for (int sync = 0; sync < 2; sync++) {
        pskv__io *io;
        ck_assert_ok(pskv__io_create(sync, 16, &io));
        int fd = open_file();
        pthread_t th[6];
        thread_arg args[6];
        for (uint32_t i = 0; i < 6; i++) {
            args[i] = (thread_arg){io, fd, i, 0};
            pthread_create(&th[i], NULL, thread_main, &args[i]);
        }
        for (int i = 0; i < 6; i++) {
            pthread_join(th[i], NULL);
            ck_assert_int_eq(args[i].rc, 0);
        }
        close_file(fd);
        pskv__io_destroy(io);
    }
}
END_TEST

START_TEST(create_args)
{
    pskv__io *io;
    ck_assert_err(pskv__io_create(false, 0, &io), PSKV_EINVAL);
    ck_assert_err(pskv__io_create(false, 5000, &io), PSKV_EINVAL);
    int fd = open_file();
    uint32_t a = pskv__io_dio_align(fd);
    ck_assert(a >= 1 && a <= PAGE && (a & (a - 1)) == 0);
    close_file(fd);
    pskv__io_destroy(NULL);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("io");
    TCase *tc = tcase_create("io");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, plain_batches);
    tcase_add_test(tc, short_and_eagain_are_continued);
    tcase_add_test(tc, errors_reported);
    tcase_add_test(tc, threads_share_the_layer);
    tcase_add_test(tc, create_args);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
