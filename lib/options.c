/* Store and table options: defaults, config-string parsing, validation and
 * the canonical config string (used for schemas and round trips).
 * SPDX-License-Identifier: BSD-2-Clause */
#include <ctype.h>
#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "errors.h"
#include "optimizer.h"
#include "options.h"
#include "pskv.h"

/* ---------------------------------------------------------------- C locale */

static locale_t c_locale;
static pthread_once_t c_locale_once = PTHREAD_ONCE_INIT;

static void c_locale_make(void) { c_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0); }

static locale_t c_locale_get(void)
{
    pthread_once(&c_locale_once, c_locale_make);
    return c_locale;
}

/* A number token as a C string in buf[64], and the "C" numeric locale to
 * read it in: 0, PSKV_EINVAL (empty or too long), PSKV_ENOMEM. */
static int number_text(const char *s, size_t len, char buf[64], locale_t *loc)
{
    if (len == 0 || len >= 64)
        return PSKV_EINVAL;
    memcpy(buf, s, len);
    buf[len] = '\0';
    *loc = c_locale_get();
    return *loc == (locale_t)0 ? PSKV_ENOMEM : 0;
}

/* Locale-independent float parsing: the whole token, finite. */
static int parse_float(const char *s, size_t len, float *out)
{
    char buf[64], *end = NULL;
    locale_t loc;
    int rc = number_text(s, len, buf, &loc);
    if (rc != 0)
        return rc;
    float v = strtof_l(buf, &end, loc);
    if (end != buf + len || !isfinite(v))
        return PSKV_EINVAL;
    *out = v;
    return 0;
}

/* The same in double precision (a fraction such as topk=0.1 must stay
 * 0.1, not become the float nearest to it). */
static int parse_double(const char *s, size_t len, double *out)
{
    char buf[64], *end = NULL;
    locale_t loc;
    int rc = number_text(s, len, buf, &loc);
    if (rc != 0)
        return rc;
    double v = strtod_l(buf, &end, loc);
    if (end != buf + len || !isfinite(v))
        return PSKV_EINVAL;
    *out = v;
    return 0;
}

int pskv__format(char *buf, size_t len, const char *fmt, ...)
{
    locale_t loc = c_locale_get();
    if (loc == (locale_t)0)
        return PSKV_ENOMEM;
    locale_t old = uselocale(loc);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, len, fmt, ap);
    va_end(ap);
    uselocale(old);
    if (n < 0)
        return PSKV_EINVAL;
    if ((size_t)n >= len)
        return PSKV_ERANGE;
    return n;
}

/* ---------------------------------------------------------------- tokens */

typedef struct token {
    const char *key, *val;
    size_t klen, vlen;
} token;

static bool is_sep(char c) { return c == ' ' || c == ',' || c == '\t' || c == '\n' || c == '\r'; }

/* Next "key=value" token from *p; returns 1, 0 at the end, or PSKV_EINVAL. */
static int next_token(const char **p, token *t)
{
    const char *s = *p;
    while (*s && is_sep(*s))
        s++;
    if (!*s)
        return 0;
    const char *begin = s;
    while (*s && !is_sep(*s))
        s++;
    const char *eq = memchr(begin, '=', (size_t)(s - begin));
    if (eq == NULL || eq == begin || eq + 1 == s)
        return pskv__fail(PSKV_EINVAL, "'%.*s' is not key=value%s", (int)(s - begin), begin,
                          eq != NULL && eq + 1 == s ? " (no value after '=')" : "");
    t->key = begin;
    t->klen = (size_t)(eq - begin);
    t->val = eq + 1;
    t->vlen = (size_t)(s - eq - 1);
    *p = s;
    return 1;
}

static bool tok_is(const char *s, size_t len, const char *word)
{
    return strlen(word) == len && memcmp(s, word, len) == 0;
}

static int parse_u64(const char *s, size_t len, uint64_t *out)
{
    if (len == 0)
        return PSKV_EINVAL;
    int base = 10;
    if (len > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        base = 16;
        s += 2;
        len -= 2;
    }
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned d;
        char c = s[i];
        if (c >= '0' && c <= '9')
            d = (unsigned)(c - '0');
        else if (base == 16 && c >= 'a' && c <= 'f')
            d = (unsigned)(c - 'a' + 10);
        else if (base == 16 && c >= 'A' && c <= 'F')
            d = (unsigned)(c - 'A' + 10);
        else
            return PSKV_EINVAL;
        if (v > (UINT64_MAX - d) / (uint64_t)base)
            return PSKV_EINVAL;
        v = v * (uint64_t)base + d;
    }
    *out = v;
    return 0;
}

/* Bytes with an optional K/M/G/T or KiB/MiB/GiB/TiB suffix (powers of
 * 1024, any case). "GB" and the like are refused: 10^9 or 2^30? */
static int parse_size(const char *s, size_t len, uint64_t *out, const char **why)
{
    static const char units[] = "KMGT";
    size_t digits = 0;
    while (digits < len && s[digits] >= '0' && s[digits] <= '9')
        digits++;
    uint64_t v;
    *why = "expected bytes: digits with an optional K, M, G, T or KiB, MiB, GiB, TiB suffix "
           "(powers of 1024)";
    if (parse_u64(s, digits, &v) != 0)
        return PSKV_EINVAL;
    const char *u = s + digits;
    size_t ulen = len - digits;
    unsigned shift = 0;
    if (ulen > 0) {
        const char *pos = memchr(units, toupper((unsigned char)u[0]), 4);
        if (pos != NULL && ulen == 2 && (u[1] == 'B' || u[1] == 'b')) {
            *why = "a suffix like GB is ambiguous (10^9 or 2^30 bytes?): write G or GiB "
                   "(powers of 1024) or the bytes in full";
            return PSKV_EINVAL;
        }
        if (pos == NULL || !(ulen == 1 || (ulen == 3 && (u[1] == 'i' || u[1] == 'I') &&
                                            (u[2] == 'B' || u[2] == 'b'))))
            return PSKV_EINVAL;
        shift = 10u * (unsigned)(pos - units + 1);
    }
    if (shift && v > (UINT64_MAX >> shift)) {
        *why = "too large for 64 bits";
        return PSKV_EINVAL;
    }
    *out = v << shift;
    return 0;
}

static int parse_dim_like(const char *s, size_t len, uint32_t lo, uint32_t hi, uint32_t *out)
{
    uint64_t v;
    if (parse_u64(s, len, &v) != 0 || v < lo || v > hi)
        return PSKV_EINVAL;
    *out = (uint32_t)v;
    return 0;
}

/* ---------------------------------------------------------------- details */

enum table_key {
    TK_DIM, TK_OPTIMIZER, TK_LR, TK_EPS, TK_INITIAL_ACC, TK_BETA1, TK_BETA2, TK_L1, TK_L2,
    TK_LR_POWER, TK_INIT, TK_SEED, TK_SHARDS, TK_INIT_GEN, TK_UPDATE, TK_STALENESS, TK_COUNT
};
static const char *const table_keys[TK_COUNT] = {
    "dim", "optimizer", "lr", "eps", "initial_accumulator", "beta1", "beta2", "l1", "l2",
    "lr_power", "init", "seed", "shards", "init_gen", "update", "staleness"};
static const char *const update_names[] = {"async", "sync"};
enum store_key {
    SK_MEMORY_BUDGET, SK_SPILL_MAX, SK_DURABILITY, SK_MAP_SIZE, SK_AT_SEQ, SK_UNDO, SK_CHANGES,
    SK_UNDO_KEEP, SK_COUNT
};
static const char *const store_keys[SK_COUNT] = {"memory_budget", "spill_max", "durability",
                                                 "map_size", "at_seq", "undo", "changes",
                                                 "undo_keep"};

/* PSKV_EINVAL for a value, with what was expected. */
static int bad_value(const token *t, const char *expected)
{
    bool semicolon = memchr(t->val, ';', t->vlen) != NULL;
    return pskv__fail(PSKV_EINVAL, "%.*s: %s%s", (int)(t->klen + 1 + t->vlen), t->key,
                      expected ? expected : "malformed value",
                      semicolon ? " (separate keys with spaces or commas, not ';')" : "");
}

/* PSKV_EINVAL for a value that is none of names, naming a near one. */
static int bad_choice(const token *t, const char *const *names, int count)
{
    char list[160] = "";
    size_t at = 0;
    for (int i = 0; i < count && at < sizeof list; i++)
        at += (size_t)snprintf(list + at, sizeof list - at, "%s%s", i ? ", " : "", names[i]);
    const char *near = pskv__near(t->val, t->vlen, names, count);
    return pskv__fail(PSKV_EINVAL, "%.*s: expected one of %s%s%s%s",
                      (int)(t->klen + 1 + t->vlen), t->key, list,
                      near ? " (did you mean '" : "", near ? near : "", near ? "'?)" : "");
}

/* The index of t's value among names, or bad_choice's PSKV_EINVAL. */
static int choice(const token *t, const char *const *names, int count)
{
    for (int i = 0; i < count; i++)
        if (tok_is(t->val, t->vlen, names[i]))
            return i;
    return bad_choice(t, names, count);
}

/* PSKV_EINVAL for an unknown key: a near miss, or a key of the other kind. */
static int unknown_key(const token *t, const char *kind, const char *const *names, int count,
                       const char *const *other, int other_count)
{
    for (int i = 0; i < other_count; i++)
        if (tok_is(t->key, t->klen, other[i]))
            return pskv__fail(PSKV_EINVAL, "'%s' is a %s key, not a %s key", other[i],
                              kind[0] == 's' ? "table" : "store", kind);
    const char *near = pskv__near(t->key, t->klen, names, count);
    return pskv__fail(PSKV_EINVAL, "unknown %s key '%.*s'%s%s%s", kind, (int)t->klen, t->key,
                      near ? " (did you mean '" : "", near ? near : "", near ? "'?)" : "");
}

/* ---------------------------------------------------------------- store */

void pskv_store_options_init(pskv_store_options *o)
{
    memset(o, 0, sizeof *o);
    o->durability = PSKV_DURABILITY_DEFAULT;
}

/* The index of t's key in names[count] (a key of this kind, here once,
 * marked in *seen), or PSKV_EINVAL saying why not: unknown (a near miss,
 * or a key of the other kind) or given twice. */
static int key_of(const token *t, const char *kind, const char *const *names, int count,
                  const char *const *other, int other_count, uint32_t *seen)
{
    int k = -1;
    for (int i = 0; i < count && k < 0; i++)
        if (tok_is(t->key, t->klen, names[i]))
            k = i;
    if (k < 0)
        return unknown_key(t, kind, names, count, other, other_count);
    if (*seen & (1u << k))
        return pskv__fail(PSKV_EINVAL, "'%.*s' is given twice", (int)t->klen, t->key);
    *seen |= 1u << k;
    return k;
}

int pskv_store_options_parse(pskv_store_options *o, const char *config)
{
    pskv__detail_clear();
    if (o == NULL)
        return pskv__fail(PSKV_EINVAL, "no options to parse into (NULL)");
    if (config == NULL)
        return 0;
    pskv_store_options n = *o;
    uint32_t seen = 0;
    token t;
    int rc;
    while ((rc = next_token(&config, &t)) == 1) {
        int k = key_of(&t, "store", store_keys, SK_COUNT, table_keys, TK_COUNT, &seen);
        if (k < 0)
            return k;
        const char *why = NULL;
        switch (k) {
        case SK_MEMORY_BUDGET:
            rc = parse_size(t.val, t.vlen, &n.memory_budget, &why);
            break;
        case SK_SPILL_MAX:
            rc = parse_size(t.val, t.vlen, &n.spill_max, &why);
            break;
        case SK_MAP_SIZE:
            rc = parse_size(t.val, t.vlen, &n.map_size, &why);
            break;
        case SK_AT_SEQ:
            rc = parse_u64(t.val, t.vlen, &n.at_seq);
            why = "expected a checkpoint seq (an unsigned integer)";
            n.at_seq_set = 1;
            break;
        case SK_CHANGES:
            rc = parse_u64(t.val, t.vlen, &n.changes);
            why = "expected a count of change log entries (an unsigned integer)";
            break;
        case SK_UNDO_KEEP: {
            uint64_t k = 0;
            rc = parse_u64(t.val, t.vlen, &k);
            why = "expected the undo generations to keep: 1..8 (undo=off keeps none)";
            if (rc == 0 && (k < 1 || k > PSKV_UNDO_KEEP_MAX))
                rc = PSKV_EINVAL;
            n.undo_keep = (uint32_t)k;
            break;
        }
        case SK_UNDO: {
            static const char *const onoff[] = {"on", "off"};
            int c = choice(&t, onoff, 2);
            if (c < 0)
                return c;
            n.undo_off = (uint32_t)c;
            rc = 0;
            break;
        }
        default: {
            static const char *const kinds[] = {"checkpoint", "none"};
            int c = choice(&t, kinds, 2);
            if (c < 0)
                return c;
            n.durability = c == 0 ? PSKV_DURABILITY_CHECKPOINT : PSKV_DURABILITY_NONE;
            rc = 0;
            break;
        }
        }
        if (rc != 0)
            return bad_value(&t, why);
    }
    if (rc < 0)
        return rc;
    *o = n;
    return 0;
}

/* ---------------------------------------------------------------- table */

static const char *const optimizer_names[] = {"sgd",  "adagrad", "rowwise_adagrad",
                                              "adam", "ftrl",    "none"};
#define N_OPTIMIZERS 6

void pskv_table_options_init(pskv_table_options *o)
{
    memset(o, 0, sizeof *o);
    o->dim = 0;
    o->optimizer = PSKV_OPT_ADAGRAD;
    o->lr = -1.0f; /* optimizer default */
    o->eps = -1.0f;
    o->initial_accumulator = -1.0f;
    o->beta1 = 0.9f;
    o->beta2 = 0.999f;
    o->l1 = 0.0f;
    o->l2 = 0.0f;
    o->lr_power = -0.5f;
    o->init = PSKV_INIT_ZEROS;
    o->seed = 0;
    o->shards = 64;
}

void pskv__table_options_resolve(pskv_table_options *o)
{
    if (o->init_gen == 0)
        o->init_gen = PSKV_INIT_GEN;
    if (o->lr < 0)
        o->lr = o->optimizer == PSKV_OPT_ADAM ? 0.001f : o->optimizer == PSKV_OPT_FTRL ? 0.05f : 0.01f;
    if (o->eps < 0)
        o->eps = o->optimizer == PSKV_OPT_ADAGRAD || o->optimizer == PSKV_OPT_SGD ||
                         o->optimizer == PSKV_OPT_FTRL
                     ? 1e-10f
                     : 1e-8f;
    if (o->initial_accumulator < 0)
        o->initial_accumulator = o->optimizer == PSKV_OPT_FTRL ? 0.1f : 0.0f;
}

static bool sentinel_or(float v, bool ok) { return v == -1.0f || ok; }

static void float_short(char out[32], float v);
static int options_write(const pskv_table_options *o, char *buf, size_t len, bool all);

/* PSKV_EINVAL naming the field, its value and the range it must be in. */
static int out_of_range(const char *key, float v, const char *range)
{
    char val[32];
    float_short(val, v);
    return pskv__fail(PSKV_EINVAL, "%s=%s: expected %s", key, val, range);
}

int pskv_table_options_validate(const pskv_table_options *o)
{
    if (o == NULL)
        return pskv__fail(PSKV_EINVAL, "no table options (NULL)");
    for (size_t i = 0; i < sizeof o->reserved / sizeof o->reserved[0]; i++)
        if (o->reserved[i] != 0)
            return pskv__fail(PSKV_EINVAL, "pskv_table_options.reserved[%zu] is not zero "
                                           "(initialize with pskv_table_options_init)", i);
    if (o->init_gen > PSKV_INIT_GEN)
        return pskv__fail(PSKV_EINVAL, "init_gen=%u: expected 1, 2 (the current generator) or 0 "
                                       "(the current one)", o->init_gen);
    if (o->update > PSKV_UPDATE_SYNC)
        return pskv__fail(PSKV_EINVAL, "update %u is not an enum pskv_update", o->update);
    if (o->staleness_on > 1 || o->staleness > INT32_MAX || (!o->staleness_on && o->staleness))
        return pskv__fail(PSKV_EINVAL, "staleness_on=%u staleness=%u: expected staleness_on 1 "
                                       "with staleness 0..%d, or both 0 (no bound)",
                          o->staleness_on, o->staleness, INT32_MAX);
    if (o->staleness_on && o->update == PSKV_UPDATE_SYNC)
        return pskv__fail(PSKV_EINVAL, "staleness=%u with update=sync: a sync step applies "
                                       "everything pushed since the last one", o->staleness);
    if (o->update == PSKV_UPDATE_SYNC && o->optimizer == PSKV_OPT_NONE)
        return pskv__fail(PSKV_EINVAL, "update=sync with optimizer=none: there is no optimizer "
                                       "to step");
    static const char *const fnames[] = {"lr", "eps", "initial_accumulator", "beta1", "beta2",
                                         "l1", "l2", "lr_power", "init (first argument)",
                                         "init (second argument)"};
    const float fs[] = {o->lr, o->eps, o->initial_accumulator, o->beta1, o->beta2,
                        o->l1, o->l2, o->lr_power, o->init_a, o->init_b};
    for (size_t i = 0; i < sizeof fs / sizeof fs[0]; i++)
        if (!isfinite(fs[i]))
            return pskv__fail(PSKV_EINVAL, "%s is not a finite number", fnames[i]);
    if (o->dim > PSKV_DIM_MAX)
        return pskv__fail(PSKV_EINVAL, "dim=%u: expected 1..4096", o->dim);
    if (o->shards < 1 || o->shards > PSKV_SHARDS_MAX)
        return pskv__fail(PSKV_EINVAL, "shards=%u: expected 1..4096", o->shards);
    if (o->optimizer < 0 || o->optimizer >= N_OPTIMIZERS)
        return pskv__fail(PSKV_EINVAL, "optimizer %d is not an enum pskv_optimizer", o->optimizer);
    if (!sentinel_or(o->lr, o->lr > 0))
        return out_of_range("lr", o->lr, "a value > 0 (or -1 in the struct: the default)");
    if (!sentinel_or(o->eps, o->eps > 0))
        return out_of_range("eps", o->eps, "a value > 0 (or -1 in the struct: the default)");
    if (!sentinel_or(o->initial_accumulator, o->initial_accumulator >= 0))
        return out_of_range("initial_accumulator", o->initial_accumulator,
                            "a value >= 0 (or -1 in the struct: the default)");
    if (!(o->beta1 >= 0 && o->beta1 < 1))
        return out_of_range("beta1", o->beta1, "a value in [0, 1)");
    if (!(o->beta2 >= 0 && o->beta2 < 1))
        return out_of_range("beta2", o->beta2, "a value in [0, 1)");
    if (o->l1 < 0)
        return out_of_range("l1", o->l1, "a value >= 0");
    if (o->l2 < 0)
        return out_of_range("l2", o->l2, "a value >= 0");
    if (o->lr_power > 0)
        return out_of_range("lr_power", o->lr_power, "a value <= 0");
    switch (o->init) {
    case PSKV_INIT_ZEROS:
    case PSKV_INIT_CONSTANT:
        break;
    case PSKV_INIT_UNIFORM:
        if (!(o->init_a < o->init_b))
            return pskv__fail(PSKV_EINVAL, "init=uniform:LO:HI needs LO < HI");
        break;
    case PSKV_INIT_NORMAL:
        if (!(o->init_b >= 0))
            return pskv__fail(PSKV_EINVAL, "init=normal:MEAN:STD needs STD >= 0");
        break;
    default:
        return pskv__fail(PSKV_EINVAL, "init %d is not an enum pskv_init_kind", o->init);
    }
    return 0;
}

/* "constant:V", "uniform:LO:HI", "normal:MEAN:STD", "zeros" */
static int parse_init(const char *s, size_t len, pskv_table_options *o)
{
    const char *colon = memchr(s, ':', len);
    size_t head = colon ? (size_t)(colon - s) : len;
    int kind;
    int nargs;
    if (tok_is(s, head, "zeros"))
        kind = PSKV_INIT_ZEROS, nargs = 0;
    else if (tok_is(s, head, "constant"))
        kind = PSKV_INIT_CONSTANT, nargs = 1;
    else if (tok_is(s, head, "uniform"))
        kind = PSKV_INIT_UNIFORM, nargs = 2;
    else if (tok_is(s, head, "normal"))
        kind = PSKV_INIT_NORMAL, nargs = 2;
    else
        return PSKV_EINVAL;
    float args[2] = {0, 0};
    const char *p = colon;
    const char *end = s + len;
    for (int i = 0; i < nargs; i++) {
        if (p == NULL || p >= end)
            return PSKV_EINVAL;
        p++; /* skip ':' */
        const char *next = memchr(p, ':', (size_t)(end - p));
        const char *stop = next ? next : end;
        if (parse_float(p, (size_t)(stop - p), &args[i]) != 0)
            return PSKV_EINVAL;
        p = next;
    }
    if (p != NULL && nargs > 0)
        return PSKV_EINVAL; /* extra ":..." */
    if (nargs == 0 && colon != NULL)
        return PSKV_EINVAL;
    o->init = kind;
    o->init_a = args[0];
    o->init_b = args[1];
    return 0;
}

int pskv_table_options_parse(pskv_table_options *o, const char *config)
{
    pskv__detail_clear();
    if (o == NULL)
        return pskv__fail(PSKV_EINVAL, "no options to parse into (NULL)");
    if (config == NULL)
        return 0;
    pskv_table_options n = *o;
    uint32_t seen = 0;
    token t;
    int rc;
    while ((rc = next_token(&config, &t)) == 1) {
        int k = key_of(&t, "table", table_keys, TK_COUNT, store_keys, SK_COUNT, &seen);
        if (k < 0)
            return k;
        float *fdst = NULL;
        const char *why = NULL;
        switch (k) {
        case TK_DIM:
            rc = parse_dim_like(t.val, t.vlen, 1, PSKV_DIM_MAX, &n.dim);
            why = "expected an integer in 1..4096";
            break;
        case TK_SHARDS:
            rc = parse_dim_like(t.val, t.vlen, 1, PSKV_SHARDS_MAX, &n.shards);
            why = "expected an integer in 1..4096";
            break;
        case TK_OPTIMIZER:
            if ((rc = choice(&t, optimizer_names, N_OPTIMIZERS)) < 0)
                return rc;
            n.optimizer = rc;
            rc = 0;
            break;
        case TK_INIT:
            rc = parse_init(t.val, t.vlen, &n);
            why = "expected zeros, constant:V, uniform:LO:HI or normal:MEAN:STD";
            break;
        case TK_SEED:
            rc = parse_u64(t.val, t.vlen, &n.seed);
            why = "expected an unsigned 64-bit integer (decimal or 0x hex)";
            break;
        case TK_INIT_GEN:
            rc = parse_dim_like(t.val, t.vlen, 1, PSKV_INIT_GEN, &n.init_gen);
            why = "expected 1 (releases before 0.3) or 2 (the current generator)";
            break;
        case TK_STALENESS: {
            uint64_t v;
            rc = parse_u64(t.val, t.vlen, &v);
            if (rc == 0 && v > INT32_MAX)
                rc = PSKV_EINVAL;
            if (rc == 0) {
                n.staleness_on = 1;
                n.staleness = (uint32_t)v;
            }
            why = "expected a number of steps, 0..2147483647";
            break;
        }
        case TK_UPDATE:
            if ((rc = choice(&t, update_names, 2)) < 0)
                return rc;
            n.update = (uint32_t)rc; /* PSKV_UPDATE_ASYNC, PSKV_UPDATE_SYNC */
            rc = 0;
            break;
        case TK_LR: fdst = &n.lr; break;
        case TK_EPS: fdst = &n.eps; break;
        case TK_INITIAL_ACC: fdst = &n.initial_accumulator; break;
        case TK_BETA1: fdst = &n.beta1; break;
        case TK_BETA2: fdst = &n.beta2; break;
        case TK_L1: fdst = &n.l1; break;
        case TK_L2: fdst = &n.l2; break;
        default: fdst = &n.lr_power; break;
        }
        if (fdst != NULL) {
            float v;
            rc = parse_float(t.val, t.vlen, &v);
            /* -1 is the "optimizer default" sentinel of the struct form;
             * a config string must name a real value. */
            why = "expected a finite number";
            if (rc == 0 && v == -1.0f && (fdst == &n.lr || fdst == &n.eps ||
                                          fdst == &n.initial_accumulator)) {
                rc = PSKV_EINVAL;
                why = "-1 is not a value (leave the key out for the optimizer's default)";
            }
            if (rc == 0)
                *fdst = v;
        }
        if (rc != 0)
            return bad_value(&t, why);
    }
    if (rc < 0)
        return rc;
    if (pskv_table_options_validate(&n) != 0)
        return PSKV_EINVAL; /* its detail says which */
    *o = n;
    return 0;
}

/* The shortest decimal that parses back to exactly v (6 to 9 digits). */
static void float_short(char out[32], float v)
{
    for (int digits = 6; digits <= 9; digits++) {
        float back;
        int n = pskv__format(out, 32, "%.*g", digits, (double)v);
        if (n > 0 && parse_float(out, (size_t)n, &back) == 0 && back == v)
            return;
    }
    (void)pskv__format(out, 32, "%.9g", (double)v); /* 9 digits always round-trip */
}

/* The hyperparameters each optimizer reads (lr: all of them). */
enum { USES_EPS = 1, USES_ACC = 2, USES_BETAS = 4, USES_FTRL = 8 };
static const unsigned optimizer_uses[N_OPTIMIZERS] = {
    [PSKV_OPT_SGD] = 0,
    [PSKV_OPT_ADAGRAD] = USES_EPS | USES_ACC,
    [PSKV_OPT_ROWWISE_ADAGRAD] = USES_EPS | USES_ACC,
    [PSKV_OPT_ADAM] = USES_EPS | USES_BETAS,
    [PSKV_OPT_FTRL] = USES_ACC | USES_FTRL,
    [PSKV_OPT_NONE] = 0,
};

/* Append to buf at *at; a failure sticks in *rc. */
static void append(char *buf, size_t len, size_t *at, int *rc, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void append(char *buf, size_t len, size_t *at, int *rc, const char *fmt, ...)
{
    if (*rc < 0)
        return;
    char piece[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(piece, sizeof piece, fmt, ap); /* only %s, %u, %llu: no locale */
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof piece || *at + (size_t)n >= len) {
        *rc = n < 0 ? PSKV_EINVAL : PSKV_ERANGE;
        return;
    }
    memcpy(buf + *at, piece, (size_t)n + 1);
    *at += (size_t)n;
}

/* The table config string: every key (all), or the keys the optimizer
 * reads (and dim, init, seed, shards). Floats in their shortest exact
 * form. */
static int options_write(const pskv_table_options *o, char *buf, size_t len, bool all)
{
    if (o == NULL || buf == NULL || len == 0 || pskv_table_options_validate(o) != 0)
        return PSKV_EINVAL;
    pskv_table_options r = *o;
    pskv__table_options_resolve(&r);
    const unsigned uses = all ? ~0u : optimizer_uses[r.optimizer];
    char a[32], b[32];
    size_t at = 0;
    int rc = 0;
    buf[0] = '\0';
    if (r.dim != 0)
        append(buf, len, &at, &rc, "dim=%u ", r.dim);
    float_short(a, r.lr);
    append(buf, len, &at, &rc, "optimizer=%s lr=%s", optimizer_names[r.optimizer], a);
    if (uses & USES_EPS) {
        float_short(a, r.eps);
        append(buf, len, &at, &rc, " eps=%s", a);
    }
    if (uses & USES_ACC) {
        float_short(a, r.initial_accumulator);
        append(buf, len, &at, &rc, " initial_accumulator=%s", a);
    }
    if (uses & USES_BETAS) {
        float_short(a, r.beta1);
        float_short(b, r.beta2);
        append(buf, len, &at, &rc, " beta1=%s beta2=%s", a, b);
    }
    if (uses & USES_FTRL) {
        float_short(a, r.l1);
        float_short(b, r.l2);
        append(buf, len, &at, &rc, " l1=%s l2=%s", a, b);
        float_short(a, r.lr_power);
        append(buf, len, &at, &rc, " lr_power=%s", a);
    }
    float_short(a, r.init_a);
    float_short(b, r.init_b);
    switch (r.init) {
    case PSKV_INIT_ZEROS:
        append(buf, len, &at, &rc, " init=zeros");
        break;
    case PSKV_INIT_CONSTANT:
        append(buf, len, &at, &rc, " init=constant:%s", a);
        break;
    case PSKV_INIT_UNIFORM:
        append(buf, len, &at, &rc, " init=uniform:%s:%s", a, b);
        break;
    default:
        append(buf, len, &at, &rc, " init=normal:%s:%s", a, b);
        break;
    }
    append(buf, len, &at, &rc, " seed=%llu shards=%u", (unsigned long long)r.seed, r.shards);
    /* The generator, where values come from one (a schema without it was
     * written before 0.3: generator 1). */
    if (r.init == PSKV_INIT_UNIFORM || r.init == PSKV_INIT_NORMAL)
        append(buf, len, &at, &rc, " init_gen=%u", r.init_gen);
    /* Only when not the default: a schema of an async table reads as in
     * format 5 (a release before 0.4 still opens the store). */
    if (r.update != PSKV_UPDATE_ASYNC)
        append(buf, len, &at, &rc, " update=%s", update_names[r.update]);
    if (r.staleness_on)
        append(buf, len, &at, &rc, " staleness=%u", r.staleness);
    return rc < 0 ? rc : (int)at;
}

int pskv_table_options_format(const pskv_table_options *o, char *buf, size_t len)
{
    return options_write(o, buf, len, true);
}

int pskv_table_options_describe(const pskv_table_options *o, char *buf, size_t len)
{
    return options_write(o, buf, len, false);
}

/* The first schema key where want differs from have, as "key=want" and
 * "key=have" (both resolved); false when the schemas agree. */
bool pskv__table_schema_diff(const pskv_table_options *have, const pskv_table_options *want,
                             char *want_s, char *have_s, size_t len)
{
    if (pskv__table_schema_equal(have, want))
        return false;
    pskv_table_options x = *have, y = *want;
    /* The two described strings (options_write resolves defaults), key by
     * key: the first token that differs. */
    char a[1024], b[1024];
    x.shards = y.shards = 1; /* never part of the schema */
    if (options_write(&x, a, sizeof a, false) < 0 || options_write(&y, b, sizeof b, false) < 0) {
        snprintf(want_s, len, "(options)");
        snprintf(have_s, len, "(schema)");
        return true;
    }
    const char *pa = a, *pb = b;
    token ta, tb;
    while (next_token(&pa, &ta) == 1 && next_token(&pb, &tb) == 1) {
        if (ta.klen + ta.vlen != tb.klen + tb.vlen ||
            memcmp(ta.key, tb.key, ta.klen + 1 + ta.vlen) != 0) {
            snprintf(have_s, len, "%.*s", (int)(ta.klen + 1 + ta.vlen), ta.key);
            snprintf(want_s, len, "%.*s", (int)(tb.klen + 1 + tb.vlen), tb.key);
            return true;
        }
    }
    snprintf(have_s, len, "%s", a);
    snprintf(want_s, len, "%s", b);
    return true;
}

bool pskv__table_schema_equal(const pskv_table_options *a, const pskv_table_options *b)
{
    pskv_table_options x = *a, y = *b;
    pskv__table_options_resolve(&x);
    pskv__table_options_resolve(&y);
    bool init_args = x.init == PSKV_INIT_ZEROS ||
                     (x.init_a == y.init_a && (x.init == PSKV_INIT_CONSTANT || x.init_b == y.init_b));
    const bool generated = x.init == PSKV_INIT_UNIFORM || x.init == PSKV_INIT_NORMAL;
    if (x.dim != y.dim || x.optimizer != y.optimizer || x.lr != y.lr || x.init != y.init ||
        !init_args || x.seed != y.seed || (generated && x.init_gen != y.init_gen) ||
        x.update != y.update || x.staleness_on != y.staleness_on ||
        x.staleness != y.staleness)
        return false;
    /* Keys the optimizer does not read are not part of the schema. */
    const unsigned uses = optimizer_uses[x.optimizer];
    return (!(uses & USES_EPS) || x.eps == y.eps) &&
           (!(uses & USES_ACC) || x.initial_accumulator == y.initial_accumulator) &&
           (!(uses & USES_BETAS) || (x.beta1 == y.beta1 && x.beta2 == y.beta2)) &&
           (!(uses & USES_FTRL) || (x.l1 == y.l1 && x.l2 == y.l2 && x.lr_power == y.lr_power));
}

/* ---------------------------------------------------------------- transfers */

enum transfer_key { XK_PAYLOAD, XK_CODEC, XK_LZ4, XK_CHUNK_BYTES, XK_TOPK, XK_DIM, XK_COUNT };
static const char *const transfer_keys[XK_COUNT] = {"payload", "codec", "lz4", "chunk_bytes",
                                                    "topk", "dim"};

int pskv__transfer_options_parse(const char *config, enum pskv__transfer_kind kind,
                                 pskv__transfer_options *o)
{
    static const char *const codecs[] = {"fp32", "fp16", "bf16", "int8"};
    static const char *const onoff[] = {"on", "off"};
    static const char *const payloads[] = {"weights", "rows"};
    /* The keys each kind takes, and what to say about the others. */
    static const uint32_t allowed[] = {
        [PSKV__XFER_CHUNK] = 1u << XK_CODEC | 1u << XK_LZ4,
        [PSKV__XFER_EXPORT] = 1u << XK_PAYLOAD | 1u << XK_CODEC | 1u << XK_LZ4 | 1u << XK_CHUNK_BYTES,
        [PSKV__XFER_GRAD] = 1u << XK_CODEC | 1u << XK_LZ4 | 1u << XK_TOPK | 1u << XK_DIM};
    static const char *const takes[] = {
        [PSKV__XFER_CHUNK] = "pskv_chunk_encode takes codec and lz4",
        [PSKV__XFER_EXPORT] = "an export takes payload, codec, lz4 and chunk_bytes",
        [PSKV__XFER_GRAD] = "pskv_grad_encode takes codec, lz4, topk and dim"};
    if (config == NULL)
        return 0;
    pskv__transfer_options n = *o;
    uint32_t seen = 0;
    token t;
    int rc;
    while ((rc = next_token(&config, &t)) == 1) {
        int k = key_of(&t, kind == PSKV__XFER_EXPORT ? "export" : kind == PSKV__XFER_GRAD
                                                                     ? "gradient message"
                                                                     : "chunk",
                       transfer_keys, XK_COUNT, NULL, 0, &seen);
        if (k < 0)
            return k;
        if (!(allowed[kind] & 1u << k))
            return pskv__fail(PSKV_EINVAL, "'%.*s': %s", (int)t.klen, t.key, takes[kind]);
        const char *why = NULL;
        switch (k) {
        case XK_PAYLOAD:
            if ((rc = choice(&t, payloads, 2)) < 0)
                return rc;
            n.whole_rows = rc == 1;
            break;
        case XK_CODEC:
            if ((rc = choice(&t, codecs, 4)) < 0)
                return rc;
            n.codec = (uint32_t)rc; /* enum pskv_codec order */
            break;
        case XK_LZ4:
            if ((rc = choice(&t, onoff, 2)) < 0)
                return rc;
            n.lz4 = rc == 0;
            break;
        case XK_TOPK: {
            double f;
            if (parse_double(t.val, t.vlen, &f) != 0 || !(f > 0.0 && f <= 1.0))
                return bad_value(&t, "expected a fraction of the rows, 0 < F <= 1");
            n.topk = f;
            break;
        }
        case XK_DIM: {
            uint64_t d;
            if (parse_u64(t.val, t.vlen, &d) != 0 || d < 1 || d > PSKV_DIM_MAX)
                return bad_value(&t, "expected 1..4096");
            n.dim = (uint32_t)d;
            break;
        }
        default:
            if (parse_size(t.val, t.vlen, &n.chunk_bytes, &why) != 0)
                return bad_value(&t, why ? why : "expected a size (e.g. 1M)");
            if (n.chunk_bytes < 4096 || n.chunk_bytes > (1u << 30))
                return bad_value(&t, "expected a size from 4K to 1G");
            break;
        }
    }
    if (rc < 0)
        return rc; /* next_token said why */
    *o = n;
    return 0;
}
