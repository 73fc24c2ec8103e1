/* Run-time version of the linked library.
 * SPDX-License-Identifier: BSD-2-Clause */
#include "pskv_internal.h"

unsigned pskv_version(void) { return PSKV_VERSION_NUMBER; }

const char *pskv_version_string(void) { return PSKV_VERSION_STRING; }
