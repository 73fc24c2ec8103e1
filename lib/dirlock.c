/* The directory lock: one owner per store directory. A store (durable or
 * scratch) and a backup writing into a directory each hold an exclusive
 * flock on <dir>/pskv.lock for as long as they use it.
 *
 * Rules kept here:
 *  - only the holder ever removes the lock file, and only while it still
 *    holds the lock (a scratch store on close): a failed lock attempt
 *    touches nothing;
 *  - a lock taken on a file that its holder removed meanwhile is worthless
 *    (the next opener creates a new file and locks that one): after the
 *    flock the path must still name the locked file, or we try again.
 * SPDX-License-Identifier: BSD-2-Clause */
#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pskv_internal.h"

#define LOCK_ATTEMPTS 64

static int lock_path(const char *dir, char *path, size_t len)
{
    return pskv__format(path, len, "%s/pskv.lock", dir) < 0 ? PSKV_EINVAL : 0;
}

int pskv__dir_lock(const char *dir, int *fd_out)
{
    char path[4096];
    *fd_out = -1;
    int rc = lock_path(dir, path, sizeof path);
    for (int attempt = 0; rc == 0 && attempt < LOCK_ATTEMPTS; attempt++) {
        int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0)
            return errno == ENOSPC || errno == EDQUOT ? PSKV_ENOSPC : PSKV_EIO;
        if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
            rc = errno == EWOULDBLOCK ? PSKV_EBUSY : PSKV_EIO;
            close(fd);
            return rc;
        }
        struct stat held, named;
        if (fstat(fd, &held) != 0) {
            close(fd);
            return PSKV_EIO;
        }
        if (stat(path, &named) == 0 && named.st_dev == held.st_dev &&
            named.st_ino == held.st_ino) {
            *fd_out = fd;
            return 0;
        }
        close(fd); /* its owner removed it as we locked it: lock the new one */
    }
    return rc != 0 ? rc : PSKV_EBUSY;
}

void pskv__dir_unlock(const char *dir, int fd, bool remove_file)
{
    if (fd < 0)
        return;
    char path[4096];
    if (remove_file && lock_path(dir, path, sizeof path) == 0)
        unlink(path); /* still held: no one else can have it */
    close(fd);
}
