/* pskv.seq: pskv's own checked copy of a durable store's last committed
 * checkpoint seq, beside data.mdb. LMDB's meta pages carry no checksum,
 * and one flipped bit in a txnid makes LMDB open an older snapshot without
 * a word; a store whose seq is behind this file's went backwards and is
 * refused (PSKV_ECORRUPT). The layout is in format.h.
 *
 * Rules kept here:
 *  - written after each commit (the store may be ahead of the file by the
 *    commit a crash interrupted, never behind it), by write, fsync, rename
 *    and a directory fsync, so the file is always whole;
 *  - a store created by this release writes it at creation, so a data file
 *    that is empty or gone while the file exists is damage, not a new store.
 * SPDX-License-Identifier: BSD-2-Clause */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include "format.h"
#include "pskv_internal.h"

static int seq_path(const char *dir, const char *name, char *buf, size_t len)
{
    return pskv__format(buf, len, "%s/%s", dir, name) < 0 ? PSKV_EINVAL : 0;
}

int pskv__seqfile_read(const char *dir, uint64_t *seq)
{
    char path[4096];
    uint8_t buf[PSKV_FMT_SEQ_BYTES + 1];
    int rc = seq_path(dir, "pskv.seq", path, sizeof path);
    if (rc != 0)
        return rc;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? PSKV_ENOTFOUND : PSKV_EIO;
    ssize_t n = read(fd, buf, sizeof buf);
    close(fd);
    if (n < 0)
        return PSKV_EIO;
    return pskv_fmt_seq_get(buf, (size_t)n, seq) == 0 ? 0 : PSKV_ECORRUPT;
}

int pskv__seqfile_write(const char *dir, uint64_t seq)
{
    char path[4096], tmp[4096];
    int rc = seq_path(dir, "pskv.seq", path, sizeof path);
    if (rc == 0)
        rc = seq_path(dir, "pskv.seq.tmp", tmp, sizeof tmp);
    if (rc != 0)
        return rc;
    uint8_t buf[PSKV_FMT_SEQ_BYTES];
    pskv_fmt_seq_put(buf, seq);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return errno == ENOSPC ? PSKV_ENOSPC : PSKV_EIO;
    bool ok = write(fd, buf, sizeof buf) == (ssize_t)sizeof buf && fsync(fd) == 0;
    int err = errno;
    close(fd);
    if (ok && rename(tmp, path) == 0) {
        int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            fsync(dfd); /* the rename itself */
            close(dfd);
        }
        return 0;
    }
    err = ok ? errno : err;
    unlink(tmp);
    return err == ENOSPC || err == EFBIG || err == EDQUOT ? PSKV_ENOSPC : PSKV_EIO;
}

bool pskv__seqfile_exists(const char *dir)
{
    char path[4096];
    return seq_path(dir, "pskv.seq", path, sizeof path) == 0 && access(path, F_OK) == 0;
}
