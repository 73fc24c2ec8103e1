/* The calling thread's error detail (pskv_last_error) and the "did you
 * mean" helper of config parsing (errors.c).
 * SPDX-License-Identifier: BSD-2-Clause */
#ifndef PSKV_ERRORS_H
#define PSKV_ERRORS_H

#include <stddef.h>

#include "common.h"

/* The calling thread's detail message (pskv_last_error): cleared at the
 * start of the calls that can set one; pskv__fail sets it and returns code. */
PSKV__HIDDEN void pskv__detail_clear(void);
PSKV__HIDDEN int pskv__fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The name in names[count] that word[len] is a near miss of, or NULL. */
PSKV__HIDDEN const char *pskv__near(const char *word, size_t len, const char *const *names,
                                    int count);

#endif
