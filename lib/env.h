/* A store directory's LMDB environment (env.c): opening it (as the owner,
 * or read-only beside the owner, as tools/pskv and the catalog do),
 * transactions, the data file's bounds, map growth, and restarting the
 * environment after LMDB gave up on it. It knows nothing of tables or
 * records (persist.c).
 * SPDX-License-Identifier: BSD-2-Clause */
#ifndef PSKV_ENV_H
#define PSKV_ENV_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "common.h"

struct MDB_env;
struct MDB_txn;

/* Internal result of LMDB writers: the map is full; grow it and retry. */
#define PSKV__MAP_FULL 1
/* The smallest map a store opens with. */
#define PSKV__MAP_MIN (64ull << 20)

typedef struct pskv__env {
    struct MDB_env *mdb; /* NULL: not open (a memory-only store) */
    const char *dir;     /* the store directory (borrowed) */
    uint32_t psize;      /* LMDB page size */
    const void *map_base; /* where LMDB mapped data.mdb (NULL: unknown) */
    /* Read transactions hold it shared; map growth and restarts exclusive. */
    pthread_rwlock_t lock;
    /* LMDB's environment is gone: a map grow failed half way (no map), or
     * restarting it after a fatal write failed; calls fail cleanly. */
    atomic_bool lost;
    atomic_uint_fast64_t n_grows, n_restarts, n_stale_readers;
    int mdb_rc; /* LMDB's own code of the last failed open (for messages) */
} pskv__env;

/* An LMDB or errno code as a PSKV_E* code. */
PSKV__HIDDEN int pskv__env_err(int rc);
/* The same for a write: MDB_MAP_FULL becomes PSKV__MAP_FULL. */
PSKV__HIDDEN int pskv__env_write_err(int rc);

/* Set up e for dir (borrowed; e->lock initialized); nothing opened yet. */
PSKV__HIDDEN void pskv__env_init(pskv__env *e, const char *dir);
/* Open dir's environment with a map of map bytes, as its owner (stale
 * reader slots cleared) or readonly. 0 or an error (e->mdb may be set:
 * pskv__env_close it). */
PSKV__HIDDEN int pskv__env_open(pskv__env *e, uint64_t map, bool readonly);
/* Open dir's environment read-only beside its owner (who may grow the
 * map meanwhile) and begin a read transaction: 0 with *txn, PSKV_ENOTFOUND
 * (no data file), PSKV_ECORRUPT (shorter than its pages), or an error. */
PSKV__HIDDEN int pskv__env_open_reader(pskv__env *e, struct MDB_txn **txn);
/* Close the environment (e stays initialized; e->lock is not destroyed). */
PSKV__HIDDEN void pskv__env_close(pskv__env *e);
PSKV__HIDDEN void pskv__env_destroy(pskv__env *e);

/* A transaction (PSKV__MAP_FULL when a write one finds the map full;
 * stale reader slots are cleared before a write one); PSKV_ENOMEM once a
 * failed grow has left LMDB without a map. */
PSKV__HIDDEN int pskv__env_txn_begin(pskv__env *e, bool write, struct MDB_txn **txn);

/* Run once(arg), a whole write transaction, until it stops asking for a
 * bigger map (PSKV__MAP_FULL), growing the map between tries; then a full
 * map is PSKV_ENOSPC, and so is a PSKV_EIO from a full disk (need: the
 * bytes the write wanted). */
PSKV__HIDDEN int pskv__env_write(pskv__env *e, int (*once)(void *arg), void *arg, uint64_t need);

/* 0 when dir/data.mdb holds every page env's meta page names, else
 * PSKV_ECORRUPT (a truncated file: reading it would fault). */
PSKV__HIDDEN int pskv__env_file_check(struct MDB_env *env, const char *dir);
/* Where this process mapped the file at data_path (one mapping of it at
 * offset 0), or NULL. */
PSKV__HIDDEN const void *pskv__env_map_find(const char *data_path);
/* The data file's pages as mapped: values are read only inside them (a
 * span of UINT64_MAX from base NULL when the map could not be found). */
PSKV__HIDDEN void pskv__env_file_span(pskv__env *e, const void **base, uint64_t *span);
/* Pages in use (the file's meaningful length); 0 when not open. */
PSKV__HIDDEN uint64_t pskv__env_file_bytes(pskv__env *e);
/* After a PSKV_EIO from a write into dir: is it really a full disk or a
 * file-size limit (LMDB reports short writes as EIO)? need: bytes wanted. */
PSKV__HIDDEN bool pskv__env_disk_full(const char *dir, uint64_t need);

/* Grow the map: to at least need bytes (0: as the growth policy says).
 * Takes e->lock exclusive. */
PSKV__HIDDEN int pskv__env_grow(pskv__env *e, uint64_t need);
/* Grow the map ahead so that `more` bytes fit past what is used (caller
 * holds the store's checkpoint lock: no other writer). */
PSKV__HIDDEN int pskv__env_reserve_map(pskv__env *e, uint64_t more);

/* After a failed write transaction: if LMDB marked its environment fatal
 * (a meta page write failed), close it and open it again from the file,
 * which holds the last commit, then call reopen(e, arg) (e->lock held
 * exclusive) to open the caller's database handles again with
 * pskv__env_dbi_reopen. 0 (also when nothing was wrong), or the error
 * (e->lost set). */
PSKV__HIDDEN int pskv__env_restart(pskv__env *e, int (*reopen)(pskv__env *e, void *arg),
                                   void *arg);
/* A database handle by name, opened again after a restart. */
PSKV__HIDDEN int pskv__env_dbi_reopen(pskv__env *e, const char *name, unsigned *dbi);

#endif
