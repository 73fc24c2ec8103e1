/* Interposed allocation and I/O calls for tests/test_inject.c (see
 * inject.h). The real calls are glibc's __libc_* allocators and the next
 * definitions of the I/O calls (dlsym RTLD_NEXT). Both pwrite and pwrite64
 * are defined, so this file must not rename one to the other. */
#undef _FILE_OFFSET_BITS
#include <dlfcn.h>
#include <errno.h>
#include <execinfo.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "inject.h"

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void __libc_free(void *);

/* ---------------------------------------------------------------- allocations */

static atomic_bool oom_armed, oom_fired;
static atomic_uint_fast64_t oom_left, oom_seen;
static atomic_int_fast64_t live_blocks; /* allocated and not yet freed */

int64_t inject_live_blocks(void) { return atomic_load(&live_blocks); }

void inject_oom_arm(uint64_t n)
{
    atomic_store(&oom_fired, false);
    atomic_store(&oom_seen, 0);
    atomic_store(&oom_left, n);
    atomic_store(&oom_armed, true);
}

bool inject_oom_disarm(void)
{
    atomic_store(&oom_armed, false);
    return atomic_load(&oom_fired);
}

uint64_t inject_oom_count(void) { return atomic_load(&oom_seen); }

static bool oom_now(void)
{
    if (!atomic_load_explicit(&oom_armed, memory_order_relaxed))
        return false;
    atomic_fetch_add(&oom_seen, 1);
    if (atomic_fetch_sub(&oom_left, 1) != 1)
        return false;
    atomic_store(&oom_armed, false); /* one failure, then allocations work */
    atomic_store(&oom_fired, true);
    if (getenv("INJECT_TRACE") != NULL) { /* where the failure is, for a look */
        void *frames[32];
        backtrace_symbols_fd(frames, backtrace(frames, 32), 2);
    }
    errno = ENOMEM;
    return true;
}

static void *counted(void *p)
{
    if (p != NULL)
        atomic_fetch_add_explicit(&live_blocks, 1, memory_order_relaxed);
    return p;
}

void *malloc(size_t n) { return oom_now() ? NULL : counted(__libc_malloc(n)); }
void *calloc(size_t a, size_t b) { return oom_now() ? NULL : counted(__libc_calloc(a, b)); }
void *realloc(void *p, size_t n)
{
    if (p == NULL)
        return malloc(n);
    if (oom_now())
        return NULL;
    void *q = __libc_realloc(p, n);
    if (q == NULL && n == 0)
        atomic_fetch_sub_explicit(&live_blocks, 1, memory_order_relaxed); /* freed */
    return q;
}
void free(void *p)
{
    if (p != NULL)
        atomic_fetch_sub_explicit(&live_blocks, 1, memory_order_relaxed);
    __libc_free(p);
}
void *memalign(size_t align, size_t n)
{
    return oom_now() ? NULL : counted(__libc_memalign(align, n));
}
void *aligned_alloc(size_t align, size_t n) { return memalign(align, n); }
int posix_memalign(void **out, size_t align, size_t n)
{
    void *p = memalign(align, n);
    if (p == NULL)
        return ENOMEM;
    *out = p;
    return 0;
}

/* ---------------------------------------------------------------- I/O */

static atomic_bool io_armed, io_fired;
static atomic_uint_fast64_t io_left;
static enum inject_io_class io_class;
static enum inject_io_kind io_kind;
static char io_dir[PATH_MAX];
static size_t io_dir_len;

void inject_io_arm(const char *dir, enum inject_io_class cls, enum inject_io_kind kind,
                   uint64_t n)
{
    if (realpath(dir, io_dir) == NULL)
        snprintf(io_dir, sizeof io_dir, "%s", dir);
    io_dir_len = strlen(io_dir);
    io_class = cls;
    io_kind = kind;
    atomic_store(&io_fired, false);
    atomic_store(&io_left, n);
    atomic_store(&io_armed, true);
}

bool inject_io_disarm(void)
{
    atomic_store(&io_armed, false);
    return atomic_load(&io_fired);
}

/* Is this call of class cls on fd the one to fail? */
static bool io_now(int fd, enum inject_io_class cls)
{
    if (!atomic_load(&io_armed) || cls != io_class)
        return false;
    char link[64], path[PATH_MAX];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n <= (ssize_t)io_dir_len || strncmp(path, io_dir, io_dir_len) != 0 ||
        path[io_dir_len] != '/')
        return false;
    if (atomic_fetch_sub(&io_left, 1) != 1)
        return false;
    atomic_store(&io_armed, false);
    atomic_store(&io_fired, true);
    return true;
}

typedef ssize_t (*write_fn)(int, const void *, size_t);
typedef ssize_t (*pwrite_fn)(int, const void *, size_t, off_t);
typedef ssize_t (*writev_fn)(int, const struct iovec *, int);
typedef ssize_t (*pwritev_fn)(int, const struct iovec *, int, off_t);
typedef int (*sync_fn)(int);

#define REAL(name, type)                                                       \
    static type real_##name;                                                   \
    if (real_##name == NULL)                                                   \
        *(void **)&real_##name = dlsym(RTLD_NEXT, #name);

/* The injected failure of a write of n bytes: -1 with errno, or how many
 * bytes to really write (a short write). */
static ssize_t io_fault(size_t n, size_t *write_n)
{
    switch (io_kind) {
    case INJECT_EIO:
        errno = EIO;
        return -1;
    case INJECT_ENOSPC:
        errno = ENOSPC;
        return -1;
    default:
        *write_n = n / 2;
        return 0;
    }
}

ssize_t write(int fd, const void *buf, size_t n)
{
    REAL(write, write_fn);
    size_t m = n;
    if (io_now(fd, INJECT_WRITES) && io_fault(n, &m) < 0)
        return -1;
    return real_write(fd, buf, m);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
    REAL(pwrite, pwrite_fn);
    size_t m = n;
    if (io_now(fd, INJECT_WRITES) && io_fault(n, &m) < 0)
        return -1;
    return real_pwrite(fd, buf, m, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off64_t off)
{
    return pwrite(fd, buf, n, off);
}

static ssize_t vec_fault(const struct iovec *iov, int cnt, int *use_cnt, struct iovec *first)
{
    size_t total = 0;
    for (int i = 0; i < cnt; i++)
        total += iov[i].iov_len;
    size_t m = total;
    if (io_fault(total, &m) < 0)
        return -1;
    /* A short write: the first m bytes, as one vector of the first ones. */
    *use_cnt = 0;
    for (int i = 0; i < cnt && m > 0; i++) {
        first[i] = iov[i];
        if (first[i].iov_len > m)
            first[i].iov_len = m;
        m -= first[i].iov_len;
        *use_cnt = i + 1;
    }
    return 0;
}

ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
    REAL(writev, writev_fn);
    if (io_now(fd, INJECT_WRITES) && cnt <= 1024) {
        struct iovec part[1024];
        int use = cnt;
        if (vec_fault(iov, cnt, &use, part) < 0)
            return -1;
        return real_writev(fd, part, use);
    }
    return real_writev(fd, iov, cnt);
}

ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off)
{
    REAL(pwritev, pwritev_fn);
    if (io_now(fd, INJECT_WRITES) && cnt <= 1024) {
        struct iovec part[1024];
        int use = cnt;
        if (vec_fault(iov, cnt, &use, part) < 0)
            return -1;
        return real_pwritev(fd, part, use, off);
    }
    return real_pwritev(fd, iov, cnt, off);
}

ssize_t pwritev64(int fd, const struct iovec *iov, int cnt, off64_t off)
{
    return pwritev(fd, iov, cnt, off);
}

int fsync(int fd)
{
    REAL(fsync, sync_fn);
    if (io_now(fd, INJECT_SYNCS)) {
        errno = io_kind == INJECT_ENOSPC ? ENOSPC : EIO;
        return -1;
    }
    return real_fsync(fd);
}

int fdatasync(int fd)
{
    REAL(fdatasync, sync_fn);
    if (io_now(fd, INJECT_SYNCS)) {
        errno = io_kind == INJECT_ENOSPC ? ENOSPC : EIO;
        return -1;
    }
    return real_fdatasync(fd);
}
