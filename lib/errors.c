/* Error codes: messages and names, generated from PSKV_ERRNO_MAP.
 * SPDX-License-Identifier: BSD-2-Clause */
#include "pskv_internal.h"

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
