/* Regression tests for the defects an adversarial campaign found (issue
 * 10): the directory lock, a failed map grow, full disks and file-size
 * limits, tiny maps, backups racing or aimed at a live store, non-finite
 * push results, and damaged records. Each failed on 047e161. */
#include <errno.h>
#include <fcntl.h>
#include <float.h>
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

/* ---------------------------------------------------------------- 8: non-finite */

static void weights_of(pskv_table *t, uint64_t key, float *w)
{
    uint8_t found;
    ck_assert_ok(pskv_get(t, &key, 1, w, &found));
    ck_assert(found);
}

START_TEST(push_never_stores_nonfinite)
{
    static const char *configs[] = {
        "dim=4 optimizer=sgd lr=1",        "dim=4 optimizer=adagrad lr=1",
        "dim=4 optimizer=rowwise_adagrad", "dim=4 optimizer=adam",
        "dim=4 optimizer=ftrl lr=0.5",
    };
    for (unsigned c = 0; c < sizeof configs / sizeof *configs; c++) {
        pskv_store *s;
        pskv_table *bad, *good;
        ck_assert_ok(pskv_open(NULL, NULL, &s));
        ck_assert_ok(pskv_table_open(s, "bad", configs[c], &bad));
        ck_assert_ok(pskv_table_open(s, "good", configs[c], &good));
        uint64_t keys[3] = {1, 2, 3};
        float w[12], g[12], big[12], before[4], after[4];
        for (int j = 0; j < 12; j++) {
            w[j] = j / 4 == 1 ? FLT_MAX : 0.25f * (float)j;
            g[j] = 0.125f;
        }
        ck_assert_ok(pskv_put(bad, keys, 3, w));
        ck_assert_ok(pskv_put(good, keys, 3, w));
        /* A gradient that overflows key 2 (weight FLT_MAX) under every
         * optimizer: big negative, so w - lr*g passes FLT_MAX. */
        for (int j = 0; j < 12; j++)
            big[j] = j / 4 == 1 ? -3e38f : 0.125f;
        weights_of(bad, 2, before);
        int rc = pskv_push(bad, keys, 3, big);
        if (rc == PSKV_ERANGE) {
            weights_of(bad, 2, after);
            ck_assert_mem_eq(before, after, sizeof before);
            pskv_table_stats st;
            ck_assert_ok(pskv_table_stats_get(bad, &st));
            ck_assert_uint_eq(st.push_nonfinite, 1);
            /* Keys 1 and 3 took their step: the same as on the good table. */
            uint64_t others[2] = {1, 3};
            float og[8];
            for (int j = 0; j < 8; j++)
                og[j] = 0.125f;
            ck_assert_ok(pskv_push(good, others, 2, og));
        } else {
            /* This optimizer bounds the step (adagrad-style normalization):
             * then the result must be finite. */
            ck_assert_msg(rc == 0, "%s: push returned %d", configs[c], rc);
            ck_assert_ok(pskv_push(good, keys, 3, big));
        }
        /* Every weight is finite, and later steps match the good table's:
         * the optimizer state of key 2 was left as it was too. */
        ck_assert_ok(pskv_push(bad, keys, 3, g));
        ck_assert_ok(pskv_push(good, keys, 3, g));
        float wb[12], wg[12];
        uint8_t found[3];
        ck_assert_ok(pskv_get(bad, keys, 3, wb, found));
        ck_assert_ok(pskv_get(good, keys, 3, wg, found));
        for (int j = 0; j < 12; j++)
            ck_assert_msg(isfinite(wb[j]), "%s: weight %d is %g", configs[c], j, (double)wb[j]);
        if (rc == PSKV_ERANGE) {
            /* key 2 on the good table never saw the big gradient */
            ck_assert_mem_eq(wb, wg, 4 * sizeof(float));
            ck_assert_mem_eq(wb + 8, wg + 8, 4 * sizeof(float));
        } else {
            ck_assert_mem_eq(wb, wg, sizeof wb);
        }
        pskv_close(s);
    }
}
END_TEST

START_TEST(push_nonfinite_sum_refused)
{
    pskv_store *s;
    pskv_table *t = open_table(&s, "dim=2 optimizer=sgd lr=1");
    uint64_t keys[2] = {7, 7};
    float g[4] = {FLT_MAX, 1, FLT_MAX, 1}; /* each finite, the sum is Inf */
    float w0[2], w1[2];
    ck_assert_ok(pskv_pull(t, keys, 1, w0));
    ck_assert_err(pskv_push(t, keys, 2, g), PSKV_EINVAL);
    weights_of(t, 7, w1);
    ck_assert_mem_eq(w0, w1, sizeof w0);
    /* The campaign's cases, one by one: no non-finite row, ever. */
    float w[2] = {FLT_MAX, 0}, neg[2] = {-FLT_MAX, 0};
    ck_assert_ok(pskv_put(t, keys, 1, w));
    ck_assert_err(pskv_push(t, keys, 1, neg), PSKV_ERANGE);
    weights_of(t, 7, w1);
    ck_assert_mem_eq(w, w1, sizeof w);
    pskv_close(s);
    pskv_table *f = open_table(&s, "dim=1 optimizer=ftrl");
    float huge = 3e38f, out;
    ck_assert_err(pskv_push(f, keys, 1, &huge), PSKV_ERANGE);
    ck_assert_ok(pskv_pull(f, keys, 1, &out));
    ck_assert(isfinite(out));
    pskv_close(s);
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
    ADD_CASE(s, push_never_stores_nonfinite);
    ADD_CASE(s, push_nonfinite_sum_refused);
    return run_suite(s);
}
