/* The I/O layer of the spill tier: batches of positioned reads and writes
 * run to completion through io_uring, or through pread/pwrite when io_uring
 * cannot be set up (EPERM under seccomp or kernel.io_uring_disabled, ENOSYS
 * on old kernels, ENOMEM under memlock limits) or PSKV_IO=sync asks for it.
 * Both backends share one completion rule (io_complete): short transfers
 * are continued, EAGAIN/EINTR are retried, anything else is an error of
 * that request. A fault injector sits in that rule, so tests can make
 * either backend see short transfers, EAGAIN, EIO and ENOSPC.
 *
 * io_uring instances are not thread-safe, so the layer keeps a small pool
 * of io_urings, each behind a mutex; a batch takes one and keeps at most
 * `depth` requests in flight. The completion queue has twice the
 * submission queue's entries and in-flight requests never exceed the
 * submission queue, so completions cannot overflow.
 * SPDX-License-Identifier: BSD-2-Clause */
#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <liburing.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io.h"
#include "pskv.h"

#define URING_POOL 4u
#define MAX_RETRIES 1000u /* EAGAIN/EINTR in a row before giving up with PSKV_EIO */

typedef struct uring_slot {
    pthread_mutex_t lock;
    struct io_uring uring;
} uring_slot;

struct pskv__io {
    bool use_uring;
    unsigned depth;
    uring_slot urings[URING_POOL];
    unsigned nurings;
    atomic_uint next_uring;
    /* Injected faults (tests): set by one thread while others run I/O. */
    atomic_uint f_eio, f_enospc, f_eagain, f_short, f_short_unit;
    atomic_uint_fast64_t fault_clock;
    atomic_uint_fast64_t n_reads, n_writes, n_bytes_read, n_bytes_written, n_retries, n_shorts;
};

int pskv__io_create(bool force_sync, unsigned depth, pskv__io **out)
{
    if (depth == 0 || depth > 4096)
        return PSKV_EINVAL;
    pskv__io *io = calloc(1, sizeof *io);
    if (io == NULL)
        return PSKV_ENOMEM;
    io->depth = depth;
    if (!force_sync) {
        struct io_uring_params p;
        for (unsigned i = 0; i < URING_POOL; i++) {
            memset(&p, 0, sizeof p);
            p.flags = IORING_SETUP_CQSIZE;
            p.cq_entries = 2 * depth;
            if (io_uring_queue_init_params(depth, &io->urings[i].uring, &p) != 0)
                break;
            pthread_mutex_init(&io->urings[i].lock, NULL);
            io->nurings++;
        }
        /* Fewer urings than asked is fine; none means the pread fallback. */
        io->use_uring = io->nurings > 0;
    }
    *out = io;
    return 0;
}

void pskv__io_destroy(pskv__io *io)
{
    if (io == NULL)
        return;
    for (unsigned i = 0; i < io->nurings; i++) {
        io_uring_queue_exit(&io->urings[i].uring);
        pthread_mutex_destroy(&io->urings[i].lock);
    }
    free(io);
}

bool pskv__io_is_uring(const pskv__io *io) { return io->use_uring; }

void pskv__io_set_faults(pskv__io *io, const pskv__io_faults *f)
{
    pskv__io_faults none = {0, 0, 0, 0, 0};
    if (f == NULL)
        f = &none;
    atomic_store(&io->fault_clock, 0);
    atomic_store(&io->f_eio, f->eio_every);
    atomic_store(&io->f_enospc, f->enospc_every);
    atomic_store(&io->f_eagain, f->eagain_every);
    atomic_store(&io->f_short, f->short_every);
    atomic_store(&io->f_short_unit, f->short_unit);
}

void pskv__io_stats(const pskv__io *io, pskv__io_stats_t *st)
{
    pskv__io *m = (pskv__io *)io;
    st->reads = atomic_load(&m->n_reads);
    st->writes = atomic_load(&m->n_writes);
    st->bytes_read = atomic_load(&m->n_bytes_read);
    st->bytes_written = atomic_load(&m->n_bytes_written);
    st->retries = atomic_load(&m->n_retries);
    st->short_transfers = atomic_load(&m->n_shorts);
}

uint32_t pskv__io_dio_align(int fd)
{
#ifdef STATX_DIOALIGN
    struct statx stx;
    if (statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) == 0 && (stx.stx_mask & STATX_DIOALIGN) &&
        stx.stx_dio_offset_align > 0) {
        uint32_t a = stx.stx_dio_offset_align > stx.stx_dio_mem_align ? stx.stx_dio_offset_align
                                                                       : stx.stx_dio_mem_align;
        return a;
    }
#else
    (void)fd;
#endif
    return 4096; /* safe for every block device we know of */
}

/* Injected faults, applied to a transfer's raw result (bytes or -errno). */
static ssize_t fault_apply(pskv__io *io, const pskv__io_req *r, ssize_t res)
{
    unsigned eio = atomic_load_explicit(&io->f_eio, memory_order_relaxed);
    unsigned enospc = atomic_load_explicit(&io->f_enospc, memory_order_relaxed);
    unsigned eagain = atomic_load_explicit(&io->f_eagain, memory_order_relaxed);
    unsigned shrt = atomic_load_explicit(&io->f_short, memory_order_relaxed);
    if (!(eio | enospc | eagain | shrt))
        return res;
    uint64_t tick = atomic_fetch_add(&io->fault_clock, 1) + 1;
    if (eio && tick % eio == 0)
        return -EIO;
    if (enospc && r->write && tick % enospc == 0)
        return -ENOSPC;
    if (eagain && tick % eagain == 0)
        return -EAGAIN;
    if (shrt && tick % shrt == 0 && res > 0) {
        /* Keep the remainder aligned, as the kernel would for O_DIRECT. */
        unsigned u = atomic_load_explicit(&io->f_short_unit, memory_order_relaxed);
        ssize_t unit = u ? (ssize_t)u : 512;
        ssize_t cut = res / 2 / unit * unit;
        if (cut > 0)
            return cut;
    }
    return res;
}

/* One transfer finished with raw result res. Returns true when the request
 * is complete (r->result set), false when it must be submitted again (for
 * the rest, or after EAGAIN/EINTR). */
/* Does a file end at `end` bytes pass this process's RLIMIT_FSIZE? */
static bool past_fsize_limit(uint64_t end)
{
    struct rlimit rl;
    return getrlimit(RLIMIT_FSIZE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
           end > (uint64_t)rl.rlim_cur;
}

static bool io_complete(pskv__io *io, pskv__io_req *r, ssize_t res)
{
    res = fault_apply(io, r, res);
    if (res == -EAGAIN || res == -EINTR) {
        atomic_fetch_add(&io->n_retries, 1);
        if (++r->retries > MAX_RETRIES) {
            r->result = PSKV_EIO;
            return true;
        }
        return false;
    }
    if (res < 0) {
        r->result = (res == -ENOSPC || res == -EDQUOT || res == -EFBIG) ? PSKV_ENOSPC : PSKV_EIO;
        /* A file-size limit that is not a multiple of 4 KiB cuts an
         * O_DIRECT write to an unaligned length, which the kernel refuses
         * with EINVAL (or after a short write, the rest's offset): a full
         * disk to the caller, as EFBIG is. */
        if (res == -EINVAL && r->write && past_fsize_limit(r->off + r->len))
            r->result = PSKV_ENOSPC;
        return true;
    }
    if (res == 0) {
        /* Nothing moved: a read past the end of the file, or a write the
         * device refused without saying why. */
        r->result = r->write ? PSKV_ENOSPC : PSKV_EIO;
        return true;
    }
    r->retries = 0;
    r->done += (size_t)res;
    if (r->write) {
        atomic_fetch_add(&io->n_bytes_written, (uint64_t)res);
    } else {
        atomic_fetch_add(&io->n_bytes_read, (uint64_t)res);
    }
    if (r->done < r->len) {
        atomic_fetch_add(&io->n_shorts, 1);
        return false;
    }
    atomic_fetch_add(r->write ? &io->n_writes : &io->n_reads, 1);
    r->result = 0;
    return true;
}

static int run_sync(pskv__io *io, pskv__io_req *reqs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        pskv__io_req *r = &reqs[i];
        bool finished = false;
        while (!finished) {
            char *p = (char *)r->buf + r->done;
            size_t left = r->len - r->done;
            off_t off = (off_t)(r->off + r->done);
            ssize_t res = r->write ? pwrite(r->fd, p, left, off) : pread(r->fd, p, left, off);
            finished = io_complete(io, r, res < 0 ? -errno : res);
        }
    }
    return 0;
}

static uring_slot *ring_take(pskv__io *io)
{
    unsigned start = atomic_fetch_add(&io->next_uring, 1);
    for (unsigned k = 0; k < io->nurings; k++) {
        uring_slot *s = &io->urings[(start + k) % io->nurings];
        if (pthread_mutex_trylock(&s->lock) == 0)
            return s;
    }
    uring_slot *s = &io->urings[start % io->nurings];
    pthread_mutex_lock(&s->lock);
    return s;
}

static void prep(struct io_uring_sqe *sqe, pskv__io_req *r, size_t index)
{
    char *p = (char *)r->buf + r->done;
    unsigned left = (unsigned)(r->len - r->done);
    if (r->write)
        io_uring_prep_write(sqe, r->fd, p, left, r->off + r->done);
    else
        io_uring_prep_read(sqe, r->fd, p, left, r->off + r->done);
    io_uring_sqe_set_data64(sqe, (uint64_t)index);
}

static int run_uring(pskv__io *io, pskv__io_req *reqs, size_t n)
{
    uring_slot *slot = ring_take(io);
    struct io_uring *uring = &slot->uring;
    /* Requests waiting for a submission slot, as a circular queue of
     * indices: each request is queued, in flight or finished. */
    size_t *queue = malloc(n * sizeof *queue);
    if (queue == NULL) {
        pthread_mutex_unlock(&slot->lock);
        return PSKV_ENOMEM;
    }
    for (size_t i = 0; i < n; i++)
        queue[i] = i;
    size_t head = 0, queued = n, inflight = 0, finished = 0;
    unsigned failures = 0;
    int rc = 0;
    while (finished < n) {
        while (rc == 0 && queued > 0 && inflight < io->depth) {
            struct io_uring_sqe *sqe = io_uring_get_sqe(uring);
            if (sqe == NULL)
                break;
            prep(sqe, &reqs[queue[head]], queue[head]);
            head = (head + 1) % n;
            queued--;
            inflight++;
        }
        if (inflight == 0)
            break; /* only after a uring failure: nothing more will complete */
        /* Submits what is prepared (also SQEs a previous call could not
         * hand over) and waits for at least one completion. */
        int s = io_uring_submit_and_wait(uring, 1);
        if (s < 0 && s != -EINTR && s != -EAGAIN && s != -EBUSY && ++failures > MAX_RETRIES) {
            rc = PSKV_EIO; /* the uring is unusable; what is in flight cannot be reaped */
            break;
        }
        struct io_uring_cqe *cqe;
        while (io_uring_peek_cqe(uring, &cqe) == 0) {
            size_t i = (size_t)io_uring_cqe_get_data64(cqe);
            ssize_t res = cqe->res;
            io_uring_cqe_seen(uring, cqe);
            inflight--;
            failures = 0;
            if (io_complete(io, &reqs[i], res)) {
                finished++;
            } else {
                queue[(head + queued) % n] = i;
                queued++;
            }
        }
    }
    free(queue);
    pthread_mutex_unlock(&slot->lock);
    return rc;
}

int pskv__io_run(pskv__io *io, pskv__io_req *reqs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        reqs[i].done = 0;
        reqs[i].retries = 0;
        reqs[i].result = 1; /* pending */
    }
    int rc = io->use_uring ? run_uring(io, reqs, n) : run_sync(io, reqs, n);
    for (size_t i = 0; i < n; i++) {
        if (reqs[i].result == 1)
            reqs[i].result = rc ? rc : PSKV_EIO; /* never finished */
        if (rc == 0 && reqs[i].result != 0)
            rc = reqs[i].result;
    }
    return rc;
}
