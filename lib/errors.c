/* Error codes: messages and names, generated from PSKV_ERRNO_MAP.
 * SPDX-License-Identifier: BSD-2-Clause */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "errors.h"
#include "pskv.h"

const char *pskv_strerror(int err)
{
    if (err == 0)
        return "success";
    switch (err) {
#define PSKV__ERR_MSG(name, code, msg)                                         \
    case code:                                                                 \
        return msg;
        PSKV_ERRNO_MAP(PSKV__ERR_MSG)
#undef PSKV__ERR_MSG
    default:
        return "unknown error";
    }
}

const char *pskv_err_name(int err)
{
    if (err == 0)
        return "PSKV_OK";
    switch (err) {
#define PSKV__ERR_NAME(name, code, msg)                                        \
    case code:                                                                 \
        return "PSKV_" #name;
        PSKV_ERRNO_MAP(PSKV__ERR_NAME)
#undef PSKV__ERR_NAME
    default:
        return "PSKV_UNKNOWN";
    }
}

/* ---------------------------------------------------------------- details */

/* The detail of the last failed call of this thread (pskv_last_error). */
static _Thread_local char detail[512];

const char *pskv_last_error(void) { return detail; }

void pskv__detail_clear(void) { detail[0] = '\0'; }

int pskv__fail(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap); /* strings and integers only: no locale */
    va_end(ap);
    return code;
}

/* Edit distance (insertions, deletions, substitutions, adjacent swaps),
 * case-insensitive, of short words; larger than 3 counts as 3. */
static unsigned distance(const char *a, size_t la, const char *b)
{
    size_t lb = strlen(b);
    if (la > 40 || lb > 40)
        return 3;
    unsigned d[41][41];
    for (size_t i = 0; i <= la; i++)
        d[i][0] = (unsigned)i;
    for (size_t j = 0; j <= lb; j++)
        d[0][j] = (unsigned)j;
    for (size_t i = 1; i <= la; i++)
        for (size_t j = 1; j <= lb; j++) {
            unsigned cost = tolower((unsigned char)a[i - 1]) != tolower((unsigned char)b[j - 1]);
            unsigned v = d[i - 1][j] + 1;
            v = d[i][j - 1] + 1 < v ? d[i][j - 1] + 1 : v;
            v = d[i - 1][j - 1] + cost < v ? d[i - 1][j - 1] + cost : v;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                d[i - 2][j - 2] + 1 < v)
                v = d[i - 2][j - 2] + 1;
            d[i][j] = v;
        }
    return d[la][lb] < 3 ? d[la][lb] : 3;
}

const char *pskv__near(const char *word, size_t len, const char *const *names, int count)
{
    const char *best = NULL;
    unsigned best_d = 3;
    for (int i = 0; i < count; i++) {
        unsigned dd = distance(word, len, names[i]);
        /* A near miss: a case or a typo or two, never half the word. */
        if (dd < best_d && dd * 3 <= strlen(names[i])) {
            best = names[i];
            best_d = dd;
        }
    }
    return best;
}
