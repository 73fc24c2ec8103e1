/* Backups: a compacted copy of the last committed checkpoint into a
 * directory, written while the store goes on (pskv_backup, and the tool's
 * `pskv backup` on an environment it opened read-only).
 *
 * Rules kept here:
 *  - the destination is claimed before anything is written: its directory
 *    lock (so a running store there, or a second backup, gets PSKV_EBUSY);
 *    a data.mdb already there, or the pskv.seq of a store whose data file
 *    is gone, gives PSKV_EEXIST;
 *  - a backup appears whole or not at all: the copy is written into
 *    <dest>/backup.partial/, synced, opened and checked like a store, then
 *    its seq is written to <dest>/pskv.seq (so that an open refuses the
 *    directory if the data file is later lost or emptied), and only then
 *    is the copy renamed to <dest>/data.mdb and the directory synced;
 *  - what a killed backup leaves (backup.partial, and pskv.seq or that
 *    write's temporary when it died between that write and the rename) is
 *    its own: a retried backup removes it and starts over, and pskv_open
 *    refuses a directory that holds it without a data.mdb (persist.c),
 *    never taking it for new;
 *  - a failed backup removes only what it created.
 * SPDX-License-Identifier: BSD-2-Clause */
#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backup.h"
#include "dirlock.h"
#include "errors.h"
#include "persist.h"
#include "pskv_internal.h"
#include "seqfile.h"

#define PARTIAL "backup.partial"

/* Remove a killed backup's remains (the lock held, no data.mdb). The
 * pskv.seq it wrote goes first (durably), backup.partial last: while
 * anything of it is left, backup.partial says whose it is, so a retry
 * killed inside this cleanup still leaves remains the next retry clears. */
static void partial_remove(const char *dest_dir, bool with_seq)
{
    char path[4096];
    if (with_seq)
        pskv__seqfile_remove(dest_dir);
    static const char *const files[] = {PARTIAL "/data.mdb", PARTIAL "/lock.mdb"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++)
        if (pskv__dir_path(dest_dir, files[i], path, sizeof path) == 0)
            (void)unlink(path);
    if (pskv__dir_path(dest_dir, PARTIAL, path, sizeof path) == 0)
        (void)rmdir(path);
    (void)pskv__dir_sync(dest_dir);
}

/* The copy into <dest>/backup.partial/data.mdb, synced; *seq: the
 * checkpoint it holds, read back from it as an open would. */
static int copy_partial(struct MDB_env *env, const char *dest_dir, uint64_t *seq)
{
    char dir[4096], path[4096];
    if (pskv__dir_path(dest_dir, PARTIAL, dir, sizeof dir) != 0 ||
        pskv__dir_path(dir, "data.mdb", path, sizeof path) != 0)
        return PSKV_EINVAL;
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        return pskv__file_err(errno);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return pskv__file_err(errno);
    /* Its own read transaction: the last committed checkpoint. */
    int rc = pskv__env_err(mdb_env_copyfd2(env, fd, MDB_CP_COMPACT));
    if (rc == 0 && fsync(fd) != 0)
        rc = pskv__file_err(errno);
    if (rc == PSKV_EIO && pskv__env_disk_full(dest_dir, 0))
        rc = PSKV_ENOSPC;
    close(fd);
    pskv_store *copy = NULL;
    if (rc == 0)
        rc = pskv__persist_reader(dir, &copy);
    if (rc == 0)
        *seq = copy->ckpt_seq;
    pskv__persist_reader_close(copy);
    return rc == PSKV_ENOTFOUND ? PSKV_EIO : rc;
}

int pskv__backup_env(struct MDB_env *env, const char *dest_dir)
{
    if (mkdir(dest_dir, 0755) != 0 && errno != EEXIST)
        return pskv__file_err(errno);
    struct stat st;
    if (stat(dest_dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return pskv__fail(PSKV_EINVAL, "backup: '%s' is not a directory", dest_dir);
    int lock_fd;
    int rc = pskv__dir_lock(dest_dir, &lock_fd);
    if (rc != 0)
        return rc; /* a store or another backup owns it */
    bool remains = pskv__dir_has(dest_dir, PARTIAL);
    if (pskv__dir_has(dest_dir, "data.mdb"))
        rc = pskv__fail(PSKV_EEXIST, "backup: '%s' holds a store already", dest_dir);
    else if (!remains && pskv__seqfile_exists(dest_dir))
        rc = pskv__fail(PSKV_EEXIST, "backup: '%s' holds the pskv.seq of a store whose data.mdb "
                                     "is gone", dest_dir);
    if (rc == 0 && remains)
        partial_remove(dest_dir, true); /* a killed backup's: start over */
    uint64_t seq = 0;
    if (rc == 0)
        rc = copy_partial(env, dest_dir, &seq);
    bool seq_written = false;
    if (rc == 0) {
        rc = pskv__seqfile_write(dest_dir, seq);
        seq_written = rc == 0;
    }
    char from[4096], to[4096];
    if (rc == 0 && (pskv__dir_path(dest_dir, PARTIAL "/data.mdb", from, sizeof from) != 0 ||
                    pskv__dir_path(dest_dir, "data.mdb", to, sizeof to) != 0))
        rc = PSKV_EINVAL;
    if (rc == 0 && rename(from, to) != 0)
        rc = pskv__file_err(errno);
    if (rc == 0 && pskv__dir_sync(dest_dir) != 0)
        rc = PSKV_EIO;
    if (rc == 0 || !pskv__dir_has(dest_dir, "data.mdb"))
        partial_remove(dest_dir, rc != 0 && seq_written);
    /* The destination is a durable store now (or nothing): it keeps its
     * lock file. */
    pskv__dir_unlock(dest_dir, lock_fd, false);
    return rc;
}

void pskv__backup_abandon(const char *dest_dir)
{
    int lock_fd;
    if (pskv__dir_lock(dest_dir, &lock_fd) != 0)
        return;
    if (pskv__dir_has(dest_dir, PARTIAL) && !pskv__dir_has(dest_dir, "data.mdb"))
        partial_remove(dest_dir, true);
    pskv__dir_unlock(dest_dir, lock_fd, false);
}

int pskv__backup_unfinished(const char *dir)
{
    if (!pskv__dir_has(dir, PARTIAL))
        return 0;
    if (pskv__dir_has(dir, "data.mdb")) {
        /* The rename happened: only the emptied directory is left. */
        partial_remove(dir, false);
        return 0;
    }
    return pskv__fail(PSKV_ECORRUPT, "'%s' holds an unfinished backup (its writer was killed "
                                     "before the copy was whole): run the backup again",
                      dir);
}

int pskv_backup(pskv_store *s, const char *dest_dir)
{
    pskv__detail_clear();
    if (s == NULL || dest_dir == NULL || dest_dir[0] == '\0')
        return PSKV_EINVAL;
    if (s->lmdb.mdb == NULL)
        return PSKV_ENOTSUP; /* nothing persisted: memory-only or scratch */
    pthread_rwlock_rdlock(&s->lmdb.lock);
    int rc = pskv__backup_env(s->lmdb.mdb, dest_dir);
    pthread_rwlock_unlock(&s->lmdb.lock);
    return rc;
}
