/* The on-disk format of a durable store's LMDB environment, shared by the
 * library (persist.c, checkpoint.c) and tools/pskv. docs/FORMAT.md
 * describes it in prose; this header is the one definition.
 *
 *   database "meta"
 *     "format"       magic u32 LE | version u32 LE | XXH3-64 LE of both
 *     "checkpoint"   seq u64 LE | unix time ns u64 LE | XXH3-64 LE of both;
 *                    written with seq 0 when the store is created (v2)
 *     "count/<name>" rows u64 LE | digest u64 LE | XXH3-64 LE of both: the
 *                    table's rows in LMDB as of the checkpoint, and the sum
 *                    (mod 2^64) of their row checks (order-independent) (v2)
 *     "user"         seq u64 LE of the checkpoint that wrote it | the caller's
 *                    bytes (pskv_checkpoint_with_meta) | XXH3-64 LE of both
 *     "table/<name>" canonical table config string (pskv_table_options_format)
 *                    | XXH3-64 LE of the string
 *     "filter/<name>/<i>"  filter i of the table's persisted keys: capacity u64 |
 *                    count u64 | blocks u32 | 0 u32 | blocks * 64 bytes of bits |
 *                    XXH3-64 LE of all before (see pskv_fmt_filter_probe)
 *     "version/<name>" version u64 LE | clean u64 LE | XXH3-64 LE of both:
 *                    the table's version at the checkpoint that wrote it;
 *                    clean 1 only from the final checkpoint of pskv_close,
 *                    cleared when the table is opened again (v3)
 *   database "rows/<name>", one per table
 *     key   feature id, 8 bytes big-endian (byte order = numeric order)
 *     value weights | optimizer state (float32, little-endian) |
 *           version u64 LE (v3) | XXH3-64 LE of those bytes seeded with
 *           the key
 *
 *   file "pskv.seq" beside data.mdb, written after every commit (v2):
 *     "PSKVSEQ1" | seq u64 LE | XXH3-64 LE of both: the last committed
 *     checkpoint, which LMDB's unchecked meta pages cannot vouch for.
 *
 * Every decoder below takes the bytes and their length and checks both
 * before it reads; the library and tools/pskv use only these.
 * SPDX-License-Identifier: BSD-2-Clause */
#ifndef PSKV_FORMAT_H
#define PSKV_FORMAT_H

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <xxhash.h>
#if defined(__x86_64__) && defined(__GNUC__)
/* Debian builds libxxhash's XXH3_64bits* for SSE2; its *_dispatch
 * variants pick AVX2 or AVX-512 at run time (same values). Over a 1 MiB
 * buffer in cache on this project's test machine: 3.9-15 GB/s against
 * 58-69 GB/s. Every checksum of pskv goes through pskv_fmt_xxh3*.
 * The *_dispatch functions are only in the shared libxxhash (Debian's
 * libxxhash.a lacks them): they are weak references, so a fully static
 * link (pkg-config --static) resolves them to NULL and the checksums use
 * the plain functions, with the same values. */
#define XXH_DISPATCH_DISABLE_REPLACE
#include <xxh_x86dispatch.h>
#pragma weak XXH3_64bits_dispatch
#pragma weak XXH3_64bits_withSeed_dispatch
static inline XXH64_hash_t pskv_fmt_xxh3(const void *p, size_t n)
{
    return XXH3_64bits_dispatch != NULL ? XXH3_64bits_dispatch(p, n) : XXH3_64bits(p, n);
}
static inline XXH64_hash_t pskv_fmt_xxh3_seed(const void *p, size_t n, XXH64_hash_t seed)
{
    return XXH3_64bits_withSeed_dispatch != NULL ? XXH3_64bits_withSeed_dispatch(p, n, seed)
                                                 : XXH3_64bits_withSeed(p, n, seed);
}
#else
static inline XXH64_hash_t pskv_fmt_xxh3(const void *p, size_t n) { return XXH3_64bits(p, n); }
static inline XXH64_hash_t pskv_fmt_xxh3_seed(const void *p, size_t n, XXH64_hash_t seed)
{
    return XXH3_64bits_withSeed(p, n, seed);
}
#endif

#define PSKV_FMT_MAGIC 0x564b5350u /* "PSKV" */
/* 5: schemas name init_gen (absent: 1). 6: schemas may name update=sync
 * or staleness=S, whose rows carry an accumulator or a step; a store is
 * written as format 5 until its first such table (PSKV_FMT_VERSION_BASE), so that releases before
 * 0.4 still open stores that do not use it. */
#define PSKV_FMT_VERSION 6u
#define PSKV_FMT_VERSION_BASE 5u /* what older formats are upgraded to */
#define PSKV_FMT_VERSION_MIN 1u /* opened and upgraded in place */
#define PSKV_FMT_VERSION_BYTES 8u /* a row's version, after its state (v3) */
/* Bytes a row stores between its state and its version (format 6): for
 * update=sync (1) the accumulator, dim floats, then the pushes
 * accumulated since the last step u32 and 4 zero bytes; for a staleness
 * bound (staleness_on 1) the newest step applied u64; else none. */
static inline size_t pskv_fmt_row_extra_bytes(uint32_t dim, uint32_t update, uint32_t staleness_on)
{
    return (update == 1 ? (size_t)dim * 4 + 8 : 0) + (staleness_on ? 8 : 0);
}
#define PSKV_FMT_META_DB "meta"
#define PSKV_FMT_ROWS_PREFIX "rows/"
#define PSKV_FMT_TABLE_PREFIX "table/"
#define PSKV_FMT_FILTER_PREFIX "filter/"
#define PSKV_FMT_COUNT_PREFIX "count/"
#define PSKV_FMT_VERSION_PREFIX "version/"
#define PSKV_FMT_KEY_FORMAT "format"
#define PSKV_FMT_KEY_CHECKPOINT "checkpoint"
#define PSKV_FMT_KEY_USER "user"
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

/* A key of the meta database that names a table's schema record
 * ("table/<name>", name 1..PSKV_FMT_NAME_MAX bytes): 1 with the name
 * copied and NUL-terminated, 0 when the key is no such key (the walk over
 * the prefix is done), -1 when the name is too long (damage). */
#define PSKV_FMT_NAME_MAX 255u /* == PSKV_NAME_MAX */
static inline int pskv_fmt_table_key(const void *key, size_t len,
                                     char name[PSKV_FMT_NAME_MAX + 1])
{
    const size_t plen = sizeof PSKV_FMT_TABLE_PREFIX - 1;
    if (len <= plen || memcmp(key, PSKV_FMT_TABLE_PREFIX, plen) != 0)
        return 0;
    if (len - plen > PSKV_FMT_NAME_MAX)
        return -1;
    memcpy(name, (const char *)key + plen, len - plen);
    name[len - plen] = '\0';
    return 1;
}

/* Checksum of a row value's payload (row_bytes bytes before the check). */
static inline uint64_t pskv_fmt_row_check(uint64_t key, const void *row, size_t row_bytes)
{
    return pskv_fmt_xxh3_seed(row, row_bytes, key);
}

/* Checksum of a meta record's body. */
static inline uint64_t pskv_fmt_record_check(const void *body, size_t len)
{
    return pskv_fmt_xxh3(body, len);
}

/* A meta record's body: *body, *n (the bytes before the check). 0, or -1
 * when it is too short or fails its check. */
static inline int pskv_fmt_record_open(const void *rec, size_t len, const uint8_t **body, size_t *n)
{
    if (len < PSKV_FMT_CHECK_BYTES)
        return -1;
    size_t m = len - PSKV_FMT_CHECK_BYTES;
    if (pskv_fmt_get64((const uint8_t *)rec + m) != pskv_fmt_record_check(rec, m))
        return -1;
    *body = (const uint8_t *)rec;
    *n = m;
    return 0;
}

/* The body of a "format" record: 0 (*magic, *version), or -1. */
static inline int pskv_fmt_format_get(const uint8_t *body, size_t len, uint32_t *magic,
                                      uint32_t *version)
{
    if (len != 8)
        return -1;
    memcpy(magic, body, 4);
    memcpy(version, body + 4, 4);
    return 0;
}

static inline void pskv_fmt_format_put(uint8_t out[8], uint32_t version)
{
    uint32_t magic = PSKV_FMT_MAGIC;
    memcpy(out, &magic, 4);
    memcpy(out + 4, &version, 4);
}

/* The body of a "checkpoint" or a "count/<name>" record: two u64. */
static inline int pskv_fmt_pair_get(const uint8_t *body, size_t len, uint64_t *a, uint64_t *b)
{
    if (len != 16)
        return -1;
    *a = pskv_fmt_get64(body);
    *b = pskv_fmt_get64(body + 8);
    return 0;
}

static inline void pskv_fmt_pair_put(uint8_t out[16], uint64_t a, uint64_t b)
{
    pskv_fmt_put64(out, a);
    pskv_fmt_put64(out + 8, b);
}

/* A row value of row_bytes payload for key: 1 when its length and check
 * are right, *check (its row check, for the table digest) set. */
static inline int pskv_fmt_row_ok(uint64_t key, const void *val, size_t len, size_t row_bytes,
                                  uint64_t *check)
{
    if (len != row_bytes + PSKV_FMT_CHECK_BYTES)
        return 0;
    uint64_t c = pskv_fmt_get64((const uint8_t *)val + row_bytes);
    if (c != pskv_fmt_row_check(key, val, row_bytes))
        return 0;
    if (check != NULL)
        *check = c;
    return 1;
}

/* The row check stored at the end of a row value of len bytes, if the
 * length can be one (for a digest of values that are being replaced). */
static inline int pskv_fmt_row_stored_check(const void *val, size_t len, size_t row_bytes,
                                            uint64_t *check)
{
    if (len != row_bytes + PSKV_FMT_CHECK_BYTES)
        return -1;
    *check = pskv_fmt_get64((const uint8_t *)val + row_bytes);
    return 0;
}

/* Does [p, p + len) lie inside [base, base + span)? LMDB does not check its
 * node sizes: every value is bounded by the data file before it is read. */
static inline int pskv_fmt_in_span(const void *base, uint64_t span, const void *p, size_t len)
{
    if (base == NULL)
        return len <= span; /* the map's place is unknown: sizes only */
    uintptr_t b = (uintptr_t)base, x = (uintptr_t)p;
    return x >= b && x - b <= span && len <= span - (x - b);
}

/* The "pskv.seq" file. */
#define PSKV_FMT_SEQ_MAGIC "PSKVSEQ1"
#define PSKV_FMT_SEQ_BYTES 24u
static inline void pskv_fmt_seq_put(uint8_t out[PSKV_FMT_SEQ_BYTES], uint64_t seq)
{
    memcpy(out, PSKV_FMT_SEQ_MAGIC, 8);
    pskv_fmt_put64(out + 8, seq);
    pskv_fmt_put64(out + 16, pskv_fmt_record_check(out, 16));
}
static inline int pskv_fmt_seq_get(const uint8_t *in, size_t len, uint64_t *seq)
{
    if (len != PSKV_FMT_SEQ_BYTES || memcmp(in, PSKV_FMT_SEQ_MAGIC, 8) != 0 ||
        pskv_fmt_get64(in + 16) != pskv_fmt_record_check(in, 16))
        return -1;
    *seq = pskv_fmt_get64(in + 8);
    return 0;
}

/* The body of a "user" record: *seq (the checkpoint that wrote it) and the
 * caller's bytes. 0, or -1 when the body is too short to be one. */
static inline int pskv_fmt_user_get(const uint8_t *body, size_t len, uint64_t *seq,
                                    const uint8_t **bytes, size_t *n)
{
    if (len < 8)
        return -1;
    *seq = pskv_fmt_get64(body);
    *bytes = body + 8;
    *n = len - 8;
    return 0;
}

/* The undo database: the pre-images of the last checkpoint, so that a
 * store can be reopened at the checkpoint before it (at_seq). Written in
 * the checkpoint's own transaction, after emptying the previous one.
 *   key   table index u32 BE | feature id u64 BE (the index into the
 *         header's table list; sorts by table, then key: written in order)
 *   value the row's stored value before the checkpoint (weights | state |
 *         row check, as in rows/<name>), or empty: the row did not exist
 *   key   PSKV_FMT_UNDO_TABLE_NONE | 0: the header, a record (body | XXH3-64):
 *         from u64 | to u64 | to's unix time ns u64 | user u32 | tables u32 |
 *         per table: name length u16 | name | rows u64 | digest u64 (its
 *         count record before the checkpoint)
 *   key   PSKV_FMT_UNDO_TABLE_NONE | 1: the "user" record's stored value
 *         before the checkpoint (present when user == PSKV_FMT_UNDO_USER_WAS)
 * "pskv.rollback" beside data.mdb exists only while a rollback runs:
 *   "PSKVRBK1" | from u64 LE | to u64 LE | XXH3-64 LE of all before. */
#define PSKV_FMT_UNDO_DB "undo"
/* Format 4: up to PSKV_UNDO_KEEP_MAX generations, one per database (a
 * slot): slot 0 is "undo" (format 3's only one), slot i "undo.<i>". Each
 * holds one generation as above; the generations a store can roll back
 * through are the chain of headers from = its seq, seq - 1, ... (a slot
 * off the chain is stale and emptied by the next checkpoint). */
#define PSKV_FMT_UNDO_SLOT_NAME_MAX 16u
static inline void pskv_fmt_undo_slot_name(char out[PSKV_FMT_UNDO_SLOT_NAME_MAX], uint32_t slot)
{
    if (slot == 0)
        memcpy(out, PSKV_FMT_UNDO_DB, sizeof PSKV_FMT_UNDO_DB);
    else
        snprintf(out, PSKV_FMT_UNDO_SLOT_NAME_MAX, PSKV_FMT_UNDO_DB ".%u", slot);
}
#define PSKV_FMT_UNDO_KEY_BYTES 12u
#define PSKV_FMT_UNDO_TABLE_NONE 0xffffffffu
#define PSKV_FMT_UNDO_HEAD_BYTES 32u
enum {
    PSKV_FMT_UNDO_USER_KEPT = 0, /* the checkpoint did not write "user" */
    PSKV_FMT_UNDO_USER_NONE = 1, /* it wrote the first one: delete it */
    PSKV_FMT_UNDO_USER_WAS = 2,  /* it replaced one: the old value is kept */
};

static inline void pskv_fmt_undo_key(uint8_t out[PSKV_FMT_UNDO_KEY_BYTES], uint32_t table,
                                     uint64_t key)
{
    uint32_t be = __builtin_bswap32(table);
    memcpy(out, &be, 4);
    pskv_fmt_key(out + 4, key);
}
static inline int pskv_fmt_undo_key_get(const void *k, size_t len, uint32_t *table,
                                        uint64_t *key)
{
    if (len != PSKV_FMT_UNDO_KEY_BYTES)
        return -1;
    uint32_t be;
    memcpy(&be, k, 4);
    *table = __builtin_bswap32(be);
    *key = pskv_fmt_key_get((const uint8_t *)k + 4);
    return 0;
}

typedef struct pskv_fmt_undo_head {
    uint64_t from, to, to_ns;
    uint32_t user, tables;
} pskv_fmt_undo_head;

static inline void pskv_fmt_undo_head_put(uint8_t out[PSKV_FMT_UNDO_HEAD_BYTES],
                                          const pskv_fmt_undo_head *h)
{
    pskv_fmt_put64(out, h->from);
    pskv_fmt_put64(out + 8, h->to);
    pskv_fmt_put64(out + 16, h->to_ns);
    memcpy(out + 24, &h->user, 4);
    memcpy(out + 28, &h->tables, 4);
}
static inline int pskv_fmt_undo_head_get(const uint8_t *body, size_t len, pskv_fmt_undo_head *h)
{
    if (len < PSKV_FMT_UNDO_HEAD_BYTES)
        return -1;
    h->from = pskv_fmt_get64(body);
    h->to = pskv_fmt_get64(body + 8);
    h->to_ns = pskv_fmt_get64(body + 16);
    memcpy(&h->user, body + 24, 4);
    memcpy(&h->tables, body + 28, 4);
    return h->user <= PSKV_FMT_UNDO_USER_WAS && h->to + 1 == h->from ? 0 : -1;
}
/* Table entry at *at of a header body of len bytes: 0 with the name
 * (NUL-terminated) and its count, *at moved past it; -1 when it does not
 * fit or the name is not one. */
static inline int pskv_fmt_undo_table_get(const uint8_t *body, size_t len, size_t *at,
                                          char name[PSKV_FMT_NAME_MAX + 1], uint64_t *rows,
                                          uint64_t *digest)
{
    uint16_t n;
    if (*at > len || len - *at < 2)
        return -1;
    memcpy(&n, body + *at, 2);
    if (n == 0 || n > PSKV_FMT_NAME_MAX || len - *at - 2 < (size_t)n + 16 ||
        memchr(body + *at + 2, '\0', n) != NULL || memchr(body + *at + 2, '/', n) != NULL)
        return -1;
    memcpy(name, body + *at + 2, n);
    name[n] = '\0';
    *rows = pskv_fmt_get64(body + *at + 2 + n);
    *digest = pskv_fmt_get64(body + *at + 2 + n + 8);
    *at += 2 + (size_t)n + 16;
    return 0;
}

#define PSKV_FMT_ROLLBACK_MAGIC "PSKVRBK1"
#define PSKV_FMT_ROLLBACK_BYTES 32u
static inline void pskv_fmt_rollback_put(uint8_t out[PSKV_FMT_ROLLBACK_BYTES], uint64_t from,
                                         uint64_t to)
{
    memcpy(out, PSKV_FMT_ROLLBACK_MAGIC, 8);
    pskv_fmt_put64(out + 8, from);
    pskv_fmt_put64(out + 16, to);
    pskv_fmt_put64(out + 24, pskv_fmt_record_check(out, 24));
}
static inline int pskv_fmt_rollback_get(const uint8_t *in, size_t len, uint64_t *from,
                                        uint64_t *to)
{
    if (len != PSKV_FMT_ROLLBACK_BYTES || memcmp(in, PSKV_FMT_ROLLBACK_MAGIC, 8) != 0 ||
        pskv_fmt_get64(in + 24) != pskv_fmt_record_check(in, 24))
        return -1;
    *from = pskv_fmt_get64(in + 8);
    *to = pskv_fmt_get64(in + 16);
    return 0;
}

/* Filters of persisted keys: a series of blocked Bloom filters per table,
 * each a number of 64-byte blocks; a key sets PSKV_FMT_FILTER_K bits in the
 * one block its hash picks. Every key in rows/<name> is in some filter of
 * the series (erased keys may stay: a filter only says "maybe"). */
#define PSKV_FMT_FILTER_K 6u
#define PSKV_FMT_FILTER_BITS_PER_KEY 12u
#define PSKV_FMT_FILTER_HEADER 24u
#define PSKV_FMT_FILTER_MAX 32u /* filters per table */

/* A filter record's header: 0 (*capacity, *count, *blocks, *bits: the
 * blocks * 64 bytes that follow), or -1 when the lengths disagree. */
static inline int pskv_fmt_filter_get(const uint8_t *body, size_t len, uint64_t *capacity,
                                      uint64_t *count, uint32_t *blocks, const uint8_t **bits)
{
    if (len < PSKV_FMT_FILTER_HEADER)
        return -1;
    *capacity = pskv_fmt_get64(body);
    *count = pskv_fmt_get64(body + 8);
    memcpy(blocks, body + 16, 4);
    if (*blocks == 0 || *capacity == 0 ||
        (len - PSKV_FMT_FILTER_HEADER) / 64 != *blocks || (len - PSKV_FMT_FILTER_HEADER) % 64)
        return -1;
    *bits = body + PSKV_FMT_FILTER_HEADER;
    return 0;
}

static inline uint64_t pskv_fmt_filter_hash(uint64_t key)
{
    uint8_t b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(key >> (8 * i));
    return pskv_fmt_xxh3_seed(b, sizeof b, 0x6b657966696c7472ull /* "keyfiltr" */);
}

/* The block of a hash (its high 32 bits), and the bits inside it: probe j
 * takes 9 bits of a second mix of the hash, so that they do not follow
 * the block. */
static inline uint32_t pskv_fmt_filter_block(uint64_t h, uint32_t blocks)
{
    return (uint32_t)(((h >> 32) * blocks) >> 32);
}
static inline uint64_t pskv_fmt_filter_bits_of(uint64_t h)
{
    h ^= h >> 31;
    h *= 0x94d049bb133111ebull;
    return h ^ (h >> 29);
}

/* Is the key maybe in the filter (words: blocks * 8 little-endian u64)? */
static inline int pskv_fmt_filter_probe(const uint64_t *words, uint32_t blocks, uint64_t h)
{
    const uint64_t *b = words + (size_t)pskv_fmt_filter_block(h, blocks) * 8;
    uint64_t g = pskv_fmt_filter_bits_of(h);
    for (unsigned j = 0; j < PSKV_FMT_FILTER_K; j++) {
        uint32_t bit = (uint32_t)(g >> (9 * j)) & 511u;
        if (!(b[bit >> 6] & (1ull << (bit & 63))))
            return 0;
    }
    return 1;
}

/* A chunk (chunk.c; docs/FORMAT.md, "Chunks"): the 64-byte header
 *   0 "PSKC" | 4 version u16 | 6 kind u8 | 7 codec u8 | 8 flags u32 |
 *  12 dim u32 | 16 state floats u32 | 20 optimizer u32 | 24 rows u32 |
 *  28 tombstones u32 | 32 since u64 | 40 version u64 | 48 table u64
 *  (version 3: the table identity of a rows chunk, 0 in a values chunk;
 *  versions 1 and 2: a schema fingerprint) | 56 body bytes u32 | 60
 *  unpacked body bytes u32
 * then the body (lz4 when flagged) and XXH3-64 of everything before. */
#define PSKV_FMT_CHUNK_MAGIC "PSKC"
#define PSKV_FMT_CHUNK_VERSION 3u        /* 3: a rows chunk names its table */
#define PSKV_FMT_CHUNK_VERSION_TABLE 3u  /* the first that does */
#define PSKV_FMT_CHUNK_VERSION_OLDEST 1u /* 1: int8 rows carry an fp32 scale */
#define PSKV_FMT_CHUNK_HEAD 64u
#define PSKV_FMT_CHUNK_LZ4 1u
#define PSKV_FMT_CHUNK_STATE 2u
#define PSKV_FMT_CHUNK_RAW_MAX (1u << 30)

/* The chunk header's fields, as stored (the one definition of its layout:
 * the encoder, the decoder and fuzz/chunk_fuzzer.c use these). */
typedef struct pskv_fmt_chunk_head {
    uint16_t format;           /* chunk format version */
    uint8_t kind, codec;
    uint32_t flags, dim, state_floats, optimizer, rows, tombstones;
    uint64_t since, version;   /* the export's cursor in and out */
    uint64_t table;            /* format 3: table identity (rows chunks); 1, 2: schema print */
    uint32_t body, raw;        /* body bytes as stored, and unpacked */
} pskv_fmt_chunk_head;

static inline void pskv_fmt_put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static inline uint32_t pskv_fmt_get32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static inline void pskv_fmt_chunk_head_put(uint8_t h[PSKV_FMT_CHUNK_HEAD],
                                           const pskv_fmt_chunk_head *c)
{
    memcpy(h, PSKV_FMT_CHUNK_MAGIC, 4);
    memcpy(h + 4, &c->format, 2);
    h[6] = c->kind;
    h[7] = c->codec;
    pskv_fmt_put32(h + 8, c->flags);
    pskv_fmt_put32(h + 12, c->dim);
    pskv_fmt_put32(h + 16, c->state_floats);
    pskv_fmt_put32(h + 20, c->optimizer);
    pskv_fmt_put32(h + 24, c->rows);
    pskv_fmt_put32(h + 28, c->tombstones);
    pskv_fmt_put64(h + 32, c->since);
    pskv_fmt_put64(h + 40, c->version);
    pskv_fmt_put64(h + 48, c->table);
    pskv_fmt_put32(h + 56, c->body);
    pskv_fmt_put32(h + 60, c->raw);
}

/* The fields of a header at h (PSKV_FMT_CHUNK_HEAD bytes): 0, or -1
 * without the magic. Nothing else is checked here. */
static inline int pskv_fmt_chunk_head_get(const uint8_t *h, pskv_fmt_chunk_head *c)
{
    if (memcmp(h, PSKV_FMT_CHUNK_MAGIC, 4) != 0)
        return -1;
    memcpy(&c->format, h + 4, 2);
    c->kind = h[6];
    c->codec = h[7];
    c->flags = pskv_fmt_get32(h + 8);
    c->dim = pskv_fmt_get32(h + 12);
    c->state_floats = pskv_fmt_get32(h + 16);
    c->optimizer = pskv_fmt_get32(h + 20);
    c->rows = pskv_fmt_get32(h + 24);
    c->tombstones = pskv_fmt_get32(h + 28);
    c->since = pskv_fmt_get64(h + 32);
    c->version = pskv_fmt_get64(h + 40);
    c->table = pskv_fmt_get64(h + 48);
    c->body = pskv_fmt_get32(h + 56);
    c->raw = pskv_fmt_get32(h + 60);
    return 0;
}

/* Formats 1 and 2: the schema fingerprint at offset 48. */
static inline uint64_t pskv_fmt_chunk_schema_print(uint32_t dim, uint32_t state_floats,
                                                   uint32_t optimizer)
{
    uint32_t s[3] = {dim, state_floats, state_floats ? optimizer : 0};
    return pskv_fmt_xxh3(s, sizeof s);
}

/* A table's identity in the chunks it exports: the same for the table of
 * that name on every instance (migration and replicas keep working), and
 * never 0. */
static inline uint64_t pskv_fmt_table_id(const char *name)
{
    uint64_t h = pskv_fmt_xxh3_seed(name, strlen(name), 0x656c626174ull /* "table" */);
    return h ? h : 1;
}

#endif
