/* A store directory's LMDB environment: open (owner or read-only reader),
 * transactions, the mapped file's bounds, map growth, restart after LMDB
 * gave up. Used by persist.c (through the store's `lmdb`) and by
 * tools/pskv, which opens stores read-only beside their owner.
 *
 * Rules kept here (docs/DESIGN.md, "Persistence"):
 *  - no MDB_NOSYNC, MDB_NOMETASYNC or MDB_WRITEMAP: a commit is on disk
 *    when mdb_txn_commit returns;
 *  - MDB_NOTLS: read transactions are not tied to threads (callers use
 *    thread pools);
 *  - stale reader slots of dead processes (a `pskv dump` killed inside its
 *    read transaction) are cleared at open and before every write
 *    transaction: LMDB reuses no page freed after the oldest reader's
 *    snapshot, so one dead reader would make the file grow for good;
 *  - every value read through the map is bounded by the data file first
 *    (LMDB does not check its node sizes): pskv__env_file_span;
 *  - the map only grows while no read transaction of this process is open
 *    (lock exclusive); readers hold the lock shared; a grow is tried only
 *    when the address space for it is there.
 * SPDX-License-Identifier: BSD-2-Clause */
#include <errno.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "env.h"
#include "errors.h"
#include "format.h"
#include "pskv.h"
#include "options.h"

int pskv__env_err(int rc)
{
    switch (rc) {
    case 0:
        return 0;
    case MDB_NOTFOUND:
        return PSKV_ENOTFOUND;
    case MDB_MAP_FULL:
    case ENOSPC:
    case EDQUOT:
    case EFBIG: /* RLIMIT_FSIZE (with SIGXFSZ ignored) */
        return PSKV_ENOSPC;
    case MDB_INVALID:
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
    case MDB_PANIC:
        return PSKV_ECORRUPT;
    case MDB_VERSION_MISMATCH:
        return PSKV_EVERSION;
    case MDB_DBS_FULL:
        return PSKV_ERANGE;
    case MDB_READERS_FULL:
    case EAGAIN:
    case EBUSY:
        return PSKV_EBUSY;
    case ENOMEM:
        return PSKV_ENOMEM;
    default:
        return PSKV_EIO;
    }
}

int pskv__env_write_err(int rc) { return rc == MDB_MAP_FULL ? PSKV__MAP_FULL : pskv__env_err(rc); }

void pskv__env_init(pskv__env *e, const char *dir)
{
    memset(e, 0, sizeof *e);
    e->dir = dir;
    pthread_rwlock_init(&e->lock, NULL);
}

static int data_path(const pskv__env *e, char *path, size_t len)
{
    return pskv__format(path, len, "%s/data.mdb", e->dir) < 0 ? PSKV_EINVAL : 0;
}

/* Clear the reader slots of dead processes (the owner only: a read-only
 * reader may not write the lock file's table). */
static void readers_clear_stale(pskv__env *e)
{
    int dead = 0;
    if (mdb_reader_check(e->mdb, &dead) == 0 && dead > 0)
        atomic_fetch_add(&e->n_stale_readers, (uint64_t)dead);
}

int pskv__env_open(pskv__env *e, uint64_t map, bool readonly)
{
    PSKV__ASSERT(e->mdb == NULL);
    int rc = pskv__env_err(mdb_env_create(&e->mdb));
    if (rc != 0)
        return rc;
    mdb_env_set_maxdbs(e->mdb, PSKV_FMT_MAX_TABLES + 1 + PSKV_UNDO_KEEP_MAX); /* + meta, undo */
    mdb_env_set_maxreaders(e->mdb, 1024);
    mdb_env_set_mapsize(e->mdb, (size_t)map);
    e->mdb_rc = mdb_env_open(e->mdb, e->dir, MDB_NOTLS | (readonly ? MDB_RDONLY : 0), 0644);
    rc = pskv__env_err(e->mdb_rc);
    if (rc != 0)
        return rc;
    if (!readonly)
        readers_clear_stale(e); /* slots of crashed processes */
    MDB_stat est;
    if (mdb_env_stat(e->mdb, &est) != 0)
        return PSKV_EIO;
    e->psize = est.ms_psize;
    char path[4096];
    if (data_path(e, path, sizeof path) == 0)
        e->map_base = pskv__env_map_find(path);
    return 0;
}

int pskv__env_open_reader(pskv__env *e, MDB_txn **txn)
{
    char path[4096];
    struct stat fst;
    *txn = NULL;
    if (data_path(e, path, sizeof path) != 0)
        return PSKV_EINVAL;
    if (stat(path, &fst) != 0)
        return errno == ENOENT ? PSKV_ENOTFOUND : PSKV_EIO;
    if (fst.st_size < 2 * 4096)
        return PSKV_ECORRUPT; /* not even two meta pages */
    /* The owner may grow the map meanwhile: a map twice the file, and
     * LMDB's own size when it says the map was resized. */
    int rc = pskv__env_open(e, (uint64_t)fst.st_size * 2 + PSKV__MAP_MIN, true);
    if (rc == 0)
        rc = pskv__env_file_check(e->mdb, e->dir);
    if (rc != 0)
        return rc;
    int mrc = mdb_txn_begin(e->mdb, NULL, MDB_RDONLY, txn);
    if (mrc == MDB_MAP_RESIZED && mdb_env_set_mapsize(e->mdb, 0) == 0) {
        mrc = mdb_txn_begin(e->mdb, NULL, MDB_RDONLY, txn);
        char path[4096];
        if (mrc == 0 && data_path(e, path, sizeof path) == 0)
            e->map_base = pskv__env_map_find(path); /* the map was made anew: it may move */
    }
    e->mdb_rc = mrc;
    return pskv__env_err(mrc);
}

void pskv__env_close(pskv__env *e)
{
    if (e->mdb != NULL)
        mdb_env_close(e->mdb);
    e->mdb = NULL;
}

void pskv__env_destroy(pskv__env *e)
{
    pskv__env_close(e);
    pthread_rwlock_destroy(&e->lock);
}

int pskv__env_txn_begin(pskv__env *e, bool write, MDB_txn **txn)
{
    if (atomic_load(&e->lost))
        return PSKV_ENOMEM; /* a failed grow left LMDB without a map */
    if (write)
        readers_clear_stale(e);
    return pskv__env_write_err(mdb_txn_begin(e->mdb, NULL, write ? 0 : MDB_RDONLY, txn));
}

/* Tries of one write before a full map is given up as PSKV_ENOSPC. */
#define MAP_RETRIES 16

int pskv__env_write(pskv__env *e, int (*once)(void *arg), void *arg, uint64_t need)
{
    int rc;
    for (int attempt = 0;; attempt++) {
        rc = once(arg);
        if (rc != PSKV__MAP_FULL || attempt == MAP_RETRIES)
            break;
        rc = pskv__env_grow(e, 0); /* a full map: grow it and write again */
        if (rc != 0)
            break;
    }
    if (rc == PSKV_EIO && pskv__env_disk_full(e->dir, need))
        rc = PSKV_ENOSPC;
    return rc == PSKV__MAP_FULL ? PSKV_ENOSPC : rc;
}

/* ---------------------------------------------------------------- the file's bounds */

/* The data file must hold every page its meta page names: a truncated file
 * would otherwise fault (SIGBUS) on first access through the map. */
int pskv__env_file_check(struct MDB_env *env, const char *dir)
{
    MDB_envinfo info;
    MDB_stat st;
    struct stat fst;
    char path[4096];
    if (mdb_env_info(env, &info) != 0 || mdb_env_stat(env, &st) != 0)
        return PSKV_EIO;
    if (pskv__format(path, sizeof path, "%s/data.mdb", dir) < 0 || stat(path, &fst) != 0)
        return PSKV_EIO;
    if ((uint64_t)fst.st_size < ((uint64_t)info.me_last_pgno + 1) * st.ms_psize)
        return PSKV_ECORRUPT;
    return 0;
}

const void *pskv__env_map_find(const char *data_path)
{
    /* LMDB does not say where it mapped the file: find the mapping of
     * that inode. Called at open and after a grow (a remap may move). */
    struct stat st;
    if (stat(data_path, &st) != 0)
        return NULL;
    FILE *f = fopen("/proc/self/maps", "re");
    if (f == NULL)
        return NULL;
    char line[4352];
    uintptr_t found = 0;
    int matches = 0;
    while (fgets(line, sizeof line, f) != NULL) {
        unsigned long start, end, off, ino;
        unsigned maj, min;
        char perms[8];
        if (sscanf(line, "%lx-%lx %7s %lx %x:%x %lu", &start, &end, perms, &off, &maj, &min,
                   &ino) != 7)
            continue;
        if (ino == (unsigned long)st.st_ino && makedev(maj, min) == st.st_dev && off == 0) {
            found = start;
            matches++;
        }
    }
    fclose(f);
    return matches == 1 ? (const void *)found : NULL; /* two maps of it: unknown */
}

void pskv__env_file_span(pskv__env *e, const void **base, uint64_t *span)
{
    MDB_envinfo info;
    *base = NULL;
    *span = UINT64_MAX;
    if (e->map_base != NULL && mdb_env_info(e->mdb, &info) == 0) {
        *base = e->map_base;
        *span = ((uint64_t)info.me_last_pgno + 1) * e->psize;
    }
}

/* Pages in use; 0 when unknown. Caller holds e->lock (no grow meanwhile). */
static uint64_t used_bytes(pskv__env *e, uint64_t *map_size)
{
    MDB_envinfo info;
    MDB_stat st;
    if (e->mdb == NULL || atomic_load(&e->lost) || mdb_env_info(e->mdb, &info) != 0 ||
        mdb_env_stat(e->mdb, &st) != 0)
        return 0;
    if (map_size != NULL)
        *map_size = info.me_mapsize;
    return ((uint64_t)info.me_last_pgno + 1) * st.ms_psize;
}

uint64_t pskv__env_file_bytes(pskv__env *e)
{
    if (e->mdb == NULL)
        return 0;
    pthread_rwlock_rdlock(&e->lock);
    uint64_t used = used_bytes(e, NULL);
    pthread_rwlock_unlock(&e->lock);
    return used;
}

bool pskv__env_disk_full(const char *dir, uint64_t need)
{
    /* LMDB reports a short write (a full disk, a file-size limit) as EIO:
     * tell those apart by what is left. */
    struct statvfs vfs;
    uint64_t margin = need + (1u << 20);
    if (statvfs(dir, &vfs) == 0 && (uint64_t)vfs.f_bavail * vfs.f_frsize < margin)
        return true;
    struct rlimit lim;
    char path[4096];
    struct stat st;
    return getrlimit(RLIMIT_FSIZE, &lim) == 0 && lim.rlim_cur != RLIM_INFINITY &&
           pskv__format(path, sizeof path, "%s/data.mdb", dir) >= 0 && stat(path, &st) == 0 &&
           (uint64_t)st.st_size + margin > (uint64_t)lim.rlim_cur;
}

/* ---------------------------------------------------------------- map growth */

/* Is there address space for `more` bytes of new mapping? LMDB unmaps the
 * old map before it maps the grown one and has no way back when that
 * fails, so a grow is only attempted when it will fit (RLIMIT_AS, or an
 * exhausted address space). */
static bool address_space_for(uint64_t more)
{
    if (more == 0)
        return true;
    void *probe = mmap(NULL, (size_t)more, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                       -1, 0);
    if (probe == MAP_FAILED)
        return false;
    munmap(probe, (size_t)more);
    return true;
}

int pskv__env_grow(pskv__env *e, uint64_t need)
{
    MDB_envinfo info;
    pthread_rwlock_wrlock(&e->lock);
    int rc = atomic_load(&e->lost) ? PSKV_ENOMEM : pskv__env_err(mdb_env_info(e->mdb, &info));
    if (rc == 0) {
        /* Four times the map when the address space is there, else twice,
         * else what is needed: each grow unmaps the whole map, which holds
         * the process's mmap lock (every page fault of every thread waits:
         * 0.1-0.2 s for a 7-28 GB map, measured), so grows should be few. */
        long page = sysconf(_SC_PAGESIZE);
        uint64_t size = 0;
        for (unsigned factor = 4; factor >= 1 && size == 0; factor /= 2) {
            uint64_t want = factor > 1 ? (uint64_t)info.me_mapsize * factor : need;
            want = want < need ? need : want;
            want = (want + (uint64_t)page - 1) / (uint64_t)page * (uint64_t)page;
            if (factor == 1 || address_space_for(want - (uint64_t)info.me_mapsize))
                size = want;
        }
        if (!address_space_for(size - (uint64_t)info.me_mapsize)) {
            rc = PSKV_ENOMEM; /* the old map stays as it was */
        } else {
            int mrc = mdb_env_set_mapsize(e->mdb, (size_t)size);
            /* Lost the race for the address space after all: LMDB has no
             * map now, and every later call fails with PSKV_ENOMEM. */
            if (mrc != 0 && mrc != EINVAL)
                atomic_store(&e->lost, true);
            rc = pskv__env_err(mrc);
        }
        char path[4096];
        if (rc == 0 && data_path(e, path, sizeof path) == 0)
            e->map_base = pskv__env_map_find(path); /* the map may have moved */
        if (rc == 0)
            atomic_fetch_add(&e->n_grows, 1);
    }
    pthread_rwlock_unlock(&e->lock);
    return rc;
}

int pskv__env_reserve_map(pskv__env *e, uint64_t more)
{
    uint64_t map = 0, used = used_bytes(e, &map);
    if (used == 0)
        return atomic_load(&e->lost) ? PSKV_ENOMEM : PSKV_EIO;
    if (used + more <= map)
        return 0;
    return pskv__env_grow(e, used + more);
}

/* ---------------------------------------------------------------- restart */

int pskv__env_dbi_reopen(pskv__env *e, const char *name, unsigned *dbi)
{
    MDB_txn *txn;
    MDB_dbi d;
    int rc = pskv__env_err(mdb_txn_begin(e->mdb, NULL, MDB_RDONLY, &txn));
    if (rc != 0)
        return rc;
    rc = pskv__env_err(mdb_dbi_open(txn, name, 0, &d));
    if (rc == 0)
        rc = pskv__env_err(mdb_txn_commit(txn)); /* keeps the handle */
    else
        mdb_txn_abort(txn);
    if (rc == 0)
        *dbi = d;
    return rc == PSKV_ENOTFOUND ? PSKV_ECORRUPT : rc;
}

int pskv__env_restart(pskv__env *e, int (*reopen)(pskv__env *e, void *arg), void *arg)
{
    MDB_txn *probe;
    if (atomic_load(&e->lost))
        return PSKV_EIO;
    int rc = mdb_txn_begin(e->mdb, NULL, MDB_RDONLY, &probe);
    if (rc == 0)
        mdb_txn_abort(probe);
    if (rc != MDB_PANIC)
        return 0;
    /* LMDB gave up on this environment (a failed meta page write); the
     * file holds the last commit. No transaction of the caller's is open:
     * readers wait on the lock, writers on the caller's write lock. */
    pthread_rwlock_wrlock(&e->lock);
    MDB_envinfo info;
    uint64_t map = mdb_env_info(e->mdb, &info) == 0 ? info.me_mapsize : PSKV__MAP_MIN;
    pskv__env_close(e);
    rc = pskv__env_open(e, map, false);
    if (rc == 0)
        rc = reopen(e, arg);
    if (rc != 0)
        atomic_store(&e->lost, true); /* every later call: a clean error */
    if (rc == 0)
        atomic_fetch_add(&e->n_restarts, 1);
    pthread_rwlock_unlock(&e->lock);
    return rc;
}
