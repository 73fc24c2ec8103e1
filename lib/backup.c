/* Backups: a compacted copy of the last committed checkpoint into a
 * directory, written while the store goes on (pskv_backup, and the tool's
 * `pskv backup` on an environment it opened read-only).
 *
 * Rules kept here:
 *  - the destination is claimed before anything is written: its directory
 *    lock (so a running store there, or a second backup, gets PSKV_EBUSY)
 *    and then data.mdb created exclusively (a store already there gets
 *    PSKV_EEXIST);
 *  - a failed backup removes only the file it created itself;
 *  - the copy is on disk (fsync) before the call reports success.
 * SPDX-License-Identifier: BSD-2-Clause */
#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pskv_internal.h"

int pskv__backup_env(struct MDB_env *env, const char *dest_dir)
{
    if (mkdir(dest_dir, 0755) != 0 && errno != EEXIST)
        return errno == ENOSPC ? PSKV_ENOSPC : PSKV_EIO;
    struct stat st;
    if (stat(dest_dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return PSKV_EINVAL;
    int lock_fd;
    int rc = pskv__dir_lock(dest_dir, &lock_fd);
    if (rc != 0)
        return rc; /* a store or another backup owns it */
    char path[4096];
    int fd = -1;
    if (pskv__format(path, sizeof path, "%s/data.mdb", dest_dir) < 0)
        rc = PSKV_EINVAL;
    if (rc == 0) {
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0)
            rc = errno == EEXIST ? PSKV_EEXIST : errno == ENOSPC ? PSKV_ENOSPC : PSKV_EIO;
    }
    if (rc == 0) {
        /* Its own read transaction: the last committed checkpoint. */
        rc = pskv__persist_err(mdb_env_copyfd2(env, fd, MDB_CP_COMPACT));
        if (rc == 0 && fsync(fd) != 0)
            rc = errno == ENOSPC ? PSKV_ENOSPC : PSKV_EIO;
        if (rc == PSKV_EIO && pskv__persist_disk_full(dest_dir, 0))
            rc = PSKV_ENOSPC;
        close(fd);
        if (rc != 0)
            unlink(path); /* ours: no half copy that looks like a store */
    }
    /* The destination is a durable store now: it keeps its lock file. */
    pskv__dir_unlock(dest_dir, lock_fd, false);
    return rc;
}

int pskv_backup(pskv_store *s, const char *dest_dir)
{
    pskv__detail_clear();
    if (s == NULL || dest_dir == NULL || dest_dir[0] == '\0')
        return PSKV_EINVAL;
    if (s->env == NULL)
        return PSKV_ENOTSUP; /* nothing persisted: memory-only or scratch */
    pthread_rwlock_rdlock(&s->env_lock);
    int rc = pskv__backup_env(s->env, dest_dir);
    pthread_rwlock_unlock(&s->env_lock);
    return rc;
}
