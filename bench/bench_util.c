/* Helpers every pskv-bench workload shares: the options, time, medians, Zipf
 * traces, raw I/O rates.
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

struct bench_cfg bench_cfg = {4u << 20, 128, 5, 0, 0, 0, 256, 64};

double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

double bench_first_touch_rows_per_s(uint64_t rows, size_t row_bytes)
{
    const size_t bytes = (size_t)rows * row_bytes;
    double best = 0;
    for (int advise_huge = 0; advise_huge < 2; advise_huge++) {
        char *fresh = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1,
                           0);
        if (fresh == MAP_FAILED)
            continue;
        if (advise_huge)
            madvise(fresh, bytes, MADV_HUGEPAGE);
        double t0 = bench_now();
        for (size_t at = 0; at < bytes; at += 4096)
            fresh[at] = 1;
        double rate = (double)rows / (bench_now() - t0);
        best = rate > best ? rate : best;
        munmap(fresh, bytes);
    }
    return best;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double bench_median(double *v, unsigned n)
{
    qsort(v, n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* ---------------------------------------------------------------- trace */


/* Zipf(0.99) ranks by inverse CDF; deterministic. */
uint32_t *bench_zipf_trace(uint64_t n, size_t count, double theta, uint64_t seed)
{
    double *cdf = malloc(n * sizeof *cdf);
    uint32_t *out = malloc(count * sizeof *out);
    if (cdf == NULL || out == NULL) {
        fprintf(stderr, "pskv-bench: out of memory for the trace\n");
        exit(1);
    }
    double sum = 0;
    for (uint64_t k = 0; k < n; k++) {
        sum += 1.0 / pow((double)(k + 1), theta);
        cdf[k] = sum;
    }
    uint64_t s = seed;
    for (size_t i = 0; i < count; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        double u = (double)(s >> 11) * 0x1.0p-53 * sum;
        uint64_t lo = 0, hi = n - 1;
        while (lo < hi) {
            uint64_t mid = (lo + hi) / 2;
            if (cdf[mid] < u)
                lo = mid + 1;
            else
                hi = mid;
        }
        out[i] = (uint32_t)lo;
    }
    free(cdf);
    return out;
}


/* Random O_DIRECT transfers of `size` bytes at `depth`, aligned to size,
 * over the first file_bytes of fd, for about 2 s, in depth-sized batches
 * (the queue depth in flight). writes: 0 = reads, 1 = writes, 2 = every
 * other one a write. Transfers/s, or -1 when one fails. */
double bench_random_io_rate(pskv__io *io, int fd, uint64_t file_bytes, uint32_t size,
                             uint32_t depth, int writes, uint64_t *rng)
{
    size_t stride = (size + 4095) / 4096 * 4096;
    uint8_t *buf = aligned_alloc(4096, (size_t)depth * stride);
    pskv__io_req *req = calloc(depth, sizeof *req);
    if (buf == NULL || req == NULL) {
        free(buf);
        free(req);
        return -1;
    }
    memset(buf, 0x5a, (size_t)depth * stride);
    uint64_t blocks = file_bytes / size, total = 0;
    double rate = -1, t0 = bench_now();
    while (bench_now() - t0 < 2.0) {
        for (uint32_t i = 0; i < depth; i++) {
            *rng = *rng * 6364136223846793005ull + 1442695040888963407ull;
            req[i] = (pskv__io_req){.fd = fd, .write = writes == 1 || (writes == 2 && (i & 1)),
                                    .buf = buf + (size_t)i * stride, .len = size,
                                    .off = ((*rng >> 16) % blocks) * size};
        }
        if (pskv__io_run(io, req, depth) != 0)
            goto out;
        total += depth;
    }
    rate = (double)total / (bench_now() - t0);
out:
    free(buf);
    free(req);
    return rate;
}

double bench_seq_write_rate(pskv__io *io, int fd, uint64_t bytes)
{
    const size_t chunk = 1u << 20;
    uint8_t *buf = aligned_alloc(4096, 64 * chunk);
    pskv__io_req *req = calloc(64, sizeof *req);
    if (buf == NULL || req == NULL)
        return -1;
    memset(buf, 0x5a, 64 * chunk);
    double t0 = bench_now(), rate = -1;
    uint64_t off = 0;
    for (; off < bytes; off += 64 * chunk) {
        size_t n = 0;
        for (; n < 64 && off + n * chunk < bytes; n++)
            req[n] = (pskv__io_req){.fd = fd, .write = true, .buf = buf + n * chunk, .len = chunk,
                                    .off = off + n * chunk};
        if (pskv__io_run(io, req, n) != 0)
            break;
    }
    if (off >= bytes && fdatasync(fd) == 0)
        rate = (double)bytes / (bench_now() - t0);
    free(buf);
    free(req);
    return rate;
}
