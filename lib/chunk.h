/* The chunk format's encoder and checked decoder (chunk.c).
 * SPDX-License-Identifier: BSD-2-Clause */
#ifndef PSKV_CHUNK_H
#define PSKV_CHUNK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common.h"
#include "pskv.h"

/* Work memory an encoder keeps from one chunk to the next (an export's
 * lz4: the raw body and the compressed one when the caller's buffer has no
 * room for them), grown as needed, freed with pskv__chunk_scratch_free. A
 * malloc and free of a megabyte a chunk let glibc give the heap's top back
 * and fault it in again: 0.13-0.18 against 1.8-2.2 GB/s of rows. */
typedef struct pskv__chunk_scratch {
    uint8_t *p;
    size_t cap;
} pskv__chunk_scratch;
PSKV__HIDDEN void pskv__chunk_scratch_free(pskv__chunk_scratch *w);

typedef struct pskv__chunk_spec {
    uint32_t kind, codec;
    bool lz4;
    uint32_t dim;
    uint32_t state_floats; /* carried per row (0: weights only) */
    int optimizer;
    uint64_t since, version;
    uint64_t table_id; /* rows chunks: pskv_fmt_table_id of the table; 0 */
    bool unsealed; /* the checksum is left to pskv__chunk_seal */
    pskv__chunk_scratch *scratch; /* lz4's work memory, kept; NULL: malloc'd per chunk */
} pskv__chunk_spec;
/* n rows (keys ascending, may repeat; rows[i]: dim weights, then the state
 * when the spec carries it) and ntombs tombstones (ascending) as one chunk
 * into buf[cap]: 0 with *len, PSKV_ERANGE with *len = the size needed (or
 * a value out of the codec's range), PSKV_ENOMEM. */
PSKV__HIDDEN int pskv__chunk_write(const pskv__chunk_spec *sp, const uint64_t *keys,
                                   const float *const *rows, uint32_t n, const uint64_t *tombs,
                                   uint32_t ntombs, void *buf, size_t cap, size_t *len);
/* The encoded values of a chunk pskv__chunk_write wrote without lz4 and
 * without tombstones, for its n keys: row i's are at the result plus i
 * times the codec's row bytes. */
PSKV__HIDDEN const uint8_t *pskv__chunk_values(const void *chunk, const uint64_t *keys,
                                               uint32_t n);
/* Write the checksum of a chunk written unsealed (len: its size). A full
 * export encodes rows under their shard's lock, and hashes after. */
PSKV__HIDDEN void pskv__chunk_seal(void *chunk, size_t len);
/* The most bytes such a chunk takes (lz4 off), and the most one row adds
 * (a ten-byte key and its values). */
PSKV__HIDDEN size_t pskv__chunk_bound(const pskv__chunk_spec *sp, uint32_t n, uint32_t ntombs);
PSKV__HIDDEN size_t pskv__chunk_row_bound(const pskv__chunk_spec *sp);
/* Check a chunk and read its header (pskv_chunk_info_get, without
 * clearing the error detail). */
PSKV__HIDDEN int pskv__chunk_open(const void *chunk, size_t len, pskv_chunk_info *info);
/* The table identity a chunk pskv__chunk_open accepted names: 0 for a
 * values chunk and for chunks of formats before tables were named. */
PSKV__HIDDEN uint64_t pskv__chunk_table_id(const void *chunk);
/* The rows of a chunk pskv__chunk_open accepted (opened: its info), where
 * they are: keys and tombstones decoded into the caller's arrays (rows and
 * tombstones of them); weights, dim floats per row back to back, and
 * state, state_floats per row back to back (NULL without), in the chunk
 * itself when its codec is fp32 and lz4 is off (any alignment), else in
 * buffers the view owns. Every value is checked finite. 0 with *v to give
 * to pskv__chunk_view_free, or an error (PSKV_ECORRUPT, PSKV_ENOMEM) with
 * nothing to free. */
typedef struct pskv__chunk_view {
    const uint8_t *weights, *state;
    void *unpacked, *decoded; /* owned */
} pskv__chunk_view;
PSKV__HIDDEN int pskv__chunk_view_open(const void *chunk, size_t len,
                                       const pskv_chunk_info *opened, uint64_t *keys,
                                       uint64_t *tombstones, pskv__chunk_view *v);
PSKV__HIDDEN void pskv__chunk_view_free(pskv__chunk_view *v);
/* pskv_chunk_decode of a chunk pskv__chunk_open accepted (opened: its
 * info): the same checks and errors, the chunk not checked again. */
PSKV__HIDDEN int pskv__chunk_decode_opened(const void *chunk, size_t len,
                                          const pskv_chunk_info *opened, uint64_t *keys,
                                          float *values, float *state, uint64_t *tombstones);

#endif
