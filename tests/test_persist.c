/* Durable stores: schema records, format versions, checkpoints taken while
 * another thread writes (point in time, against the reference model), a
 * tiny LMDB map that must grow, damaged files, the directory lock, and
 * backups. */
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ref_model.h"
#include "test_common.h"
#include "test_lmdb.h"
#include "format.h"
#include "pskv_internal.h"
#include "checkpoint.h"

static char dir[64];

static void fresh_dir(void)
{
    test_mkdtemp(dir, "persist");
}

static void remove_dir(const char *d) { test_remove_dir(d); }

/* ---------------------------------------------------------------- schema */

START_TEST(schema_persists)
{
    fresh_dir();
    pskv_store *s;
    pskv_table *t;
    ck_assert_ok(pskv_open(dir, NULL, &s));
    ck_assert_ok(pskv_table_open(s, "emb", "dim=8 optimizer=adam lr=0.002 seed=7 shards=4", &t));
    test_fill(t, 100, 50, 8, 1.0f);
    pskv_close(s); /* checkpoints */

    ck_assert_ok(pskv_open(dir, NULL, &s));
    ck_assert_err(pskv_table_find(s, "emb", &t), PSKV_ENOTFOUND); /* not opened yet */
    ck_assert_err(pskv_table_open(s, "emb", "dim=16", &t), PSKV_ESCHEMA);
    ck_assert_err(pskv_table_open(s, "emb", "optimizer=adagrad", &t), PSKV_ESCHEMA);
    ck_assert_err(pskv_table_open(s, "emb", "lr=0.5", &t), PSKV_ESCHEMA);
    ck_assert_err(pskv_table_open(s, "other", NULL, &t), PSKV_EINVAL); /* creating needs dim */
    ck_assert_ok(pskv_table_open(s, "emb", "shards=9", &t)); /* shards are not schema */
    pskv_table_info info;
    ck_assert_ok(pskv_table_info_get(t, &info));
    ck_assert_uint_eq(info.dim, 8);
    ck_assert_int_eq(info.options.optimizer, PSKV_OPT_ADAM);
    ck_assert_float_eq(info.options.lr, 0.002f);
    ck_assert_uint_eq(info.options.seed, 7);
    ck_assert_uint_eq(info.shards, 9);
    pskv_table_stats st;
    ck_assert_ok(pskv_table_stats_get(t, &st));
    ck_assert_uint_eq(st.rows, 50);
    ck_assert_uint_eq(st.rows_cold, 50); /* nothing read back yet: reopen is metadata only */
    test_expect_rows(t, 100, 50, 8, 1.0f);
    ck_assert_ok(pskv_table_stats_get(t, &st));
    ck_assert_uint_eq(st.rows_cold, 0);
    pskv_store_stats ss;
    ck_assert_ok(pskv_store_stats_get(s, &ss));
    ck_assert_uint_eq(ss.checkpoint_seq, 1);
    /* The full options struct must match the schema too. */
    pskv_table_options o;
    pskv_table_options_init(&o);
    o.dim = 8;
    pskv_table *t2;
    ck_assert_err(pskv_table_open_opts(s, "emb", &o, &t2), PSKV_ESCHEMA);
    pskv_close(s);
    remove_dir(dir);
}
END_TEST

START_TEST(table_created_without_rows_persists)
{
    fresh_dir();
    pskv_store *s;
    pskv_table *t;
    ck_assert_ok(pskv_open(dir, NULL, &s));
    ck_assert_ok(pskv_table_open(s, "empty", "dim=3", &t));
    pskv__close_abandon(s); /* no checkpoint: the schema was written at creation */
    ck_assert_ok(pskv_open(dir, NULL, &s));
    ck_assert_ok(pskv_table_open(s, "empty", NULL, &t));
    ck_assert_uint_eq(pskv_table_rows(t), 0);
    pskv_close(s);
    remove_dir(dir);
}
END_TEST

/* Rewrite a meta record of a closed store through LMDB. */
static void poke_meta(const char *d, const char *name, const void *val, size_t len)
{
    lmdb_put(d, PSKV_FMT_META_DB, name, strlen(name), val, len);
}

START_TEST(format_version_refused)
{
    fresh_dir();
    pskv_store *s;
    ck_assert_ok(pskv_open(dir, NULL, &s));
    pskv_close(s);
    uint8_t rec[16];
    uint32_t magic = PSKV_FMT_MAGIC, version = PSKV_FMT_VERSION + 1;
    memcpy(rec, &magic, 4);
    memcpy(rec + 4, &version, 4);
    pskv_fmt_put64(rec + 8, pskv_fmt_record_check(rec, 8));
    poke_meta(dir, PSKV_FMT_KEY_FORMAT, rec, sizeof rec);
    ck_assert_err(pskv_open(dir, NULL, &s), PSKV_EVERSION);
    /* A record that fails its checksum is damage. */
    version = PSKV_FMT_VERSION;
    memcpy(rec + 4, &version, 4);
    rec[15] ^= 1;
    poke_meta(dir, PSKV_FMT_KEY_FORMAT, rec, sizeof rec);
    ck_assert_err(pskv_open(dir, NULL, &s), PSKV_ECORRUPT);
    remove_dir(dir);
}
END_TEST

/* ---------------------------------------------------------------- damage */

static void make_store(uint32_t rows)
{
    pskv_store *s;
    pskv_table *t;
    ck_assert_ok(pskv_open(dir, NULL, &s));
    ck_assert_ok(pskv_table_open(s, "t", "dim=4", &t));
    test_fill(t, 1, rows, 4, 0.5f);
    pskv_close(s);
}

/* A row read back from LMDB and erased while no other row is cold: the
 * iteration's LMDB walk must not list it before the next checkpoint
 * deletes it there. */
START_TEST(erased_faulted_row_not_iterated)
{
    fresh_dir();
    make_store(2);
    pskv_store *s;
    pskv_table *t;
    ck_assert_ok(pskv_open(dir, NULL, &s));
    ck_assert_ok(pskv_table_open(s, "t", "dim=4", &t));
    uint64_t keys[2] = {1, 2};
    float out[8];
    ck_assert_ok(pskv_pull(t, keys, 2, out)); /* both read back: none cold */
    ck_assert_ok(pskv_erase(t, keys, 1));
    pskv_iter *it;
    ck_assert_ok(pskv_iter_create(t, &it));
    uint64_t key;
    float w[4];
    uint32_t n = 0;
    int rc;
    while ((rc = pskv_iter_next(it, &key, w, NULL)) == 1) {
        ck_assert_uint_eq(key, 2);
        n++;
    }
    ck_assert_int_eq(rc, 0);
    ck_assert_uint_eq(n, 1);
    pskv_iter_destroy(it);
    ck_assert_uint_eq(pskv_table_rows(t), 1);
    pskv_close(s);
    remove_dir(dir);
}
END_TEST

/* Reads every key of a reopened table in a scrambled order, twice, while
 * the main thread iterates (rows_read_back_during_iteration_are_iterated). */
typedef struct reader_arg {
    pskv_table *t;
    uint32_t rows;
    atomic_int *failures;
} reader_arg;

static void *reader_main(void *p)
{
    reader_arg *a = p;
    for (uint32_t pass = 0; pass < 2; pass++) {
        for (uint32_t i = 0; i < a->rows; i += 64) {
            uint64_t keys[64];
            float out[64 * 4];
            uint32_t n = a->rows - i < 64 ? a->rows - i : 64;
            for (uint32_t j = 0; j < n; j++) /* 7919 is prime to rows */
                keys[j] = ((uint64_t)(i + j) * 7919u) % a->rows + 1;
            if (pskv_get(a->t, keys, n, out, NULL) != 0)
                atomic_fetch_add(a->failures, 1);
        }
    }
    return NULL;
}

/* Rows read back from LMDB (by pulls) during an iteration, after their
 * shard was copied: the iteration's LMDB walk must still return each of
 * them once, with its value, whether it stayed in DRAM or was evicted to
 * the spill file meanwhile. Found while building delta exports, whose
 * full export is an iteration. */
START_TEST(rows_read_back_during_iteration_are_iterated)
{
    enum { ROWS = 20000 };
    fresh_dir();
    make_store(ROWS);
    /* The second spills; the third reads from another thread throughout. */
    const char *configs[3] = {NULL, "memory_budget=64K", "memory_budget=64K"};
    for (int c = 0; c < 3; c++) {
        pskv_store *s;
        pskv_table *t;
        ck_assert_ok(pskv_open(dir, configs[c], &s));
        ck_assert_ok(pskv_table_open(s, "t", "dim=4", &t));
        pskv_iter *it;
        ck_assert_ok(pskv_iter_create(t, &it));
        uint8_t *seen = calloc(ROWS + 1, 1);
        uint64_t key;
        float w[4];
        uint32_t n = 0;
        atomic_int failures = 0;
        reader_arg ra = {t, ROWS, &failures};
        pthread_t th;
        if (c == 2)
            ck_assert_int_eq(pthread_create(&th, NULL, reader_main, &ra), 0);
        ck_assert_int_eq(pskv_iter_next(it, &key, w, NULL), 1); /* every shard copied */
        seen[key] = 1;
        n++;
        /* The 100 highest keys, then half the table (keys not yet walked
         * among them) read back; with the budget, most go on to the spill
         * file. */
        uint64_t keys[100];
        float out[400];
        for (int i = 0; i < 100; i++)
            keys[i] = ROWS - i;
        ck_assert_ok(pskv_pull(t, keys, 100, out));
        for (uint64_t first = 1; first <= ROWS / 2; first += 100) {
            for (int i = 0; i < 100; i++)
                keys[i] = first + (uint64_t)i;
            ck_assert_ok(pskv_get(t, keys, 100, out, NULL));
        }
        int rc;
        while ((rc = pskv_iter_next(it, &key, w, NULL)) == 1) {
            ck_assert_uint_le(key, ROWS);
            ck_assert_msg(!seen[key], "key %llu twice", (unsigned long long)key);
            seen[key] = 1;
            n++;
            for (int j = 0; j < 4; j++) /* make_store's values */
                ck_assert_float_eq(w[j], 0.5f + (float)(key - 1) + (float)j / 64.0f);
        }
        ck_assert_int_eq(rc, 0);
        if (c == 2) {
            pthread_join(th, NULL);
            ck_assert_int_eq(atomic_load(&failures), 0);
        }
        ck_assert_uint_eq(n, ROWS);
        pskv_iter_destroy(it);
        if (c >= 1) {
            pskv_table_stats st;
            ck_assert_ok(pskv_table_stats_get(t, &st));
            ck_assert_uint_gt(st.rows_spilled, 0);
        }
        free(seen);
        pskv_close(s);
    }
    remove_dir(dir);
}
END_TEST

static char *data_path(const char *d)
{
    static char p[128];
    snprintf(p, sizeof p, "%s/data.mdb", d);
    return p;
}

START_TEST(corrupt_row_detected)
{
    fresh_dir();
    make_store(100);
    lmdb_damage_row(dir, "t", 42, 2, 0x40); /* a weight of row 42 */

    pskv_store *s;
    pskv_table *t;
    ck_assert_ok(pskv_open(dir, NULL, &s));
    ck_assert_ok(pskv_table_open(s, "t", NULL, &t));
    uint64_t keys[2] = {41, 42};
    float out[8];
    ck_assert_err(pskv_get(t, keys, 2, out, NULL), PSKV_ECORRUPT);
    ck_assert_err(pskv_pull(t, keys + 1, 1, out), PSKV_ECORRUPT);
    float g[4] = {1, 1, 1, 1};
    ck_assert_err(pskv_push(t, keys + 1, 1, g), PSKV_ECORRUPT);
    test_expect_rows(t, 43, 50, 4, 0.5f + 42.0f); /* the others are fine */
    pskv_close(s);
    remove_dir(dir);
}
END_TEST

START_TEST(truncated_or_garbage_file_refused)
{
    fresh_dir();
    make_store(5000);
    struct stat st;
    ck_assert_int_eq(stat(data_path(dir), &st), 0);
    ck_assert_int_eq(truncate(data_path(dir), st.st_size / 2), 0);
    pskv_store *s;
    ck_assert_err(pskv_open(dir, NULL, &s), PSKV_ECORRUPT);
    ck_assert_int_eq(truncate(data_path(dir), 100), 0);
    ck_assert_err(pskv_open(dir, NULL, &s), PSKV_ECORRUPT);
    /* Garbage where the meta pages should be. */
    int fd = open(data_path(dir), O_WRONLY | O_TRUNC);
    ck_assert_int_ge(fd, 0);
    char junk[16384];
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = (char)(i * 7 + 3);
    ck_assert_int_eq(write(fd, junk, sizeof junk), (ssize_t)sizeof junk);
    close(fd);
    ck_assert_err(pskv_open(dir, NULL, &s), PSKV_ECORRUPT);
    remove_dir(dir);
}
END_TEST

START_TEST(second_open_busy)
{
    fresh_dir();
    pskv_store *s, *s2;
    ck_assert_ok(pskv_open(dir, NULL, &s));
    ck_assert_err(pskv_open(dir, NULL, &s2), PSKV_EBUSY);
    ck_assert_ptr_nonnull(strstr(pskv_last_error(), "is already open in this process"));
    ck_assert_err(pskv_open(dir, "durability=none", &s2), PSKV_EBUSY);
    pskv_close(s);
    /* Another process owns it: the detail names its pid. */
    int go[2], done[2];
    ck_assert_int_eq(pipe(go), 0);
    ck_assert_int_eq(pipe(done), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        char c = 0;
        pskv_store *cs;
        int rc = pskv_open(dir, NULL, &cs);
        if (write(go[1], &c, 1) != 1 || read(done[0], &c, 1) != 1)
            _exit(3);
        if (rc == 0)
            pskv__close_abandon(cs);
        _exit(rc == 0 ? 0 : 2);
    }
    char c;
    ck_assert_int_eq(read(go[0], &c, 1), 1);
    ck_assert_err(pskv_open(dir, NULL, &s2), PSKV_EBUSY);
    char want[64];
    snprintf(want, sizeof want, "is owned by another process (pid %ld)", (long)pid);
    ck_assert_msg(strstr(pskv_last_error(), want) != NULL, "%s", pskv_last_error());
    ck_assert_int_eq(write(done[1], &c, 1), 1);
    int status;
    waitpid(pid, &status, 0);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    for (int i = 0; i < 2; i++) {
        close(go[i]);
        close(done[i]);
    }
    ck_assert_ok(pskv_open(dir, NULL, &s2));
    pskv_close(s2);
    remove_dir(dir);
}
END_TEST

/* ---------------------------------------------------------------- filter */

static uint64_t lookups(pskv_table *t)
{
    pskv_table_stats st;
    ck_assert_ok(pskv_table_stats_get(t, &st));
    return st.cold_lookups;
}

START_TEST(filter_spares_new_keys)
{
    fresh_dir();
    pskv_store *s;
    pskv_table *t;
    ck_assert_ok(pskv_open(dir, NULL, &s));
    ck_assert_ok(pskv_table_open(s, "t", "dim=2", &t));
    /* Two checkpoints: the second adds to the filter series. */
    test_fill(t, 1, 70000, 2, 1.0f);
    ck_assert_ok(pskv_checkpoint(s));
    test_fill(t, 1000000, 70000, 2, 3.0f);
    pskv_close(s);

    ck_assert_ok(pskv_open(dir, NULL, &s));
    ck_assert_ok(pskv_table_open(s, "t", NULL, &t));
    ck_assert_uint_eq(pskv_table_rows(t), 140000);
    /* 20k brand-new keys: a few false "maybe"s ask LMDB, the rest do not. */
    uint64_t *keys = malloc(20000 * sizeof *keys);
    float *out = malloc(20000 * 2 * sizeof(float));
    for (uint32_t i = 0; i < 20000; i++)
        keys[i] = 5000000 + (uint64_t)i * 7;
    ck_assert_ok(pskv_pull(t, keys, 20000, out));
    uint64_t asked = lookups(t);
    ck_assert_msg(asked < 20000 / 20, "%llu of 20000 new keys asked LMDB", (unsigned long long)asked);
    /* Every persisted key is still found: the filter has no false "no". */
    test_expect_rows(t, 1, 70000, 2, 1.0f);
    test_expect_rows(t, 1000000, 70000, 2, 3.0f);
    ck_assert_uint_eq(pskv_table_rows(t), 160000);
    free(keys);
    free(out);
    pskv_close(s);
    remove_dir(dir);
}
END_TEST

START_TEST(damaged_filter_falls_back)
{
    fresh_dir();
    make_store(3000);
    uint8_t junk[40] = {1, 2, 3};
    poke_meta(dir, PSKV_FMT_FILTER_PREFIX "t/0", junk, sizeof junk); /* fails its checksum */
    pskv_store *s;
    pskv_table *t;
    ck_assert_ok(pskv_open(dir, NULL, &s));
    ck_assert_ok(pskv_table_open(s, "t", NULL, &t));
    uint64_t k = 999999;
    float w[4];
    ck_assert_ok(pskv_pull(t, &k, 1, w)); /* a new key: asks LMDB, as without a filter */
    ck_assert_uint_eq(lookups(t), 1);
    test_expect_rows(t, 1, 3000, 4, 0.5f);
    ck_assert_ok(pskv_checkpoint(s)); /* drops the untrusted records */
    pskv_close(s);
    ck_assert_ok(pskv_open(dir, NULL, &s));
    ck_assert_ok(pskv_table_open(s, "t", NULL, &t));
    ck_assert_uint_eq(pskv_table_rows(t), 3001);
    test_expect_rows(t, 1, 3000, 4, 0.5f);
    pskv_close(s);
    remove_dir(dir);
}
END_TEST

/* ---------------------------------------------------------------- map */

START_TEST(tiny_map_grows)
{
    fresh_dir();
    pskv_store *s;
    pskv_table *t;
    ck_assert_ok(pskv_open(dir, "map_size=64K", &s));
    ck_assert_ok(pskv_table_open(s, "t", "dim=32", &t));
    test_fill(t, 1000, 20000, 32, 2.0f);
    ck_assert_ok(pskv_checkpoint(s));
    pskv_store_stats ss;
    ck_assert_ok(pskv_store_stats_get(s, &ss));
    ck_assert_uint_gt(ss.map_grows, 0);
    ck_assert_uint_eq(ss.checkpoint_rows, 20000);
    pskv__close_abandon(s);
    ck_assert_ok(pskv_open(dir, "map_size=64K", &s));
    ck_assert_ok(pskv_table_open(s, "t", NULL, &t));
    ck_assert_uint_eq(pskv_table_rows(t), 20000);
    test_expect_rows(t, 1000, 20000, 32, 2.0f);
    pskv_close(s);
    remove_dir(dir);
}
END_TEST

/* ---------------------------------------------------------------- metadata */

START_TEST(checkpoint_meta_round_trips)
{
    fresh_dir();
    pskv_store *s;
    pskv_table *t;
    uint8_t buf[64];
    size_t len = 99;
    uint64_t seq = 99;
    ck_assert_ok(pskv_open(dir, "map_size=64K", &s));
    ck_assert_err(pskv_checkpoint_meta(s, buf, sizeof buf, &len, &seq), PSKV_ENOTFOUND);
    ck_assert_err(pskv_checkpoint_meta(s, buf, sizeof buf, NULL, &seq), PSKV_EINVAL);
    ck_assert_err(pskv_checkpoint_meta(s, NULL, 4, &len, &seq), PSKV_EINVAL);
    ck_assert_err(pskv_checkpoint_with_meta(s, NULL, 4), PSKV_EINVAL);
    ck_assert_err(pskv_checkpoint_with_meta(s, buf, PSKV_CHECKPOINT_META_MAX + 1), PSKV_EINVAL);
    ck_assert_err(pskv_checkpoint_with_meta(NULL, buf, 4), PSKV_EINVAL);

    /* No row yet: a checkpoint with metadata still commits. */
    ck_assert_ok(pskv_checkpoint_with_meta(s, "step=0", 6));
    pskv_store_stats ss;
    ck_assert_ok(pskv_store_stats_get(s, &ss));
    ck_assert_uint_eq(ss.checkpoint_seq, 1);
    ck_assert_ok(pskv_checkpoint_meta(s, buf, sizeof buf, &len, &seq));
    ck_assert_uint_eq(len, 6);
    ck_assert_uint_eq(seq, 1);
    ck_assert_int_eq(memcmp(buf, "step=0", 6), 0);

    /* Too small a buffer: the length, and buf untouched. */
    memset(buf, 0x5a, sizeof buf);
    ck_assert_err(pskv_checkpoint_meta(s, buf, 5, &len, NULL), PSKV_ERANGE);
    ck_assert_uint_eq(len, 6);
    ck_assert_uint_eq(buf[0], 0x5a);
    ck_assert_err(pskv_checkpoint_meta(s, NULL, 0, &len, NULL), PSKV_ERANGE);

    /* Metadata of several MiB in a 64 KiB map: the map grows. */
    ck_assert_ok(pskv_table_open(s, "t", "dim=16", &t));
    test_fill(t, 1, 2000, 16, 3.0f);
    size_t big_len = (size_t)3 << 20;
    uint8_t *big = malloc(big_len), *back = malloc(big_len);
    for (size_t i = 0; i < big_len; i++)
        big[i] = (uint8_t)(i * 2654435761u >> 13);
    ck_assert_ok(pskv_checkpoint_with_meta(s, big, big_len));
    ck_assert_ok(pskv_store_stats_get(s, &ss));
    ck_assert_uint_eq(ss.checkpoint_seq, 2);
    ck_assert_uint_gt(ss.map_grows, 0);

    /* A plain checkpoint keeps the metadata of checkpoint 2. */
    test_fill(t, 1, 2000, 16, 4.0f);
    ck_assert_ok(pskv_checkpoint(s));
    test_fill(t, 1, 2000, 16, 5.0f); /* not checkpointed: lost in the crash below */
    pskv__close_abandon(s);

    ck_assert_ok(pskv_open(dir, NULL, &s));
    ck_assert_ok(pskv_store_stats_get(s, &ss));
    ck_assert_uint_eq(ss.checkpoint_seq, 3);
    memset(back, 0, big_len);
    ck_assert_ok(pskv_checkpoint_meta(s, back, big_len, &len, &seq));
    ck_assert_uint_eq(len, big_len);
    ck_assert_uint_eq(seq, 2);
    ck_assert_int_eq(memcmp(big, back, big_len), 0);
    ck_assert_ok(pskv_table_open(s, "t", NULL, &t));
    test_expect_rows(t, 1, 2000, 16, 4.0f);

    /* Empty metadata is metadata. */
    ck_assert_ok(pskv_checkpoint_with_meta(s, NULL, 0));
    ck_assert_ok(pskv_checkpoint_meta(s, NULL, 0, &len, &seq));
    ck_assert_uint_eq(len, 0);
    ck_assert_uint_eq(seq, 4);
    /* pskv_checkpoint_start: meta NULL carries none and keeps the last
     * record; a non-NULL meta of length 0 is an empty record. */
    pskv_ckpt *c;
    ck_assert_ok(pskv_checkpoint_start(s, "step=9", 6, &c));
    ck_assert_ok(pskv_checkpoint_wait(c, &seq));
    ck_assert_uint_eq(seq, 5);
    test_fill(t, 1, 10, 16, 6.0f);
    ck_assert_ok(pskv_checkpoint_start(s, NULL, 0, &c));
    ck_assert_ok(pskv_checkpoint_wait(c, &seq));
    ck_assert_uint_eq(seq, 6);
    ck_assert_ok(pskv_checkpoint_meta(s, buf, sizeof buf, &len, &seq));
    ck_assert_uint_eq(len, 6);
    ck_assert_uint_eq(seq, 5); /* trails checkpoint_seq */
    ck_assert_int_eq(memcmp(buf, "step=9", 6), 0);
    ck_assert_ok(pskv_checkpoint_start(s, "", 0, &c));
    ck_assert_ok(pskv_checkpoint_wait(c, NULL));
    ck_assert_ok(pskv_checkpoint_meta(s, NULL, 0, &len, &seq));
    ck_assert_uint_eq(len, 0);
    ck_assert_uint_eq(seq, 7);
    pskv_close(s);
    free(big);
    free(back);

    /* Stores that persist nothing. */
    ck_assert_ok(pskv_open(NULL, NULL, &s));
    ck_assert_err(pskv_checkpoint_with_meta(s, "x", 1), PSKV_ENOTSUP);
    ck_assert_err(pskv_checkpoint_meta(s, buf, sizeof buf, &len, NULL), PSKV_ENOTSUP);
    pskv_close(s);
    remove_dir(dir);
}
END_TEST

/* A damaged metadata record is reported, not returned. */
START_TEST(damaged_meta_detected)
{
    fresh_dir();
    pskv_store *s;
    ck_assert_ok(pskv_open(dir, NULL, &s));
    ck_assert_ok(pskv_checkpoint_with_meta(s, "global_step=12345", 17));
    pskv_close(s);
    lmdb_damage_value(dir, PSKV_FMT_META_DB, PSKV_FMT_KEY_USER, strlen(PSKV_FMT_KEY_USER), 12,
                      0x01);
    ck_assert_ok(pskv_open(dir, NULL, &s));
    size_t len;
    uint8_t buf[32];
    ck_assert_err(pskv_checkpoint_meta(s, buf, sizeof buf, &len, NULL), PSKV_ECORRUPT);
    /* A new checkpoint with metadata replaces it. */
    ck_assert_ok(pskv_checkpoint_with_meta(s, "global_step=12346", 17));
    ck_assert_ok(pskv_checkpoint_meta(s, buf, sizeof buf, &len, NULL));
    ck_assert_int_eq(memcmp(buf, "global_step=12346", 17), 0);
    pskv_close(s);
    remove_dir(dir);
}
END_TEST

/* ---------------------------------------------------------------- backup */

START_TEST(backup_is_last_checkpoint)
{
    fresh_dir();
    char dest[96];
    snprintf(dest, sizeof dest, "%s-backup", dir);
    pskv_store *s;
    pskv_table *t;
    ck_assert_ok(pskv_open(dir, "memory_budget=64K", &s)); /* most rows spilled */
    ck_assert_ok(pskv_table_open(s, "t", "dim=4", &t));
    test_fill(t, 1, 3000, 4, 1.0f);
    ck_assert_ok(pskv_checkpoint(s));
    test_fill(t, 1, 3000, 4, 5.0f); /* after the checkpoint: not in the backup */
    ck_assert_ok(pskv_backup(s, dest));
    ck_assert_err(pskv_backup(s, dest), PSKV_EEXIST);
    ck_assert_err(pskv_backup(s, NULL), PSKV_EINVAL);
    pskv_close(s);

    pskv_store *b;
    ck_assert_ok(pskv_open(dest, NULL, &b));
    ck_assert_ok(pskv_table_open(b, "t", NULL, &t));
    ck_assert_uint_eq(pskv_table_rows(t), 3000);
    test_expect_rows(t, 1, 3000, 4, 1.0f);
    pskv_close(b);
    ck_assert_ok(pskv_open(dir, NULL, &s));
    ck_assert_ok(pskv_table_open(s, "t", NULL, &t));
    test_expect_rows(t, 1, 3000, 4, 5.0f); /* close checkpointed the later writes */
    pskv_close(s);
    remove_dir(dir);
    remove_dir(dest);
}
END_TEST

/* Issue 22, item 10: a backup killed at any instant appears whole or not
 * at all. Its remains are never opened as an empty store, and a retried
 * backup into them works. */
static bool dir_has_more_than_lock(const char *d)
{
    DIR *dp = opendir(d);
    if (dp == NULL)
        return false;
    bool more = false;
    struct dirent *e;
    while ((e = readdir(dp)) != NULL)
        more |= strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0 &&
                strcmp(e->d_name, "pskv.lock") != 0;
    closedir(dp);
    return more;
}

static void expect_whole_backup(const char *dest, uint32_t rows)
{
    pskv_store *b;
    pskv_table *t;
    ck_assert_ok(pskv_open(dest, NULL, &b));
    pskv_store_stats ss;
    ck_assert_ok(pskv_store_stats_get(b, &ss));
    ck_assert_uint_eq(ss.checkpoint_seq, 1);
    ck_assert_ok(pskv_table_open(b, "t", NULL, &t));
    ck_assert_uint_eq(pskv_table_rows(t), rows);
    test_expect_rows(t, 1, rows, 32, 1.0f);
    pskv_close(b);
}

START_TEST(killed_backup_whole_or_nothing)
{
    fresh_dir();
    char dest[96], data[128];
    snprintf(dest, sizeof dest, "%s-backup", dir);
    snprintf(data, sizeof data, "%s/data.mdb", dest);
    enum { ROWS = 60000, KILLS = 12 };
    pskv_store *s;
    pskv_table *t;
    ck_assert_ok(pskv_open(dir, NULL, &s));
    ck_assert_ok(pskv_table_open(s, "t", "dim=32", &t));
    test_fill(t, 1, ROWS, 32, 1.0f);
    ck_assert_ok(pskv_checkpoint(s));
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    ck_assert_ok(pskv_backup(s, dest));
    clock_gettime(CLOCK_MONOTONIC, &t1);
    pskv_close(s);
    remove_dir(dest);
    const uint64_t took_us = (uint64_t)(t1.tv_sec - t0.tv_sec) * 1000000u +
                             (uint64_t)((t1.tv_nsec - t0.tv_nsec) / 1000) + 1;
    test_rng rng = {22};
    unsigned mid = 0, whole = 0;
    for (int k = 0; k < KILLS; k++) {
        int go[2];
        ck_assert_int_eq(pipe(go), 0);
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
            pskv_store *c;
            if (pskv_open(dir, NULL, &c) != 0)
                _exit(2);
            if (write(go[1], "g", 1) != 1)
                _exit(3);
            _exit(pskv_backup(c, dest) == 0 ? 0 : 4);
        }
        char g;
        ck_assert_int_eq(read(go[0], &g, 1), 1);
        close(go[0]);
        close(go[1]);
        usleep((useconds_t)(rng_next(&rng) % (took_us * 3 / 2)));
        kill(pid, SIGKILL);
        int status;
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        ck_assert(WIFSIGNALED(status) || WEXITSTATUS(status) == 0);
        if (access(data, F_OK) == 0) { /* in place: whole */
            whole++;
            expect_whole_backup(dest, ROWS);
        } else if (dir_has_more_than_lock(dest)) { /* killed mid-copy */
            mid++;
            pskv_store *b = NULL;
            ck_assert_err(pskv_open(dest, NULL, &b), PSKV_ECORRUPT);
        }
        /* Every other time a retry is killed too (early: inside its
         * cleanup of the remains, or its copy). */
        if (k % 2 == 1 && access(data, F_OK) != 0) {
            fflush(NULL);
            pid = fork();
            ck_assert_int_ge(pid, 0);
            if (pid == 0) {
                pskv_store *c;
                if (pskv_open(dir, NULL, &c) != 0)
                    _exit(2);
                _exit(pskv_backup(c, dest) == 0 ? 0 : 4);
            }
            usleep((useconds_t)(rng_next(&rng) % (took_us / 2 + 1)));
            kill(pid, SIGKILL);
            ck_assert_int_eq(waitpid(pid, &status, 0), pid);
            if (access(data, F_OK) != 0 && dir_has_more_than_lock(dest)) {
                pskv_store *b = NULL;
                ck_assert_err(pskv_open(dest, NULL, &b), PSKV_ECORRUPT);
            }
        }
        /* A retried backup works into whatever is left. */
        ck_assert_ok(pskv_open(dir, NULL, &s));
        int rc = pskv_backup(s, dest);
        ck_assert_msg(rc == 0 || (rc == PSKV_EEXIST && access(data, F_OK) == 0),
                      "retried backup: %s (%s)", pskv_err_name(rc), pskv_last_error());
        pskv_close(s);
        expect_whole_backup(dest, ROWS);
        remove_dir(dest);
    }
    printf("killed_backup_whole_or_nothing: %u kills left a whole backup, %u a partial one, "
           "%u nothing (one backup: %llu us)\n",
           whole, mid, KILLS - whole - mid, (unsigned long long)took_us);
    remove_dir(dir);
}
END_TEST

/* ---------------------------------------------------------------- during writes */

enum { W_KEYS = 16, W_DIM = 6, W_OPS_MAX = 400000 };

typedef struct wop {
    uint8_t op, n;
    uint64_t keys[W_KEYS];
    float vals[W_KEYS * W_DIM];
} wop;

typedef struct writer {
    pskv_table *t;
    wop *log;
    uint32_t seed;
    atomic_uint started, finished; /* ops begun / completed */
    atomic_bool stop;
    int rc;
} writer;

static atomic_uint hook_started, hook_finished;
static writer *hook_writer;

static void at_instant(void *arg)
{
    (void)arg;
    atomic_store(&hook_started, atomic_load(&hook_writer->started));
    atomic_store(&hook_finished, atomic_load(&hook_writer->finished));
}

static void make_op(test_rng *r, wop *w)
{
    uint32_t kind = rng_below(r, 100);
    w->op = kind < 45 ? REF_PUSH : kind < 70 ? REF_PUT : kind < 85 ? REF_PULL : REF_ERASE;
    w->n = (uint8_t)(1 + rng_below(r, W_KEYS));
    for (uint32_t i = 0; i < w->n; i++)
        w->keys[i] = 1 + rng_below(r, 3000);
    for (uint32_t i = 0; i < w->n * W_DIM; i++)
        w->vals[i] = rng_float(r);
}

static int apply_op(pskv_table *t, const wop *w, float *out)
{
    switch (w->op) {
    case REF_PUSH:
        return pskv_push(t, w->keys, w->n, w->vals);
    case REF_PUT:
        return pskv_put(t, w->keys, w->n, w->vals);
    case REF_PULL:
        return pskv_pull(t, w->keys, w->n, out);
    default:
        return pskv_erase(t, w->keys, w->n);
    }
}

static void *writer_main(void *arg)
{
    writer *w = arg;
    test_rng r = {w->seed};
    float out[W_KEYS * W_DIM];
    for (uint32_t i = 0; i < W_OPS_MAX && !atomic_load(&w->stop); i++) {
        make_op(&r, &w->log[i]);
        atomic_store(&w->started, i + 1);
        int rc = apply_op(w->t, &w->log[i], out);
        if (rc != 0) {
            w->rc = rc;
            break;
        }
        atomic_store(&w->finished, i + 1);
    }
    return NULL;
}

/* The model after the first n logged ops (replayed on a memory store). */
static bool model_matches(const wop *log, uint32_t n, pskv_table *durable_t, char *what)
{
    pskv_store *ms;
    pskv_table *mt;
    ck_assert_ok(pskv_open(NULL, NULL, &ms));
    ck_assert_ok(pskv_table_open(ms, "t", "dim=6 optimizer=adam seed=3 init=uniform:-1:1", &mt));
    ref_model m;
    ref_open(&m, mt, W_KEYS);
    bool ok = true;
    for (uint32_t i = 0; i < n && ok; i++)
        ok = ref_step(&m, mt, (enum ref_op)log[i].op, log[i].keys, log[i].n, log[i].vals);
    ck_assert_msg(ok, "replay: %s", m.what);
    ok = ref_compare_all(&m, durable_t);
    if (!ok)
        snprintf(what, 200, "%s", m.what);
    ref_close(&m);
    pskv_close(ms);
    return ok;
}

/* The second checkpoint of a round: blocking, or started while the writer
 * runs and waited for after it has done `during` more calls. The contract
 * bounds the instant: every call finished before the start was called is
 * in, none begun after it returned. */
static void second_checkpoint(pskv_store *s, writer *w, bool async, uint32_t during)
{
    if (!async) {
        ck_assert_ok(pskv_checkpoint(s));
        return;
    }
    pskv_ckpt *c = NULL;
    uint32_t done_before = atomic_load(&w->finished);
    ck_assert_ok(pskv_checkpoint_start(s, &done_before, sizeof done_before, &c));
    uint32_t begun_after = atomic_load(&w->started);
    ck_assert_uint_le(done_before, atomic_load(&hook_finished));
    ck_assert_uint_ge(begun_after, atomic_load(&hook_started));
    uint32_t more = begun_after + during;
    while (atomic_load(&w->finished) < more && w->rc == 0 && pskv_checkpoint_done(c) == 0)
        usleep(100);
    uint64_t seq = 0;
    ck_assert_ok(pskv_checkpoint_wait(c, &seq));
    ck_assert_uint_eq(seq, 2);
}

static void checkpoint_during_writes(const char *store_cfg, unsigned rounds, bool async)
{
    fresh_dir();
    wop *log = malloc(W_OPS_MAX * sizeof *log);
    for (unsigned round = 0; round < rounds; round++) {
        pskv_store *s;
        pskv_table *t;
        ck_assert_ok(pskv_open(dir, store_cfg, &s));
        ck_assert_ok(pskv_table_open(s, "t", "dim=6 optimizer=adam seed=3 init=uniform:-1:1", &t));
        /* Each round starts from an empty table. */
        if (pskv_table_rows(t) > 0) {
            pskv__close_abandon(s);
            remove_dir(dir);
            ck_assert_int_eq(mkdir(dir, 0755), 0);
            ck_assert_ok(pskv_open(dir, store_cfg, &s));
            ck_assert_ok(pskv_table_open(s, "t", "dim=6 optimizer=adam seed=3 init=uniform:-1:1", &t));
        }
        writer w = {.t = t, .log = log, .seed = 77 + round};
        hook_writer = &w;
        pskv__checkpoint_begin_hook = at_instant;
        pthread_t th;
        ck_assert_int_eq(pthread_create(&th, NULL, writer_main, &w), 0);
        while (atomic_load(&w.finished) < 2000 + 500 * round && w.rc == 0)
            usleep(200);
        ck_assert_ok(pskv_checkpoint(s)); /* while the writer goes on */
        /* A second checkpoint while writing: the first's pre-images and
         * marks are settled, the second sees only later writes. */
        uint32_t after_first = atomic_load(&w.finished);
        while (atomic_load(&w.finished) < after_first + 300 && w.rc == 0)
            usleep(200);
        second_checkpoint(s, &w, async, 2000);
        uint32_t lo = atomic_load(&hook_finished), hi = atomic_load(&hook_started);
        uint32_t more = atomic_load(&w.finished) + 300;
        while (atomic_load(&w.finished) < more && w.rc == 0)
            usleep(200);
        atomic_store(&w.stop, true);
        pthread_join(th, NULL);
        pskv__checkpoint_begin_hook = NULL;
        ck_assert_ok(w.rc);
        pskv__close_abandon(s); /* lose everything after the second checkpoint */

        ck_assert_ok(pskv_open(dir, store_cfg, &s));
        ck_assert_ok(pskv_table_open(s, "t", NULL, &t));
        char what[200] = "";
        /* The instant fell between two calls: the last one begun either
         * was applied before it or not at all. */
        bool ok = model_matches(log, lo, t, what) || (hi != lo && model_matches(log, hi, t, what));
        ck_assert_msg(ok, "round %u: checkpoint after op %u/%u differs: %s", round, lo, hi, what);
        pskv__close_abandon(s);
    }
    free(log);
    remove_dir(dir);
}

START_TEST(checkpoint_during_writes_dram) { checkpoint_during_writes(NULL, 4, false); }
END_TEST

START_TEST(checkpoint_during_writes_spill)
{
    checkpoint_during_writes("memory_budget=16K", 4, false); /* ~240 of 3000 rows resident */
}
END_TEST

START_TEST(async_checkpoint_during_writes_dram) { checkpoint_during_writes(NULL, 4, true); }
END_TEST

START_TEST(async_checkpoint_during_writes_spill)
{
    checkpoint_during_writes("memory_budget=16K", 4, true);
}
END_TEST

/* One thread: calls before the start are in, calls after it returned are
 * not, however much they rewrite while the transaction is written; the
 * metadata is the copy taken at the start. */
static void async_checkpoint_is_the_instant(const char *store_cfg)
{
    fresh_dir();
    pskv_store *s;
    pskv_table *t;
    const char *cfg = "dim=6 optimizer=adam seed=3 init=uniform:-1:1";
    ck_assert_ok(pskv_open(dir, store_cfg, &s));
    ck_assert_ok(pskv_table_open(s, "t", cfg, &t));
    wop *log = malloc(6000 * sizeof *log);
    test_rng r = {5};
    float out[W_KEYS * W_DIM];
    for (uint32_t i = 0; i < 6000; i++)
        make_op(&r, &log[i]);
    for (uint32_t i = 0; i < 2000; i++)
        ck_assert_ok(apply_op(t, &log[i], out));
    ck_assert_ok(pskv_checkpoint(s));
    for (uint32_t i = 2000; i < 4000; i++)
        ck_assert_ok(apply_op(t, &log[i], out));
    char meta[32] = "after op 4000";
    pskv_ckpt *c = NULL;
    ck_assert_err(pskv_checkpoint_start(s, NULL, 3, &c), PSKV_EINVAL);
    ck_assert_ptr_null(c);
    ck_assert_err(pskv_checkpoint_start(s, meta, sizeof meta, NULL), PSKV_EINVAL);
    ck_assert_ok(pskv_checkpoint_start(s, meta, sizeof meta, &c));
    memset(meta, 'x', sizeof meta); /* copied at the start */
    for (uint32_t i = 4000; i < 6000; i++) /* while the transaction is written */
        ck_assert_ok(apply_op(t, &log[i], out));
    int done = pskv_checkpoint_done(c);
    ck_assert(done == 0 || done == 1);
    uint64_t seq = 0;
    ck_assert_ok(pskv_checkpoint_wait(c, &seq));
    ck_assert_uint_eq(seq, 2);
    ck_assert_err(pskv_checkpoint_wait(NULL, &seq), PSKV_EINVAL);
    ck_assert_err(pskv_checkpoint_done(NULL), PSKV_EINVAL);
    pskv__close_abandon(s); /* a crash: only the checkpoint survives */

    ck_assert_ok(pskv_open(dir, store_cfg, &s));
    ck_assert_ok(pskv_table_open(s, "t", NULL, &t));
    char what[200] = "";
    ck_assert_msg(model_matches(log, 4000, t, what), "async checkpoint differs: %s", what);
    size_t len = 0;
    char back[32];
    ck_assert_ok(pskv_checkpoint_meta(s, back, sizeof back, &len, &seq));
    ck_assert_uint_eq(len, sizeof back);
    ck_assert_uint_eq(seq, 2);
    ck_assert_str_eq(back, "after op 4000");

    /* A start while another checkpoint writes waits for it; close waits for
     * a checkpoint still being written, and the handle outlives the store. */
    pskv_ckpt *c1, *c2;
    for (uint32_t i = 0; i < 500; i++)
        ck_assert_ok(apply_op(t, &log[i], out));
    ck_assert_ok(pskv_checkpoint_start(s, "a", 1, &c1));
    ck_assert_ok(pskv_checkpoint_start(s, "b", 1, &c2));
    ck_assert_int_eq(pskv_checkpoint_done(c1), 1); /* ended before c2 began */
    pskv_close(s);
    uint64_t seq1 = 0, seq2 = 0;
    ck_assert_ok(pskv_checkpoint_wait(c2, &seq2));
    ck_assert_ok(pskv_checkpoint_wait(c1, &seq1));
    ck_assert_uint_eq(seq1, 3);
    ck_assert_uint_eq(seq2, 4);
    ck_assert_ok(pskv_open(dir, store_cfg, &s));
    ck_assert_ok(pskv_checkpoint_meta(s, back, sizeof back, &len, &seq));
    ck_assert_uint_eq(len, 1);
    ck_assert_int_eq(back[0], 'b');
    pskv_close(s);

    /* Stores that persist nothing. */
    ck_assert_ok(pskv_open(NULL, NULL, &s));
    ck_assert_err(pskv_checkpoint_start(s, NULL, 0, &c), PSKV_ENOTSUP);
    ck_assert_ptr_null(c);
    pskv_close(s);
    free(log);
    remove_dir(dir);
}

START_TEST(async_checkpoint_is_the_instant_dram) { async_checkpoint_is_the_instant(NULL); }
END_TEST

START_TEST(async_checkpoint_is_the_instant_spill)
{
    async_checkpoint_is_the_instant("memory_budget=16K");
}
END_TEST

/* ---------------------------------------------------------------- listing */

START_TEST(tables_listed)
{
    fresh_dir();
    pskv_store *s;
    pskv_table *t;
    pskv_table_desc d[4];
    size_t n = 99;
    ck_assert_err(pskv_dir_tables(dir, d, 4, &n), PSKV_ENOTFOUND); /* no store yet */
    ck_assert_ok(pskv_open(dir, NULL, &s));
    ck_assert_ok(pskv_store_tables(s, d, 4, &n));
    ck_assert_uint_eq(n, 0);
    ck_assert_ok(pskv_table_open(s, "zeta", "dim=3 optimizer=adam shards=4", &t));
    test_fill(t, 1, 100, 3, 1.0f);
    ck_assert_ok(pskv_table_open(s, "alpha", "dim=5 optimizer=sgd", &t));
    ck_assert_ok(pskv_checkpoint(s));
    ck_assert_err(pskv_dir_tables(dir, d, 4, &n), PSKV_EBUSY); /* open in this process */
    pskv_close(s);

    /* Beside no owner, and through a reopened store that opened one. */
    ck_assert_err(pskv_dir_tables(dir, d, 1, &n), PSKV_ERANGE);
    ck_assert_uint_eq(n, 2);
    ck_assert_ok(pskv_dir_tables(dir, NULL, 0, &n) == PSKV_ERANGE ? 0 : -1);
    ck_assert_ok(pskv_dir_tables(dir, d, 4, &n));
    ck_assert_uint_eq(n, 2);
    ck_assert_str_eq(d[0].name, "alpha");
    ck_assert_str_eq(d[1].name, "zeta");
    ck_assert_uint_eq(d[1].dim, 3);
    ck_assert_uint_eq(d[1].state_floats, 7); /* adam: m, v and the step */
    ck_assert_uint_eq(d[1].row_bytes, 40);
    ck_assert_uint_eq(d[1].rows, 100);
    ck_assert_uint_eq(d[1].options.shards, 4);
    ck_assert_int_eq(d[1].options.optimizer, PSKV_OPT_ADAM);
    ck_assert_int_eq(d[0].open + d[1].open, 0);
    ck_assert_ok(pskv_open(dir, NULL, &s));
    ck_assert_ok(pskv_table_open(s, "zeta", NULL, &t));
    ck_assert_ok(pskv_store_tables(s, d, 4, &n));
    ck_assert_uint_eq(n, 2);
    ck_assert_int_eq(d[0].open, 0); /* alpha: persisted, not opened */
    ck_assert_int_eq(d[1].open, 1);
    ck_assert_err(pskv_store_tables(s, NULL, 1, &n), PSKV_EINVAL);
    ck_assert_err(pskv_store_tables(NULL, d, 4, &n), PSKV_EINVAL);
    pskv_close(s);
    ck_assert_err(pskv_dir_tables(NULL, d, 4, &n), PSKV_EINVAL);

    /* A memory-only store lists its open tables, with their rows now. */
    ck_assert_ok(pskv_open(NULL, NULL, &s));
    ck_assert_ok(pskv_table_open(s, "m2", "dim=2", &t));
    test_fill(t, 1, 7, 2, 1.0f);
    ck_assert_ok(pskv_table_open(s, "m1", "dim=1", &t));
    ck_assert_ok(pskv_store_tables(s, d, 4, &n));
    ck_assert_uint_eq(n, 2);
    ck_assert_str_eq(d[0].name, "m1");
    ck_assert_uint_eq(d[1].rows, 7);
    ck_assert_int_eq(d[1].open, 1);
    pskv_close(s);
    remove_dir(dir);
}
END_TEST

/* ---------------------------------------------------------------- compaction */

static uint64_t seq_of(pskv_store *s);

static uint64_t data_bytes(void)
{
    char path[128];
    struct stat st;
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    ck_assert_int_eq(stat(path, &st), 0);
    return (uint64_t)st.st_size;
}

START_TEST(compaction_keeps_the_checkpoint)
{
    fresh_dir();
    pskv_store *s;
    pskv_table *t;
    uint64_t before = 0, after = 0;
    ck_assert_err(pskv_compact(dir, &before, &after), PSKV_ENOTFOUND);
    ck_assert_err(pskv_compact(NULL, &before, &after), PSKV_EINVAL);
    ck_assert_ok(pskv_open(dir, NULL, &s));
    ck_assert_ok(pskv_table_open(s, "t", "dim=16", &t));
    /* Rounds of rewrites leave free pages behind. */
    for (int round = 0; round < 6; round++) {
        test_fill(t, 1, 20000, 16, (float)round);
        ck_assert_ok(pskv_checkpoint_with_meta(s, &round, sizeof round));
    }
    ck_assert_err(pskv_compact(dir, &before, &after), PSKV_EBUSY); /* open here */
    ck_assert_ptr_nonnull(strstr(pskv_last_error(), "close the store first"));
    pskv_close(s);

    /* A copy a crashed compaction left behind is replaced. */
    char stale[128];
    snprintf(stale, sizeof stale, "%s/data.mdb.compact", dir);
    int fd = open(stale, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, "junk", 4), 4);
    close(fd);
    uint64_t file_before = data_bytes();
    ck_assert_ok(pskv_compact(dir, &before, &after));
    ck_assert_uint_eq(before, file_before);
    ck_assert_uint_eq(after, data_bytes());
    ck_assert_uint_lt(after, before);
    ck_assert_int_ne(access(stale, F_OK), 0);

    /* The same checkpoint: rows, metadata, seq, and its undo. */
    ck_assert_ok(pskv_open(dir, NULL, &s));
    ck_assert_uint_eq(seq_of(s), 6);
    ck_assert_ok(pskv_table_open(s, "t", NULL, &t));
    test_expect_rows(t, 1, 20000, 16, 5.0f);
    int round = -1;
    size_t len;
    ck_assert_ok(pskv_checkpoint_meta(s, &round, sizeof round, &len, NULL));
    ck_assert_int_eq(round, 5);
    pskv_close(s); /* nothing written: no commit */
    ck_assert_ok(pskv_compact(dir, NULL, NULL)); /* again: the same checkpoint */
    /* The undo of checkpoint 6 came through both: back to checkpoint 5. */
    ck_assert_ok(pskv_open(dir, "at_seq=5", &s));
    ck_assert_uint_eq(seq_of(s), 5);
    ck_assert_ok(pskv_table_open(s, "t", NULL, &t));
    test_expect_rows(t, 1, 20000, 16, 4.0f);
    ck_assert_ok(pskv_checkpoint_meta(s, &round, sizeof round, &len, NULL));
    ck_assert_int_eq(round, 4);
    test_fill(t, 1, 100, 16, 9.0f); /* training goes on */
    ck_assert_ok(pskv_checkpoint(s));
    pskv_close(s);
    ck_assert_ok(pskv_open(dir, NULL, &s));
    ck_assert_uint_eq(seq_of(s), 6);
    ck_assert_ok(pskv_table_open(s, "t", NULL, &t));
    test_expect_rows(t, 1, 100, 16, 9.0f);
    pskv_close(s);
    remove_dir(dir);
}
END_TEST

/* ---------------------------------------------------------------- at_seq */

static pskv_store *open_at(const char *store_cfg, const char *at, int expect)
{
    char cfg[128];
    snprintf(cfg, sizeof cfg, "%s %s", store_cfg ? store_cfg : "", at ? at : "");
    pskv_store *s = NULL;
    ck_assert_err(pskv_open(dir, cfg, &s), expect);
    return s;
}

static uint64_t seq_of(pskv_store *s)
{
    pskv_store_stats ss;
    ck_assert_ok(pskv_store_stats_get(s, &ss));
    return ss.checkpoint_seq;
}

static void write_file(const char *name, const void *buf, size_t len)
{
    char path[128];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, buf, len), (ssize_t)len);
    close(fd);
}

static bool file_exists(const char *name)
{
    char path[128];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return access(path, F_OK) == 0;
}

/* Checkpoint 1 after ops [0, 2000), checkpoint 2 after ops [2000, 4000)
 * and a second table made after checkpoint 1; at_seq=1 gives back
 * checkpoint 1 exactly, for good; at_seq=2 (the last) changes nothing. */
static void rollback_one_checkpoint(const char *store_cfg_in)
{
    /* One generation kept (undo_keep=1): what the store could do before
     * undo_keep; undo_keep_generations tests more. */
    char store_cfg[96];
    snprintf(store_cfg, sizeof store_cfg, "undo_keep=1 %s", store_cfg_in ? store_cfg_in : "");
    fresh_dir();
    pskv_store *s;
    pskv_table *t, *u;
    const char *cfg = "dim=6 optimizer=adam seed=3 init=uniform:-1:1";
    wop *log = malloc(4000 * sizeof *log);
    test_rng r = {11};
    float out[W_KEYS * W_DIM];
    for (uint32_t i = 0; i < 4000; i++)
        make_op(&r, &log[i]);
    s = open_at(store_cfg, NULL, 0);
    ck_assert_ok(pskv_table_open(s, "t", cfg, &t));
    for (uint32_t i = 0; i < 2000; i++)
        ck_assert_ok(apply_op(t, &log[i], out));
    ck_assert_ok(pskv_checkpoint(s)); /* seq 1, no metadata */
    for (uint32_t i = 2000; i < 4000; i++)
        ck_assert_ok(apply_op(t, &log[i], out));
    ck_assert_ok(pskv_table_open(s, "u", "dim=4", &u));
    test_fill(u, 1, 500, 4, 2.0f);
    ck_assert_ok(pskv_checkpoint_with_meta(s, "two", 3)); /* seq 2 */
    pskv__close_abandon(s);

    /* Neither the last nor the one before: nothing changes. */
    pskv_store_options o;
    pskv_store_options_init(&o);
    ck_assert_ok(pskv_store_options_parse(&o, "at_seq=0"));
    ck_assert_uint_eq(o.at_seq_set, 1);
    ck_assert_err(pskv_open(NULL, "at_seq=0", &s), PSKV_EINVAL);
    ck_assert_err(pskv_open(dir, "durability=none at_seq=1", &s), PSKV_EINVAL);
    ck_assert_err(pskv_open(dir, "at_seq=x", &s), PSKV_EINVAL);
    open_at(store_cfg, "at_seq=0", PSKV_ENOTFOUND);
    open_at(store_cfg, "at_seq=3", PSKV_ENOTFOUND);
    s = open_at(store_cfg, "at_seq=2", 0); /* the last one: as it is */
    ck_assert_uint_eq(seq_of(s), 2);
    ck_assert_ok(pskv_table_open(s, "u", NULL, &u));
    test_expect_rows(u, 1, 500, 4, 2.0f);
    pskv__close_abandon(s);

    s = open_at(store_cfg, "at_seq=1", 0);
    ck_assert_uint_eq(seq_of(s), 1);
    ck_assert_ok(pskv_table_open(s, "t", NULL, &t));
    char what[200] = "";
    ck_assert_msg(model_matches(log, 2000, t, what), "rolled back: %s", what);
    ck_assert_ok(pskv_table_open(s, "u", NULL, &u)); /* its schema stays, its rows go */
    ck_assert_uint_eq(pskv_table_rows(u), 0);
    size_t len;
    ck_assert_err(pskv_checkpoint_meta(s, NULL, 0, &len, NULL), PSKV_ENOTFOUND);
    ck_assert(!file_exists("pskv.rollback"));
    pskv_close(s);

    /* For good: checkpoint 2 is gone, and there is no undo to go further. */
    open_at(store_cfg, "at_seq=2", PSKV_ENOTFOUND);
    open_at(store_cfg, "at_seq=0", PSKV_ENOTFOUND);
    s = open_at(store_cfg, NULL, 0);
    ck_assert_uint_eq(seq_of(s), 1);
    ck_assert_ok(pskv_table_open(s, "t", NULL, &t));
    ck_assert_msg(model_matches(log, 2000, t, what), "reopened: %s", what);
    uint64_t verify_rows = 0;
    pskv_iter *it;
    ck_assert_ok(pskv_iter_create(t, &it)); /* the count record agrees with the rows */
    uint64_t key;
    float w[W_DIM];
    int rc;
    while ((rc = pskv_iter_next(it, &key, w, NULL)) == 1)
        verify_rows++;
    ck_assert_int_eq(rc, 0);
    pskv_iter_destroy(it);
    ck_assert_uint_eq(verify_rows, pskv_table_rows(t));

    /* Training goes on from checkpoint 1: the next commit is seq 2 again,
     * with metadata where checkpoint 1 had none; rolling it back restores
     * the previous metadata record (here: a copy of seq 2's). */
    for (uint32_t i = 2000; i < 2500; i++)
        ck_assert_ok(apply_op(t, &log[i], out));
    ck_assert_ok(pskv_checkpoint_with_meta(s, "again", 5)); /* seq 2 */
    for (uint32_t i = 2500; i < 3000; i++)
        ck_assert_ok(apply_op(t, &log[i], out));
    ck_assert_ok(pskv_checkpoint_with_meta(s, "three", 5)); /* seq 3 */
    pskv__close_abandon(s);
    s = open_at(store_cfg, "at_seq=2", 0);
    ck_assert_ok(pskv_table_open(s, "t", NULL, &t));
    char back[8];
    uint64_t seq;
    ck_assert_ok(pskv_checkpoint_meta(s, back, sizeof back, &len, &seq));
    ck_assert_uint_eq(len, 5);
    ck_assert_uint_eq(seq, 2);
    ck_assert_int_eq(memcmp(back, "again", 5), 0);
    wop *log2 = malloc(2500 * sizeof *log2);
    memcpy(log2, log, 2500 * sizeof *log2);
    ck_assert_msg(model_matches(log2, 2500, t, what), "second rollback: %s", what);
    free(log2);
    pskv__close_abandon(s);

    /* A rollback stopped after its commit, before pskv.seq moved: the
     * intent names the step, so the store at the older seq is taken. */
    uint8_t seqbuf[PSKV_FMT_SEQ_BYTES], intent[PSKV_FMT_ROLLBACK_BYTES];
    pskv_fmt_seq_put(seqbuf, 3);
    pskv_fmt_rollback_put(intent, 3, 2);
    write_file("pskv.seq", seqbuf, sizeof seqbuf);
    write_file("pskv.rollback", intent, sizeof intent);
    s = open_at(store_cfg, NULL, 0);
    ck_assert_uint_eq(seq_of(s), 2);
    ck_assert(!file_exists("pskv.rollback"));
    pskv__close_abandon(s);
    /* Without an intent that names this very step it is damage. */
    pskv_fmt_rollback_put(intent, 4, 2);
    write_file("pskv.seq", seqbuf, sizeof seqbuf);
    write_file("pskv.rollback", intent, sizeof intent);
    open_at(store_cfg, NULL, PSKV_ECORRUPT);
    write_file("pskv.rollback", "junk", 4);
    open_at(store_cfg, NULL, PSKV_ECORRUPT);
    /* An intent at the store's own seq never began: dropped. */
    pskv_fmt_seq_put(seqbuf, 2);
    pskv_fmt_rollback_put(intent, 2, 1);
    write_file("pskv.seq", seqbuf, sizeof seqbuf);
    write_file("pskv.rollback", intent, sizeof intent);
    s = open_at(store_cfg, NULL, 0);
    ck_assert_uint_eq(seq_of(s), 2);
    ck_assert(!file_exists("pskv.rollback"));
    pskv_close(s);
    free(log);
    remove_dir(dir);
}

/* undo=off: checkpoints keep no undo, so at_seq reaches only the last one;
 * a later open with the default keeps one again. */
START_TEST(undo_off_keeps_none)
{
    fresh_dir();
    pskv_store *s;
    pskv_table *t;
    ck_assert_err(pskv_open(dir, "undo=maybe", &s), PSKV_EINVAL);
    ck_assert_ptr_nonnull(strstr(pskv_last_error(), "undo=maybe: expected one of on, off"));
    s = open_at("undo=off", NULL, 0);
    ck_assert_ok(pskv_table_open(s, "t", "dim=4", &t));
    test_fill(t, 1, 500, 4, 1.0f);
    ck_assert_ok(pskv_checkpoint(s)); /* 1 */
    test_fill(t, 1, 500, 4, 2.0f);
    ck_assert_ok(pskv_checkpoint(s)); /* 2 */
    pskv_close(s);
    open_at("undo=off", "at_seq=1", PSKV_ENOTFOUND);
    open_at(NULL, "at_seq=1", PSKV_ENOTFOUND);
    s = open_at(NULL, "at_seq=2", 0);
    ck_assert_ok(pskv_table_open(s, "t", NULL, &t));
    test_fill(t, 1, 500, 4, 3.0f);
    ck_assert_ok(pskv_checkpoint(s)); /* 3, with undo */
    pskv_close(s);
    s = open_at(NULL, "at_seq=2", 0);
    ck_assert_ok(pskv_table_open(s, "t", NULL, &t));
    test_expect_rows(t, 1, 500, 4, 2.0f);
    pskv_close(s);
    remove_dir(dir);
}
END_TEST

/* undo_keep=K: at_seq reaches the last K checkpoints before the last one,
 * each step restoring rows, counts and metadata as they were; a lower K
 * trims at the next checkpoint; pskv_close_discard writes nothing. */
static void ckpt_step(pskv_store *s, pskv_table *t, uint32_t step, bool with_meta)
{
    test_fill(t, 1, 200 + 50 * step, 4, (float)step * 10.0f); /* grows: rows created too */
    uint64_t gone = 1000 + step;
    if (step % 2 == 0) {
        test_fill(t, gone, 1, 4, 5.0f);
    }
    char meta[16];
    int n = snprintf(meta, sizeof meta, "step=%u", step);
    ck_assert_ok(with_meta ? pskv_checkpoint_with_meta(s, meta, (size_t)n) : pskv_checkpoint(s));
}

static void expect_step(pskv_store *s, uint32_t step, uint32_t meta_step)
{
    pskv_table *t;
    ck_assert_uint_eq(seq_of(s), step);
    ck_assert_ok(pskv_table_open(s, "t", NULL, &t));
    test_expect_rows(t, 1, 200 + 50 * step, 4, (float)step * 10.0f);
    ck_assert_uint_eq(pskv_table_rows(t), 200 + 50 * step + step / 2);
    char meta[16] = "", want[16];
    size_t len;
    uint64_t seq;
    ck_assert_ok(pskv_checkpoint_meta(s, meta, sizeof meta - 1, &len, &seq));
    meta[len] = '\0';
    snprintf(want, sizeof want, "step=%u", meta_step);
    ck_assert_str_eq(meta, want);
    ck_assert_uint_eq(seq, meta_step);
}

START_TEST(undo_keep_generations)
{
    fresh_dir();
    pskv_store *s;
    pskv_table *t;
    ck_assert_err(pskv_open(dir, "undo_keep=9", &s), PSKV_EINVAL);
    ck_assert_err(pskv_open(dir, "undo_keep=0", &s), PSKV_EINVAL);
    ck_assert_err(pskv_open(dir, "undo=off undo_keep=2", &s), PSKV_EINVAL);
    s = open_at("undo_keep=3", NULL, 0);
    ck_assert_ok(pskv_table_open(s, "t", "dim=4", &t));
    for (uint32_t step = 1; step <= 6; step++)
        ckpt_step(s, t, step, step != 5); /* 5: a checkpoint without metadata */
    pskv_close_discard(s);
    /* From 6, K=3: 5, 4 and 3 are reachable, 2 is not. */
    open_at("undo_keep=3", "at_seq=2", PSKV_ENOTFOUND);
    ck_assert_ptr_nonnull(strstr(pskv_last_error(), "3 checkpoints before it"));
    s = open_at("undo_keep=3", "at_seq=6", 0);
    expect_step(s, 6, 6);
    pskv_close_discard(s);
    s = open_at("undo_keep=3", "at_seq=5", 0); /* one back: 5 had no metadata */
    expect_step(s, 5, 4);
    pskv_close_discard(s);
    s = open_at("undo_keep=3", "at_seq=3", 0); /* two more back */
    expect_step(s, 3, 3);
    pskv_close_discard(s);
    open_at("undo_keep=3", "at_seq=2", PSKV_ENOTFOUND); /* used up: gone for good */
    /* Training goes on from 3 with K=1 now: one generation at the next
     * checkpoint (the older ones are trimmed). */
    s = open_at("undo_keep=1", NULL, 0);
    ck_assert_ok(pskv_table_open(s, "t", NULL, &t));
    ckpt_step(s, t, 4, true);
    ckpt_step(s, t, 5, true);
    pskv_close_discard(s);
    open_at("undo_keep=1", "at_seq=3", PSKV_ENOTFOUND);
    s = open_at("undo_keep=2", "at_seq=4", 0);
    expect_step(s, 4, 4);
    pskv_close(s);
    /* The default keeps two. */
    s = open_at(NULL, NULL, 0);
    ck_assert_ok(pskv_table_open(s, "t", NULL, &t));
    ckpt_step(s, t, 5, true);
    ckpt_step(s, t, 6, true);
    ckpt_step(s, t, 7, true);
    pskv_close_discard(s);
    open_at(NULL, "at_seq=4", PSKV_ENOTFOUND);
    s = open_at(NULL, "at_seq=5", 0);
    expect_step(s, 5, 5);
    pskv_close(s);
    remove_dir(dir);
}
END_TEST

/* pskv_close_discard writes nothing: data.mdb and pskv.seq are as the
 * last checkpoint left them, and the next open is at that checkpoint. */
START_TEST(close_discard_writes_nothing)
{
    fresh_dir();
    pskv_store *s = open_at(NULL, NULL, 0);
    pskv_table *t;
    ck_assert_ok(pskv_table_open(s, "t", "dim=4", &t));
    test_fill(t, 1, 500, 4, 1.0f);
    ck_assert_ok(pskv_checkpoint_with_meta(s, "one", 3));
    const uint64_t v1 = pskv_table_version(t);
    test_fill(t, 1, 800, 4, 2.0f); /* after the checkpoint: dropped */
    char path[128];
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    struct stat before, after;
    ck_assert_int_eq(stat(path, &before), 0);
    pskv_close_discard(s);
    ck_assert_int_eq(stat(path, &after), 0);
    ck_assert_int_eq(before.st_mtim.tv_sec, after.st_mtim.tv_sec);
    ck_assert_int_eq(before.st_mtim.tv_nsec, after.st_mtim.tv_nsec);
    s = open_at(NULL, NULL, 0);
    ck_assert_uint_eq(seq_of(s), 1);
    ck_assert_ok(pskv_table_open(s, "t", NULL, &t));
    test_expect_rows(t, 1, 500, 4, 1.0f);
    ck_assert_uint_eq(pskv_table_rows(t), 500);
    ck_assert_uint_gt(pskv_table_version(t), v1 + (1ull << 39)); /* as after a crash */
    pskv_close(s);
    pskv_close_discard(NULL);
    pskv_store *m;
    ck_assert_ok(pskv_open(NULL, NULL, &m)); /* memory-only: a plain close */
    pskv_close_discard(m);
    remove_dir(dir);
}
END_TEST

START_TEST(rollback_one_checkpoint_dram) { rollback_one_checkpoint(NULL); }
END_TEST

START_TEST(rollback_one_checkpoint_spill) { rollback_one_checkpoint("memory_budget=16K"); }
END_TEST

int main(void)
{
    Suite *s = suite_create("persist");
    TCase *tc = tcase_create("persist");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, schema_persists);
    tcase_add_test(tc, table_created_without_rows_persists);
    tcase_add_test(tc, format_version_refused);
    tcase_add_test(tc, corrupt_row_detected);
    tcase_add_test(tc, erased_faulted_row_not_iterated);
    tcase_add_test(tc, rows_read_back_during_iteration_are_iterated);
    tcase_add_test(tc, truncated_or_garbage_file_refused);
    tcase_add_test(tc, second_open_busy);
    tcase_add_test(tc, tiny_map_grows);
    tcase_add_test(tc, filter_spares_new_keys);
    tcase_add_test(tc, damaged_filter_falls_back);
    tcase_add_test(tc, checkpoint_meta_round_trips);
    tcase_add_test(tc, damaged_meta_detected);
    tcase_add_test(tc, backup_is_last_checkpoint);
    tcase_add_test(tc, killed_backup_whole_or_nothing);
    tcase_add_test(tc, checkpoint_during_writes_dram);
    tcase_add_test(tc, checkpoint_during_writes_spill);
    tcase_add_test(tc, async_checkpoint_during_writes_dram);
    tcase_add_test(tc, async_checkpoint_during_writes_spill);
    tcase_add_test(tc, async_checkpoint_is_the_instant_dram);
    tcase_add_test(tc, async_checkpoint_is_the_instant_spill);
    tcase_add_test(tc, tables_listed);
    tcase_add_test(tc, compaction_keeps_the_checkpoint);
    tcase_add_test(tc, undo_off_keeps_none);
    tcase_add_test(tc, rollback_one_checkpoint_dram);
    tcase_add_test(tc, rollback_one_checkpoint_spill);
    tcase_add_test(tc, undo_keep_generations);
    tcase_add_test(tc, close_discard_writes_nothing);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
