/* Hash-map peers of pskv-bench dram --peers (peers_maps.cc, C++17):
 * absl::flat_hash_map and boost::unordered_flat_map from key to slot over
 * their own slab of rows (DIM weights + DIM Adagrad state, the flat
 * array's layout), each driven by a plain loop and by a software-pipelined
 * one. Built when meson finds a C++ compiler, absl and boost
 * (-Dbench_maps); otherwise the stubs below report no peers.
 * SPDX-License-Identifier: BSD-2-Clause */
#ifndef PSKV_BENCH_PEERS_MAPS_H
#define PSKV_BENCH_PEERS_MAPS_H

#include <stddef.h>
#include <stdint.h>

#include "bench_sum.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct bench_map bench_map;

#ifdef HAVE_PEER_MAPS
/* How many peers the build has (4), and each one's name. */
int bench_maps_count(void);
const char *bench_maps_name(int i);
/* Peer i holding the rows of keys bench_scramble(0..nkeys-1), zeroed;
 * NULL when out of memory. */
bench_map *bench_map_create(int i, uint64_t nkeys);
void bench_map_free(bench_map *m);
/* One batch: out[i][DIM] = the weights of keys[i]. Only reads the map and
 * the rows: threads may pull from one peer at once. 0, or -1 when a key is
 * missing. */
int bench_map_pull(const bench_map *m, const uint64_t *keys, size_t n, float *out);
/* One batch: sums the gradients of repeated keys (bench_sum_batch into
 * sum), then one Adagrad step per distinct key. 0, or -1 when a key is
 * missing. */
int bench_map_push(bench_map *m, const uint64_t *keys, size_t n, const float *grads,
                   bench_sum *sum);
#else
static inline int bench_maps_count(void) { return 0; }
static inline const char *bench_maps_name(int i) { return (void)i, ""; }
static inline bench_map *bench_map_create(int i, uint64_t nkeys)
{
    return (void)i, (void)nkeys, (bench_map *)0;
}
static inline void bench_map_free(bench_map *m) { (void)m; }
static inline int bench_map_pull(const bench_map *m, const uint64_t *keys, size_t n, float *out)
{
    return (void)m, (void)keys, (void)n, (void)out, -1;
}
static inline int bench_map_push(bench_map *m, const uint64_t *keys, size_t n, const float *grads,
                                 bench_sum *sum)
{
    return (void)m, (void)keys, (void)n, (void)grads, (void)sum, -1;
}
#endif

#ifdef __cplusplus
}
#endif

#endif
