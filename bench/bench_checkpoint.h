/* The checkpoint workload of pskv-bench (bench_checkpoint.c). */
#ifndef PSKV_BENCH_CHECKPOINT_H
#define PSKV_BENCH_CHECKPOINT_H

#include <stdint.h>

#include "pskv_internal.h"

/* Sequential 1 MiB O_DIRECT writes of bytes into fd, then fdatasync:
 * bytes per second, or -1 on error (pskv_bench.c). */
double bench_seq_write_rate(pskv__io *io, int fd, uint64_t bytes);

/* Checkpoints of a keys-row table (dim 64 Adagrad) after 1%, 10% and 100%
 * of the rows changed, beside a bare LMDB transaction of the same rows and
 * the disk's sequential write rate; pull/push stalls during a checkpoint;
 * reopen time. 0 or 1. */
int workload_checkpoint(uint64_t keys, int json);

#endif
