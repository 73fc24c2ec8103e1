/* Compaction in place: data.mdb rewritten without its free pages, between
 * runs (pskv_compact, `pskv compact DIR`).
 *
 * LMDB copies on write: a checkpoint that changes a tenth of a table's rows
 * rewrites about half of its leaf pages, and the pages the last
 * transaction freed cannot be reused by the next one, so the file settles
 * at about the live tree plus two checkpoints' worth of pages (docs/
 * DESIGN.md, "Data file size"). A compacted copy (LMDB's own
 * mdb_env_copyfd2 with MDB_CP_COMPACT) holds only the live pages.
 *
 * Steps, each crash-safe:
 *   1. the directory lock (no owner; a running store gets PSKV_EBUSY);
 *   2. the last commit copied compactly to data.mdb.compact, fsynced;
 *   3. lock.mdb removed: LMDB's lock file keeps the last transaction id,
 *      and the compacted file restarts its ids, so the next opener must
 *      build a fresh one from the new file;
 *   4. data.mdb.compact renamed over data.mdb, the directory fsynced.
 * A crash before 4 leaves the old data.mdb (the next compaction removes
 * the stale copy); after it, the new one. The checkpoint seq, rows,
 * metadata and undo are the same in both: pskv.seq needs no change.
 * SPDX-License-Identifier: BSD-2-Clause */
#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dirlock.h"
#include "errors.h"
#include "persist.h"
#include "pskv_internal.h"
#include "seqfile.h"

static int file_size(const char *path, uint64_t *bytes)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return errno == ENOENT ? PSKV_ENOTFOUND : PSKV_EIO;
    *bytes = (uint64_t)st.st_size;
    return 0;
}

/* Step 2: the compact copy of dir's last commit into tmp. */
static int copy_compact(const char *dir, const char *tmp)
{
    pskv_store *s = NULL;
    int rc = pskv__persist_reader(dir, &s);
    int fd = -1;
    if (rc == 0) {
        unlink(tmp); /* a copy a crashed compaction left */
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0)
            rc = errno == ENOSPC ? PSKV_ENOSPC : PSKV_EIO;
    }
    if (rc == 0)
        rc = pskv__env_err(mdb_env_copyfd2(s->lmdb.mdb, fd, MDB_CP_COMPACT));
    if (rc == 0 && fsync(fd) != 0)
        rc = errno == ENOSPC ? PSKV_ENOSPC : PSKV_EIO;
    if (rc == PSKV_EIO && pskv__env_disk_full(dir, 0))
        rc = PSKV_ENOSPC;
    if (fd >= 0)
        close(fd);
    if (rc != 0 && fd >= 0)
        unlink(tmp);
    pskv__persist_reader_close(s);
    return rc;
}

int pskv_compact(const char *dir, uint64_t *before, uint64_t *after)
{
    pskv__detail_clear();
    if (dir == NULL || dir[0] == '\0')
        return pskv__fail(PSKV_EINVAL, "no directory");
    if (pskv__dir_held_here(dir))
        return pskv__fail(PSKV_EBUSY, "'%s' is open in this process: close the store first "
                                      "(compaction runs between runs)", dir);
    char data[4096], tmp[4096], lockf[4096];
    int rc = pskv__dir_path(dir, "data.mdb", data, sizeof data);
    if (rc == 0)
        rc = pskv__dir_path(dir, "data.mdb.compact", tmp, sizeof tmp);
    if (rc == 0)
        rc = pskv__dir_path(dir, "lock.mdb", lockf, sizeof lockf);
    uint64_t was = 0, now = 0;
    if (rc == 0 && (rc = file_size(data, &was)) == PSKV_ENOTFOUND)
        return pskv__fail(rc, "no store in '%s' (no data.mdb)", dir);
    if (rc != 0)
        return rc;
    int lock_fd;
    rc = pskv__dir_lock(dir, &lock_fd); /* its detail names the owner */
    if (rc != 0)
        return rc;
    rc = copy_compact(dir, tmp);
    if (rc == 0 && unlink(lockf) != 0 && errno != ENOENT)
        rc = PSKV_EIO;
    if (rc == 0 && rename(tmp, data) != 0)
        rc = PSKV_EIO;
    if (rc == 0)
        rc = pskv__dir_sync(dir);
    if (rc != 0)
        unlink(tmp); /* the old data.mdb stays */
    if (rc == 0)
        rc = file_size(data, &now);
    pskv__dir_unlock(dir, lock_fd, false);
    if (rc == 0 && before != NULL)
        *before = was;
    if (rc == 0 && after != NULL)
        *after = now;
    return rc;
}
