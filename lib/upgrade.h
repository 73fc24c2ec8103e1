/* The format upgrade of an older store (upgrade.c).
 * SPDX-License-Identifier: BSD-2-Clause */
#ifndef PSKV_UPGRADE_H
#define PSKV_UPGRADE_H

#include <stdint.h>

#include "pskv_internal.h"

/* Upgrade the open store s of format version (PSKV_FMT_VERSION_MIN ..
 * PSKV_FMT_VERSION - 1) to PSKV_FMT_VERSION: 0 or an error (the store
 * keeps the format of its last finished step). */
PSKV__HIDDEN int pskv__upgrade(pskv_store *s, uint32_t version);

#endif
