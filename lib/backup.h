/* Backups of a store's LMDB environment (backup.c).
 * SPDX-License-Identifier: BSD-2-Clause */
#ifndef PSKV_BACKUP_H
#define PSKV_BACKUP_H

#include "common.h"

struct MDB_env;
/* Compacted copy of env's last commit into dest_dir (backup.c). */
PSKV__HIDDEN int pskv__backup_env(struct MDB_env *env, const char *dest_dir);
/* Remove what a killed backup left in dest_dir (when no data.mdb is there
 * and no one holds its lock). */
PSKV__HIDDEN void pskv__backup_abandon(const char *dest_dir);
/* 0, or PSKV_ECORRUPT when dir holds a killed backup's remains and no data
 * file: an open must not take it for a new store. */
PSKV__HIDDEN int pskv__backup_unfinished(const char *dir);

#endif
