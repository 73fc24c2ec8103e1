/* The code README.md and docs/API.md show, compiled from the documents
 * themselves (tests/doc_snippets.py writes each block marked "<!-- snippet:
 * NAME" to NAME.inc) and run: the README's first and durable examples, and
 * the export loops against a leader that changes between rounds (the
 * follower must equal the leader after each round, for buffers from "not
 * one row" to 1 MiB). */
#define _DEFAULT_SOURCE /* mkdtemp */
#include <pskv.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static pskv_table *follower;
static int failures;
static size_t grown_cap;

#define CHECK(c)                                                                                 \
    do {                                                                                         \
        if (!(c)) {                                                                              \
            fprintf(stderr, "%s:%d: %s failed (%s)\n", __FILE__, __LINE__, #c,                   \
                    pskv_last_error());                                                          \
            failures++;                                                                          \
        }                                                                                        \
    } while (0)

/* What the snippets call. */
static void send(const void *buf, size_t len)
{
    /* the follower is a table of another name in the same store */
    CHECK(pskv_apply(follower, buf, len, PSKV_APPLY_REPLACE | PSKV_APPLY_ANY_TABLE) == 0);
}

static void start_empty(void)
{
    pskv_iter *it;
    uint64_t key;
    float w[16];
    CHECK(pskv_iter_create(follower, &it) == 0);
    while (pskv_iter_next(it, &key, w, NULL) == 1)
        CHECK(pskv_erase(follower, &key, 1) == 0);
    pskv_iter_destroy(it);
}

static void grow_buffer(size_t len) { grown_cap = len; }

#include "api-follow.inc"

static void readme_export(pskv_table *t, pskv_table *replica, uint64_t *cursor_io, void *buf,
                          size_t cap)
{
    const uint32_t dim = 16;
    const size_t n = 2;
    const uint64_t keys[2] = {1, 2};
    const float grads[32] = {0};
    uint64_t cursor = *cursor_io;
#include "readme-export.inc"
    *cursor_io = cursor;
}

/* README's first example, as it is: a memory-only store, pull, push. */
static int readme_using(void)
{
    enum { n = 3 };
    uint64_t keys[n] = {1, 2, 3};
    static float rows[n * 64], grads[n * 64];
    for (int i = 0; i < n * 64; i++)
        grads[i] = 0.01f * (float)(i % 7);
    { /* its #include <pskv.h> adds nothing here: the header is guarded */
#include "readme-using.inc"
    }
    int nonzero = 0; /* init=normal: the rows pulled are not all zero */
    for (int i = 0; i < n * 64; i++)
        nonzero += rows[i] != 0.0f;
    return nonzero > 0;
}

/* README's durable example, as it is but for its directory: the
 * checkpoints commit (the first, with nothing written, commits nothing),
 * and a reopen finds the metadata of the seq the wait gave. */
static int readme_durable(const char *tmp)
{
    pskv_store *s;
    pskv_table *t;
    uint64_t step = 42, seq = 0;
#define DOC_DIR tmp /* doc_snippets.py writes it for the README's "/data/ctr" */
#include "readme-durable.inc"
#undef DOC_DIR
    (void)t;
    if (pskv_open(tmp, NULL, &s) != 0)
        return 0;
    uint64_t back = 0, meta_seq = 0;
    size_t len = 0;
    int ok = pskv_checkpoint_meta(s, &back, sizeof back, &len, &meta_seq) == 0 && back == 42 &&
             meta_seq == seq && seq > 0;
    pskv_close(s);
    return ok;
}

/* Every row of a and b, weights and state, bit for bit. */
static int same(pskv_table *a, pskv_table *b)
{
    uint64_t na = pskv_table_rows(a), nb = pskv_table_rows(b);
    if (na != nb) {
        fprintf(stderr, "rows: %llu against %llu\n", (unsigned long long)na,
                (unsigned long long)nb);
        return 0;
    }
    pskv_iter *it;
    uint64_t key;
    float wa[32], wb[32];
    uint8_t found;
    int ok = pskv_iter_create(a, &it) == 0;
    while (ok && pskv_iter_next(it, &key, wa, wa + 16) == 1) {
        /* b's weights by get; state through a one-key export is overkill:
         * REPLACE carries the state with the weights. */
        ok = pskv_get(b, &key, 1, wb, &found) == 0 && found && memcmp(wa, wb, 64) == 0;
    }
    pskv_iter_destroy(it);
    return ok;
}

static void round_of_changes(pskv_table *t, unsigned round)
{
    uint64_t keys[300];
    float g[300 * 16];
    for (unsigned i = 0; i < 300; i++) {
        keys[i] = (round * 7919u + i * 31u) % 6000u + 1;
        for (unsigned j = 0; j < 16; j++)
            g[i * 16 + j] = (float)((i + j + round) % 7) * 0.01f - 0.03f;
    }
    CHECK(pskv_push(t, keys, 300, g) == 0);
    CHECK(pskv_erase(t, keys, 20) == 0);
}

/* docs/API.md's update modes: two workers' messages, one step. The rows
 * the messages carried moved once; the rest waits in the residuals. */
static int api_modes(void)
{
    pskv_store *s;
    enum { n = 200 };
    uint64_t keys[n];
    static float grads[2][n * 16];
    static uint8_t buffer[1 << 16];
    void *buf = buffer;
    size_t cap = sizeof buffer;
    for (int i = 0; i < n; i++) {
        keys[i] = (uint64_t)i + 1;
        for (int j = 0; j < 16; j++)
            grads[0][i * 16 + j] = grads[1][i * 16 + j] = 0.01f * (float)((i * 7 + j) % 11);
    }
#include "api-modes.inc"
    pskv_table_stats st, r0;
    int ok = pskv_table_stats_get(emb, &st) == 0 && pskv_table_stats_get(res[0], &r0) == 0 &&
             st.stepped > 0 && st.stepped < n && r0.rows > 0;
    pskv_close(s);
    return ok;
}

int main(void)
{
    CHECK(readme_using());
    printf("README's first example: pulled and pushed\n");
    CHECK(api_modes());
    printf("API.md's update modes: two workers' messages, one step\n");
    char tmp[] = "/tmp/pskv-doc-XXXXXX";
    CHECK(mkdtemp(tmp) != NULL);
    CHECK(readme_durable(tmp));
    printf("README's durable example: three checkpoints, the metadata back after a reopen\n");
    char cmd[64];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    CHECK(system(cmd) == 0);
    static const size_t caps[] = {64, 4096, 1u << 20};
    for (int which = 0; which < 2; which++) {
        for (size_t c = 0; c < sizeof caps / sizeof caps[0]; c++) {
            pskv_store *s;
            pskv_table *t;
            CHECK(pskv_open(NULL, NULL, &s) == 0);
            CHECK(pskv_table_open(s, "leader", "dim=16 optimizer=adagrad", &t) == 0);
            CHECK(pskv_table_open(s, "follower", "dim=16 optimizer=adagrad", &follower) == 0);
            uint64_t keys[5000];
            float w[5000 * 16];
            for (unsigned i = 0; i < 5000; i++) {
                keys[i] = i + 1;
                for (unsigned j = 0; j < 16; j++)
                    w[i * 16 + j] = (float)i + (float)j / 64.0f;
            }
            CHECK(pskv_put(t, keys, 5000, w) == 0);
            size_t cap = caps[c];
            grown_cap = 0;
            uint64_t cursor = 0;
            for (unsigned round = 0; round < 6; round++) {
                void *buf = malloc(cap);
                if (which == 0) {
                    readme_export(t, follower, &cursor, buf, cap);
                } else {
                    int rc = follow(t, &cursor, buf, cap);
                    CHECK(rc == 0 || (rc == PSKV_ERANGE && grown_cap > cap));
                    if (rc == PSKV_ERANGE) { /* the round again, with the buffer asked for */
                        free(buf);
                        cap = grown_cap;
                        buf = malloc(cap);
                        CHECK(follow(t, &cursor, buf, cap) == 0);
                    }
                }
                free(buf);
                if (cap >= 4096 || which == 1)
                    CHECK(same(t, follower));
                else /* not one row fits: nothing sent, and the cursor stays */
                    CHECK(cursor == 0 && pskv_table_rows(follower) == 0);
                round_of_changes(t, round);
            }
            printf("%s, buffer %zu: follower %s the leader\n",
                   which == 0 ? "README export loop" : "API.md follow()", caps[c],
                   cap >= 4096 || which == 1 ? (failures ? "differs from" : "equals")
                                             : "(one row does not fit: no chunk) vs");
            pskv_close(s);
        }
    }
    printf("%d failures\n", failures);
    return failures == 0 ? 0 : 1;
}
