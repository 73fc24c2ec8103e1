/* pskv-bench workload `device`: the disk's own limits through pskv's I/O layer.
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

#include "bench.h"
#include "io.h"

int workload_device(void)
{
    const uint64_t file_bytes = bench_cfg.keys * 1024; /* --keys N: N KiB file */
    char path[] = "pskv-bench-device-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) {
        perror("pskv-bench: mkstemp");
        return 1;
    }
    close(fd);
    fd = open(path, O_RDWR | O_DIRECT);
    unlink(path);
    if (fd < 0) {
        perror("pskv-bench: O_DIRECT open");
        return 1;
    }
    pskv__io *io;
    if (pskv__io_create(getenv("PSKV_IO") && strcmp(getenv("PSKV_IO"), "sync") == 0, 256, &io) != 0)
        return 1;
    double wbw = bench_seq_write_rate(io, fd, file_bytes);
    if (wbw < 0) {
        fprintf(stderr, "pskv-bench: write failed\n");
        return 1;
    }
    const size_t chunk = 1u << 20;
    uint8_t *buf = aligned_alloc(4096, 64 * chunk);
    memset(buf, 0x5a, 64 * chunk);
    pskv__io_req *req = calloc(4096, sizeof *req);
    if (bench_cfg.json)
        printf("{\"workload\":\"device\",\"io\":\"%s\",\"seq_write_bytes_per_s\":%.0f}\n",
               pskv__io_is_uring(io) ? "io_uring" : "sync", wbw);
    else
        printf("workload device (%s, O_DIRECT, %.1f GiB file): sequential 1 MiB writes %.0f MB/s\n"
               "%-8s %6s %12s %10s\n",
               pskv__io_is_uring(io) ? "io_uring" : "pread/pwrite", file_bytes / 1073741824.0,
               wbw / 1e6, "size", "depth", "reads/s", "MB/s");
    const uint32_t sizes[] = {512, 1024, 4096, 16384};
    const uint32_t depths[] = {1, 32, 64, 128};
    uint64_t rng = 99;
    for (size_t si = 0; si < 4; si++) {
        for (size_t di = 0; di < 4; di++) {
            uint32_t size = sizes[si], depth = depths[di];
            double rate = bench_random_io_rate(io, fd, file_bytes, size, depth, 0, &rng);
            if (rate < 0) {
                fprintf(stderr, "pskv-bench: read failed\n");
                return 1;
            }
            if (bench_cfg.json)
                printf("{\"workload\":\"device\",\"read_size\":%u,\"depth\":%u,"
                       "\"reads_per_s\":%.0f}\n", size, depth, rate);
            else
                printf("%-8u %6u %12.0f %10.1f\n", size, depth, rate, rate * size / 1e6);
            fflush(stdout);
        }
    }
    /* Random writes and a read/write mix: what the spill tier's eviction
     * writes and miss reads cost the device, alone and together. */
    const uint32_t mix_size = 1024, mix_depth = 64;
    const char *mix_names[] = {"writes", "mixed 1:1"};
    for (int mode = 0; mode < 2; mode++) {
        double rate = bench_random_io_rate(io, fd, file_bytes, mix_size, mix_depth, mode + 1, &rng);
        if (rate < 0) {
            fprintf(stderr, "pskv-bench: write failed\n");
            return 1;
        }
        if (bench_cfg.json)
            printf("{\"workload\":\"device\",\"random\":\"%s\",\"size\":%u,\"depth\":%u,"
                   "\"ops_per_s\":%.0f}\n", mix_names[mode], mix_size, mix_depth, rate);
        else
            printf("random %-9s %u B, depth %u: %.0f ops/s\n", mix_names[mode], mix_size, mix_depth,
                   rate);
    }
    free(buf);
    free(req);
    pskv__io_destroy(io);
    close(fd);
    return 0;
}
