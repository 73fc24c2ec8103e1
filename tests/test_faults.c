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

#include "pskv_internal.h"
#include "test_common.h"
#include "test_damage.h"
#include "test_lmdb.h"
#include "format.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define UNDER_SANITIZER 1 /* their shadow memory does not live with RLIMIT_AS */
#else
#define UNDER_SANITIZER 0
#endif

static char dir[64];

static void fresh_dir(void)
{
    test_mkdtemp(dir, "faults");
}

static bool file_exists(const char *d, const char *name)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", d, name);
    return access(path, F_OK) == 0;
}

/* Open store d again: its table "t" holds test_fill's rows 1..n. */
static void expect_reopened(const char *d, uint32_t n, uint32_t dim, float base)
{
    pskv_store *s;
    pskv_table *t;
    ck_assert_ok(pskv_open(d, NULL, &s));
    ck_assert_ok(pskv_table_open(s, "t", NULL, &t));
    test_expect_rows(t, 1, n, dim, base);
    pskv_close(s);
}

/* In a child: the store in dir, reopened, holds test_fill's rows 1..n of
 * table "t"; 0, or the exit code `code` when it does not. */
static int reopened_ok_in_child(uint32_t n, uint32_t dim, float base, int code)
{
    pskv_store *s;
    pskv_table *t;
    if (pskv_open(dir, NULL, &s) != 0 || pskv_table_open(s, "t", NULL, &t) != 0)
        return code;
    int64_t bad = test_rows_differ(t, 1, n, dim, base);
    pskv_close(s);
    return bad == -1 ? 0 : code + 1;
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
    expect_reopened(dir, 100, 4, 1.0f);
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
    _exit(reopened_ok_in_child(150000, 128, 1.0f, 16));
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
    _exit(reopened_ok_in_child(20000, 16, 3.0f, 14));
}

START_TEST(file_size_limit_is_enospc)
{
    fresh_dir();
    ck_assert_int_eq(in_child(child_file_size_limit, NULL), 0);
    test_remove_dir(dir);
}
END_TEST

/* Issue 22, item 14: the spill file meets a file-size limit that is not a
 * multiple of 4 KiB. O_DIRECT writes cut to an unaligned length are
 * refused by the kernel with EINVAL; the caller must see PSKV_ENOSPC and
 * keep every row (io_uring, and pread/pwrite under PSKV_IO=sync). */
static void child_spill_unaligned_limit(void *arg)
{
    (void)arg;
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit lim;
    getrlimit(RLIMIT_FSIZE, &lim);
    lim.rlim_cur = (1u << 20) + 1000; /* mid-page */
    if (setrlimit(RLIMIT_FSIZE, &lim) != 0)
        _exit(12);
    pskv_store *s;
    pskv_table *t;
    if (pskv_open(dir, "durability=none memory_budget=64K", &s) != 0 ||
        pskv_table_open(s, "t", "dim=16 optimizer=sgd", &t) != 0)
        _exit(10);
    /* 96-byte rows: 1 MiB of spill file holds about 10,900 of them. */
    enum { BATCH = 500 };
    uint32_t filled = 0;
    int rc = 0;
    while (rc == 0 && filled < 40000) {
        uint64_t keys[BATCH];
        float vals[BATCH * 16];
        for (uint32_t i = 0; i < BATCH; i++) {
            keys[i] = 1 + filled + i;
            for (uint32_t j = 0; j < 16; j++)
                vals[i * 16 + j] = 1.0f + (float)(filled + i) + (float)j / 64.0f;
        }
        rc = pskv_put(t, keys, BATCH, vals);
        if (rc == 0)
            filled += BATCH;
    }
    if (rc != PSKV_ENOSPC)
        _exit(20 + (rc < 0 ? -rc : rc));
    if (filled < 5000)
        _exit(13); /* the limit should be reached far beyond the budget */
    if (test_rows_differ(t, 1, filled, 16, 1.0f) != -1)
        _exit(14); /* every acknowledged row is kept */
    pskv_close(s);
    _exit(0);
}

START_TEST(spill_unaligned_file_size_limit_is_enospc)
{
    fresh_dir();
    ck_assert_int_eq(in_child(child_spill_unaligned_limit, NULL), 0);
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
    expect_reopened(dest, 20000, 16, 1.0f);
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

/* ---------------------------------------------------------------- 3-6: damaged records */

/* A closed store in dir: tables "t" (dim 4, 3000 rows) and "u" (dim 2),
 * metadata, two checkpoints. */
static void make_store(const char *d)
{
    pskv_store *s;
    pskv_table *t, *u;
    ck_assert_ok(pskv_open(d, NULL, &s));
    ck_assert_ok(pskv_table_open(s, "t", "dim=4", &t));
    ck_assert_ok(pskv_table_open(s, "u", "dim=2", &u));
    test_fill(t, 1, 3000, 4, 1.0f);
    test_fill(u, 1, 10, 2, 5.0f);
    ck_assert_ok(pskv_checkpoint_with_meta(s, "step=1", 6));
    test_fill(t, 1, 3000, 4, 2.0f);
    ck_assert_ok(pskv_checkpoint_with_meta(s, "step=2", 6));
    pskv_close(s);
}

static void copy_dir(const char *from, const char *to)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && cp -r '%s' '%s'", to, from, to);
    ck_assert_int_eq(system(cmd), 0);
}

static void data_path(const char *d, char *buf, size_t len)
{
    snprintf(buf, len, "%s/data.mdb", d);
}

/* A fresh store in dir (make_store) and its data.mdb read into f for
 * damage; dmg_save(path, f) writes it back. */
static void store_to_damage(char *path, size_t len, dmg_file *f)
{
    fresh_dir();
    make_store(dir);
    data_path(dir, path, len);
    ck_assert(dmg_load(path, f));
}

/* Iterate the whole table: the iterator's final code. */
static int iterate_all(pskv_table *t, uint64_t *rows)
{
    pskv_iter *it;
    uint64_t key;
    float w[64], st[64];
    int rc = pskv_iter_create(t, &it);
    *rows = 0;
    if (rc != 0)
        return rc;
    while ((rc = pskv_iter_next(it, &key, w, st)) == 1)
        (*rows)++;
    pskv_iter_destroy(it);
    return rc;
}

typedef struct record_case {
    const char *dir;
    const char *record; /* in the meta database */
    int expect;         /* the first call that reads it must return this */
} record_case;

/* Open, open both tables, read the metadata, iterate: the first error. */
static int use_store(const char *d)
{
    pskv_store *s;
    pskv_table *t, *u;
    char buf[64];
    size_t len;
    uint64_t seq, rows;
    int rc = pskv_open(d, NULL, &s);
    if (rc != 0)
        return rc;
    if ((rc = pskv_table_open(s, "t", NULL, &t)) == 0 &&
        (rc = pskv_table_open(s, "u", NULL, &u)) == 0 &&
        (rc = pskv_checkpoint_meta(s, buf, sizeof buf, &len, &seq)) == 0)
        rc = iterate_all(t, &rows);
    pskv__close_abandon(s);
    return rc < 0 ? rc : 0;
}

static void child_huge_record(void *arg)
{
    record_case *c = arg;
    _exit(use_store(c->dir) == c->expect ? 0 : 1);
}

START_TEST(damaged_record_sizes_bounded)
{
    /* A node size past the data file: every read of the record is
     * bounded by the file (no SIGBUS/SIGSEGV) and reports damage. */
    fresh_dir();
    make_store(dir);
    char work[96], path[160];
    snprintf(work, sizeof work, "%s-work", dir);
    static const struct {
        const char *record;
        int expect;
    } cases[] = {
        {"format", PSKV_ECORRUPT},  {"checkpoint", PSKV_ECORRUPT}, {"user", PSKV_ECORRUPT},
        {"table/t", PSKV_ECORRUPT}, {"count/t", PSKV_ECORRUPT},
        {"filter/t/0", 0}, /* a damaged filter is dropped: every miss asks LMDB */
    };
    for (unsigned i = 0; i < sizeof cases / sizeof *cases; i++) {
        copy_dir(dir, work);
        data_path(work, path, sizeof path);
        dmg_file f;
        ck_assert(dmg_load(path, &f));
        uint8_t *node = dmg_find_node(&f, dmg_root(&f, PSKV_FMT_META_DB), cases[i].record,
                                      strlen(cases[i].record), NULL);
        ck_assert_msg(node != NULL, "record %s not found", cases[i].record);
        dmg_put16(node + 2, 0x7fff); /* size + 2 GiB */
        ck_assert(dmg_save(path, &f));
        free(f.b);
        record_case c = {work, cases[i].record, cases[i].expect};
        int status = in_child(child_huge_record, &c);
        ck_assert_msg(status == 0, "record %s: child ended with %d", cases[i].record, status);
    }
    test_remove_dir(work);
    test_remove_dir(dir);
}
END_TEST

static void drop_last_key_fn(const dmg_file *f, uint64_t pgno, void *arg)
{
    uint64_t *victim = arg;
    uint8_t *p = dmg_page(f, pgno);
    if (*victim == DMG_NONE && (dmg_u16(p + 10) & DMG_P_LEAF) && dmg_nkeys(p) >= 8)
        *victim = pgno;
}

START_TEST(vanished_rows_detected)
{
    /* One page header's key count one lower: a row vanishes from every
     * lookup and from the cursor. A full iteration must say so. */
    char path[160];
    dmg_file f;
    store_to_damage(path, sizeof path, &f);
    uint64_t victim = DMG_NONE;
    dmg_walk(&f, dmg_root(&f, PSKV_FMT_ROWS_PREFIX "t"), drop_last_key_fn, &victim);
    ck_assert(victim != DMG_NONE);
    uint8_t *p = dmg_page(&f, victim);
    dmg_put16(p + 12, (uint16_t)(dmg_u16(p + 12) - 2));
    ck_assert(dmg_save(path, &f));
    free(f.b);
    pskv_store *s;
    pskv_table *t;
    ck_assert_ok(pskv_open(dir, NULL, &s));
    ck_assert_ok(pskv_table_open(s, "t", NULL, &t));
    uint64_t rows;
    ck_assert_err(iterate_all(t, &rows), PSKV_ECORRUPT);
    pskv_close(s);
    test_remove_dir(dir);
}
END_TEST

START_TEST(rollback_refused)
{
    /* The newer meta page's txnid damaged below the older one's: LMDB
     * opens the older meta page. Each checkpoint is followed by a small
     * transaction that leaves its rows as they are (persist.c, the tick),
     * so that page is still the last checkpoint: same seq, same rows. */
    char path[160];
    dmg_file f;
    store_to_damage(path, sizeof path, &f);
    int cur = dmg_meta_current(&f);
    uint64_t older = dmg_u64(f.b + (size_t)(1 - cur) * DMG_PSIZE + DMG_META_TXNID);
    dmg_put64(f.b + (size_t)cur * DMG_PSIZE + DMG_META_TXNID, older - 1);
    ck_assert(dmg_save(path, &f));
    free(f.b);
    pskv_store *s;
    pskv_table *t;
    ck_assert_ok(pskv_open(dir, NULL, &s));
    pskv_store_stats ss;
    ck_assert_ok(pskv_store_stats_get(s, &ss));
    ck_assert_uint_eq(ss.checkpoint_seq, 2);
    ck_assert_ok(pskv_table_open(s, "t", NULL, &t));
    test_expect_rows(t, 1, 3000, 4, 2.0f);
    pskv__close_abandon(s);
    /* A store behind pskv.seq went back to an older checkpoint: refused. */
    uint8_t buf[PSKV_FMT_SEQ_BYTES];
    char seq_path[160];
    snprintf(seq_path, sizeof seq_path, "%s/pskv.seq", dir);
    pskv_fmt_seq_put(buf, 3);
    FILE *fp = fopen(seq_path, "wb");
    ck_assert_ptr_nonnull(fp);
    ck_assert_uint_eq(fwrite(buf, 1, sizeof buf, fp), sizeof buf);
    fclose(fp);
    ck_assert_err(pskv_open(dir, NULL, &s), PSKV_ECORRUPT);
    test_remove_dir(dir);
}
END_TEST

START_TEST(lost_records_are_corrupt)
{
    fresh_dir();
    make_store(dir);
    char work[96], path[160];
    snprintf(work, sizeof work, "%s-work", dir);
    pskv_store *s;
    pskv_table *t;
    /* No checkpoint record: not "never checkpointed". */
    copy_dir(dir, work);
    lmdb_del(work, PSKV_FMT_META_DB, "checkpoint", 10);
    ck_assert_err(pskv_open(work, NULL, &s), PSKV_ECORRUPT);
    /* An empty or missing data file beside pskv.seq: not a new store. */
    copy_dir(dir, work);
    data_path(work, path, sizeof path);
    ck_assert_int_eq(truncate(path, 0), 0);
    ck_assert_err(pskv_open(work, NULL, &s), PSKV_ECORRUPT);
    ck_assert_int_eq(unlink(path), 0);
    ck_assert_err(pskv_open(work, NULL, &s), PSKV_ECORRUPT);
    /* A table whose schema record is gone, or whose count record is. */
    copy_dir(dir, work);
    lmdb_del(work, PSKV_FMT_META_DB, "table/t", 7);
    ck_assert_ok(pskv_open(work, NULL, &s));
    ck_assert_err(pskv_table_open(s, "t", NULL, &t), PSKV_ECORRUPT);
    ck_assert_err(pskv_table_open(s, "t", "dim=4", &t), PSKV_ECORRUPT);
    pskv_close(s);
    copy_dir(dir, work);
    lmdb_del(work, PSKV_FMT_META_DB, "count/t", 7);
    ck_assert_ok(pskv_open(work, NULL, &s));
    ck_assert_err(pskv_table_open(s, "t", NULL, &t), PSKV_ECORRUPT);
    pskv_close(s);
    /* The other table of that store is fine. */
    ck_assert_ok(pskv_open(work, NULL, &s));
    ck_assert_ok(pskv_table_open(s, "u", NULL, &t));
    test_expect_rows(t, 1, 10, 2, 5.0f);
    pskv_close(s);
    test_remove_dir(work);
    test_remove_dir(dir);
}
END_TEST

/* ---------------------------------------------------------------- format upgrade */

static const char *data_dir; /* tests/data */

START_TEST(format1_store_upgrades)
{
    fresh_dir();
    char cmd[512];
    snprintf(cmd, sizeof cmd, "cp '%s/format1/data.mdb' '%s/'", data_dir, dir);
    ck_assert_int_eq(system(cmd), 0);
    for (int round = 0; round < 2; round++) { /* upgrade, then open as is */
        pskv_store *s;
        pskv_table *e, *b;
        ck_assert_ok(pskv_open(dir, NULL, &s));
        pskv_store_stats ss;
        ck_assert_ok(pskv_store_stats_get(s, &ss));
        ck_assert_uint_eq(ss.checkpoint_seq, 2);
        char meta[64];
        size_t len;
        uint64_t seq;
        ck_assert_ok(pskv_checkpoint_meta(s, meta, sizeof meta, &len, &seq));
        ck_assert_uint_eq(len, 18);
        ck_assert_uint_eq(seq, 1);
        ck_assert_str_eq(meta, "format-1 metadata");
        ck_assert_ok(pskv_table_open(s, "emb", NULL, &e));
        ck_assert_ok(pskv_table_open(s, "bias", NULL, &b));
        pskv_table_info info;
        ck_assert_ok(pskv_table_info_get(e, &info));
        ck_assert_int_eq(info.options.optimizer, PSKV_OPT_ADAM);
        ck_assert_uint_eq(pskv_table_rows(e), 299);
        uint64_t rows;
        ck_assert_ok(iterate_all(e, &rows)); /* the count record the upgrade wrote */
        ck_assert_uint_eq(rows, 299);
        test_expect_rows(e, 1, 299, 4, 1.0f);
        test_expect_rows(b, 1, 10, 1, 7.0f);
        uint64_t gone = 300;
        uint8_t found = 1;
        float w[4];
        ck_assert_ok(pskv_get(e, &gone, 1, w, &found));
        ck_assert(!found);
        if (round == 1) { /* and it goes on as a current store */
            test_fill(b, 1, 10, 1, 9.0f);
            ck_assert_ok(pskv_checkpoint(s));
        }
        pskv_close(s);
    }
    ck_assert(file_exists(dir, "pskv.seq"));
    test_remove_dir(dir);
}
END_TEST

/* A format-4 store of 0.2 (tests/data/format4): its tables keep the
 * initializer's generator they were created with, so that the rows they
 * create are those 0.2 creates; a table created now gets the current one. */
START_TEST(format4_tables_keep_their_generator)
{
    fresh_dir();
    char cmd[512], path[512];
    snprintf(cmd, sizeof cmd, "cp '%s/format4/data.mdb' '%s/format4/pskv.seq' '%s/'", data_dir,
             data_dir, dir);
    ck_assert_int_eq(system(cmd), 0);
    float want[50 * 5 + 50 * 3], got[50 * 5];
    snprintf(path, sizeof path, "%s/format4/created-by-0.2.bin", data_dir);
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fread(want, sizeof *want, 50 * 5 + 50 * 3, f), 50 * 5 + 50 * 3);
    fclose(f);
    pskv_store *s;
    pskv_table *t[2];
    ck_assert_ok(pskv_open(dir, NULL, &s));
    ck_assert_ok(pskv_table_open(s, "normal", NULL, &t[0]));
    ck_assert_ok(pskv_table_open(s, "uniform", NULL, &t[1]));
    uint64_t keys[50];
    for (int i = 0; i < 50; i++)
        keys[i] = 1001 + (uint64_t)i;
    for (int k = 0; k < 2; k++) {
        pskv_table_info info;
        ck_assert_ok(pskv_table_info_get(t[k], &info));
        ck_assert_uint_eq(info.options.init_gen, 1);
        ck_assert_ok(pskv_pull(t[k], keys, 50, got));
        const float *w = want + (k == 0 ? 0 : 50 * 5);
        ck_assert_int_eq(memcmp(got, w, 50 * info.dim * sizeof *got), 0);
    }
    /* Options filled as a 0.2 program fills them (init_gen 0: no generator
     * in particular) open the table with its own generator. */
    pskv_table_options o;
    pskv_table_options_init(&o);
    o.dim = 5;
    o.optimizer = PSKV_OPT_ADAGRAD;
    o.init = PSKV_INIT_NORMAL;
    o.init_a = 0.5f;
    o.init_b = 2.0f;
    o.seed = 3;
    pskv_table *x;
    ck_assert_ok(pskv_table_open_opts(s, "normal", &o, &x));
    ck_assert_ptr_eq(x, t[0]);
    /* Explicitly asking for the current generator contradicts the schema. */
    ck_assert_err(pskv_table_open(s, "normal", "init_gen=2", &x), PSKV_ESCHEMA);
    /* A table created now: the current generator, named in its schema. */
    ck_assert_ok(pskv_table_open(s, "fresh", "dim=5 init=normal:0.5:2 seed=3", &x));
    pskv_table_info info;
    ck_assert_ok(pskv_table_info_get(x, &info));
    ck_assert_uint_eq(info.options.init_gen, PSKV_INIT_GEN);
    ck_assert_ok(pskv_pull(x, keys, 50, got));
    ck_assert_int_ne(memcmp(got, want, 50 * 5 * sizeof *got), 0);
    pskv_close(s);
    /* Reopened: the upgraded store says format 5, each table its generator. */
    ck_assert_ok(pskv_open(dir, NULL, &s));
    ck_assert_ok(pskv_table_open_opts(s, "normal", &o, &t[0])); /* from the persisted schema */
    ck_assert_ok(pskv_table_open(s, "fresh", NULL, &x));
    ck_assert_ok(pskv_table_info_get(t[0], &info));
    ck_assert_uint_eq(info.options.init_gen, 1);
    ck_assert_ok(pskv_table_info_get(x, &info));
    ck_assert_uint_eq(info.options.init_gen, PSKV_INIT_GEN);
    for (int i = 0; i < 50; i++)
        keys[i] = 1001 + (uint64_t)i;
    ck_assert_ok(pskv_pull(t[0], keys, 50, got)); /* the rows created above, persisted */
    ck_assert_int_eq(memcmp(got, want, 50 * 5 * sizeof *got), 0);
    pskv_close(s);
    test_remove_dir(dir);
}
END_TEST

/* A format-3 store (tests/data/format3, written by the release before
 * undo generations): its one generation still rolls back, and after the
 * upgrade to format 4 it chains with the new ones. */
static void format3_copy(void)
{
    fresh_dir();
    char cmd[512];
    snprintf(cmd, sizeof cmd, "cp '%s/format3/data.mdb' '%s/format3/pskv.seq' '%s/'", data_dir,
             data_dir, dir);
    ck_assert_int_eq(system(cmd), 0);
}

static void format3_expect(pskv_store *s, uint64_t seq, uint32_t emb_rows, float bias)
{
    pskv_store_stats ss;
    ck_assert_ok(pskv_store_stats_get(s, &ss));
    ck_assert_uint_eq(ss.checkpoint_seq, seq);
    char meta[64];
    size_t len;
    uint64_t mseq;
    ck_assert_ok(pskv_checkpoint_meta(s, meta, sizeof meta, &len, &mseq));
    ck_assert_uint_eq(len, 18);
    ck_assert_str_eq(meta, "format-3 metadata");
    ck_assert_uint_eq(mseq, 1);
    pskv_table *e, *b;
    ck_assert_ok(pskv_table_open(s, "emb", NULL, &e));
    ck_assert_ok(pskv_table_open(s, "bias", NULL, &b));
    uint64_t rows;
    ck_assert_ok(iterate_all(e, &rows));
    ck_assert_uint_eq(rows, emb_rows);
    test_expect_rows(e, 1, emb_rows, 4, 1.0f);
    test_expect_rows(b, 1, 10, 1, bias);
}

START_TEST(format3_store_rolls_back)
{
    /* 1. at_seq=1 straight away: format 3's generation, from the upgraded store. */
    format3_copy();
    pskv_store *s;
    ck_assert_ok(pskv_open(dir, "at_seq=1", &s));
    format3_expect(s, 1, 300, 7.0f);
    pskv_close(s);
    test_remove_dir(dir);
    /* 2. Opened (upgraded), one more checkpoint, then back two: the new
     * generation and format 3's. */
    format3_copy();
    ck_assert_ok(pskv_open(dir, NULL, &s));
    format3_expect(s, 2, 299, 8.0f);
    pskv_table *b;
    ck_assert_ok(pskv_table_find(s, "bias", &b));
    test_fill(b, 1, 10, 1, 9.0f);
    ck_assert_ok(pskv_checkpoint(s)); /* 3 */
    pskv_close_discard(s);
    ck_assert_ok(pskv_open(dir, "at_seq=1", &s));
    format3_expect(s, 1, 300, 7.0f);
    pskv_close(s);
    test_remove_dir(dir);
}
END_TEST

START_TEST(format2_store_upgrades)
{
    fresh_dir();
    char cmd[512];
    snprintf(cmd, sizeof cmd, "cp '%s/format2/data.mdb' '%s/format2/pskv.seq' '%s/'", data_dir,
             data_dir, dir);
    ck_assert_int_eq(system(cmd), 0);
    uint64_t first_version = 0;
    for (int round = 0; round < 3; round++) { /* upgrade, open as is, write */
        pskv_store *s;
        pskv_table *e, *b;
        ck_assert_ok(pskv_open(dir, NULL, &s));
        pskv_store_stats ss;
        ck_assert_ok(pskv_store_stats_get(s, &ss));
        ck_assert_uint_eq(ss.checkpoint_seq, round < 2 ? 2 : 3);
        char meta[64];
        size_t len;
        uint64_t seq;
        ck_assert_ok(pskv_checkpoint_meta(s, meta, sizeof meta, &len, &seq));
        ck_assert_uint_eq(len, 18);
        ck_assert_str_eq(meta, "format-2 metadata");
        ck_assert_ok(pskv_table_open(s, "emb", NULL, &e));
        ck_assert_ok(pskv_table_open(s, "bias", NULL, &b));
        uint64_t rows;
        ck_assert_ok(iterate_all(e, &rows)); /* the count record the upgrade wrote */
        ck_assert_uint_eq(rows, 299);
        test_expect_rows(e, 1, 299, 4, 1.0f);
        test_expect_rows(b, 1, 10, 1, round < 2 ? 7.0f : 9.0f);
        /* Upgraded rows have version 0; the table starts past any version a
         * format-2 run could be asked about, and a clean close keeps it. */
        if (round == 0) {
            first_version = pskv_table_version(e);
            ck_assert_uint_ge(first_version, 1ull << 40);
        } else {
            ck_assert_uint_eq(pskv_table_version(e), first_version);
        }
        if (round == 1) {
            test_fill(b, 1, 10, 1, 9.0f);
            ck_assert_uint_gt(pskv_table_version(b), 0);
            ck_assert_ok(pskv_checkpoint(s));
        }
        pskv_close(s);
    }
    /* The checkpoint written since keeps a format-3 undo: at_seq=2 reaches
     * back over it (the format-2 undo went with the upgrade). */
    pskv_store *s;
    ck_assert_int_eq(pskv_open(dir, "at_seq=2", &s), 0);
    pskv_close(s);
    test_remove_dir(dir);
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

int main(int argc, char **argv)
{
    data_dir = argc > 1 ? argv[1] : "tests/data";
    Suite *s = suite_create("faults");
    ADD_CASE(s, failed_open_keeps_owner_lock);
    ADD_CASE(s, scratch_owner_keeps_spill_file);
    ADD_CASE(s, failed_map_grow_stays_usable);
    ADD_CASE(s, file_size_limit_is_enospc);
    ADD_CASE(s, tiny_map_new_store);
    ADD_CASE(s, spill_unaligned_file_size_limit_is_enospc);
    ADD_CASE(s, racing_backups_keep_the_winner);
    ADD_CASE(s, backup_into_live_store_refused);
    ADD_CASE(s, push_never_stores_nonfinite);
    ADD_CASE(s, push_nonfinite_sum_refused);
    ADD_CASE(s, damaged_record_sizes_bounded);
    ADD_CASE(s, vanished_rows_detected);
    ADD_CASE(s, rollback_refused);
    ADD_CASE(s, lost_records_are_corrupt);
    ADD_CASE(s, format1_store_upgrades);
    ADD_CASE(s, format2_store_upgrades);
    ADD_CASE(s, format3_store_rolls_back);
    ADD_CASE(s, format4_tables_keep_their_generator);
    return run_suite(s);
}
