/* Regression tests for the defects an adversarial campaign found (issue
 * 10): the directory lock, a failed map grow, full disks and file-size
 * limits, tiny maps, backups racing or aimed at a live store, non-finite
 * push results, and damaged records. Each failed on 047e161. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test_common.h"
#include "test_lmdb.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define UNDER_SANITIZER 1 /* their shadow memory does not live with RLIMIT_AS */
#else
#define UNDER_SANITIZER 0
#endif

static char dir[64];

static void fresh_dir(void)
{
    strcpy(dir, "pskv-test-faults-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

static bool file_exists(const char *d, const char *name)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", d, name);
    return access(path, F_OK) == 0;
}

/* Run fn in a child process; its exit status (or 128 + signal). */
static int in_child(void (*fn)(void *), void *arg)
{
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        fn(arg);
        _exit(0);
    }
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* ---------------------------------------------------------------- 1: lock */

static void child_open_busy(void *arg)
{
    (void)arg;
    pskv_store *s;
    _exit(pskv_open(dir, NULL, &s) == PSKV_EBUSY ? 0 : 1);
}

START_TEST(failed_open_keeps_owner_lock)
{
    fresh_dir();
    pskv_store *s, *s2;
    pskv_table *t;
    ck_assert_ok(pskv_open(dir, NULL, &s));
    ck_assert_ok(pskv_table_open(s, "t", "dim=4", &t));
    test_fill(t, 1, 100, 4, 1.0f);
    /* A failed scratch open must not remove the owner's lock file... */
    ck_assert_err(pskv_open(dir, "durability=none", &s2), PSKV_EBUSY);
    ck_assert(file_exists(dir, "pskv.lock"));
    /* ...so every later open, here and in another process, is refused. */
    ck_assert_err(pskv_open(dir, NULL, &s2), PSKV_EBUSY);
    ck_assert_err(pskv_open(dir, "durability=none", &s2), PSKV_EBUSY);
    ck_assert_int_eq(in_child(child_open_busy, NULL), 0);
    ck_assert_ok(pskv_checkpoint(s));
    pskv_close(s);
    ck_assert_ok(pskv_open(dir, NULL, &s));
    ck_assert_ok(pskv_table_open(s, "t", NULL, &t));
    test_expect_rows(t, 1, 100, 4, 1.0f);
    pskv_close(s);
    test_remove_dir(dir);
}
END_TEST

START_TEST(scratch_owner_keeps_spill_file)
{
    /* A second open of a scratch owner's directory must not truncate its
     * spill file: the owner reads back its own rows. */
    fresh_dir();
    pskv_store *s, *s2;
    pskv_table *t;
    ck_assert_ok(pskv_open(dir, "durability=none memory_budget=64K", &s));
    ck_assert_ok(pskv_table_open(s, "t", "dim=8", &t));
    test_fill(t, 1, 4000, 8, 2.0f); /* most rows spilled */
    for (int i = 0; i < 3; i++) {
        ck_assert_err(pskv_open(dir, "durability=none memory_budget=64K", &s2), PSKV_EBUSY);
        ck_assert_err(pskv_open(dir, NULL, &s2), PSKV_EBUSY);
    }
    test_expect_rows(t, 1, 4000, 8, 2.0f);
    pskv_close(s);
    ck_assert(!file_exists(dir, "pskv.lock")); /* a scratch store leaves nothing */
    test_remove_dir(dir);
}
END_TEST

/* ---------------------------------------------------------------- 2: map grow */

static uint64_t vm_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long pages = 0;
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fscanf(f, "%lu", &pages), 1);
    fclose(f);
    return (uint64_t)pages * (uint64_t)sysconf(_SC_PAGESIZE);
}

static void child_grow_fails(void *arg)
{
    (void)arg;
    pskv_store *s;
    pskv_table *t;
    if (pskv_open(dir, NULL, &s) != 0 || pskv_table_open(s, "t", "dim=128", &t) != 0)
        _exit(10);
    if (pskv_checkpoint(s) != 0)
        _exit(9);
    test_fill(t, 1, 150000, 128, 1.0f); /* ~77 MB of rows: the 64 MiB map must grow */
    struct rlimit old, lim;
    getrlimit(RLIMIT_AS, &old);
    lim = old;
    lim.rlim_cur = vm_bytes() + (48u << 20); /* room for the checkpoint's buffers, not the map */
    if (setrlimit(RLIMIT_AS, &lim) != 0)
        _exit(11);
    int rc = pskv_checkpoint(s);
    if (rc != PSKV_ENOMEM)
        _exit(12);
    /* Every later call fails cleanly or works: no crash. */
    for (int i = 0; i < 3; i++) {
        rc = pskv_checkpoint(s);
        if (rc != PSKV_ENOMEM && rc != 0)
            _exit(13);
        pskv_store_stats st;
        if (pskv_store_stats_get(s, &st) != 0)
            _exit(14);
    }
    setrlimit(RLIMIT_AS, &old);
    if (pskv_checkpoint(s) != 0)
        _exit(15); /* with the address space back, the checkpoint goes through */
    pskv_close(s);
    if (pskv_open(dir, NULL, &s) != 0 || pskv_table_open(s, "t", NULL, &t) != 0)
        _exit(16);
    if (test_rows_differ(t, 1, 150000, 128, 1.0f) != -1)
        _exit(17);
    pskv_close(s);
    _exit(0);
}

START_TEST(failed_map_grow_stays_usable)
{
    if (UNDER_SANITIZER)
        return;
    fresh_dir();
    ck_assert_int_eq(in_child(child_grow_fails, NULL), 0);
    test_remove_dir(dir);
}
END_TEST

/* ---------------------------------------------------------------- 10: full disk */

static void child_file_size_limit(void *arg)
{
    (void)arg;
    signal(SIGXFSZ, SIG_IGN); /* else the kernel kills the writer */
    pskv_store *s;
    pskv_table *t;
    if (pskv_open(dir, NULL, &s) != 0 || pskv_table_open(s, "t", "dim=16", &t) != 0)
        _exit(10);
    test_fill(t, 1, 1000, 16, 1.0f);
    if (pskv_checkpoint(s) != 0)
        _exit(11);
    test_fill(t, 1, 20000, 16, 3.0f);
    struct rlimit old, lim;
    getrlimit(RLIMIT_FSIZE, &old);
    lim = old;
    lim.rlim_cur = 1u << 20; /* the file may not grow past 1 MiB */
    if (setrlimit(RLIMIT_FSIZE, &lim) != 0)
        _exit(12);
    int rc = pskv_checkpoint(s);
    if (rc != PSKV_ENOSPC)
        _exit(20 + (rc < 0 ? -rc : rc));
    setrlimit(RLIMIT_FSIZE, &old);
    if (pskv_checkpoint(s) != 0) /* nothing was lost: the next one writes it all */
        _exit(13);
    pskv_close(s);
    if (pskv_open(dir, NULL, &s) != 0 || pskv_table_open(s, "t", NULL, &t) != 0)
        _exit(14);
    if (test_rows_differ(t, 1, 20000, 16, 3.0f) != -1)
        _exit(15);
    pskv_close(s);
    _exit(0);
}

START_TEST(file_size_limit_is_enospc)
{
    fresh_dir();
    ck_assert_int_eq(in_child(child_file_size_limit, NULL), 0);
    test_remove_dir(dir);
}
END_TEST

/* ---------------------------------------------------------------- 11: tiny map */

START_TEST(tiny_map_new_store)
{
    static const char *sizes[] = {"map_size=4096", "map_size=16K", "map_size=60K"};
    for (unsigned i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        fresh_dir();
        pskv_store *s;
        pskv_table *t;
        ck_assert_ok(pskv_open(dir, sizes[i], &s));
        ck_assert_ok(pskv_table_open(s, "t", "dim=4", &t));
        test_fill(t, 1, 500, 4, 1.0f);
        ck_assert_ok(pskv_checkpoint(s));
        pskv_close(s);
        ck_assert_ok(pskv_open(dir, sizes[i], &s));
        ck_assert_ok(pskv_table_open(s, "t", NULL, &t));
        test_expect_rows(t, 1, 500, 4, 1.0f);
        pskv_close(s);
        test_remove_dir(dir);
    }
}
END_TEST

/* ---------------------------------------------------------------- 9, 12: backups */

typedef struct backup_arg {
    pskv_store *s;
    const char *dest;
    int rc;
} backup_arg;

static void *backup_thread(void *arg)
{
    backup_arg *b = arg;
    b->rc = pskv_backup(b->s, b->dest);
    return NULL;
}

START_TEST(racing_backups_keep_the_winner)
{
    fresh_dir();
    pskv_store *s;
    pskv_table *t;
    ck_assert_ok(pskv_open(dir, NULL, &s));
    ck_assert_ok(pskv_table_open(s, "t", "dim=16", &t));
    test_fill(t, 1, 20000, 16, 1.0f);
    ck_assert_ok(pskv_checkpoint(s));
    char dest[96];
    for (int trial = 0; trial < 20; trial++) {
        snprintf(dest, sizeof dest, "%s/backup-%d", dir, trial);
        backup_arg a = {s, dest, 1}, b = {s, dest, 1};
        pthread_t ta, tb;
        ck_assert_int_eq(pthread_create(&ta, NULL, backup_thread, &a), 0);
        ck_assert_int_eq(pthread_create(&tb, NULL, backup_thread, &b), 0);
        pthread_join(ta, NULL);
        pthread_join(tb, NULL);
        /* One wins; the other gets a clear code and removes nothing. */
        ck_assert_msg((a.rc == 0) != (b.rc == 0), "trial %d: %d %d", trial, a.rc, b.rc);
        int loser = a.rc == 0 ? b.rc : a.rc;
        ck_assert_msg(loser == PSKV_EBUSY || loser == PSKV_EEXIST, "loser %d", loser);
        ck_assert(file_exists(dest, "data.mdb"));
    }
    pskv_close(s);
    pskv_store *b;
    ck_assert_ok(pskv_open(dest, NULL, &b));
    ck_assert_ok(pskv_table_open(b, "t", NULL, &t));
    test_expect_rows(t, 1, 20000, 16, 1.0f);
    pskv_close(b);
    test_remove_dir(dir);
}
END_TEST

START_TEST(backup_into_live_store_refused)
{
    fresh_dir();
    char other[96];
    snprintf(other, sizeof other, "%s-scratch", dir);
    pskv_store *s, *scratch;
    pskv_table *t;
    ck_assert_ok(pskv_open(dir, NULL, &s));
    ck_assert_ok(pskv_table_open(s, "t", "dim=4", &t));
    test_fill(t, 1, 100, 4, 1.0f);
    ck_assert_ok(pskv_checkpoint(s));
    ck_assert_ok(pskv_open(other, "durability=none", &scratch));
    ck_assert_err(pskv_backup(s, other), PSKV_EBUSY);
    ck_assert(!file_exists(other, "data.mdb"));
    ck_assert_err(pskv_backup(s, dir), PSKV_EBUSY); /* its own directory */
    pskv_close(scratch);
    ck_assert_ok(pskv_backup(s, other)); /* free now */
    pskv_close(s);
    test_remove_dir(dir);
    test_remove_dir(other);
}
END_TEST

/* One case per test, so that CK_RUN_CASE=name runs one. */
#define ADD_CASE(s, name)                                                      \
    do {                                                                       \
        TCase *tc_ = tcase_create(#name);                                      \
        tcase_set_timeout(tc_, 600);                                           \
        tcase_add_test(tc_, name);                                             \
        suite_add_tcase(s, tc_);                                               \
    } while (0)

int main(void)
{
    Suite *s = suite_create("faults");
    ADD_CASE(s, failed_open_keeps_owner_lock);
    ADD_CASE(s, scratch_owner_keeps_spill_file);
    ADD_CASE(s, failed_map_grow_stays_usable);
    ADD_CASE(s, file_size_limit_is_enospc);
    ADD_CASE(s, tiny_map_new_store);
    ADD_CASE(s, racing_backups_keep_the_winner);
    ADD_CASE(s, backup_into_live_store_refused);
    return run_suite(s);
}
