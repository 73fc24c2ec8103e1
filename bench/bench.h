/* What the files of pskv-bench share: the run's options, helpers
 * (bench_util.c) and one entry point per workload (workload_*.c).
 * SPDX-License-Identifier: BSD-2-Clause */
#ifndef PSKV_BENCH_H
#define PSKV_BENCH_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bench_sum.h" /* DIM, ROW_FLOATS, LR, EPS */
#include "io.h"
#include "pskv.h"

#define BATCH 4096

/* Set from the command line by main (pskv_bench.c). */
struct bench_cfg {
    uint64_t keys;
    unsigned batches, reps;
    int json, peers;
    uint64_t budget; /* --budget: spill (0: 1 GiB), dram (0: none) */
    unsigned warm;   /* spill workload: warm-up batches before timing */
    unsigned dim;    /* filesize workload: the table's dim (default 64) */
};
extern struct bench_cfg bench_cfg;

/* Monotonic seconds. */
double bench_now(void);
/* Populate's physical limit: rows per second at which fresh anonymous
 * memory for `rows` rows of row_bytes is first touched (the kernel zeroes
 * each page as it faults it in), with 4 KiB pages or advised as huge
 * pages, whichever is faster here; 0 when no memory could be mapped. */
double bench_first_touch_rows_per_s(uint64_t rows, size_t row_bytes);
/* The median of v[n] (sorts v). */
double bench_median(double *v, unsigned n);
/* Scrambled ids: rank -> a key spread over 64 bits. */
static inline uint64_t bench_scramble(uint64_t rank) { return rank * 0x9e3779b97f4a7c15ull; }
/* count Zipf(theta) ranks below n, deterministic in seed (exits when out of memory). */
uint32_t *bench_zipf_trace(uint64_t n, size_t count, double theta, uint64_t seed);
/* Random O_DIRECT transfers of `size` bytes at `depth` over the first
 * file_bytes of fd for about 2 s (writes: 0 reads, 1 writes, 2 mixed):
 * transfers/s, or -1 when one fails. */
double bench_random_io_rate(pskv__io *io, int fd, uint64_t file_bytes, uint32_t size,
                            uint32_t depth, int writes, uint64_t *rng);
/* Sequential 1 MiB O_DIRECT writes of bytes into fd, then fdatasync:
 * bytes per second, or -1 on error. */
double bench_seq_write_rate(pskv__io *io, int fd, uint64_t bytes);

/* A 64-bit mixer (murmur3's finalizer): a deterministic spread of i. */
uint64_t bench_mix(uint64_t x);

/* A trainer thread beside a job (bench_trainer.c): pull then push of
 * BENCH_TRAIN_BATCH uniform keys below n until stop, every call timed. */
#define BENCH_TRAIN_BATCH 1024
typedef struct bench_trainer {
    pskv_table *t;
    uint64_t n;
    atomic_bool stop;
    double max_call, max_at, total; /* max_at: when the longest call began */
    uint64_t calls;
    int error;
    double job_began, max_cpu; /* max_cpu: CPU time of the longest call */
    double *durs;              /* every call's duration (for percentiles) */
    size_t ndurs, durs_cap;
} bench_trainer;
void *bench_trainer_main(void *arg); /* arg: a zeroed bench_trainer with t, n */
/* The q-quantile of the trainer's call durations (sorts them). The longest
 * call on this shared VM is often a stall of the virtual CPU itself: the
 * 99.9th percentile is the steadier figure. */
double bench_trainer_quantile(bench_trainer *tr, double q);
/* A thread copying memory until bench_hog_stop: a busy core, as a job's. */
extern atomic_bool bench_hog_stop;
void *bench_hog_main(void *arg);

/* The workloads: 0 on success. */
int workload_dram(void);
int workload_cache(void);
int workload_device(void);
int workload_spill(void);
/* Checkpoints of a keys-row table (dim 64 Adagrad) after 1%, 10% and 100%
 * of the rows changed, beside a bare LMDB transaction of the same rows and
 * the disk's sequential write rate; pull/push stalls during a checkpoint;
 * reopen time. 0 or 1. */
int workload_checkpoint(uint64_t keys, int json);
/* data.mdb's size and its parts over 50 checkpoints of 10% changed rows. */
int workload_filesize(uint64_t keys, int json);
/* Full and delta exports of a keys-row table (dim 64 Adagrad) per codec,
 * their apply, beside memcpy and lz4; a trainer beside an export. */
int workload_delta(uint64_t keys, int json);
/* Feature ids of n strings: per call, batched, and an XXH3 loop. */
int workload_ids(uint64_t keys, int json);
/* The initializers per generator against memset; populate per initializer
 * against the first touch of fresh memory. */
int workload_init(uint64_t keys, int json);
/* Chunk encode and decode per codec against memcpy, GB/s of fp32. */
int workload_codec(int json);
/* update=sync: push into sync and async tables, pskv_step against push. */
int workload_modes(uint64_t keys, int json);

#endif
