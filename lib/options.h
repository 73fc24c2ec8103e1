/* Option helpers private to lib/ (options.c).
 * SPDX-License-Identifier: BSD-2-Clause */
#ifndef PSKV_OPTIONS_H
#define PSKV_OPTIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common.h"
#include "pskv.h"

/* Schema keys (everything but shards) equal? */
/* The first schema key where want differs from have ("key=value" of
 * each, into buffers of len); false when they agree. */
PSKV__HIDDEN bool pskv__table_schema_diff(const pskv_table_options *have,
                                          const pskv_table_options *want, char *want_s,
                                          char *have_s, size_t len);
PSKV__HIDDEN bool pskv__table_schema_equal(const pskv_table_options *a,
                                           const pskv_table_options *b);
/* Replace the "optimizer default" sentinels (negative lr, eps,
 * initial_accumulator) by the defaults of o->optimizer. */
PSKV__HIDDEN void pskv__table_options_resolve(pskv_table_options *o);
/* Options of a transfer: "payload=weights|rows codec=fp32|fp16|bf16|int8
 * lz4=on|off chunk_bytes=SIZE topk=F dim=N". An export (pskv_export_open)
 * takes payload, codec, lz4 and chunk_bytes; a chunk of the caller's
 * arrays (pskv_chunk_encode) codec and lz4; a gradient message
 * (pskv_grad_encode) codec, lz4, topk (0 < F <= 1) and dim. Defaults are
 * the caller's. 0 or PSKV_EINVAL with a detail. */
enum pskv__transfer_kind { PSKV__XFER_CHUNK, PSKV__XFER_EXPORT, PSKV__XFER_GRAD };
typedef struct pskv__transfer_options {
    uint32_t codec;
    bool lz4;
    bool whole_rows;     /* payload=rows */
    uint64_t chunk_bytes;
    double topk;         /* the fraction of rows a gradient message keeps */
    uint32_t dim;        /* a gradient message's dim (0: not given) */
} pskv__transfer_options;
PSKV__HIDDEN int pskv__transfer_options_parse(const char *config, enum pskv__transfer_kind kind,
                                              pskv__transfer_options *o);
/* Locale-independent formatting ("C" numeric locale). */
PSKV__HIDDEN int pskv__format(char *buf, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
