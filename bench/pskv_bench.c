/* pskv-bench: speed of pskv as ratios against the physical limit and
 * against peer stores, measured in the same run.
 *
 * Workload `dram`: dim 64 fp32 rows, N keys (default 4M), Zipf 0.99 over
 * scrambled ids, batches of 4096, Adagrad. Reports pull and push rows/s for
 * 1 and 2 threads beside a flat float[N][row] array indexed by rank — a
 * plain loop and one with software prefetch (the limit: about DRAM
 * bandwidth) — and DRAM bytes per resident row. Push sums the gradients of
 * a batch's repeated keys first in every contender, as pskv does. With
 * --peers, also absl::flat_hash_map and boost::unordered_flat_map over their
 * own rows, each with a plain and a software-pipelined loop (when built
 * with them: -Dbench_maps, peers_maps.cc), measured in the same shuffled
 * rounds, and the same operations on LMDB used as a plain key-value store
 * (and RocksDB when built with -Dbench_peers=enabled). --budget BYTES opens
 * pskv's store with that memory budget (admission sketch on), to measure
 * what the sketch costs per row.
 *
 * Workload `cache`: pskv as a memory-only cache holding 1%, 5%, 10% and
 * 25% of the keys' rows (dim 64 Adagrad; then optimizer=none in the same
 * bytes); get, put on miss, over a Zipf 0.99 trace. Reports the hit rate
 * of pskv's eviction (CLOCK behind a frequency-based admission) beside an
 * exact LRU holding as many rows, with and without a one-pass scan of as
 * many never-seen keys as the capacity, and DRAM per resident row.
 *
 * Workload `device`: the disk's limits through the same I/O layer the
 * spill tier uses — sequential 1 MiB O_DIRECT writes, then random O_DIRECT
 * reads of 512 B .. 16 KiB at queue depths 1 .. 128 (--keys N: an N KiB
 * file).
 *
 * Workload `spill`: a scratch directory store, 16M keys (--keys) of dim 64
 * Adagrad rows, DRAM budget 1 GiB (--budget), Zipf 0.99, batch 4096:
 * pull/push rows/s, hit rate, miss-path slot reads/s beside raw random
 * O_DIRECT reads of the same size and depth on the same file, and pull's
 * wait with prefetch one batch ahead while the caller computes.
 *
 * The spill figures are taken in the cache's steady state: populated from
 * the coldest key to the hottest, then --warm batches (default 256) of the
 * training loop; RocksDB warms its block cache on the same keys.
 *
 * Workload `filesize`: data.mdb's size and its parts (rows B-tree and its
 * fill, undo, meta records, free pages) over 50 checkpoints of 10% changed
 * rows (workload_filesize.c).
 *
 * Workload `ids`: feature ids of string features per call against batched
 * (pskv_feature_ids) and an XXH3 loop (workload_ids.c).
 *
 * Workload `init`: the key-seeded initializers per generator against a
 * memset of the same bytes, and populate per initializer against the first
 * touch of fresh memory (workload_init.c).
 *
 * Workload `delta`: full and 1% delta exports of 4M rows per codec, their
 * apply, against memcpy and LZ4 alone; a trainer beside an
 * export (workload_delta.c).
 *
 * Workload `codec`: pskv_chunk_encode and pskv_chunk_decode per codec, GB/s
 * of fp32 values against memcpy in the same rounds (workload_codec.c).
 *
 * Workload `modes`: push into update=async and update=sync tables, and
 * pskv_step against the async push (workload_modes.c).
 *
 *   pskv-bench [dram|cache|device|spill|checkpoint|filesize|ids|init|delta|codec|modes] [--keys N] [--budget BYTES] [--batches B] [--warm B]
 *              [--reps R] [--peers] [--json]
 * Each dram figure is the median of R runs over the same trace. Each
 * workload lives in its own file (workload_*.c), the shared helpers in
 * bench_util.c.
 * SPDX-License-Identifier: BSD-2-Clause */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

static void usage(void)
{
    fprintf(stderr, "usage: pskv-bench [dram|cache|device|spill|checkpoint|filesize|ids|init|delta|codec|modes] [--keys N] [--budget BYTES] [--batches B] [--warm B] "
                    "[--reps R] [--dim D (filesize)] [--peers] [--json]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *workload = "dram";
    int keys_set = 0;
    setvbuf(stdout, NULL, _IOLBF, 0); /* progress shows up in logs as it happens */
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            bench_cfg.json = 1;
        else if (strcmp(argv[i], "--peers") == 0)
            bench_cfg.peers = 1;
        else if (strcmp(argv[i], "--keys") == 0 && i + 1 < argc) {
            bench_cfg.keys = strtoull(argv[++i], NULL, 0);
            keys_set = 1;
        } else if (strcmp(argv[i], "--budget") == 0 && i + 1 < argc)
            bench_cfg.budget = strtoull(argv[++i], NULL, 0);
        else if (strcmp(argv[i], "--warm") == 0 && i + 1 < argc)
            bench_cfg.warm = (unsigned)strtoul(argv[++i], NULL, 0);
        else if (strcmp(argv[i], "--batches") == 0 && i + 1 < argc)
            bench_cfg.batches = (unsigned)strtoul(argv[++i], NULL, 0);
        else if (strcmp(argv[i], "--dim") == 0 && i + 1 < argc)
            bench_cfg.dim = (unsigned)strtoul(argv[++i], NULL, 0);
        else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc)
            bench_cfg.reps = (unsigned)strtoul(argv[++i], NULL, 0);
        else if (argv[i][0] != '-')
            workload = argv[i];
        else
            usage();
    }
    if (bench_cfg.keys < BATCH || bench_cfg.keys > (1ull << 31) || bench_cfg.batches < 2 || bench_cfg.reps < 1 ||
        bench_cfg.reps > 32 || bench_cfg.dim > 4096)
        usage();
    if (strcmp(workload, "dram") == 0)
        return workload_dram();
    if (strcmp(workload, "cache") == 0)
        return workload_cache();
    if (strcmp(workload, "device") == 0)
        return workload_device();
    if (strcmp(workload, "checkpoint") == 0)
        return workload_checkpoint(keys_set ? bench_cfg.keys : 4u << 20, bench_cfg.json);
    if (strcmp(workload, "delta") == 0)
        return workload_delta(keys_set ? bench_cfg.keys : 4u << 20, bench_cfg.json);
    if (strcmp(workload, "ids") == 0)
        return workload_ids(keys_set ? bench_cfg.keys : 1000000u, bench_cfg.json);
    if (strcmp(workload, "modes") == 0)
        return workload_modes(keys_set ? bench_cfg.keys : 1u << 20, bench_cfg.json);
    if (strcmp(workload, "codec") == 0)
        return workload_codec(bench_cfg.json);
    if (strcmp(workload, "init") == 0)
        return workload_init(keys_set ? bench_cfg.keys : 2u << 20, bench_cfg.json);
    if (strcmp(workload, "filesize") == 0)
        return workload_filesize(keys_set ? bench_cfg.keys : 500000u, bench_cfg.json);
    if (strcmp(workload, "spill") == 0) {
        if (!keys_set)
            bench_cfg.keys = 16u << 20;
        return workload_spill();
    }
    usage();
    return 2;
}
