/* The chunk: the one format of everything that moves between instances
 * (delta exports, migrations, pulled rows, gradients). docs/FORMAT.md,
 * "Chunks", describes the bytes; this file is their one encoder and
 * decoder.
 *
 * A chunk comes from another machine: nothing in it is trusted. The
 * checksum (XXH3-64 over everything before it) is checked first, then
 * every field, length and count against the chunk's size before anything
 * is read or allocated, so that no chunk makes the decoder read outside it
 * or allocate more than its own size can justify (lz4 expands at most 255
 * times).
 * SPDX-License-Identifier: BSD-2-Clause */
#include <lz4.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "chunk.h"
#include "codec.h"
#include "errors.h"
#include "format.h"
#include "options.h"
#include "sort.h"
#include "optimizer.h"

#define ROW_AHEAD 8u /* rows prefetched ahead of the encoder */

/* No Inf or NaN among n floats at p (any alignment). */
static bool all_finite(const void *p, size_t n) { return !pskv__floats_nonfinite(p, n); }

/* ---------------------------------------------------------------- varints */

static size_t varint_len(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static uint8_t *varint_put(uint8_t *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *p++ = (uint8_t)v;
    return p;
}

/* 0 with *v and *at advanced, or -1 (past end, or longer than 10 bytes or
 * 64 bits). */
static int varint_get(const uint8_t *p, size_t end, size_t *at, uint64_t *v)
{
    uint64_t x = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        if (*at >= end)
            return -1;
        uint8_t b = p[(*at)++];
        if (shift == 63 && b > 1)
            return -1;
        x |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = x;
            return 0;
        }
    }
    return -1;
}

/* Sorted keys as differences from the one before (the first from 0). */
static size_t keys_len(const uint64_t *keys, uint32_t n)
{
    size_t len = 0;
    uint64_t prev = 0;
    for (uint32_t i = 0; i < n; i++) {
        len += varint_len(keys[i] - prev);
        prev = keys[i];
    }
    return len;
}

static uint8_t *keys_put(uint8_t *p, const uint64_t *keys, uint32_t n)
{
    uint64_t prev = 0;
    for (uint32_t i = 0; i < n; i++) {
        p = varint_put(p, keys[i] - prev);
        prev = keys[i];
    }
    return p;
}

static int keys_get(const uint8_t *p, size_t end, size_t *at, uint64_t *keys, uint32_t n)
{
    uint64_t prev = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t d;
        if (varint_get(p, end, at, &d) != 0 || d > UINT64_MAX - prev)
            return -1;
        prev += d;
        if (keys != NULL)
            keys[i] = prev;
    }
    return 0;
}

/* ---------------------------------------------------------------- header */

static void header_put(uint8_t *h, const pskv__chunk_spec *sp, uint32_t flags, uint32_t n,
                       uint32_t ntombs, size_t body, size_t raw)
{
    const pskv_fmt_chunk_head c = {
        .format = PSKV_FMT_CHUNK_VERSION,
        .kind = (uint8_t)sp->kind,
        .codec = (uint8_t)sp->codec,
        .flags = flags,
        .dim = sp->dim,
        .state_floats = sp->state_floats,
        .optimizer = sp->state_floats ? (uint32_t)sp->optimizer : 0,
        .rows = n,
        .tombstones = ntombs,
        .since = sp->since,
        .version = sp->version,
        .table = sp->kind == PSKV_CHUNK_ROWS ? sp->table_id : 0,
        .body = (uint32_t)body,
        .raw = (uint32_t)raw,
    };
    pskv_fmt_chunk_head_put(h, &c);
}

/* ---------------------------------------------------------------- encode */

size_t pskv__chunk_row_bound(const pskv__chunk_spec *sp)
{
    return 10 + pskv__codec_row_bytes(PSKV_FMT_CHUNK_VERSION, sp->codec, sp->dim) +
           (size_t)sp->state_floats * 4;
}

size_t pskv__chunk_bound(const pskv__chunk_spec *sp, uint32_t n, uint32_t ntombs)
{
    return PSKV_FMT_CHUNK_HEAD + PSKV_FMT_CHECK_BYTES + (size_t)ntombs * 10 +
           (size_t)n * pskv__chunk_row_bound(sp);
}

/* lz4's acceleration for chunk bodies (1 is LZ4_compress_default). At 2,
 * exports of 1M rows in pskv-bench delta ran 1.5-1.8 GB/s instead of
 * 0.7-1.2 for every lz4 payload, for 0.1% more bytes on weights and keys
 * and 2% on whole trained rows (which lz4 barely shrinks: 2.5% at 1). The
 * chunks decode the same way: it is the encoder's choice alone. */
#define LZ4_ACCELERATION 2

void pskv__chunk_scratch_free(pskv__chunk_scratch *w)
{
    free(w->p);
    *w = (pskv__chunk_scratch){NULL, 0};
}

/* bytes of work memory: the scratch's (grown), else malloc'd (*owned). */
static uint8_t *work_mem(pskv__chunk_scratch *w, size_t bytes, bool *owned)
{
    *owned = w == NULL;
    if (w == NULL)
        return malloc(bytes);
    if (w->cap < bytes) {
        uint8_t *p = realloc(w->p, bytes);
        if (p == NULL)
            return NULL;
        w->p = p;
        w->cap = bytes;
    }
    return w->p;
}

int pskv__chunk_write(const pskv__chunk_spec *sp, const uint64_t *keys, const float *const *rows,
                      uint32_t n, const uint64_t *tombs, uint32_t ntombs, void *buf, size_t cap,
                      size_t *len)
{
    const size_t vb = pskv__codec_row_bytes(PSKV_FMT_CHUNK_VERSION, sp->codec, sp->dim);
    const size_t sb = (size_t)sp->state_floats * 4;
    const size_t raw_len = keys_len(keys, n) + keys_len(tombs, ntombs) + (size_t)n * (vb + sb);
    if (raw_len > PSKV_FMT_CHUNK_RAW_MAX) {
        *len = 0; /* beyond any chunk, not beyond cap */
        return pskv__fail(PSKV_ERANGE, "a chunk of %u rows would hold %zu bytes: at most %u",
                          n, raw_len, (unsigned)PSKV_FMT_CHUNK_RAW_MAX);
    }
    /* Without lz4 the body is the raw bytes: written in place in buf. With
     * lz4, buf holds what it can of the work: the compressed body at its
     * place and the raw bytes right after lz4's bound when both fit (no
     * allocation, no copy of the body), or the compressed body at least;
     * work memory otherwise. */
    const bool in_place = !sp->lz4;
    if (in_place && PSKV_FMT_CHUNK_HEAD + raw_len + PSKV_FMT_CHECK_BYTES > cap) {
        *len = PSKV_FMT_CHUNK_HEAD + raw_len + PSKV_FMT_CHECK_BYTES;
        return PSKV_ERANGE; /* *len says how much */
    }
    const size_t bound = sp->lz4 ? (size_t)LZ4_compressBound((int)raw_len) : 0;
    const size_t packed_end = PSKV_FMT_CHUNK_HEAD + bound + PSKV_FMT_CHECK_BYTES;
    const bool pack_in_buf = sp->lz4 && bound > 0 && packed_end <= cap;
    const bool raw_in_buf = pack_in_buf && packed_end + raw_len <= cap;
    /* What buf cannot hold goes to work memory: raw, then the packed body. */
    const bool needs_work = !in_place && !raw_in_buf;
    bool work_owned = false;
    uint8_t *work = needs_work ? work_mem(sp->scratch, raw_len + (pack_in_buf ? 0 : bound) + 1,
                                          &work_owned)
                               : NULL;
    if (needs_work && work == NULL)
        return PSKV_ENOMEM;
    uint8_t *raw = in_place     ? (uint8_t *)buf + PSKV_FMT_CHUNK_HEAD
                   : raw_in_buf ? (uint8_t *)buf + packed_end
                                : work;
    uint8_t *p = keys_put(raw, keys, n);
    p = keys_put(p, tombs, ntombs);
    /* Rows come from anywhere (a shard's slabs, in key order): each one's
     * lines, the state's too, are asked for ROW_AHEAD rows before use. */
    const uint32_t payload_bytes = (sp->dim + sp->state_floats) * 4u;
    for (uint32_t i = 0; i < n && i < ROW_AHEAD; i++)
        pskv__prefetch_row(rows[i], payload_bytes);
    for (uint32_t i = 0; i < n; i++, p += vb) {
        if (i + ROW_AHEAD < n)
            pskv__prefetch_row(rows[i + ROW_AHEAD], payload_bytes);
        if (pskv__codec_encode_row(sp->codec, rows[i], sp->dim, p) != 0) {
            if (work_owned)
                free(work);
            return pskv__fail(PSKV_ECODEC, "key %llu: a value is out of the range of codec %s: "
                              "no buffer helps, choose another codec",
                              (unsigned long long)keys[i],
                              sp->codec == PSKV_CODEC_FP16   ? "fp16"
                              : sp->codec == PSKV_CODEC_BF16 ? "bf16"
                                                             : "int8");
        }
    }
    for (uint32_t i = 0; i < n && sb > 0; i++, p += sb)
        memcpy(p, rows[i] + sp->dim, sb);
    /* lz4 when asked, and only when it gains. */
    uint8_t *packed = NULL;
    size_t body_len = raw_len;
    uint32_t flags = sp->state_floats ? PSKV_FMT_CHUNK_STATE : 0;
    if (sp->lz4 && raw_len > 0) {
        packed = pack_in_buf ? (uint8_t *)buf + PSKV_FMT_CHUNK_HEAD : work + raw_len;
        int got = LZ4_compress_fast((const char *)raw, (char *)packed, (int)raw_len, (int)bound,
                                    LZ4_ACCELERATION);
        if (got > 0 && (size_t)got < raw_len) {
            body_len = (size_t)got;
            flags |= PSKV_FMT_CHUNK_LZ4;
        }
    }
    const size_t total = PSKV_FMT_CHUNK_HEAD + body_len + PSKV_FMT_CHECK_BYTES;
    *len = total;
    int rc = 0;
    if (total > cap) {
        rc = PSKV_ERANGE; /* *len says how much */
    } else {
        uint8_t *out = buf;
        header_put(out, sp, flags, n, ntombs, body_len, raw_len);
        const uint8_t *body = flags & PSKV_FMT_CHUNK_LZ4 ? packed : raw;
        if (body != out + PSKV_FMT_CHUNK_HEAD) /* raw after the bound, or in work memory */
            memcpy(out + PSKV_FMT_CHUNK_HEAD, body, body_len);
        if (!sp->unsealed)
            pskv__chunk_seal(out, total);
    }
    if (work_owned)
        free(work);
    return rc;
}

const uint8_t *pskv__chunk_values(const void *chunk, const uint64_t *keys, uint32_t n)
{
    return (const uint8_t *)chunk + PSKV_FMT_CHUNK_HEAD + keys_len(keys, n);
}

void pskv__chunk_seal(void *chunk, size_t len)
{
    uint8_t *c = chunk;
    pskv_fmt_put64(c + len - PSKV_FMT_CHECK_BYTES, pskv_fmt_xxh3(c, len - PSKV_FMT_CHECK_BYTES));
}

/* ---------------------------------------------------------------- decode */

int pskv__chunk_open(const void *chunk, size_t len, pskv_chunk_info *info)
{
    const uint8_t *c = chunk;
    if (chunk == NULL || info == NULL)
        return pskv__fail(PSKV_EINVAL, "%s is NULL", chunk == NULL ? "the chunk" : "info");
    if (len < PSKV_FMT_CHUNK_HEAD + PSKV_FMT_CHECK_BYTES)
        return pskv__fail(PSKV_ECORRUPT, "a chunk of %zu bytes: shorter than its header", len);
    pskv_fmt_chunk_head h;
    if (pskv_fmt_chunk_head_get(c, &h) != 0)
        return pskv__fail(PSKV_ECORRUPT, "not a pskv chunk (no PSKC magic)");
    if (pskv_fmt_get64(c + len - PSKV_FMT_CHECK_BYTES) !=
        pskv_fmt_xxh3(c, len - PSKV_FMT_CHECK_BYTES))
        return pskv__fail(PSKV_ECORRUPT, "the chunk fails its checksum (damaged or truncated)");
    const uint16_t version = h.format;
    if (version < PSKV_FMT_CHUNK_VERSION_OLDEST || version > PSKV_FMT_CHUNK_VERSION)
        return pskv__fail(version > PSKV_FMT_CHUNK_VERSION ? PSKV_EVERSION : PSKV_ECORRUPT,
                          "chunk format %u: this build reads %u to %u", version,
                          PSKV_FMT_CHUNK_VERSION_OLDEST, PSKV_FMT_CHUNK_VERSION);
    pskv_chunk_info in = {0};
    in.kind = h.kind;
    in.codec = h.codec;
    const uint32_t flags = h.flags;
    in.dim = h.dim;
    in.state_floats = h.state_floats;
    in.optimizer = (int)h.optimizer;
    in.rows = h.rows;
    in.tombstones = h.tombstones;
    in.since = h.since;
    in.version = h.version;
    const uint64_t print = h.table;
    const size_t body = h.body, raw = h.raw;
    in.lz4 = (flags & PSKV_FMT_CHUNK_LZ4) != 0;
    in.bytes = len;
    const char *bad = NULL;
    if (in.kind != PSKV_CHUNK_ROWS && in.kind != PSKV_CHUNK_VALUES)
        bad = "unknown kind";
    else if (in.codec > PSKV_CODEC_INT8)
        bad = "unknown codec";
    else if (flags & ~(uint32_t)(PSKV_FMT_CHUNK_LZ4 | PSKV_FMT_CHUNK_STATE))
        bad = "unknown flags";
    else if (in.dim < 1 || in.dim > PSKV_DIM_MAX)
        bad = "dim out of range";
    else if (((flags & PSKV_FMT_CHUNK_STATE) != 0) != (in.state_floats > 0))
        bad = "state flag and state size disagree";
    else if (in.state_floats == 0 && in.optimizer != 0)
        bad = "an optimizer named without optimizer state"; /* the encoder writes 0 */
    else if (in.state_floats > 0 &&
             (in.optimizer < PSKV_OPT_SGD || in.optimizer > PSKV_OPT_FTRL ||
              in.state_floats != pskv__optimizer_state_floats(in.optimizer, in.dim)))
        bad = "optimizer state layout unknown";
    else if (version < PSKV_FMT_CHUNK_VERSION_TABLE &&
             print != pskv_fmt_chunk_schema_print(in.dim, in.state_floats,
                                                  (uint32_t)in.optimizer))
        bad = "schema fingerprint disagrees with the header";
    else if (version >= PSKV_FMT_CHUNK_VERSION_TABLE && (in.kind == PSKV_CHUNK_ROWS) != (print != 0))
        bad = "a rows chunk without its table, or a values chunk with one";
    else if (in.since > in.version)
        bad = "version range reversed";
    else if (body != len - PSKV_FMT_CHUNK_HEAD - PSKV_FMT_CHECK_BYTES)
        bad = "body length disagrees with the chunk's";
    else if (in.lz4 ? raw > (uint64_t)body * 255 + 16 || raw > PSKV_FMT_CHUNK_RAW_MAX
                    : raw != body)
        bad = "unpacked length out of range";
    if (bad == NULL) {
        /* Every row costs a key byte and its values at least, at most ten
         * key bytes and its values: the counts must fit the body. */
        uint64_t per = pskv__codec_row_bytes(version, in.codec, in.dim) + (uint64_t)in.state_floats * 4;
        uint64_t least = (uint64_t)in.rows * (1 + per) + in.tombstones;
        uint64_t most = (uint64_t)in.rows * (10 + per) + (uint64_t)in.tombstones * 10;
        if (raw < least || raw > most)
            bad = "row counts disagree with the body's length";
    }
    if (bad != NULL)
        return pskv__fail(PSKV_ECORRUPT, "chunk header: %s", bad);
    if (in.state_floats == 0)
        in.optimizer = -1;
    *info = in;
    return 0;
}

uint64_t pskv__chunk_table_id(const void *chunk)
{
    pskv_fmt_chunk_head h;
    if (pskv_fmt_chunk_head_get(chunk, &h) != 0)
        return 0;
    return h.format >= PSKV_FMT_CHUNK_VERSION_TABLE ? h.table : 0;
}

int pskv_chunk_info_get(const void *chunk, size_t len, pskv_chunk_info *out)
{
    pskv__detail_clear();
    return pskv__chunk_open(chunk, len, out);
}

void pskv__chunk_view_free(pskv__chunk_view *v)
{
    free(v->unpacked);
    free(v->decoded);
    memset(v, 0, sizeof *v);
}

int pskv__chunk_view_open(const void *chunk, size_t len, const pskv_chunk_info *opened,
                          uint64_t *keys, uint64_t *tombstones, pskv__chunk_view *v)
{
    const pskv_chunk_info in = *opened;
    memset(v, 0, sizeof *v);
    if ((in.rows > 0 && keys == NULL) || (in.tombstones > 0 && tombstones == NULL))
        return pskv__fail(PSKV_EINVAL, "the chunk has %u rows and %u tombstones: %s is NULL",
                          in.rows, in.tombstones, in.rows > 0 && keys == NULL ? "keys"
                                                                                : "tombstones");
    const uint8_t *body = (const uint8_t *)chunk + PSKV_FMT_CHUNK_HEAD;
    pskv_fmt_chunk_head h = {0};
    (void)pskv_fmt_chunk_head_get(chunk, &h); /* opened: the magic is there */
    const size_t raw_len = h.raw;
    const uint16_t version = h.format;
    if (in.lz4) {
        uint8_t *unpacked = malloc(raw_len ? raw_len : 1);
        if (unpacked == NULL)
            return PSKV_ENOMEM;
        int got = LZ4_decompress_safe((const char *)body, (char *)unpacked,
                                      (int)(len - PSKV_FMT_CHUNK_HEAD - PSKV_FMT_CHECK_BYTES),
                                      (int)raw_len);
        v->unpacked = unpacked;
        if (got < 0 || (size_t)got != raw_len) {
            pskv__chunk_view_free(v);
            return pskv__fail(PSKV_ECORRUPT, "the chunk's lz4 body does not unpack");
        }
        body = unpacked;
    }
    const size_t vb = pskv__codec_row_bytes(version, in.codec, in.dim), sb = (size_t)in.state_floats * 4;
    size_t at = 0;
    int rc = 0;
    if (keys_get(body, raw_len, &at, keys, in.rows) != 0 ||
        keys_get(body, raw_len, &at, tombstones, in.tombstones) != 0 ||
        raw_len - at != (size_t)in.rows * (vb + sb))
        rc = pskv__fail(PSKV_ECORRUPT, "the chunk's keys do not fill its body");
    if (rc == 0 && in.codec == PSKV_CODEC_FP32) {
        v->weights = body + at;
        if (!all_finite(v->weights, (size_t)in.rows * in.dim))
            rc = pskv__fail(PSKV_ECORRUPT, "the chunk's values are not all finite");
    } else if (rc == 0) {
        /* Less than 4 bytes per byte of the chunk's values (int8: dim + 2 a row). */
        float *w = malloc((in.rows ? in.rows : 1) * (size_t)in.dim * sizeof *w);
        v->decoded = w;
        v->weights = (const uint8_t *)w;
        rc = w ? 0 : PSKV_ENOMEM;
        for (uint32_t i = 0; i < in.rows && rc == 0; i++)
            if (pskv__codec_decode_row(version, in.codec, body + at + (size_t)i * vb, in.dim,
                           w + (size_t)i * in.dim) != 0)
                rc = pskv__fail(PSKV_ECORRUPT, "row %u of the chunk: a value no encoder writes",
                                i);
    }
    at += (size_t)in.rows * vb;
    if (rc == 0 && sb > 0) {
        v->state = body + at;
        if (pskv__state_nonfinite(in.optimizer, in.dim, v->state, in.rows))
            rc = pskv__fail(PSKV_ECORRUPT, "the chunk's optimizer state is not finite");
    }
    if (rc != 0)
        pskv__chunk_view_free(v);
    return rc;
}

int pskv__chunk_decode_opened(const void *chunk, size_t len, const pskv_chunk_info *opened,
                              uint64_t *keys, float *values, float *state, uint64_t *tombstones)
{
    const pskv_chunk_info in = *opened;
    if (in.rows > 0 && (values == NULL || keys == NULL))
        return pskv__fail(PSKV_EINVAL, "the chunk has %u rows: %s is NULL", in.rows,
                          keys == NULL ? "keys" : "values");
    if (in.tombstones > 0 && tombstones == NULL)
        return pskv__fail(PSKV_EINVAL, "the chunk has %u tombstones: tombstones is NULL",
                          in.tombstones);
    pskv__chunk_view v;
    int rc = pskv__chunk_view_open(chunk, len, opened, keys, tombstones, &v);
    if (rc != 0)
        return rc;
    if (in.rows > 0)
        memcpy(values, v.weights, (size_t)in.rows * in.dim * sizeof *values);
    if (in.rows > 0 && v.state != NULL && state != NULL)
        memcpy(state, v.state, (size_t)in.rows * in.state_floats * sizeof *state);
    pskv__chunk_view_free(&v);
    return 0;
}

/* An array shorter than the chunk needs: PSKV_ERANGE, before anything is
 * written. */
static int check_cap(const char *what, size_t cap, uint64_t need)
{
    if (cap >= need)
        return 0;
    return pskv__fail(PSKV_ERANGE, "%s holds %zu elements, the chunk needs %llu", what, cap,
                      (unsigned long long)need);
}

int pskv_chunk_decode(const void *chunk, size_t len, uint64_t *keys, size_t keys_cap,
                      float *values, size_t values_cap, float *state, size_t state_cap,
                      uint64_t *tombstones, size_t tombs_cap)
{
    pskv__detail_clear();
    pskv_chunk_info in;
    int rc = pskv__chunk_open(chunk, len, &in);
    if (rc != 0)
        return rc;
    if ((keys == NULL && keys_cap > 0) || (values == NULL && values_cap > 0) ||
        (state == NULL && state_cap > 0) || (tombstones == NULL && tombs_cap > 0))
        return pskv__fail(PSKV_EINVAL, "an array is NULL with a capacity above 0");
    const bool want_state = state != NULL && in.state_floats > 0;
    if ((rc = check_cap("keys", keys_cap, in.rows)) != 0 ||
        (rc = check_cap("values", values_cap, (uint64_t)in.rows * in.dim)) != 0 ||
        (want_state && (rc = check_cap("state", state_cap,
                                       (uint64_t)in.rows * in.state_floats)) != 0) ||
        (rc = check_cap("tombstones", tombs_cap, in.tombstones)) != 0)
        return rc;
    return pskv__chunk_decode_opened(chunk, len, &in, keys, values, want_state ? state : NULL,
                                     tombstones);
}

/* ---------------------------------------------------------------- caller's arrays */


int pskv_chunk_encode(uint32_t dim, const uint64_t *keys, size_t n, const float *values,
                      const char *config, void *buf, size_t cap, size_t *len)
{
    pskv__detail_clear();
    if (len == NULL || (n > 0 && (keys == NULL || values == NULL)) || (cap > 0 && buf == NULL))
        return pskv__fail(PSKV_EINVAL, "%s is NULL", len == NULL    ? "len"
                                                     : buf == NULL  ? "buf"
                                                     : keys == NULL ? "keys"
                                                                    : "values");
    if (dim < 1 || dim > PSKV_DIM_MAX)
        return pskv__fail(PSKV_EINVAL, "dim=%u: expected 1..%u", dim, PSKV_DIM_MAX);
    if (n > UINT32_MAX - 1)
        return pskv__fail(PSKV_EINVAL, "%zu rows in one chunk: at most %u", n, UINT32_MAX - 1);
    pskv__transfer_options xo = {PSKV_CODEC_FP32, false, false, 0, 1.0, 0};
    int rc = pskv__transfer_options_parse(config, PSKV__XFER_CHUNK, &xo);
    if (rc != 0)
        return rc;
    pskv__chunk_spec sp = {.kind = PSKV_CHUNK_VALUES, .codec = xo.codec, .lz4 = xo.lz4, .dim = dim};
    const bool nonfinite = pskv__floats_nonfinite(values, n * dim);
    for (size_t i = 0; nonfinite && i < n * dim; i++)
        if (!isfinite(values[i])) /* the first, for the message */
            return pskv__fail(PSKV_EINVAL, "row %zu (key %llu): a value is not finite", i / dim,
                              (unsigned long long)keys[i / dim]);
    pskv__keyed *order = malloc((n ? n : 1) * sizeof *order);
    uint64_t *sorted = malloc((n ? n : 1) * sizeof *sorted);
    const float **rows = malloc((n ? n : 1) * sizeof *rows);
    if (order == NULL || sorted == NULL || rows == NULL) {
        free(order);
        free(sorted);
        free(rows);
        return PSKV_ENOMEM;
    }
    for (size_t i = 0; i < n; i++)
        order[i] = (pskv__keyed){keys[i], (uint32_t)i};
    /* Keys in order; a repeated key keeps the order it was given in. */
    rc = pskv__keyed_sort(order, n); /* stable */
    for (size_t i = 0; i < n && rc == 0; i++) {
        sorted[i] = order[i].key;
        rows[i] = values + (size_t)order[i].at * dim;
    }
    if (rc == 0)
        rc = pskv__chunk_write(&sp, sorted, rows, (uint32_t)n, NULL, 0, buf, cap, len);
    if (rc == PSKV_ERANGE && *len == 0) /* beyond any chunk, not beyond cap */
        rc = pskv__fail(PSKV_EINVAL, "%zu rows make a chunk beyond the format's 1 GiB: encode "
                                     "them in several chunks",
                        n);
    free(order);
    free(sorted);
    free(rows);
    return rc;
}
