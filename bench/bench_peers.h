/* Peer stores measured by pskv-bench on the same trace as pskv. */
#ifndef PSKV_BENCH_PEERS_H
#define PSKV_BENCH_PEERS_H

#include <stddef.h>
#include <stdint.h>

typedef struct bench_peer_args {
    uint64_t nkeys;        /* ids are scramble(0..nkeys-1) */
    const uint64_t *trace; /* keys, batch after batch */
    size_t count;          /* keys in trace (a multiple of batch) */
    const float *grads;    /* one batch of gradients, reused */
    size_t batch;
    int dim;
    float lr, eps;
    unsigned reps;
    uint64_t cache_bytes; /* RocksDB block cache; 0 = big enough for the table */
    int direct_reads;     /* RocksDB: O_DIRECT reads (larger-than-DRAM runs) */
    int rocksdb_only;     /* skip LMDB (the spill workload compares RocksDB) */
    const uint64_t *warm_trace; /* keys to warm the cache with; NULL = the trace itself */
    size_t warm_count;
} bench_peer_args;

typedef struct bench_peer_result {
    double pull_rows_per_s, push_rows_per_s;
} bench_peer_result;

int bench_peer_count(void);
const char *bench_peer_name(int i);
/* Load every key, then time pull (read the row) and push (read, Adagrad
 * step, write back) over the trace. 0 or -1. */
int bench_peer_run(int i, const bench_peer_args *a, bench_peer_result *out);

#endif
