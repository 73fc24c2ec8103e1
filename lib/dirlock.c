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
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "array.h"
#include "dirlock.h"
#include "errors.h"
#include "options.h"
#include "pskv.h"

#define LOCK_ATTEMPTS 64

static int lock_path(const char *dir, char *path, size_t len)
{
    return pskv__format(path, len, "%s/pskv.lock", dir) < 0 ? PSKV_EINVAL : 0;
}

/* The lock files this process holds (device, inode): a reader that would
 * open LMDB beside an owner asks first, since a second environment on one
 * file in one process breaks LMDB's locks. */
static pthread_mutex_t held_lock = PTHREAD_MUTEX_INITIALIZER;
static struct held {
    dev_t dev;
    ino_t ino;
} *held;
static uint32_t nheld, held_cap;

static void held_note(const struct stat *st, bool add)
{
    pthread_mutex_lock(&held_lock);
    if (add) {
        struct held *grown = pskv__array_grow(held, &held_cap, nheld + 1ull, sizeof *held, 4);
        if (grown != NULL) { /* without room the check is weaker, not wrong */
            held = grown;
            held[nheld++] = (struct held){st->st_dev, st->st_ino};
        }
    } else {
        for (uint32_t i = 0; i < nheld; i++)
            if (held[i].dev == st->st_dev && held[i].ino == st->st_ino) {
                held[i] = held[--nheld];
                break;
            }
        if (nheld == 0) {
            free(held);
            held = NULL;
            held_cap = 0;
        }
    }
    pthread_mutex_unlock(&held_lock);
}

bool pskv__dir_held_here(const char *dir)
{
    char path[4096];
    struct stat st;
    if (lock_path(dir, path, sizeof path) != 0 || stat(path, &st) != 0)
        return false;
    bool found = false;
    pthread_mutex_lock(&held_lock);
    for (uint32_t i = 0; i < nheld && !found; i++)
        found = held[i].dev == st.st_dev && held[i].ino == st.st_ino;
    pthread_mutex_unlock(&held_lock);
    return found;
}

/* The detail of PSKV_EBUSY: this process, or the pid the owner wrote. */
static void busy_detail(const char *dir, int fd)
{
    if (pskv__dir_held_here(dir)) {
        pskv__fail(PSKV_EBUSY, "'%s' is already open in this process (one owner per store "
                               "directory; share that pskv_store)", dir);
        return;
    }
    char buf[24] = "";
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    long pid = n > 0 ? strtol(buf, NULL, 10) : 0;
    if (pid > 0)
        pskv__fail(PSKV_EBUSY, "'%s' is owned by another process (pid %ld): one process at a "
                               "time opens a store directory; tools/pskv reads beside it", dir,
                   pid);
    else
        pskv__fail(PSKV_EBUSY, "'%s' is owned by another process (a store or a backup writing "
                               "there): one process at a time opens a store directory", dir);
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
            if (rc == PSKV_EBUSY)
                busy_detail(dir, fd);
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
            held_note(&held, true);
            /* Who owns it, for a second opener's error message. */
            char pid[24];
            int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
            if (ftruncate(fd, 0) == 0 && pwrite(fd, pid, (size_t)n, 0) != n) {
                /* only a message is lost */
            }
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
    struct stat st;
    if (fstat(fd, &st) == 0)
        held_note(&st, false);
    if (remove_file && lock_path(dir, path, sizeof path) == 0)
        unlink(path); /* still held: no one else can have it */
    close(fd);
}
