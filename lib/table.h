/* Creating, destroying and describing a table and its layout (table.c).
 * SPDX-License-Identifier: BSD-2-Clause */
#ifndef PSKV_TABLE_H
#define PSKV_TABLE_H

#include "pskv_internal.h"

PSKV__HIDDEN int pskv__table_create(pskv_store *s, const char *name,
                                    const pskv_table_options *o,
                                    pskv_table **out);
PSKV__HIDDEN void pskv__table_destroy(pskv_table *t);
PSKV__HIDDEN void pskv__table_stats_add(pskv_table *t, pskv_table_stats *st);
/* A ring over shards 0..n-1 and the empty shards themselves (reshard.c
 * builds a new layout with it), and freeing n shards. */
PSKV__HIDDEN int pskv__layout_create(const pskv_table *t, uint32_t n, pskv_ring **ring_out,
                                     pskv__shard **shards_out);
PSKV__HIDDEN void pskv__layout_free(pskv__shard *shards, uint32_t n);

#endif
