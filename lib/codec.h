/* Value codecs of chunks (codec.c): fp32, fp16, bf16 and int8 rows of dim
 * floats, and the bytes each takes. docs/FORMAT.md, "Chunks", gives the
 * exact bits; chunk.c frames the rows, pskv_grad_encode picks them.
 * SPDX-License-Identifier: BSD-2-Clause */
#ifndef PSKV_CODEC_H
#define PSKV_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"

/* Bytes of one encoded row of dim values in chunk format `version` (int8:
 * a scale, fp32 in format 1 and bf16 since, then dim bytes). */
PSKV__HIDDEN size_t pskv__codec_row_bytes(uint32_t version, uint32_t codec, uint32_t dim);
/* Encode dim finite values w into out (codec_row_bytes of the current
 * format, any alignment): 0, or -1 when a value does not fit the codec
 * (fp16 at 65520 and beyond, bf16 or int8 rounding to infinity). */
PSKV__HIDDEN int pskv__codec_encode_row(uint32_t codec, const float *w, uint32_t dim, void *out);
/* Decode one fp16, bf16 or int8 row of format `version` from in (any
 * alignment) into w: 0, or -1 for bytes no encoder writes (a value not
 * finite, a negative or non-finite int8 scale, the int8 value -128). */
PSKV__HIDDEN int pskv__codec_decode_row(uint32_t version, uint32_t codec, const void *in,
                                        uint32_t dim, float *w);
/* w[j] -= the value of row `in` decodes to, for bytes encode_row wrote
 * (the current format; no checks, as decode_row makes on bytes from
 * outside): the part of w a receiver will not see. */
PSKV__HIDDEN void pskv__codec_subtract_row(uint32_t codec, const void *in, uint32_t dim,
                                           float *w);

#endif
