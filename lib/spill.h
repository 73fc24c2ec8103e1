/* A table's spill file: checked row records in O_DIRECT pages (spill.c).
 * SPDX-License-Identifier: BSD-2-Clause */
#ifndef PSKV_SPILL_H
#define PSKV_SPILL_H

#include <stdatomic.h>
#include <stdint.h>

#include "io.h"

/* Spill slots per table: 29 bits (a spill-map value keeps the slot in its
 * low bits, BUSY and checkpoint marks in the high ones: pskv_internal.h). */
#define PSKV__SPILL_SLOT_MAX 0x1fffffffu

typedef struct pskv__spill pskv__spill;

/* Create (truncate) the spill file at path for rows of stored_bytes. max_bytes
 * (0 = none) caps *shared_bytes, the extents of all files sharing that
 * counter (a store's spill_max), or of this file alone when it is NULL.
 * Errors: PSKV_EINVAL, PSKV_ENOMEM, PSKV_EIO, PSKV_ENOSPC, PSKV_ENOTSUP (no
 * O_DIRECT on this file system). */
PSKV__HIDDEN int pskv__spill_open(const char *path, uint32_t stored_bytes, uint64_t max_bytes,
                                  atomic_uint_fast64_t *shared_bytes, pskv__io *io,
                                  pskv__spill **out);
/* Close and remove the file (spill files are scratch). */
PSKV__HIDDEN void pskv__spill_close(pskv__spill *sp);
/* A record: row + key + checksum. */
PSKV__HIDDEN uint32_t pskv__spill_slot_bytes(const pskv__spill *sp);
/* Bytes one record read transfers (the aligned sectors covering it). */
PSKV__HIDDEN uint32_t pskv__spill_read_bytes(const pskv__spill *sp);
/* Byte offset of a slot's record in the file. */
PSKV__HIDDEN uint64_t pskv__spill_slot_offset(const pskv__spill *sp, uint32_t slot);
PSKV__HIDDEN void pskv__spill_usage(pskv__spill *sp, uint64_t *used_slots, uint64_t *file_bytes);
/* DRAM of the allocation state (a bit per slot, 2 bytes per page). */
PSKV__HIDDEN uint64_t pskv__spill_dram_bytes(pskv__spill *sp);
/* Pages read back so that their free records could be filled. */
PSKV__HIDDEN uint64_t pskv__spill_rewrites(pskv__spill *sp);
/* n slots, all or nothing: PSKV_ENOSPC when the cap would be passed. */
PSKV__HIDDEN int pskv__spill_alloc(pskv__spill *sp, uint32_t n, uint32_t *slots);
/* Give slots back (never fails). */
PSKV__HIDDEN void pskv__spill_free(pskv__spill *sp, const uint32_t *slots, uint32_t n);
/* Write rows[i] of keys[i] into the allocated slots[i], whole pages in one
 * I/O batch (pages that also hold other allocated slots are read first).
 * 0, PSKV_EIO, PSKV_ENOSPC or PSKV_ENOMEM; on error the contents of
 * slots[] are undefined and every other slot is unchanged. */
PSKV__HIDDEN int pskv__spill_write(pskv__spill *sp, uint32_t n, const uint64_t *keys,
                                   const float *const *rows, const uint32_t *slots);
/* Read slots[i] (which must hold keys[i]) into rows[i], one I/O batch,
 * each checked: results[i] (optional) = 0, PSKV_EIO or PSKV_ECORRUPT. The
 * return value is 0 or the first error. Any thread. */
PSKV__HIDDEN int pskv__spill_read(pskv__spill *sp, uint32_t n, const uint64_t *keys,
                                  const uint32_t *slots, float *const *rows, int *results);

#endif
