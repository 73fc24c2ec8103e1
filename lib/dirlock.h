/* The directory lock: one owner per store directory (dirlock.c).
 * SPDX-License-Identifier: BSD-2-Clause */
#ifndef PSKV_DIRLOCK_H
#define PSKV_DIRLOCK_H

#include <stdbool.h>

#include "common.h"

/* Exclusive flock on <dir>/pskv.lock: 0 with *fd, PSKV_EBUSY (another
 * owner) or PSKV_EIO; a failure leaves nothing behind. */
PSKV__HIDDEN int pskv__dir_lock(const char *dir, int *fd);
/* Does this process hold dir's lock (an open store, a backup)? */
PSKV__HIDDEN bool pskv__dir_held_here(const char *dir);
/* Release; remove_file deletes the lock file first (a scratch store). */
PSKV__HIDDEN void pskv__dir_unlock(const char *dir, int fd, bool remove_file);

#endif
