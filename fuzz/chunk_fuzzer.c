/* Fuzz the chunk reader (pskv_chunk_info_get, pskv_chunk_decode) and
 * pskv_apply against the reference model of tests/ref_model.h.
 *
 * Input: a selector byte (apply mode; whether to make the header's lengths,
 * schema fingerprint and checksum right, so that the fuzzer reaches the
 * body), a table byte (dim 1..4 and optimizer), then the chunk, copied into
 * a buffer of exactly its size. The table starts with six rows, three of
 * them trained. Properties: no crash, no read past the chunk; info, decode
 * and apply agree on what they refuse; a refused chunk changes nothing (rows,
 * state, version); an accepted one changes exactly what the model says,
 * bit for bit. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "format.h"
#include "fuzz_target.h"
#include "ref_model.h"
#include "optimizer.h"


/* Make a header consistent, as a writer would (docs/FORMAT.md, "Chunks"),
 * through format.h's one definition of its fields. */
static void make_consistent(uint8_t *c, size_t len)
{
    memcpy(c, PSKV_FMT_CHUNK_MAGIC, 4);
    pskv_fmt_chunk_head h;
    CHECK(pskv_fmt_chunk_head_get(c, &h) == 0);
    h.body = (uint32_t)(len - PSKV_FMT_CHUNK_HEAD - PSKV_FMT_CHECK_BYTES);
    if (!(h.flags & PSKV_FMT_CHUNK_LZ4))
        h.raw = h.body;
    if (h.format < PSKV_FMT_CHUNK_VERSION_TABLE) /* a schema fingerprint */
        h.table = pskv_fmt_chunk_schema_print(h.dim, h.state_floats, h.optimizer);
    else /* the table this fuzzer applies to, or none */
        h.table = h.kind == PSKV_CHUNK_ROWS ? pskv_fmt_table_id("f") : 0;
    pskv_fmt_chunk_head_put(c, &h);
    pskv_fmt_put64(c + len - PSKV_FMT_CHECK_BYTES, XXH3_64bits(c, len - PSKV_FMT_CHECK_BYTES));
}

typedef struct decoded {
    int info_rc; /* pskv_chunk_info_get's answer */
    pskv_chunk_info in;
    uint64_t *keys, *tombs;
    float *values, *state;
} decoded;

static int decode(const uint8_t *c, size_t len, decoded *d)
{
    memset(d, 0, sizeof *d);
    int rc = d->info_rc = pskv_chunk_info_get(c, len, &d->in);
    if (rc != 0)
        return rc;
    const pskv_chunk_info *in = &d->in;
    CHECK(in->bytes == len && in->dim >= 1 && in->codec <= PSKV_CODEC_INT8);
    /* Exactly the sizes info gives: a sanitizer sees any write past them. */
    d->keys = malloc((size_t)in->rows * 8 + 1);
    d->values = malloc((size_t)in->rows * in->dim * 4 + 1);
    d->state = malloc((size_t)in->rows * in->state_floats * 4 + 1);
    d->tombs = malloc((size_t)in->tombstones * 8 + 1);
    CHECK(d->keys && d->values && d->state && d->tombs);
    const size_t nv = (size_t)in->rows * in->dim, ns = (size_t)in->rows * in->state_floats;
    rc = pskv_chunk_decode(c, len, d->keys, in->rows, d->values, nv, d->state, ns, d->tombs,
                           in->tombstones);
    /* Without the state array the answer is the same. */
    CHECK(pskv_chunk_decode(c, len, d->keys, in->rows, d->values, nv, NULL, 0, d->tombs,
                            in->tombstones) == rc);
    /* One element short anywhere: refused before anything is written. */
    if (in->rows > 0)
        CHECK(pskv_chunk_decode(c, len, d->keys, in->rows - 1, d->values, nv, NULL, 0, d->tombs,
                                in->tombstones) == PSKV_ERANGE);
    if (in->tombstones > 0)
        CHECK(pskv_chunk_decode(c, len, d->keys, in->rows, d->values, nv, NULL, 0, d->tombs,
                                in->tombstones - 1) == PSKV_ERANGE);
    if (rc == 0) {
        for (uint32_t i = 1; i < in->rows; i++)
            CHECK(d->keys[i] >= d->keys[i - 1]);
        for (uint32_t i = 1; i < in->tombstones; i++)
            CHECK(d->tombs[i] >= d->tombs[i - 1]);
        CHECK(!ref_any_nonfinite(d->values, (size_t)in->rows * in->dim));
        /* Every state value is finite, but Adam's step count: an integer in
         * the last slot of a row (m[dim], v[dim], count), never judged as a
         * float. */
        const uint32_t judged = in->optimizer == PSKV_OPT_ADAM ? 2 * in->dim : in->state_floats;
        for (uint32_t i = 0; i < in->rows; i++)
            CHECK(!ref_any_nonfinite(d->state + (size_t)i * in->state_floats, judged));
    }
    return rc;
}

static void decoded_free(decoded *d)
{
    free(d->keys);
    free(d->values);
    free(d->state);
    free(d->tombs);
}

/* The gradient (PUSH) or addend (ADD) of each distinct key: repeated keys
 * summed in the order they come, as pskv_push does. Returns false when a
 * sum is not finite (the library refuses the chunk). */
static bool sum_repeats(const decoded *d, uint32_t dim, float *sums, uint32_t *first_of)
{
    for (uint32_t i = 0; i < d->in.rows; i++) {
        uint32_t f = i;
        for (uint32_t k = 0; k < i && f == i; k++)
            if (d->keys[k] == d->keys[i])
                f = k;
        first_of[i] = f;
        if (f == i)
            memcpy(sums + (size_t)i * dim, d->values + (size_t)i * dim, dim * 4);
        else
            for (uint32_t j = 0; j < dim; j++)
                sums[(size_t)f * dim + j] += d->values[(size_t)i * dim + j];
    }
    return !ref_any_nonfinite(sums, (size_t)d->in.rows * dim);
}

/* What pskv_apply must return, with the model changed accordingly. */
static int model_apply(ref_model *m, const decoded *d, int mode)
{
    const uint32_t dim = m->dim, n = d->in.rows;
    if (mode == PSKV_APPLY_REPLACE) {
        const bool with_state = d->in.state_floats > 0;
        for (uint32_t i = 0; i < n; i++) { /* the last of a repeated key wins */
            ref_row *r = ref_find_or_create(m, d->keys[i]);
            memcpy(r->row, d->values + (size_t)i * dim, dim * 4);
            if (with_state)
                memcpy(r->row + dim, d->state + (size_t)i * d->in.state_floats,
                       d->in.state_floats * 4);
        }
        for (uint32_t i = 0; i < d->in.tombstones; i++)
            ref_erase(m, d->tombs[i]);
        return 0;
    }
    float *sums = malloc((size_t)n * dim * 4 + 1), *save = malloc(m->row_floats * 4);
    uint32_t *first_of = malloc((size_t)n * 4 + 1);
    CHECK(sums && save && first_of);
    int rc = 0;
    if (!sum_repeats(d, dim, sums, first_of)) {
        rc = PSKV_EINVAL;
        goto out;
    }
    for (uint32_t i = 0; i < n; i++) {
        if (first_of[i] != i)
            continue;
        ref_row *r = ref_find_or_create(m, d->keys[i]);
        const float *g = sums + (size_t)i * dim;
        bool finite = true;
        if (mode == PSKV_APPLY_PUSH) {
            finite = pskv__optimizer_step(&m->opt, r->row, g, save);
        } else {
            for (uint32_t j = 0; j < dim; j++)
                finite = finite && isfinite(r->row[j] + g[j]);
            for (uint32_t j = 0; j < dim && finite; j++)
                r->row[j] += g[j];
        }
        if (!finite) /* the row keeps its values; the others are applied */
            rc = PSKV_ERANGE;
    }
out:
    free(sums);
    free(save);
    free(first_of);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const opt_names[] = {"sgd", "adagrad", "rowwise_adagrad", "adam", "ftrl"};
    if (size < 2)
        return 0;
    const int mode = data[0] % 3;
    const bool fix = (data[0] >> 2) & 1;
    const uint32_t dim = 1 + data[1] % 4;
    const int opt = (data[1] / 4) % 5;
    const size_t len = size - 2;
    uint8_t *chunk = malloc(len ? len : 1);
    CHECK(chunk != NULL);
    memcpy(chunk, data + 2, len);
    if (fix && len >= PSKV_FMT_CHUNK_HEAD + PSKV_FMT_CHECK_BYTES)
        make_consistent(chunk, len);

    char cfg[128];
    snprintf(cfg, sizeof cfg, "dim=%u optimizer=%s shards=3 init=uniform:-1:1 seed=7 lr=0.1", dim,
             opt_names[opt]);
    pskv_store *s;
    pskv_table *t;
    CHECK(pskv_open(NULL, NULL, &s) == 0);
    CHECK(pskv_table_open(s, "f", cfg, &t) == 0);
    ref_model m;
    ref_open(&m, t, 8);
    const uint64_t start[6] = {0, 1, 2, 3, 1ull << 40, UINT64_MAX};
    const float grads[3 * 4] = {0.5f, -0.25f, 1, 2, -1, 0.125f, 3, -3, 0.75f, 0.5f, -2, 1};
    CHECK(ref_step(&m, t, REF_PULL, start, 6, NULL));
    CHECK(ref_step(&m, t, REF_PUSH, start, 3, grads));
    const uint64_t v0 = pskv_table_version(t);

    decoded d;
    const int drc = decode(chunk, len, &d);
    const int arc = pskv_apply(t, chunk, len, mode);
    int want;
    const pskv_chunk_info *in = &d.in;
    if (d.info_rc != 0)
        want = d.info_rc; /* the header is refused: by info, decode and apply alike */
    else if (in->dim != dim)
        want = PSKV_ESCHEMA;
    else if (mode == PSKV_APPLY_REPLACE && in->state_floats > 0 &&
             (in->optimizer != opt || in->state_floats != m.row_floats - dim))
        want = PSKV_ESCHEMA;
    else if (mode != PSKV_APPLY_REPLACE && (in->tombstones > 0 || in->state_floats > 0))
        want = PSKV_EINVAL; /* tombstones, and rows with state, are not gradients */
    else if (drc != 0)
        want = drc; /* the body is refused */
    else
        want = model_apply(&m, &d, mode);
    CHECK(arc == want);
    if (arc != 0 && arc != PSKV_ERANGE)
        CHECK(pskv_table_version(t) == v0);
    CHECK(ref_compare_all(&m, t));
    decoded_free(&d);
    ref_close(&m);
    pskv_close(s);
    free(chunk);
    return 0;
}
