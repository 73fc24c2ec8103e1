/* Damage campaign: copies of a durable store's data.mdb damaged one way at
 * a time (a bit of a record's bytes, of a node header, of a page header, of
 * a meta page; a zeroed page; a truncation; a bit anywhere), then used by
 * the library in a child process and inspected by tools/pskv.
 *
 * Each trial's library result is one of: correct (every row, the metadata
 * and the checkpoint seq exactly as written), detected (a call returned an
 * error), silent (every call returned success with something wrong), or a
 * crash, classified by where it happened (inside liblmdb, or elsewhere).
 * Required: no silent result that `pskv verify` also calls ok, no tool
 * crash (status other than 0/1), no crash outside LMDB. LMDB's own crashes
 * (it validates no page) are counted and printed.
 *
 *   test_corruption PATH-TO-pskv [--trials N] [--seed S] */
#include <dlfcn.h>
#include <execinfo.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "format.h"
#include "pskv_internal.h"
#include "test_common.h"
#include "test_damage.h"

static const char *tool;
static unsigned n_trials = 150;
static uint64_t base_seed = 1;

#define T_ROWS 3000u
#define T_DIM 4u
#define U_ROWS 10u
#define U_DIM 2u
static const char meta_bytes[] = "step=2";

enum outcome { CORRECT, DETECTED, SILENT, CRASH_LMDB, CRASH_PSKV, OTHER, N_OUTCOMES };
static const char *outcome_name[] = {"correct", "detected", "silent", "crash in LMDB",
                                     "crash outside LMDB", "other"};

enum kind { K_RECORD, K_NODE, K_PAGE_HEADER, K_META_PAGE, K_ZERO_PAGE, K_TRUNCATE, K_ANY,
            N_KINDS };
static const char *kind_name[] = {"record bytes", "node header", "page header", "meta page",
                                  "zeroed page", "truncation", "any byte"};

/* ---------------------------------------------------------------- the store */

/* The tables' versions after the clean close: a reopen goes on from them,
 * or jumps past them (a hidden version record, an older snapshot: every
 * consumer's cursor goes stale, which is safe). Below them would hand out
 * versions again that consumers already hold: a silent wrong result. */
static uint64_t t_version, u_version;

static void make_store(const char *d)
{
    pskv_store *s;
    pskv_table *t, *u;
    ck_assert_ok(pskv_open(d, NULL, &s));
    ck_assert_ok(pskv_table_open(s, "t", "dim=4 optimizer=adagrad", &t));
    ck_assert_ok(pskv_table_open(s, "u", "dim=2", &u));
    test_fill(t, 1, T_ROWS, T_DIM, 1.0f);
    test_fill(u, 1, U_ROWS, U_DIM, 5.0f);
    ck_assert_ok(pskv_checkpoint_with_meta(s, "step=1", 6));
    test_fill(t, 1, T_ROWS, T_DIM, 2.0f);
    ck_assert_ok(pskv_checkpoint_with_meta(s, meta_bytes, sizeof meta_bytes));
    t_version = pskv_table_version(t);
    u_version = pskv_table_version(u);
    pskv_close(s);
}

/* ---------------------------------------------------------------- the child */

static void crash_handler(int sig, siginfo_t *si, void *ucv)
{
    (void)sig;
    (void)si;
    (void)ucv;
    void *frames[64];
    int n = backtrace(frames, 64);
    bool lmdb = false;
    for (int i = 0; i < n; i++) {
        Dl_info info;
        if (dladdr(frames[i], &info) && info.dli_fname && strstr(info.dli_fname, "liblmdb"))
            lmdb = true;
    }
    _exit(lmdb ? CRASH_LMDB : CRASH_PSKV);
}

/* Use the damaged store as a trainer would; the outcome as exit status. */
static int use_store(const char *d)
{
    pskv_store *s;
    pskv_table *t, *u;
    int rc = pskv_open(d, NULL, &s);
    if (rc != 0)
        return DETECTED;
    pskv_store_stats ss;
    char meta[64];
    size_t len = 0;
    uint64_t seq;
    int out = CORRECT;
    if ((rc = pskv_table_open(s, "t", NULL, &t)) != 0 ||
        (rc = pskv_table_open(s, "u", NULL, &u)) != 0 ||
        (rc = pskv_checkpoint_meta(s, meta, sizeof meta, &len, &seq)) != 0 ||
        (rc = pskv_store_stats_get(s, &ss)) != 0) {
        out = DETECTED;
    } else if (len != sizeof meta_bytes || memcmp(meta, meta_bytes, len) != 0 || seq != 2 ||
               ss.checkpoint_seq != 2 || pskv_table_version(t) < t_version ||
               pskv_table_version(u) < u_version) {
        out = SILENT;
    }
    int64_t bad;
    if (out == CORRECT) {
        bad = test_rows_differ(t, 1, T_ROWS, T_DIM, 2.0f);
        out = bad == -2 ? DETECTED : bad >= 0 ? SILENT : CORRECT;
    }
    if (out == CORRECT) {
        bad = test_rows_differ(u, 1, U_ROWS, U_DIM, 5.0f);
        out = bad == -2 ? DETECTED : bad >= 0 ? SILENT : CORRECT;
    }
    if (out == CORRECT) { /* a full iteration: every row once, nothing else */
        pskv_iter *it;
        uint64_t key, n = 0;
        float w[T_DIM], st[T_DIM];
        rc = pskv_iter_create(t, &it);
        bool wrong = false;
        if (rc == 0) {
            while ((rc = pskv_iter_next(it, &key, w, st)) == 1) {
                n++;
                wrong |= key < 1 || key > T_ROWS || w[0] != 2.0f + (float)(key - 1);
            }
            pskv_iter_destroy(it);
        }
        if (wrong)
            rc = -1000;
        out = rc == -1000 || (rc == 0 && n != T_ROWS) ? SILENT : rc != 0 ? DETECTED : CORRECT;
    }
    if (out == CORRECT) /* writing on: the next checkpoint must work */
        out = pskv_push(t, (const uint64_t[]){1}, 1, (const float[]){0.5f, 0, 0, 0}) != 0 ||
                      pskv_checkpoint(s) != 0
                  ? DETECTED
                  : CORRECT;
    pskv__close_abandon(s);
    return out;
}

static enum outcome library_outcome(const char *d)
{
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = crash_handler;
        sa.sa_flags = SA_SIGINFO | SA_RESETHAND;
        sigaction(SIGSEGV, &sa, NULL);
        sigaction(SIGBUS, &sa, NULL);
        sigaction(SIGABRT, &sa, NULL);
        sigaction(SIGFPE, &sa, NULL);
        sigaction(SIGILL, &sa, NULL);
        alarm(60); /* a loop inside a damaged tree */
        _exit(use_store(d));
    }
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    if (!WIFEXITED(status))
        return OTHER; /* the alarm, or a signal the handler does not take */
    int code = WEXITSTATUS(status);
    return code < N_OUTCOMES ? (enum outcome)code : OTHER;
}

/* ---------------------------------------------------------------- the tool */

static int tool_status(const char *args)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "timeout 60 '%s' %s >/dev/null 2>&1", tool, args);
    int status = system(cmd);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* ---------------------------------------------------------------- damage */

/* The trees of the store, to say where damage landed. */
enum tree { TREE_MAIN, TREE_META, TREE_ROWS, TREE_NONE, N_TREES };
static const char *tree_name[] = {"main tree", "meta db", "rows dbs", "elsewhere"};

typedef struct live_pages {
    uint64_t *pgno;
    uint8_t *tree;
    size_t n, cap;
    enum tree cur;
} live_pages;

static void collect_fn(const dmg_file *f, uint64_t pgno, void *arg)
{
    (void)f;
    live_pages *lp = arg;
    if (lp->n == lp->cap) {
        lp->cap = lp->cap ? 2 * lp->cap : 64;
        lp->pgno = realloc(lp->pgno, lp->cap * sizeof *lp->pgno);
        lp->tree = realloc(lp->tree, lp->cap);
    }
    lp->tree[lp->n] = (uint8_t)lp->cur;
    lp->pgno[lp->n++] = pgno;
}

/* Pages reachable from the current meta: the main tree, the meta
 * database and both rows databases. */
static void live(const dmg_file *f, live_pages *lp)
{
    lp->n = 0;
    lp->cur = TREE_MAIN;
    dmg_walk(f, dmg_root(f, NULL), collect_fn, lp);
    const char *dbs[] = {PSKV_FMT_META_DB, PSKV_FMT_ROWS_PREFIX "t", PSKV_FMT_ROWS_PREFIX "u"};
    for (unsigned i = 0; i < 3; i++) {
        uint64_t root = dmg_root(f, dbs[i]);
        lp->cur = i == 0 ? TREE_META : TREE_ROWS;
        if (root != DMG_NONE)
            dmg_walk(f, root, collect_fn, lp);
    }
}

static void flip(uint8_t *p, test_rng *r) { *p ^= (uint8_t)(1u << rng_below(r, 8)); }

/* Damage f by kind; a description into what, the tree hit into *tree. */
static void damage(dmg_file *f, enum kind k, test_rng *r, live_pages *lp, char *what, size_t wl,
                   enum tree *tree)
{
    uint32_t pick = rng_below(r, (uint32_t)lp->n);
    uint64_t pg = lp->pgno[pick];
    *tree = k == K_META_PAGE || k == K_TRUNCATE || k == K_ANY ? TREE_NONE
                                                              : (enum tree)lp->tree[pick];
    uint8_t *p = dmg_page(f, pg);
    unsigned nk = dmg_nkeys(p);
    uint8_t *node = nk && !(dmg_u16(p + 10) & DMG_P_OVERFLOW) ? dmg_node(f, p, rng_below(r, nk))
                                                              : NULL;
    switch (k) {
    case K_RECORD:
        if (node != NULL && (dmg_u16(p + 10) & DMG_P_LEAF)) {
            size_t at = 8u + rng_below(r, (uint32_t)(dmg_u16(node + 6) + 16));
            if (node + at < p + DMG_PSIZE) {
                flip(node + at, r);
                snprintf(what, wl, "page %llu node byte %zu", (unsigned long long)pg, at);
                return;
            }
        }
        /* no leaf node here: a node header */
        __attribute__((fallthrough));
    case K_NODE:
        if (node != NULL) {
            unsigned at = rng_below(r, 8);
            flip(node + at, r);
            snprintf(what, wl, "page %llu node header byte %u", (unsigned long long)pg, at);
            return;
        }
        __attribute__((fallthrough));
    case K_PAGE_HEADER: {
        unsigned at = rng_below(r, 16 + 2 * (nk < 8 ? nk : 8));
        flip(p + at, r);
        snprintf(what, wl, "page %llu header byte %u", (unsigned long long)pg, at);
        return;
    }
    case K_META_PAGE: {
        unsigned m = rng_below(r, 2), at = rng_below(r, 160);
        flip(f->b + (size_t)m * DMG_PSIZE + at, r);
        snprintf(what, wl, "meta page %u byte %u", m, at);
        return;
    }
    case K_ZERO_PAGE:
        memset(p, 0, DMG_PSIZE);
        snprintf(what, wl, "page %llu zeroed", (unsigned long long)pg);
        return;
    case K_TRUNCATE:
        f->len = rng_below(r, 2) ? (size_t)rng_below(r, (uint32_t)f->len)
                                 : (size_t)rng_below(r, (uint32_t)(f->len / DMG_PSIZE)) * DMG_PSIZE;
        snprintf(what, wl, "truncated to %zu", f->len);
        return;
    default: {
        size_t at = rng_below(r, (uint32_t)f->len);
        flip(f->b + at, r);
        snprintf(what, wl, "file byte %zu", at);
        return;
    }
    }
}

START_TEST(damage_campaign)
{
    char base[64], work[96], path[160], args[256];
    test_mkdtemp(base, "corruption");
    make_store(base);
    snprintf(work, sizeof work, "%s-work", base);
    snprintf(path, sizeof path, "%s/data.mdb", base);
    dmg_file orig;
    ck_assert(dmg_load(path, &orig));
    /* The harness itself: an undamaged copy is used correctly. */
    char cmd0[320];
    snprintf(cmd0, sizeof cmd0, "rm -rf '%s' && cp -r '%s' '%s'", work, base, work);
    ck_assert_int_eq(system(cmd0), 0);
    ck_assert_int_eq(library_outcome(work), CORRECT);
    live_pages lp = {0};
    live(&orig, &lp);
    ck_assert_uint_gt(lp.n, 4);
    unsigned counts[N_KINDS][N_OUTCOMES] = {{0}}, by_tree[N_TREES][N_OUTCOMES] = {{0}},
             silent_missed = 0, tool_crashes = 0;
    test_rng r = {base_seed * 0x9e3779b97f4a7c15ull};
    for (unsigned trial = 0; trial < n_trials; trial++) {
        enum kind k = (enum kind)(trial % N_KINDS);
        char cmd[320], what[128];
        snprintf(cmd, sizeof cmd, "rm -rf '%s' && cp -r '%s' '%s'", work, base, work);
        ck_assert_int_eq(system(cmd), 0);
        dmg_file f = {malloc(orig.len), orig.len};
        memcpy(f.b, orig.b, orig.len);
        enum tree tree;
        damage(&f, k, &r, &lp, what, sizeof what, &tree);
        snprintf(path, sizeof path, "%s/data.mdb", work);
        ck_assert(dmg_save(path, &f));
        free(f.b);
        /* The tool first (the library may rewrite the store). */
        static const char *cmds[] = {"stat", "verify", "meta", "dump"};
        int verify = 0;
        for (unsigned c = 0; c < 4; c++) {
            snprintf(args, sizeof args, "%s %s%s", cmds[c], work, c == 3 ? " t" : "");
            int st = tool_status(args);
            if (st != 0 && st != 1) {
                tool_crashes++;
                fprintf(stderr, "trial %u (%s): pskv %s: status %d\n", trial, what, cmds[c], st);
            }
            if (c == 1)
                verify = st;
        }
        enum outcome o = library_outcome(work);
        counts[k][o]++;
        by_tree[tree][o]++;
        if (o == SILENT && verify == 0) {
            silent_missed++;
            fprintf(stderr, "trial %u (%s): silent wrong result, and verify says ok\n", trial,
                    what);
            if (getenv("PSKV_KEEP_DAMAGED") != NULL) { /* for a look with the tool */
                snprintf(cmd, sizeof cmd, "cp -r '%s' '%s-trial%u'", work, base, trial);
                ck_assert_int_eq(system(cmd), 0);
            }
        }
        if (o == CRASH_PSKV || o == OTHER)
            fprintf(stderr, "trial %u (%s): %s\n", trial, what, outcome_name[o]);
    }
    unsigned total[N_OUTCOMES] = {0};
    printf("%-14s", "damage");
    for (int o = 0; o < N_OUTCOMES; o++)
        printf(" %12s", outcome_name[o]);
    printf("\n");
    for (int k = 0; k < N_KINDS; k++) {
        printf("%-14s", kind_name[k]);
        for (int o = 0; o < N_OUTCOMES; o++) {
            printf(" %12u", counts[k][o]);
            total[o] += counts[k][o];
        }
        printf("\n");
    }
    for (int tr = 0; tr < N_TREES; tr++) {
        printf("%-14s", tree_name[tr]);
        for (int o = 0; o < N_OUTCOMES; o++)
            printf(" %12u", by_tree[tr][o]);
        printf("\n");
    }
    printf("%-14s", "all");
    for (int o = 0; o < N_OUTCOMES; o++)
        printf(" %12u", total[o]);
    printf("\n%u trials: %u silent results verify missed, %u tool crashes, %u library crashes "
           "in LMDB, %u outside\n",
           n_trials, silent_missed, tool_crashes, total[CRASH_LMDB], total[CRASH_PSKV]);
    fflush(stdout);
    free(orig.b);
    free(lp.pgno);
    free(lp.tree);
    snprintf(args, sizeof args, "rm -rf '%s' '%s'", base, work);
    ck_assert_int_eq(system(args), 0);
    ck_assert_uint_eq(silent_missed, 0);
    ck_assert_uint_eq(tool_crashes, 0);
    ck_assert_uint_eq(total[CRASH_PSKV], 0);
    ck_assert_uint_eq(total[OTHER], 0);
}
END_TEST

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define UNDER_SANITIZER 1
#else
#define UNDER_SANITIZER 0
#endif

int main(int argc, char **argv)
{
    if (UNDER_SANITIZER) {
        printf("skipped: the campaign classifies crashes itself, without a sanitizer's "
               "handler\n");
        return 77;
    }
    if (argc < 2) {
        fprintf(stderr, "usage: test_corruption PATH-TO-pskv [--trials N] [--seed S]\n");
        return 2;
    }
    tool = argv[1];
    for (int i = 2; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--trials") == 0)
            n_trials = (unsigned)strtoul(argv[i + 1], NULL, 0);
        else if (strcmp(argv[i], "--seed") == 0)
            base_seed = strtoull(argv[i + 1], NULL, 0);
    }
    void *warm[1];
    backtrace(warm, 1); /* loads what backtrace needs before any handler runs */
    Suite *s = suite_create("corruption");
    TCase *tc = tcase_create("corruption");
    tcase_set_timeout(tc, 3600);
    tcase_add_test(tc, damage_campaign);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
