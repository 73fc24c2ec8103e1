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
/* Options of a transfer (pskv_export_open, pskv_chunk_encode):
 * "payload=weights|rows codec=fp32|fp16|bf16|int8 lz4=on|off
 * chunk_bytes=SIZE"; export false allows codec and lz4 only. Defaults are
 * the caller's. 0 or PSKV_EINVAL with a detail. */
typedef struct pskv__transfer_options {
    uint32_t codec;
    bool lz4;
    bool whole_rows;     /* payload=rows */
    uint64_t chunk_bytes;
} pskv__transfer_options;
PSKV__HIDDEN int pskv__transfer_options_parse(const char *config, bool export,
                                              pskv__transfer_options *o);
/* Locale-independent formatting ("C" numeric locale). */
PSKV__HIDDEN int pskv__format(char *buf, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
