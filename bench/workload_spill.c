/* pskv-bench workload `spill`: a store larger than its DRAM budget, beside raw
 * O_DIRECT reads and, with --peers, RocksDB.
 * SPDX-License-Identifier: BSD-2-Clause */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#include <lz4.h>

#include "bench_peers.h"

#include "bench.h"
#include "io.h"
#include "spill.h"
#include "pskv_internal.h" /* white box: the store's and table's structs */

/* ---------------------------------------------------------------- lz4 */

/* Would lz4 on spill slots pay? Compress rows as a slot would hold them
 * (weights + Adagrad state after training) and report the ratio and the
 * cost per row, beside the cost of a slot read. */
static void lz4_report(pskv_table *t, const uint64_t *keys, size_t count, double read_ns)
{
    enum { SAMPLE = 65536 };
    size_t n = count < SAMPLE ? count : SAMPLE;
    pskv_table_info info;
    pskv_table_info_get(t, &info);
    size_t rb = info.row_bytes;
    float *w = malloc(BATCH * DIM * sizeof(float)), *st = malloc(2 * DIM * sizeof(float));
    uint8_t *rows = malloc(n * rb);
    size_t got = 0, seen = 0;
    pskv_iter *it;
    (void)keys;
    (void)count;
    /* Trained rows (non-zero Adagrad state) among the first 300k rows of
     * the table: what evictions write in steady-state training. */
    if (pskv_iter_create(t, &it) == 0) {
        uint64_t key;
        while (got < n && seen < 300000 && pskv_iter_next(it, &key, w, st) == 1) {
            seen++;
            bool trained = false;
            for (int j = 0; j < DIM; j++)
                trained |= st[j] != 0.0f;
            if (!trained)
                continue;
            memcpy(rows + got * rb, w, DIM * sizeof(float));
            memcpy(rows + got * rb + DIM * sizeof(float), st, rb - DIM * sizeof(float));
            got++;
        }
        pskv_iter_destroy(it);
    }
    if (got == 0)
        return;
    int bound = LZ4_compressBound((int)rb);
    char *dst = malloc((size_t)bound);
    char *back = malloc(rb);
    uint64_t total = 0;
    double t0 = bench_now();
    for (size_t i = 0; i < got; i++)
        total += (uint64_t)LZ4_compress_default((const char *)rows + i * rb, dst, (int)rb, bound);
    double comp_ns = (bench_now() - t0) / (double)got * 1e9;
    int clen = LZ4_compress_default((const char *)rows, dst, (int)rb, bound);
    t0 = bench_now();
    for (size_t i = 0; i < got; i++)
        LZ4_decompress_safe(dst, back, clen, (int)rb);
    double dec_ns = (bench_now() - t0) / (double)got * 1e9;
    double ratio = (double)got * (double)rb / (double)total;
    if (bench_cfg.json)
        printf("{\"workload\":\"spill\",\"lz4_rows\":%zu,\"lz4_ratio\":%.3f,"
               "\"lz4_compress_ns_per_row\":%.0f,\"lz4_decompress_ns_per_row\":%.0f}\n",
               got, ratio, comp_ns, dec_ns);
    else
        printf("lz4 on %zu trained %zu-byte rows: ratio %.3f, compress %.0f ns/row, decompress "
               "%.0f ns/row (a slot read costs %.0f ns of device time per row)\n",
               got, rb, ratio, comp_ns, dec_ns, read_ns);
    free(w);
    free(st);
    free(rows);
    free(dst);
    free(back);
}

/* ---------------------------------------------------------------- spill */

static void spin_for(double seconds)
{
    double end = bench_now() + seconds;
    while (bench_now() < end)
        ;
}

/* Random O_DIRECT reads of `size` bytes at queue depth `depth` over the
 * first `bytes` of the file at path, for about 2 s: reads/s. */
static double raw_read_rate(const char *path, uint64_t bytes, uint32_t size, uint32_t depth,
                            pskv__io *io)
{
    int fd = open(path, O_RDONLY | O_DIRECT);
    if (fd < 0)
        return 0;
    uint64_t rng = 5;
    double rate = bench_random_io_rate(io, fd, bytes, size, depth, 0, &rng);
    close(fd);
    return rate;
}

typedef struct spill_phase {
    double pull_s, push_s, rows;
    uint64_t loads;
    double read_s, write_s; /* time in spill read / write batches */
    double max_resident;    /* most resident bytes seen after a pull */
} spill_phase;

static int spill_run(pskv_table *t, const uint64_t *keys, size_t first, size_t batches,
                     const float *grads, float *out, int prefetch, double compute_s,
                     spill_phase *ph)
{
    pskv_table_stats a, b;
    pskv_table_stats_get(t, &a);
    memset(ph, 0, sizeof *ph);
    for (size_t i = 0; i < batches; i++) {
        const uint64_t *k = keys + (first + i) * BATCH;
        double t0 = bench_now();
        if (pskv_pull(t, k, BATCH, out) != 0)
            return 1;
        double t1 = bench_now();
        pskv_store_stats ss;
        pskv_store_stats_get(t->store, &ss);
        if ((double)ss.resident_bytes > ph->max_resident)
            ph->max_resident = (double)ss.resident_bytes;
        /* The next batch's reads run while this one is computed: issued
         * after this pull, so the two never wait on each other's rows. */
        if (prefetch && i + 1 < batches && pskv_prefetch(t, k + BATCH, BATCH) != 0)
            return 1;
        if (compute_s > 0)
            spin_for(compute_s); /* the trainer's forward/backward pass */
        double t2 = bench_now();
        if (pskv_push(t, k, BATCH, grads) != 0)
            return 1;
        ph->pull_s += t1 - t0;
        ph->push_s += bench_now() - t2;
    }
    pskv_table_stats_get(t, &b);
    ph->rows = (double)batches * BATCH;
    ph->loads = b.spill_reads - a.spill_reads;
    ph->read_s = (double)(b.spill_read_ns - a.spill_read_ns) * 1e-9;
    ph->write_s = (double)(b.spill_write_ns - a.spill_write_ns) * 1e-9;
    return 0;
}

int workload_spill(void)
{
    const uint64_t n = bench_cfg.keys;
    const uint64_t budget = bench_cfg.budget ? bench_cfg.budget : 1ull << 30;
    char dir[] = "pskv-bench-spill-XXXXXX";
    if (mkdtemp(dir) == NULL) {
        perror("pskv-bench: mkdtemp");
        return 1;
    }
    char store_cfg[96];
    snprintf(store_cfg, sizeof store_cfg, "durability=none memory_budget=%llu",
             (unsigned long long)budget);
    pskv_store *s;
    pskv_table *t;
    if (pskv_open(dir, store_cfg, &s) != 0 ||
        pskv_table_open(s, "emb", "dim=64 optimizer=adagrad lr=0.01 init=uniform:-0.01:0.01", &t) != 0) {
        fprintf(stderr, "pskv-bench: cannot open the spill store in %s\n", dir);
        return 1;
    }
    /* Steady state, not a cold cache: the populate pass creates the keys
     * from the coldest rank to the hottest, so the rows it leaves resident
     * are about those a long-running trainer keeps in DRAM, and the warm-up
     * then runs the training loop itself before timing. (Populated hottest
     * first, the cache starts with the coldest rows and needs ~2000 batches
     * to reach its steady hit rate: compulsory misses, not training.) */
    size_t warm = bench_cfg.warm, timed = bench_cfg.batches;
    size_t count = (warm + 2 * timed + 1) * BATCH;
    uint32_t *ranks = bench_zipf_trace(n, count, 0.99, 11);
    uint64_t *keys = malloc(count * sizeof *keys);
    for (size_t i = 0; i < count; i++)
        keys[i] = bench_scramble(ranks[i]);
    free(ranks);
    float *grads = malloc(BATCH * DIM * sizeof(float)), *out = malloc(BATCH * DIM * sizeof(float));
    for (size_t i = 0; i < BATCH * DIM; i++)
        grads[i] = (float)((i * 2654435761u) % 2001) * 1e-5f - 0.01f;

    /* Populate every key: rows beyond the budget go to the spill file. */
    uint64_t *all = malloc(BATCH * sizeof *all);
    double t0 = bench_now();
    for (uint64_t base = 0; base < n; base += BATCH) {
        size_t m = n - base < BATCH ? n - base : BATCH;
        for (size_t i = 0; i < m; i++)
            all[i] = bench_scramble(n - 1 - (base + i));
        if (pskv_pull(t, all, m, out) != 0) {
            fprintf(stderr, "pskv-bench: populate failed\n");
            return 1;
        }
    }
    double populate_s = bench_now() - t0;
    free(all);
    pskv_store_stats ss;
    pskv_table_stats ts;
    pskv_store_stats_get(s, &ss);
    pskv_table_stats_get(t, &ts);
    if (!bench_cfg.json)
        printf("workload spill: %llu keys, dim 64 adagrad (%.1f GB of rows), budget %.2f GiB, "
               "Zipf 0.99 scrambled, batch %d\n"
               "populated in %.1f s (%.2fM rows/s): %llu rows spilled, spill file %.1f GB, "
               "%.1f MiB resident\n",
               (unsigned long long)n, n * 512.0 / 1e9, budget / 1073741824.0, BATCH, populate_s,
               n / populate_s / 1e6, (unsigned long long)ts.rows_spilled, ss.spill_bytes / 1e9,
               ss.resident_bytes / 1048576.0);

    spill_phase w, plain, pre;
    /* The hit rate of the warm-up's last quarter shows whether the cache
     * has settled: it should match the timed run's. */
    if (spill_run(t, keys, 0, warm - warm / 4, grads, out, 0, 0, &w) != 0 ||
        spill_run(t, keys, warm - warm / 4, warm / 4, grads, out, 0, 0, &w) != 0 ||
        spill_run(t, keys, warm, timed, grads, out, 0, 0, &plain) != 0) {
        fprintf(stderr, "pskv-bench: spill run failed\n");
        return 1;
    }
    /* With prefetch one batch ahead and a trainer that computes as long as
     * a batch's I/O took without prefetch: the reads of its misses and the
     * writes of the rows evicted for them (pull + push time). */
    double compute = (plain.pull_s + plain.push_s) / (double)timed;
    if (spill_run(t, keys, warm + timed, timed, grads, out, 1, compute, &pre) != 0) {
        fprintf(stderr, "pskv-bench: spill run failed\n");
        return 1;
    }
    /* The limit: raw reads of one slot at the I/O layer's depth, same file. */
    char path[96];
    snprintf(path, sizeof path, "%s/emb.spill", dir);
    pskv_store_stats_get(s, &ss);
    pskv_table_stats_get(t, &ts);
    double spilled_dram = ts.rows_spilled ? (double)ts.spill_index_bytes / ts.rows_spilled : 0;
    pskv__io *io;
    pskv__io_create(getenv("PSKV_IO") && strcmp(getenv("PSKV_IO"), "sync") == 0, 64, &io);
    uint32_t slot = pskv__spill_read_bytes(t->spill); /* what one miss reads */
    uint64_t rewrites = pskv__spill_rewrites(t->spill);
    pskv__io_stats_t ios;
    pskv__io_stats(s->io, &ios);
    double raw = raw_read_rate(path, ss.spill_bytes, slot, 64, io);
    pskv__io_destroy(io);

    double hit = 1.0 - (double)plain.loads / plain.rows;
    double warm_hit = w.rows > 0 ? 1.0 - (double)w.loads / w.rows : 0;
    /* Miss-path rate: rows read per second of read batches (the time the
     * reads of a call's misses take, from submission to the last check). */
    double miss_rate = (double)plain.loads / plain.read_s;
    double train = plain.rows / (plain.pull_s + plain.push_s);
    if (bench_cfg.json) {
        printf("{\"workload\":\"spill\",\"keys\":%llu,\"budget\":%llu,\"populate_rows_per_s\":%.0f,"
               "\"pull_rows_per_s\":%.0f,\"push_rows_per_s\":%.0f,\"train_rows_per_s\":%.0f,"
               "\"hit_rate\":%.4f,\"miss_reads_per_s\":%.0f,\"raw_reads_per_s\":%.0f,"
               "\"miss_vs_raw\":%.3f,\"read_bytes\":%u,\"pull_wait_prefetch_vs_none\":%.3f,"
               "\"warm_batches\":%zu,\"warm_hit_rate\":%.4f,\"dram_per_spilled_row\":%.2f}\n",
               (unsigned long long)n, (unsigned long long)budget, n / populate_s,
               plain.rows / plain.pull_s, plain.rows / plain.push_s, train, hit, miss_rate, raw,
               miss_rate / raw, slot, pre.pull_s / plain.pull_s, warm, warm_hit, spilled_dram);
    } else {
        printf("warm-up:       %zu batches, hit rate %.1f%% over the last quarter\n"
               "spilled rows:  %llu, spill index %.1f MiB = %.2f bytes of DRAM per spilled row\n",
               warm, warm_hit * 100, (unsigned long long)ts.rows_spilled,
               ts.spill_index_bytes / 1048576.0, spilled_dram);
        printf("evictions:     %llu rows written in %llu write requests (%.1f MB), %llu pages "
               "read back to fill holes; spill file %.1f GB\n",
               (unsigned long long)ts.spill_writes, (unsigned long long)ios.writes,
               ios.bytes_written / 1e6, (unsigned long long)rewrites, ss.spill_bytes / 1e9);
        printf("no prefetch:   pull %.3fM rows/s, push %.3fM rows/s, pull+push %.3fM rows/s; "
               "hit rate %.1f%%; %.0f%% of the time in spill reads, %.0f%% in eviction writes\n"
               "miss path:     %.0f slot reads/s (%u-byte reads) vs raw io_uring O_DIRECT random "
               "reads, same size, depth 64, same file: %.0f/s = %.2fx\n"
               "prefetch 1 ahead, %.2f ms compute per batch: pull waits %.3f ms per batch vs "
               "%.3f ms without = %.3fx; hit rate %.1f%%, resident at most %.3fx the budget\n",
               plain.rows / plain.pull_s / 1e6, plain.rows / plain.push_s / 1e6, train / 1e6,
               hit * 100, 100 * plain.read_s / (plain.pull_s + plain.push_s),
               100 * plain.write_s / (plain.pull_s + plain.push_s), miss_rate, slot, raw, miss_rate / raw, compute * 1e3,
               pre.pull_s / timed * 1e3, plain.pull_s / timed * 1e3, pre.pull_s / plain.pull_s,
               100.0 * (1.0 - (double)pre.loads / pre.rows), pre.max_resident / (double)budget);
    }
    lz4_report(t, keys + warm * BATCH, timed * BATCH, 1e9 / miss_rate);
    pskv_close(s);
    rmdir(dir);
    if (bench_cfg.peers) {
        /* RocksDB under the same DRAM budget: block cache = budget, direct
         * reads, the same trace after the same history. Its populate pass
         * does not fill the block cache, so it first reads the keys pskv
         * had resident after populating (coldest to hottest), then the
         * warm-up trace. */
        uint64_t hot = budget / 512 < n ? budget / 512 : n;
        uint64_t *warm_keys = malloc((hot + warm * BATCH) * sizeof *warm_keys);
        for (uint64_t i = 0; i < hot; i++)
            warm_keys[i] = bench_scramble(hot - 1 - i);
        memcpy(warm_keys + hot, keys, warm * BATCH * sizeof *keys);
        bench_peer_args a = {n, keys + warm * BATCH, timed * BATCH, grads, BATCH, DIM, LR, EPS,
                             1, budget, 1, 1, warm_keys, hot + warm * BATCH};
        bench_peer_result res;
        for (int pi = 0; pi < bench_peer_count(); pi++) {
            if (bench_peer_run(pi, &a, &res) != 0)
                continue;
            double peer_train = 1.0 / (1.0 / res.pull_rows_per_s + 1.0 / res.push_rows_per_s);
            if (bench_cfg.json)
                printf("{\"workload\":\"spill\",\"store\":\"%s\",\"pull_rows_per_s\":%.0f,"
                       "\"push_rows_per_s\":%.0f,\"train_rows_per_s\":%.0f,"
                       "\"pskv_train_speedup\":%.2f}\n",
                       bench_peer_name(pi), res.pull_rows_per_s, res.push_rows_per_s, peer_train,
                       train / peer_train);
            else
                printf("%s, %.2f GiB block cache, direct reads: pull %.4fM rows/s, push %.4fM "
                       "rows/s, pull+push %.4fM rows/s; pskv is %.1fx faster\n",
                       bench_peer_name(pi), budget / 1073741824.0, res.pull_rows_per_s / 1e6,
                       res.push_rows_per_s / 1e6, peer_train / 1e6, train / peer_train);
        }
        free(warm_keys);
    }
    free(keys);
    free(grads);
    free(out);
    return 0;
}
