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
 *    that is empty or gone while the file exists is damage, not a new store;
 *  - a deliberate rollback (at_seq, undo.c) first writes pskv.rollback
 *    naming the seqs it goes from and to: a store found at `to` while this
 *    file names `from` finished its rollback before a crash and is taken;
 *    then pskv.seq is rewritten and pskv.rollback removed.
 * SPDX-License-Identifier: BSD-2-Clause */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include "format.h"
#include "options.h"
#include "pskv.h"
#include "seqfile.h"

int pskv__dir_path(const char *dir, const char *name, char *buf, size_t len)
{
    return pskv__format(buf, len, "%s/%s", dir, name) < 0 ? PSKV_EINVAL : 0;
}

bool pskv__dir_has(const char *dir, const char *name)
{
    char path[4096];
    return pskv__dir_path(dir, name, path, sizeof path) == 0 && access(path, F_OK) == 0;
}

int pskv__file_err(int err)
{
    return err == ENOSPC || err == EFBIG || err == EDQUOT ? PSKV_ENOSPC : PSKV_EIO;
}

int pskv__dir_sync(const char *dir)
{
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc = dfd >= 0 && fsync(dfd) == 0 ? 0 : PSKV_EIO;
    if (dfd >= 0)
        close(dfd);
    return rc;
}

/* Read <dir>/name, up to cap bytes: *n. ENOTFOUND, EIO. */
static int file_read(const char *dir, const char *name, uint8_t *buf, size_t cap, size_t *n)
{
    char path[4096];
    int rc = pskv__dir_path(dir, name, path, sizeof path);
    if (rc != 0)
        return rc;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? PSKV_ENOTFOUND : PSKV_EIO;
    ssize_t got = read(fd, buf, cap);
    close(fd);
    if (got < 0)
        return PSKV_EIO;
    *n = (size_t)got;
    return 0;
}

/* Replace <dir>/name with len bytes, whole or not at all, durably. */
static int file_replace(const char *dir, const char *name, const uint8_t *buf, size_t len)
{
    char path[4096], tmp[4096];
    int rc = pskv__dir_path(dir, name, path, sizeof path);
    if (rc == 0)
        rc = pskv__format(tmp, sizeof tmp, "%s/%s.tmp", dir, name) < 0 ? PSKV_EINVAL : 0;
    if (rc != 0)
        return rc;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return errno == ENOSPC ? PSKV_ENOSPC : PSKV_EIO;
    bool ok = write(fd, buf, len) == (ssize_t)len && fsync(fd) == 0;
    int err = errno;
    close(fd);
    if (ok && rename(tmp, path) == 0) {
        (void)pskv__dir_sync(dir); /* the rename itself */
        return 0;
    }
    err = ok ? errno : err;
    unlink(tmp);
    return pskv__file_err(err);
}

int pskv__seqfile_read(const char *dir, uint64_t *seq)
{
    uint8_t buf[PSKV_FMT_SEQ_BYTES + 1];
    size_t n = 0;
    int rc = file_read(dir, "pskv.seq", buf, sizeof buf, &n);
    if (rc != 0)
        return rc;
    return pskv_fmt_seq_get(buf, n, seq) == 0 ? 0 : PSKV_ECORRUPT;
}

int pskv__seqfile_write(const char *dir, uint64_t seq)
{
    uint8_t buf[PSKV_FMT_SEQ_BYTES];
    pskv_fmt_seq_put(buf, seq);
    return file_replace(dir, "pskv.seq", buf, sizeof buf);
}

void pskv__seqfile_remove(const char *dir)
{
    /* The temporary of a write killed before its rename goes too: it is
     * the same file's remains. */
    static const char *const names[] = {"pskv.seq.tmp", "pskv.seq"};
    char path[4096];
    bool gone = false;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        gone |= pskv__dir_path(dir, names[i], path, sizeof path) == 0 && unlink(path) == 0;
    if (gone)
        (void)pskv__dir_sync(dir);
}

int pskv__seqfile_rollback_read(const char *dir, uint64_t *from, uint64_t *to)
{
    uint8_t buf[PSKV_FMT_ROLLBACK_BYTES + 1];
    size_t n = 0;
    int rc = file_read(dir, "pskv.rollback", buf, sizeof buf, &n);
    if (rc != 0)
        return rc;
    return pskv_fmt_rollback_get(buf, n, from, to) == 0 ? 0 : PSKV_ECORRUPT;
}

int pskv__seqfile_rollback_write(const char *dir, uint64_t from, uint64_t to)
{
    uint8_t buf[PSKV_FMT_ROLLBACK_BYTES];
    pskv_fmt_rollback_put(buf, from, to);
    return file_replace(dir, "pskv.rollback", buf, sizeof buf);
}

void pskv__seqfile_rollback_remove(const char *dir)
{
    char path[4096];
    if (pskv__dir_path(dir, "pskv.rollback", path, sizeof path) == 0 && unlink(path) == 0)
        (void)pskv__dir_sync(dir);
}

bool pskv__seqfile_exists(const char *dir) { return pskv__dir_has(dir, "pskv.seq"); }

/* The store's seq against pskv.seq: behind it means LMDB opened an older
 * snapshot than the last commit (a damaged meta page), and is refused. A
 * missing file (a store of format 1, or one copied without it) is written. */
int pskv__seqfile_reconcile(const char *dir, uint64_t store_seq)
{
    uint64_t seq = 0, from = 0, to = 0;
    int rc = pskv__seqfile_read(dir, &seq);
    int intent = pskv__seqfile_rollback_read(dir, &from, &to);
    if (intent == 0 && rc == 0 && seq == from && store_seq == to) {
        /* A rollback committed and was stopped before it moved pskv.seq. */
        rc = pskv__seqfile_write(dir, to);
        if (rc == 0)
            pskv__seqfile_rollback_remove(dir);
        return rc;
    }
    if (rc == 0 && seq > store_seq)
        return PSKV_ECORRUPT;
    if (intent != PSKV_ENOTFOUND && (rc == 0 || rc == PSKV_ENOTFOUND))
        pskv__seqfile_rollback_remove(dir); /* never began, or damaged: not a licence */
    if (rc == 0 && seq == store_seq)
        return 0;
    if (rc == 0 || rc == PSKV_ENOTFOUND)
        return pskv__seqfile_write(dir, store_seq);
    return rc;
}
