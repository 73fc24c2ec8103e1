/* Seeded randomized model test: random sequences of pull, push, get, put,
 * erase, reshard, step and tagged pushes (tables of the three update
 * modes, by seed) against a small, obviously correct reference (an array
 * of rows searched linearly), compared bit for bit.
 *
 * The reference and the compare steps live in ref_model.h.
 *
 *   test_model [--seeds N] [--first S] [--ops M] [--seed S]
 * A failure names the seed and operation; `--seed S --ops M` replays it. */
#include <math.h>
#include <unistd.h>
#include <string.h>

#include "ref_model.h"
#include "test_common.h"
#include "pskv_internal.h"
#include "spill.h"

static unsigned n_seeds = 6, first_seed = 1, n_ops = 10000;
static long only_seed = -1;
static bool spill = false; /* directory store with a tiny budget: most rows spilled */
/* Durable directory store: checkpoints, clean reopens and reopens that lose
 * everything since the last checkpoint (as a crash would), checked against
 * a copy of the model taken at each checkpoint. With --spill too, most
 * rows are spilled and, after a reopen, cold in LMDB. */
static bool durable = false;

static void ref_copy(ref_model *dst, const ref_model *src)
{
    for (uint32_t i = 0; i < dst->n; i++) {
        free(dst->rows[i].row);
        free(dst->rows[i].acc);
    }
    dst->n = 0;
    if (dst->cap < src->n) {
        dst->cap = src->n;
        dst->rows = realloc(dst->rows, dst->cap * sizeof *dst->rows);
    }
    for (uint32_t i = 0; i < src->n; i++) {
        dst->rows[i].key = src->rows[i].key;
        dst->rows[i].row = malloc(src->row_floats * sizeof(float));
        memcpy(dst->rows[i].row, src->rows[i].row, src->row_floats * sizeof(float));
        dst->rows[i].acc = malloc(src->dim * sizeof(float));
        memcpy(dst->rows[i].acc, src->rows[i].acc, src->dim * sizeof(float));
        dst->rows[i].pushes = src->rows[i].pushes;
        dst->rows[i].step = src->rows[i].step;
    }
    dst->n = src->n;
}

static void remove_store(const char *dir)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
}

static uint64_t pick_key(test_rng *r)
{
    /* Mostly a small universe (many hits and duplicates), some fresh ids. */
    uint32_t c = rng_below(r, 10);
    if (c < 8)
        return rng_below(r, 200) * 0x100000001ull;
    if (c < 9)
        return rng_below(r, 4); /* keys 0..3 including 0 */
    return rng_next(r);
}

/* Run one seed for ops operations; false and *failed_op / what on the
 * first mismatch. */
static bool run_seed(unsigned seed, unsigned ops, unsigned *failed_op, char *what, size_t len)
{
    test_rng r = {seed * 0x2545f4914f6cdd1dull};
    static const uint32_t dims[] = {1, 3, 8, 17};
    static const char *const opt_names[] = {"sgd", "adagrad", "rowwise_adagrad", "adam", "ftrl"};
    char cfg[200];
    uint32_t dim = dims[seed % 4];
    /* Update mode: async, sync, or async with a staleness bound. */
    const unsigned mode = seed % 3;
    char mode_cfg[40] = "";
    if (mode == 1)
        snprintf(mode_cfg, sizeof mode_cfg, " update=sync");
    else if (mode == 2)
        snprintf(mode_cfg, sizeof mode_cfg, " staleness=%u", rng_below(&r, 6));
    snprintf(cfg, sizeof cfg, "dim=%u optimizer=%s init=uniform:-1:1 seed=%u shards=%u lr=0.05%s",
             dim, opt_names[seed % 5], seed, 1 + rng_below(&r, 16), mode_cfg);
    uint64_t clock = 100; /* the training step push_at tags gradients with */
    pskv_store *s;
    pskv_table *t;
    *failed_op = 0;
    char dir[64] = "", store_cfg[96] = "";
    if (spill || durable) {
        /* room for about 24 rows of the widest table: most rows live in the
         * spill file and nearly every call loads or evicts */
        test_mkdtemp(dir, "model");
        if (spill)
            snprintf(store_cfg, sizeof store_cfg, "durability=%s memory_budget=%u",
                     durable ? "checkpoint" : "none", 24u * (dim * 3 + 1) * 4);
    }
    if (pskv_open(spill || durable ? dir : NULL, store_cfg, &s) != 0 ||
        pskv_table_open(s, "m", cfg, &t) != 0) {
        snprintf(what, len, "open %.150s", cfg);
        return false;
    }
    enum { MAXB = 64 };
    ref_model m, saved; /* saved: the model as of the last checkpoint */
    ref_open(&m, t, MAXB);
    ref_open(&saved, t, MAXB);
    unsigned checkpoints = 0, reopens = 0;
    uint64_t keys[MAXB];
    float *vals = malloc(MAXB * dim * sizeof(float));
    bool ok = true;
    for (unsigned op = 0; op < ops && ok; op++) {
        *failed_op = op;
        uint32_t n = 1 + rng_below(&r, rng_below(&r, 4) == 0 ? MAXB : 8);
        for (uint32_t i = 0; i < n; i++)
            keys[i] = pick_key(&r);
        for (uint32_t i = 0; i < n * dim; i++)
            vals[i] = rng_float(&r);
        if (rng_below(&r, 40) == 0) /* a poisoned batch now and then */
            vals[rng_below(&r, n * dim)] = rng_below(&r, 2) ? NAN : -INFINITY;
        uint32_t kind = rng_below(&r, 100);
        enum ref_op rop = kind < 30   ? REF_PULL
                          : kind < 60 ? REF_PUSH
                          : kind < 75 ? REF_GET
                          : kind < 87 ? REF_PUT
                          : kind < 98 ? REF_ERASE
                                      : REF_RESHARD;
        if (rop == REF_RESHARD)
            n = 1 + rng_below(&r, 33);
        /* Steps (sync tables: often; others: refused) and tagged pushes
         * (staleness tables: half of the pushes, steps 0..8 behind). */
        clock += rng_below(&r, 3);
        if (rng_below(&r, 100) < (mode == 1 ? 10u : 1u))
            rop = REF_STEP;
        else if (rop == REF_PUSH && rng_below(&r, mode == 2 ? 2 : 20) == 0) {
            rop = REF_PUSH_AT;
            m.at_step = clock - rng_below(&r, 9);
        }
        uint32_t store_op = durable ? rng_below(&r, 200) : 200;
        if (store_op < 4) { /* checkpoint */
            int rc = pskv_checkpoint(s);
            if (rc != 0) {
                snprintf(m.what, sizeof m.what, "checkpoint returned %d", rc);
                ok = false;
            }
            ref_copy(&saved, &m);
            checkpoints++;
            continue;
        }
        if (store_op < 6) { /* reopen: clean (close checkpoints) or as after a crash */
            bool crash = store_op == 5;
            if (crash) {
                pskv__close_abandon(s);
                ref_copy(&m, &saved);
            } else {
                pskv_close(s);
                ref_copy(&saved, &m);
            }
            char shards_cfg[32];
            snprintf(shards_cfg, sizeof shards_cfg, "shards=%u", 1 + rng_below(&r, 16));
            if (pskv_open(dir, store_cfg, &s) != 0 || pskv_table_open(s, "m", shards_cfg, &t) != 0) {
                snprintf(m.what, sizeof m.what, "reopen (%s) failed", crash ? "crash" : "clean");
                ok = false;
                s = NULL;
                break;
            }
            reopens++;
            ok = ref_compare_all(&m, t);
            if (!ok)
                snprintf(m.what + strlen(m.what), sizeof m.what - strlen(m.what),
                         " after %s reopen", crash ? "crash" : "clean");
            continue;
        }
        ok = ref_step(&m, t, rop, keys, n, vals);
        if (ok && (op % 500 == 499 || op + 1 == ops))
            ok = ref_compare_all(&m, t);
    }
    if (!ok)
        snprintf(what, len, "%s", m.what);
    if (ok && durable && (checkpoints == 0 || reopens == 0) && ops >= 2000) {
        snprintf(what, len, "durable run without %s", checkpoints ? "reopens" : "checkpoints");
        ok = false;
    }
    if (ok && spill && !durable) {
        pskv_table_stats st;
        pskv_table_stats_get(t, &st);
        uint64_t rewrites = pskv__spill_rewrites(t->spill);
        if (st.spill_reads == 0 || st.spill_writes == 0 || rewrites == 0) {
            snprintf(what, len, "spill tier unused: %llu reads, %llu writes, %llu page rewrites",
                     (unsigned long long)st.spill_reads, (unsigned long long)st.spill_writes,
                     (unsigned long long)rewrites);
            ok = false;
        }
    }
    free(vals);
    ref_close(&m);
    ref_close(&saved);
    pskv_close(s);
    if (durable)
        remove_store(dir);
    else if (spill)
        rmdir(dir);
    return ok;
}

START_TEST(random_sequences)
{
    unsigned lo = only_seed >= 0 ? (unsigned)only_seed : first_seed;
    unsigned hi = only_seed >= 0 ? lo + 1 : first_seed + n_seeds;
    for (unsigned seed = lo; seed < hi; seed++) {
        unsigned op;
        char what[200];
        if (!run_seed(seed, n_ops, &op, what, sizeof what))
            ck_abort_msg("seed %u fails at op %u: %s; replay with: test_model --seed %u --ops %u",
                         seed, op, what, seed, op + 1);
    }
}
END_TEST

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--spill") == 0 || strcmp(argv[i], "--durable") == 0) {
            if (argv[i][2] == 's')
                spill = true;
            else
                durable = true;
            memmove(&argv[i], &argv[i + 1], (size_t)(argc - i - 1) * sizeof *argv);
            argc--;
            i--;
        }
    for (int i = 1; i + 1 < argc; i += 2) {
        unsigned long v = strtoul(argv[i + 1], NULL, 0);
        if (strcmp(argv[i], "--seeds") == 0)
            n_seeds = (unsigned)v;
        else if (strcmp(argv[i], "--first") == 0)
            first_seed = (unsigned)v;
        else if (strcmp(argv[i], "--ops") == 0)
            n_ops = (unsigned)v;
        else if (strcmp(argv[i], "--seed") == 0)
            only_seed = (long)v;
    }
    Suite *s = suite_create("model");
    TCase *tc = tcase_create("model");
    tcase_set_timeout(tc, 3600);
    tcase_add_test(tc, random_sequences);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
