/* Fuzz the on-disk record decoders of lib/format.h (and the filter decoder
 * built on them), the only code that reads pskv's records for the library
 * and tools/pskv. The first byte picks a decoder and its parameters; the
 * rest, copied into a buffer of exactly its size (a sanitizer sees any read
 * past it), is the record. Properties: no crash, no read past the bytes;
 * what a decoder accepts re-encodes to the same bytes; a meta record with
 * any one bit flipped is rejected. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "format.h"
#include "keyfilter.h"
#include "fuzz_target.h"

/* body | XXH3 of body: a meta record as meta_put writes it. */
static uint8_t *meta_record(const uint8_t *body, size_t n, size_t *len)
{
    *len = n + PSKV_FMT_CHECK_BYTES;
    uint8_t *r = calloc(1, *len);
    if (r == NULL)
        return NULL;
    if (n > 0)
        memcpy(r, body, n);
    pskv_fmt_put64(r + n, pskv_fmt_record_check(r, n));
    return r;
}

static void meta_records(const uint8_t *in, size_t len, uint8_t sel)
{
    const uint8_t *body;
    size_t n;
    if (pskv_fmt_record_open(in, len, &body, &n) == 0) {
        CHECK(n + PSKV_FMT_CHECK_BYTES == len && body == in);
        size_t rlen;
        uint8_t *again = meta_record(body, n, &rlen);
        if (again != NULL)
            CHECK(rlen == len && memcmp(again, in, len) == 0);
        free(again);
    }
    /* Any bytes made into a record open; one flipped bit never does. */
    size_t rlen;
    uint8_t *r = meta_record(in, len, &rlen);
    if (r == NULL)
        return;
    CHECK(pskv_fmt_record_open(r, rlen, &body, &n) == 0 && n == len);
    size_t bit = ((size_t)sel * 2654435761u) % (rlen * 8);
    r[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    CHECK(pskv_fmt_record_open(r, rlen, &body, &n) != 0);
    free(r);
}

static void bodies(const uint8_t *in, size_t len)
{
    uint32_t magic, version;
    if (pskv_fmt_format_get(in, len, &magic, &version) == 0) {
        uint8_t out[8];
        pskv_fmt_format_put(out, version);
        CHECK(len == 8 && (magic != PSKV_FMT_MAGIC || memcmp(out, in, 8) == 0));
    }
    uint64_t a, b;
    if (pskv_fmt_pair_get(in, len, &a, &b) == 0) {
        uint8_t out[16];
        pskv_fmt_pair_put(out, a, b);
        CHECK(len == 16 && memcmp(out, in, 16) == 0);
    }
    uint64_t seq;
    const uint8_t *bytes;
    size_t n;
    if (pskv_fmt_user_get(in, len, &seq, &bytes, &n) == 0)
        CHECK(n + 8 == len && bytes == in + 8);
    if (pskv_fmt_seq_get(in, len, &seq) == 0) {
        uint8_t out[PSKV_FMT_SEQ_BYTES];
        pskv_fmt_seq_put(out, seq);
        CHECK(len == PSKV_FMT_SEQ_BYTES && memcmp(out, in, len) == 0);
    }
    uint64_t to;
    if (pskv_fmt_rollback_get(in, len, &seq, &to) == 0) {
        uint8_t out[PSKV_FMT_ROLLBACK_BYTES];
        pskv_fmt_rollback_put(out, seq, to);
        CHECK(len == PSKV_FMT_ROLLBACK_BYTES && memcmp(out, in, len) == 0);
    }
    /* Undo keys and the undo header with its table list, as the rollback
     * reads them. */
    uint32_t table;
    uint64_t key;
    if (pskv_fmt_undo_key_get(in, len, &table, &key) == 0) {
        uint8_t out[PSKV_FMT_UNDO_KEY_BYTES];
        pskv_fmt_undo_key(out, table, key);
        CHECK(len == PSKV_FMT_UNDO_KEY_BYTES && memcmp(out, in, len) == 0);
    }
    pskv_fmt_undo_head h;
    if (pskv_fmt_undo_head_get(in, len, &h) == 0) {
        CHECK(len >= PSKV_FMT_UNDO_HEAD_BYTES && h.to + 1 == h.from);
        size_t at = PSKV_FMT_UNDO_HEAD_BYTES;
        char name[PSKV_FMT_NAME_MAX + 1];
        uint64_t rows, digest;
        for (uint32_t i = 0; i < h.tables; i++) {
            size_t before = at;
            if (pskv_fmt_undo_table_get(in, len, &at, name, &rows, &digest) != 0) {
                CHECK(at == before);
                break;
            }
            CHECK(at <= len && at > before && strlen(name) == at - before - 18 &&
                  strchr(name, '/') == NULL);
        }
    }
}

static void filters(const uint8_t *in, size_t len, uint8_t sel)
{
    uint64_t capacity, count;
    uint32_t blocks;
    const uint8_t *bits;
    if (pskv_fmt_filter_get(in, len, &capacity, &count, &blocks, &bits) == 0)
        CHECK(blocks > 0 && capacity > 0 && bits == in + PSKV_FMT_FILTER_HEADER &&
              (size_t)blocks * 64 + PSKV_FMT_FILTER_HEADER == len);
    pskv__keyfilter kf;
    pskv__keyfilter_init(&kf, true);
    int rc = pskv__keyfilter_decode(&kf, in, len);
    if (rc == 0)
        (void)pskv__keyfilter_maybe(&kf, (uint64_t)sel * 0x9e3779b97f4a7c15ull);
    pskv__keyfilter_free(&kf);
}

static void rows(const uint8_t *in, size_t len, uint8_t sel)
{
    /* Row values of a few layouts; a key from the selector. */
    size_t row_bytes = (size_t)(sel % 16 + 1) * 4;
    uint64_t key = sel, check;
    if (pskv_fmt_row_ok(key, in, len, row_bytes, &check)) {
        CHECK(len == row_bytes + PSKV_FMT_CHECK_BYTES);
        CHECK(check == pskv_fmt_row_check(key, in, row_bytes));
    }
    if (pskv_fmt_row_stored_check(in, len, row_bytes, &check) == 0)
        CHECK(len == row_bytes + PSKV_FMT_CHECK_BYTES);
    /* Table keys: a name is copied whole, or refused. */
    char name[PSKV_FMT_NAME_MAX + 1];
    int is_table = pskv_fmt_table_key(in, len, name);
    if (is_table == 1)
        CHECK(strlen(name) <= len - (sizeof PSKV_FMT_TABLE_PREFIX - 1));
    else if (is_table < 0)
        CHECK(len - (sizeof PSKV_FMT_TABLE_PREFIX - 1) > PSKV_FMT_NAME_MAX);
    /* Spans: [in, in+len) is inside itself, never inside less. */
    CHECK(pskv_fmt_in_span(in, len, in, len));
    if (len > 0)
        CHECK(!pskv_fmt_in_span(in, len - 1, in, len));
    CHECK(!pskv_fmt_in_span(in, len, in + len, 1));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    uint8_t sel = data[0];
    size_t len = size - 1;
    uint8_t *in = malloc(len ? len : 1); /* exactly len: reads past it are caught */
    if (in == NULL)
        return 0;
    memcpy(in, data + 1, len);
    switch (sel % 4) {
    case 0:
        meta_records(in, len, sel);
        break;
    case 1:
        bodies(in, len);
        break;
    case 2:
        filters(in, len, sel);
        break;
    default:
        rows(in, len, sel);
        break;
    }
    free(in);
    return 0;
}
