/* Macros every file of lib/ uses: symbol visibility, branch hints, and the
 * debug-build assertion of internal invariants.
 * SPDX-License-Identifier: BSD-2-Clause */
#ifndef PSKV_COMMON_H
#define PSKV_COMMON_H

#include <stdint.h>
#include <time.h>

#define PSKV__HIDDEN __attribute__((visibility("hidden")))
#define PSKV__LIKELY(x) __builtin_expect(!!(x), 1)
#define PSKV__UNLIKELY(x) __builtin_expect(!!(x), 0)

/* A free index entry, spill-map entry, or slot. */
#define PSKV__SLOT_EMPTY UINT32_MAX

/* Internal invariants: checked in debug builds (PSKV_DEBUG, set for the
 * sanitizer builds of CI), compiled out in release builds. Never for
 * input a caller passed: that gets an error code. */
#ifdef PSKV_DEBUG
#include <stdio.h>
#include <stdlib.h>
#define PSKV__ASSERT(cond)                                                                  \
    ((cond) ? (void)0                                                                       \
            : (fprintf(stderr, "pskv: %s:%d: %s: invariant '%s' broken\n", __FILE__,        \
                       __LINE__, __func__, #cond),                                          \
               abort()))
#else
#define PSKV__ASSERT(cond) ((void)0)
#endif

/* Loops over rows that the compiler vectorizes: on x86-64 an AVX2 clone is
 * picked at load time (not in sanitizer builds: their runtimes are not
 * ready when the ifunc resolvers run). The clone computes the same bits:
 * no FMA is enabled, and ISO C mode does not contract. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(PSKV_NO_CLONES)
#define PSKV__KERNEL __attribute__((target_clones("avx2", "default")))
#else
#define PSKV__KERNEL
#endif

/* Monotonic nanoseconds, for time statistics. */
static inline uint64_t pskv__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Software prefetch of a row's bytes some keys before it is used: every
 * cache line from the first byte's to the last byte's (a row is rarely
 * line-aligned, so `bytes` spans one line more than bytes / 64). */
static inline void pskv__prefetch_row(const void *row, uint32_t bytes)
{
    /* A line every 64 bytes from the first, four to a turn, then the last
     * byte's line (the one more, or again the last: fewer instructions
     * than finding out). A turn a line took half the instructions of a
     * push's row pipeline. */
    const char *c = row, *last = c + bytes - 1;
    for (; c + 192 < last; c += 256) {
        __builtin_prefetch(c, 1, 3);
        __builtin_prefetch(c + 64, 1, 3);
        __builtin_prefetch(c + 128, 1, 3);
        __builtin_prefetch(c + 192, 1, 3);
    }
    for (; c < last; c += 64)
        __builtin_prefetch(c, 1, 3);
    __builtin_prefetch(last, 1, 3);
}

#endif
