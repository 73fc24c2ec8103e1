/* The on-disk format of a durable store's LMDB environment, shared by the
 * library (persist.c, checkpoint.c) and tools/pskv. docs/FORMAT.md
 * describes it in prose; this header is the one definition.
 *
 *   database "meta"
 *     "format"       magic u32 LE | version u32 LE | XXH3-64 LE of both
 *     "checkpoint"   seq u64 LE | unix time ns u64 LE | XXH3-64 LE of both
 *     "table/<name>" canonical table config string (pskv_table_options_format)
 *                    | XXH3-64 LE of the string
 *   database "rows/<name>", one per table
 *     key   feature id, 8 bytes big-endian (byte order = numeric order)
 *     value weights | optimizer state (float32, little-endian) |
 *           XXH3-64 LE of those bytes seeded with the key
 * SPDX-License-Identifier: BSD-2-Clause */
#ifndef PSKV_FORMAT_H
#define PSKV_FORMAT_H

#include <stdint.h>
#include <string.h>

#include <xxhash.h>

#define PSKV_FMT_MAGIC 0x564b5350u /* "PSKV" */
#define PSKV_FMT_VERSION 1u
#define PSKV_FMT_META_DB "meta"
#define PSKV_FMT_ROWS_PREFIX "rows/"
#define PSKV_FMT_TABLE_PREFIX "table/"
#define PSKV_FMT_KEY_FORMAT "format"
#define PSKV_FMT_KEY_CHECKPOINT "checkpoint"
#define PSKV_FMT_MAX_TABLES 1024u
#define PSKV_FMT_CHECK_BYTES 8u

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "pskv's file formats are written for little-endian hosts"
#endif

static inline void pskv_fmt_put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static inline uint64_t pskv_fmt_get64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* Row key: big-endian so that LMDB's byte order is numeric order. */
static inline void pskv_fmt_key(uint8_t out[8], uint64_t key)
{
    uint64_t be = __builtin_bswap64(key);
    memcpy(out, &be, 8);
}
static inline uint64_t pskv_fmt_key_get(const uint8_t in[8])
{
    return __builtin_bswap64(pskv_fmt_get64(in));
}

/* Checksum of a row value's payload (row_bytes bytes before the check). */
static inline uint64_t pskv_fmt_row_check(uint64_t key, const void *row, size_t row_bytes)
{
    return XXH3_64bits_withSeed(row, row_bytes, key);
}

/* Checksum of a meta record's body. */
static inline uint64_t pskv_fmt_meta_check(const void *body, size_t len)
{
    return XXH3_64bits(body, len);
}

#endif
