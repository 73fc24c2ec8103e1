/* Macros every file of lib/ uses: symbol visibility, branch hints, and the
 * debug-build assertion of internal invariants.
 * SPDX-License-Identifier: BSD-2-Clause */
#ifndef PSKV_COMMON_H
#define PSKV_COMMON_H

#include <stdint.h>

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

#endif
