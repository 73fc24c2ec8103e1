/* tools/pskv against stores made through the library: stat, verify
 * (clean, and with a damaged row), dump (exact floats, chosen keys) and
 * backup (while the store is open), run as a separate process.
 *   test_tool PATH-TO-pskv */
#include <signal.h>
#include <stdarg.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test_common.h"
#include "test_damage.h"
#include "test_lmdb.h"
#include "format.h"

static const char *tool;
static char dir[64];

/* Run the tool; its stdout into out (NUL-terminated), exit status back. */
static int run(char *out, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int run(char *out, size_t len, const char *fmt, ...)
{
    char args[512], cmd[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "'%s' %s 2>/dev/null", tool, args);
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    size_t n = fread(out, 1, len - 1, p);
    out[n] = '\0';
    char rest[4096]; /* read to the end: the tool never meets a closed pipe */
    while (fread(rest, 1, sizeof rest, p) > 0)
        continue;
    int status = pclose(p);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void make_store(pskv_store **s)
{
    test_mkdtemp(dir, "tool");
    pskv_table *a, *b;
    ck_assert_ok(pskv_open(dir, NULL, s));
    ck_assert_ok(pskv_table_open(*s, "emb", "dim=3 optimizer=adam init=normal:0:0.1 seed=5", &a));
    ck_assert_ok(pskv_table_open(*s, "bias", "dim=1 optimizer=sgd", &b));
    uint64_t keys[1000];
    float g[3000];
    for (uint32_t i = 0; i < 1000; i++)
        keys[i] = i * 7919u + 3;
    for (uint32_t i = 0; i < 3000; i++)
        g[i] = (float)i / 1000.0f - 1.5f;
    ck_assert_ok(pskv_push(a, keys, 1000, g));
    ck_assert_ok(pskv_put(b, keys, 10, g));
    ck_assert_ok(pskv_checkpoint(*s));
}

START_TEST(stat_verify_dump_backup)
{
    pskv_store *s;
    make_store(&s);
    static char out[1 << 20];
    /* The store stays open: the tool reads beside it. */
    ck_assert_int_eq(run(out, sizeof out, "stat %s", dir), 0);
    ck_assert_ptr_nonnull(strstr(out, "last checkpoint: 1 at"));
    ck_assert_ptr_nonnull(strstr(out, "tables: 2"));
    /* Only the keys that matter, floats in their shortest exact form. */
    ck_assert_msg(strstr(out, "emb: 1000 rows, 40000 bytes of rows (40 per row), dim=3 "
                              "optimizer=adam lr=0.001 eps=1e-08 beta1=0.9 beta2=0.999 "
                              "init=normal:0:0.1 seed=5 shards=64 init_gen=2\n") != NULL,
                  "%s", out);
    ck_assert_msg(strstr(out, "bias: 10 rows, 40 bytes of rows (4 per row), dim=1 optimizer=sgd "
                              "lr=0.01 init=zeros seed=0 shards=64\n") != NULL, "%s", out);
    ck_assert_int_eq(run(out, sizeof out, "verify %s", dir), 0);
    ck_assert_ptr_nonnull(strstr(out, "ok: 2 tables, 1010 rows, 0 problems"));

    /* The trainer's metadata: none yet, then the bytes as given. */
    ck_assert_int_ne(run(out, sizeof out, "meta %s", dir), 0);
    ck_assert_ok(pskv_checkpoint_with_meta(s, "step 7\n", 7));
    ck_assert_int_eq(run(out, sizeof out, "meta %s", dir), 0);
    ck_assert_str_eq(out, "step 7\n");
    ck_assert_int_eq(run(out, sizeof out, "stat %s", dir), 0);
    ck_assert_ptr_nonnull(strstr(out, "checkpoint metadata: 7 bytes, from checkpoint 2"));

    /* dump --keys: the floats read back exactly, absent keys say so. */
    pskv_table *a;
    ck_assert_ok(pskv_table_find(s, "emb", &a));
    uint64_t k = 3 + 7919u * 17;
    float w[3], st[7];
    pskv_iter *it; /* the row with its state, through the library */
    ck_assert_ok(pskv_iter_create(a, &it));
    uint64_t key;
    while (pskv_iter_next(it, &key, w, st) == 1 && key != k)
        ;
    pskv_iter_destroy(it);
    ck_assert_uint_eq(key, k);
    ck_assert_int_eq(run(out, sizeof out, "dump %s emb --keys %llu,42", dir, (unsigned long long)k), 0);
    char *line = strchr(out, '\n') + 1;
    char *end;
    ck_assert_uint_eq(strtoull(line, &end, 10), k);
    for (int j = 0; j < 3; j++)
        ck_assert(strtof(end, &end) == w[j]);
    for (int j = 0; j < 6; j++)
        ck_assert(strtof(end, &end) == st[j]);
    ck_assert_uint_eq(strtoul(end, &end, 10), 1); /* adam's step count */
    ck_assert_ptr_nonnull(strstr(out, "42\tabsent"));
    /* A whole table: one line per row (plus the header), in key order. */
    ck_assert_int_eq(run(out, sizeof out, "dump %s bias", dir), 0);
    int lines = 0;
    for (char *p = out; *p; p++)
        lines += *p == '\n';
    ck_assert_int_eq(lines, 11);
    ck_assert_int_ne(run(out, sizeof out, "dump %s nosuch", dir), 0);

    /* backup beside the open store, then open the copy with the library. */
    char dest[96];
    snprintf(dest, sizeof dest, "%s-copy", dir);
    ck_assert_int_eq(run(out, sizeof out, "backup %s %s", dir, dest), 0);
    ck_assert_int_ne(run(out, sizeof out, "backup %s %s", dir, dest), 0); /* never overwrites */
    /* compact: not beside the owner (it names it), then between runs. */
    char cmd_err[512];
    snprintf(cmd_err, sizeof cmd_err, "'%s' compact %s 2>&1", tool, dir);
    FILE *pe = popen(cmd_err, "r");
    ck_assert_ptr_nonnull(pe);
    out[fread(out, 1, sizeof out - 1, pe)] = '\0';
    int st_compact = pclose(pe);
    ck_assert(WIFEXITED(st_compact) && WEXITSTATUS(st_compact) == 1);
    char owner[64];
    snprintf(owner, sizeof owner, "owned by another process (pid %ld)", (long)getpid());
    ck_assert_msg(strstr(out, owner) != NULL, "%s", out);
    pskv_close(s);
    ck_assert_int_eq(run(out, sizeof out, "compact %s", dir), 0);
    ck_assert_ptr_nonnull(strstr(out, "compacted "));
    ck_assert_int_eq(run(out, sizeof out, "verify %s", dir), 0);
    ck_assert_ptr_nonnull(strstr(out, "ok: 2 tables, 1010 rows, 0 problems"));
    pskv_store *b;
    pskv_table *bt;
    ck_assert_ok(pskv_open(dest, NULL, &b));
    ck_assert_ok(pskv_table_open(b, "emb", NULL, &bt));
    ck_assert_uint_eq(pskv_table_rows(bt), 1000);
    float w2[3];
    ck_assert_ok(pskv_pull(bt, &k, 1, w2));
    ck_assert(memcmp(w, w2, sizeof w) == 0);
    pskv_close(b);
    ck_assert_int_eq(run(out, sizeof out, "%s", "stat"), 2); /* usage */
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s'", dir, dest);
    ck_assert_int_eq(system(cmd), 0);
}
END_TEST

START_TEST(verify_finds_damage)
{
    pskv_store *s;
    make_store(&s);
    pskv_close(s);
    lmdb_damage_row(dir, "emb", 3 + 7919u * 5, 5, 0x10); /* LMDB itself stays intact */
    static char out[1 << 16];
    ck_assert_int_eq(run(out, sizeof out, "verify %s", dir), 1);
    char want[96];
    snprintf(want, sizeof want, "table emb: row %u fails its check", 3 + 7919u * 5);
    ck_assert_ptr_nonnull(strstr(out, want));
    ck_assert_ptr_nonnull(strstr(out, "DAMAGED: 2 tables, 1010 rows, 1 problems"));
    ck_assert_int_ne(run(out, sizeof out, "dump %s emb", dir), 0);
    ck_assert_int_ne(run(out, sizeof out, "stat %s-nothing", dir), 0);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
}
END_TEST

/* The tool on damaged files: it reports, it never crashes (a crash of
 * LMDB inside it is reported as a damaged B-tree, status 1). */
static void expect_no_crash(const char *d, bool must_fail_verify)
{
    static char out[1 << 16];
    static const char *cmds[] = {"stat %s", "verify %s", "dump %s emb", "meta %s"};
    for (unsigned c = 0; c < sizeof cmds / sizeof *cmds; c++) {
        char args[256];
        snprintf(args, sizeof args, cmds[c], d);
        int status = run(out, sizeof out, "%s", args);
        ck_assert_msg(status == 0 || status == 1, "pskv %s: status %d", args, status);
        if (c == 1 && must_fail_verify)
            ck_assert_msg(status == 1 && strstr(out, "DAMAGED") != NULL, "pskv %s said: %s", args,
                          out);
    }
}

START_TEST(tool_survives_damage)
{
    pskv_store *s;
    make_store(&s);
    pskv_close(s);
    char work[96], path[160], cmd[320];
    snprintf(work, sizeof work, "%s-work", dir);
    snprintf(path, sizeof path, "%s/data.mdb", work);
    for (int kind = 0; kind < 6; kind++) {
        snprintf(cmd, sizeof cmd, "rm -rf '%s' && cp -r '%s' '%s'", work, dir, work);
        ck_assert_int_eq(system(cmd), 0);
        dmg_file f;
        ck_assert(dmg_load(path, &f));
        uint64_t rows_root = dmg_root(&f, PSKV_FMT_ROWS_PREFIX "emb");
        uint64_t meta_root = dmg_root(&f, PSKV_FMT_META_DB);
        uint8_t *n;
        switch (kind) {
        case 0: /* truncated to half: the library says ECORRUPT, the tool too */
            f.len /= 2;
            break;
        case 1: /* truncated to its meta pages */
            f.len = 2 * DMG_PSIZE;
            break;
        case 2: /* a record's size past the file */
            n = dmg_find_node(&f, meta_root, "checkpoint", 10, NULL);
            ck_assert_ptr_nonnull(n);
            dmg_put16(n + 2, 0x7fff);
            break;
        case 3: /* a schema record's size past the file */
            n = dmg_find_node(&f, meta_root, "table/emb", 9, NULL);
            ck_assert_ptr_nonnull(n);
            dmg_put16(n + 2, 0x7fff);
            break;
        case 4: /* a leaf loses its last key */
            ck_assert(dmg_page(&f, rows_root) != NULL);
            {
                uint8_t *p = dmg_page(&f, rows_root);
                if (dmg_u16(p + 10) & DMG_P_BRANCH) { /* the first leaf under it */
                    n = dmg_node(&f, p, 0);
                    p = dmg_page(&f, dmg_u16(n) | (uint64_t)dmg_u16(n + 2) << 16);
                }
                ck_assert(p != NULL && dmg_nkeys(p) >= 2);
                dmg_put16(p + 12, (uint16_t)(dmg_u16(p + 12) - 2));
            }
            break;
        default: /* the rows' root page zeroed */
            memset(dmg_page(&f, rows_root), 0, DMG_PSIZE);
            break;
        }
        ck_assert(dmg_save(path, &f));
        free(f.b);
        expect_no_crash(work, true);
    }
    snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s'", dir, work);
    ck_assert_int_eq(system(cmd), 0);
}
END_TEST

/* Issue 22, item 16: a leaf whose key count was lowered hides its last
 * keys in order. In the rows databases verify's walk already counts them;
 * in the meta records (version, user, schema records), LMDB's list of
 * databases and the undo, only a walk against LMDB's own entry counts sees
 * it. Each damage must make verify say DAMAGED. */
START_TEST(verify_sees_hidden_keys)
{
    pskv_store *s;
    make_store(&s);
    pskv_table *t;
    ck_assert_ok(pskv_table_find(s, "emb", &t));
    uint64_t k = 3; /* a second checkpoint: the undo holds this row's pre-image */
    float g[3] = {0.5f, 0.5f, 0.5f};
    ck_assert_ok(pskv_push(t, &k, 1, g));
    ck_assert_ok(pskv_checkpoint_with_meta(s, "step=2", 6));
    pskv_close(s);
    char work[96], path[160], cmd[320];
    snprintf(work, sizeof work, "%s-work", dir);
    snprintf(path, sizeof path, "%s/data.mdb", work);
    static const char *const what[] = {"meta leaf -1 key", "user record and after",
                                       "table/emb and after", "main leaf -1 key",
                                       "undo leaf -1 key"};
    for (int kind = 0; kind < 5; kind++) {
        snprintf(cmd, sizeof cmd, "rm -rf '%s' && cp -r '%s' '%s'", work, dir, work);
        ck_assert_int_eq(system(cmd), 0);
        dmg_file f;
        ck_assert(dmg_load(path, &f));
        uint64_t meta_root = dmg_root(&f, PSKV_FMT_META_DB);
        uint8_t *p = NULL;
        bool done = false;
        switch (kind) {
        case 0:
            p = dmg_first_leaf(&f, meta_root);
            break;
        case 1:
            done = dmg_hide_from(&f, meta_root, "user", 4);
            break;
        case 2:
            done = dmg_hide_from(&f, meta_root, "table/emb", 9);
            break;
        case 3:
            p = dmg_first_leaf(&f, dmg_root(&f, NULL));
            break;
        default:
            p = dmg_first_leaf(&f, dmg_root(&f, PSKV_FMT_UNDO_DB));
            break;
        }
        if (p != NULL) {
            ck_assert_msg(dmg_nkeys(p) >= 2, "%s: a leaf of %u keys", what[kind], dmg_nkeys(p));
            dmg_put16(p + 12, (uint16_t)(dmg_u16(p + 12) - 2));
            done = true;
        }
        ck_assert_msg(done, "%s: no such place in the file", what[kind]);
        ck_assert(dmg_save(path, &f));
        free(f.b);
        static char out[1 << 16];
        int status = run(out, sizeof out, "verify %s", work);
        ck_assert_msg(status == 1 && strstr(out, "DAMAGED") != NULL, "%s: verify said: %s",
                      what[kind], out);
        expect_no_crash(work, true);
    }
    snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s'", dir, work);
    ck_assert_int_eq(system(cmd), 0);
}
END_TEST

/* Two tool backups into one destination at once: one wins, the other
 * fails and leaves the winner's copy alone. */
/* Issue 22, items 1 and 2: `pskv dump | head` beside a training store. The
 * dump's reader dies of SIGPIPE inside its LMDB read transaction: the tool
 * must end as a pipeline's command does (SIGPIPE, no word of damage), and
 * the owner must clear the dead reader's slot, or no page freed after its
 * snapshot is reused and data.mdb grows with every checkpoint. Then
 * readers killed (SIGKILL) at random points beside the checkpointing
 * trainer, and the file size bounded afterwards. */
START_TEST(dead_reader_neither_damage_nor_growth)
{
    test_mkdtemp(dir, "tool-reader");
    pskv_store *s;
    pskv_table *t;
    ck_assert_ok(pskv_open(dir, NULL, &s));
    ck_assert_ok(pskv_table_open(s, "emb", "dim=16", &t));
    enum { ROWS = 20000 };
    test_fill(t, 1, ROWS, 16, 1.0f);
    ck_assert_ok(pskv_checkpoint(s));
    char path[128], err[128], cmd[1024];
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    snprintf(err, sizeof err, "%s.err", dir);
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    const off_t base = st.st_size;
    for (int i = 0; i < 3; i++) { /* a few dead readers, one at a time */
        snprintf(cmd, sizeof cmd, "exec '%s' dump %s emb 2>%s", tool, dir, err);
        FILE *p = popen(cmd, "r");
        ck_assert_ptr_nonnull(p);
        char head[100];
        ck_assert_uint_eq(fread(head, 1, sizeof head, p), sizeof head);
        int status = pclose(p); /* the reader stops reading: SIGPIPE */
        ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGPIPE,
                      "the tool ended with status %#x, not SIGPIPE", status);
        FILE *e = fopen(err, "r");
        ck_assert_ptr_nonnull(e);
        char said[512] = "";
        size_t n = fread(said, 1, sizeof said - 1, e);
        said[n] = '\0';
        fclose(e);
        ck_assert_msg(strstr(said, "damaged") == NULL, "a broken pipe called damage: %s", said);
    }
    unlink(err);
    /* Readers SIGKILLed at random points (the tool's reading child too: its
     * process group) while this trainer rewrites rows and checkpoints. */
    unsigned seed = 7;
    for (int i = 0; i < 8; i++) {
        fflush(NULL);
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
            setpgid(0, 0);
            int fd = open("/dev/null", O_WRONLY);
            dup2(fd, STDOUT_FILENO);
            dup2(fd, STDERR_FILENO);
            execl(tool, tool, "dump", dir, "emb", (char *)NULL);
            _exit(127);
        }
        setpgid(pid, pid);
        test_fill(t, 1, ROWS, 16, 1.5f + (float)i);
        ck_assert_ok(pskv_checkpoint(s));
        seed = seed * 1103515245u + 12345u;
        usleep((useconds_t)(seed >> 16) % 20000u);
        kill(-pid, SIGKILL);
        waitpid(pid, NULL, 0);
    }
    /* Rewrite every row 30 times: with the dead readers' slots kept, each
     * checkpoint's pages are new (about 30x the file); cleared, the file
     * settles at a few checkpoints' worth. */
    for (int c = 0; c < 30; c++) {
        test_fill(t, 1, ROWS, 16, 2.0f + (float)c);
        ck_assert_ok(pskv_checkpoint(s));
    }
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_msg(st.st_size < 8 * base, "data.mdb grew from %lld to %lld bytes",
                  (long long)base, (long long)st.st_size);
    pskv_store_stats ss;
    ck_assert_ok(pskv_store_stats_get(s, &ss));
    ck_assert_uint_ge(ss.stale_readers, 1);
    pskv_close(s);
    test_remove_dir(dir);
}
END_TEST

START_TEST(racing_tool_backups)
{
    pskv_store *s;
    make_store(&s);
    pskv_close(s);
    char dest[96], cmd[512];
    for (int trial = 0; trial < 10; trial++) {
        snprintf(dest, sizeof dest, "%s/copy-%d", dir, trial);
        snprintf(cmd, sizeof cmd,
                 "'%s' backup %s %s 2>/dev/null & a=$!; '%s' backup %s %s 2>/dev/null; b=$?; "
                 "wait $a; a=$?; exit $((a + b))",
                 tool, dir, dest, tool, dir, dest);
        int status = system(cmd);
        ck_assert(WIFEXITED(status));
        ck_assert_int_eq(WEXITSTATUS(status), 1); /* one 0, one 1 */
        static char out[1 << 16];
        ck_assert_int_eq(run(out, sizeof out, "verify %s", dest), 0);
    }
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
}
END_TEST

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: test_tool PATH-TO-pskv\n");
        return 2;
    }
    tool = argv[1];
    Suite *s = suite_create("tool");
    TCase *tc = tcase_create("tool");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, stat_verify_dump_backup);
    tcase_add_test(tc, verify_finds_damage);
    tcase_add_test(tc, tool_survives_damage);
    tcase_add_test(tc, racing_tool_backups);
    tcase_add_test(tc, dead_reader_neither_damage_nor_growth);
    tcase_add_test(tc, verify_sees_hidden_keys);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
