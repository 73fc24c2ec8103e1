/* Positioned file transfers through a pool of io_urings, or pread/pwrite
 * (io.c).
 * SPDX-License-Identifier: BSD-2-Clause */
#ifndef PSKV_IO_H
#define PSKV_IO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common.h"

typedef struct pskv__io pskv__io;

/* One positioned transfer. For O_DIRECT files buf, len and off must follow
 * the file's alignment (pskv__io_dio_align). After pskv__io_run, result is
 * 0, PSKV_EIO or PSKV_ENOSPC. */
typedef struct pskv__io_req {
    int fd;
    bool write;
    void *buf;
    size_t len;
    uint64_t off;
    /* progress, set by pskv__io_run */
    size_t done;
    unsigned retries;
    int result;
} pskv__io_req;

/* Faults injected into completions (tests): every Nth transfer fails with
 * EIO / ENOSPC (writes) / EAGAIN, or reports a short transfer cut to a
 * multiple of short_unit bytes (default 512). 0 disables each. */
typedef struct pskv__io_faults {
    uint32_t eio_every, enospc_every, eagain_every, short_every;
    uint32_t short_unit;
} pskv__io_faults;

typedef struct pskv__io_stats_t {
    uint64_t reads, writes, bytes_read, bytes_written, retries, short_transfers;
} pskv__io_stats_t;

/* force_sync: use pread/pwrite even when io_uring works. depth: requests
 * in flight per batch (1..4096). */
PSKV__HIDDEN int pskv__io_create(bool force_sync, unsigned depth, pskv__io **out);
PSKV__HIDDEN void pskv__io_destroy(pskv__io *io);
PSKV__HIDDEN bool pskv__io_is_uring(const pskv__io *io);
/* Run every request to completion (short transfers continued, EAGAIN and
 * EINTR retried) and return 0 or the first request's error. Returns only
 * when the kernel no longer touches any buffer. Any thread. */
PSKV__HIDDEN int pskv__io_run(pskv__io *io, pskv__io_req *reqs, size_t n);
PSKV__HIDDEN void pskv__io_set_faults(pskv__io *io, const pskv__io_faults *f);
PSKV__HIDDEN void pskv__io_stats(const pskv__io *io, pskv__io_stats_t *st);
/* O_DIRECT alignment of fd's file (statx STATX_DIOALIGN, else 4096). */
PSKV__HIDDEN uint32_t pskv__io_dio_align(int fd);

#endif
