/* A spill file: fixed-size, slot-addressed storage for the rows of one
 * table, read and written with O_DIRECT through the I/O layer.
 *
 * Slot format (slot_bytes = row_bytes + 16 rounded up to the file's direct
 * I/O alignment, usually 512):
 *     [row bytes][zero padding][key: 8 bytes LE][XXH3-64 of key + row: 8 bytes LE]
 * The trailer makes every read verifiable: a slot whose checksum or key
 * does not match gives PSKV_ECORRUPT, never wrong numbers, and a slot that
 * holds another key's row (a stale or misdirected write) is caught too.
 *
 * Free slots are reused (a stack), so the file never needs compaction; its
 * size is the high-water mark of slots in use, capped by spill_max. Writes
 * of consecutive slots are merged into one transfer.
 * SPDX-License-Identifier: BSD-2-Clause */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "pskv_internal.h"

#define TRAILER 16u
#define MERGE_MAX (256u * 1024u) /* largest merged write */

struct pskv__spill {
    int fd;
    char *path;
    pskv__io *io;
    uint32_t row_bytes, slot_bytes, align;
    uint64_t cap;                 /* on *disk_bytes; 0 = none */
    atomic_uint_fast64_t *disk_bytes; /* file extents, shared by a store's files */
    atomic_uint_fast64_t own_bytes;
    pthread_mutex_t lock; /* allocation state */
    uint32_t *free_slots;
    uint32_t nfree, free_cap;
    uint32_t high; /* slots ever handed out: the file's extent */
    uint32_t used;
};

static void put_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static uint64_t slot_checksum(uint64_t key, const uint8_t *row, uint32_t row_bytes)
{
    uint8_t k[8];
    put_le64(k, key);
    return XXH3_64bits_withSeed(row, row_bytes, XXH3_64bits(k, sizeof k));
}

int pskv__spill_open(const char *path, uint32_t row_bytes, uint64_t max_bytes,
                     atomic_uint_fast64_t *shared_bytes, pskv__io *io, pskv__spill **out)
{
    if (path == NULL || row_bytes == 0 || io == NULL || out == NULL)
        return PSKV_EINVAL;
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_DIRECT | O_CLOEXEC, 0600);
    if (fd < 0)
        return errno == ENOSPC ? PSKV_ENOSPC : errno == EINVAL ? PSKV_ENOTSUP : PSKV_EIO;
    pskv__spill *sp = calloc(1, sizeof *sp);
    char *p = strdup(path);
    if (sp == NULL || p == NULL || pthread_mutex_init(&sp->lock, NULL) != 0) {
        free(sp);
        free(p);
        close(fd);
        unlink(path);
        return PSKV_ENOMEM;
    }
    sp->fd = fd;
    sp->path = p;
    sp->io = io;
    sp->row_bytes = row_bytes;
    sp->align = pskv__io_dio_align(fd);
    sp->slot_bytes = (row_bytes + TRAILER + sp->align - 1) / sp->align * sp->align;
    sp->cap = max_bytes;
    sp->disk_bytes = shared_bytes ? shared_bytes : &sp->own_bytes;
    *out = sp;
    return 0;
}

void pskv__spill_close(pskv__spill *sp)
{
    if (sp == NULL)
        return;
    close(sp->fd);
    unlink(sp->path); /* scratch: rows that matter are persisted elsewhere */
    atomic_fetch_sub(sp->disk_bytes, (uint64_t)sp->high * sp->slot_bytes);
    free(sp->path);
    free(sp->free_slots);
    pthread_mutex_destroy(&sp->lock);
    free(sp);
}

uint32_t pskv__spill_slot_bytes(const pskv__spill *sp) { return sp->slot_bytes; }

void pskv__spill_usage(pskv__spill *sp, uint64_t *used_slots, uint64_t *file_bytes)
{
    pthread_mutex_lock(&sp->lock);
    *used_slots = sp->used;
    *file_bytes = (uint64_t)sp->high * sp->slot_bytes;
    pthread_mutex_unlock(&sp->lock);
}

int pskv__spill_alloc(pskv__spill *sp, uint32_t n, uint32_t *slots)
{
    pthread_mutex_lock(&sp->lock);
    uint64_t fresh = n > sp->nfree ? n - sp->nfree : 0;
    uint64_t grow = fresh * sp->slot_bytes;
    if ((uint64_t)sp->high + fresh > PSKV__SPILL_SLOT_MAX) {
        pthread_mutex_unlock(&sp->lock);
        return PSKV_ENOSPC; /* spill slots are 31-bit (the top bit marks BUSY) */
    }
    /* The cap is on the bytes of all files sharing the counter. */
    uint64_t cur = atomic_load(sp->disk_bytes);
    do {
        if (sp->cap && cur + grow > sp->cap) {
            pthread_mutex_unlock(&sp->lock);
            return PSKV_ENOSPC; /* all or nothing */
        }
    } while (!atomic_compare_exchange_weak(sp->disk_bytes, &cur, cur + grow));
    for (uint32_t i = 0; i < n; i++)
        slots[i] = sp->nfree > 0 ? sp->free_slots[--sp->nfree] : sp->high++;
    sp->used += n;
    pthread_mutex_unlock(&sp->lock);
    return 0;
}

int pskv__spill_free(pskv__spill *sp, const uint32_t *slots, uint32_t n)
{
    pthread_mutex_lock(&sp->lock);
    uint32_t *f = pskv__array_grow(sp->free_slots, &sp->free_cap, (uint64_t)sp->nfree + n,
                                   sizeof *f, 64);
    if (f == NULL) {
        pthread_mutex_unlock(&sp->lock);
        return PSKV_ENOMEM; /* the slots stay allocated: space leaks, data does not */
    }
    sp->free_slots = f;
    for (uint32_t i = 0; i < n; i++)
        sp->free_slots[sp->nfree++] = slots[i];
    sp->used -= n;
    pthread_mutex_unlock(&sp->lock);
    return 0;
}

typedef struct slot_ref {
    uint32_t slot;
    uint32_t index;
} slot_ref;

static int by_slot(const void *a, const void *b)
{
    uint32_t x = ((const slot_ref *)a)->slot, y = ((const slot_ref *)b)->slot;
    return x < y ? -1 : x > y;
}

int pskv__spill_write(pskv__spill *sp, uint32_t n, const uint64_t *keys, const float *const *rows,
                      const uint32_t *slots)
{
    if (n == 0)
        return 0;
    const size_t sb = sp->slot_bytes;
    uint8_t *buf = aligned_alloc(4096, ((size_t)n * sb + 4095) / 4096 * 4096);
    slot_ref *order = malloc((size_t)n * sizeof *order);
    pskv__io_req *req = malloc((size_t)n * sizeof *req);
    int rc = buf && order && req ? 0 : PSKV_ENOMEM;
    if (rc == 0) {
        for (uint32_t i = 0; i < n; i++)
            order[i] = (slot_ref){slots[i], i};
        qsort(order, n, sizeof *order, by_slot);
        /* Lay the slots out in slot order so that runs of consecutive slots
         * are contiguous in the buffer and go out as one transfer. */
        uint32_t nreq = 0;
        for (uint32_t k = 0; k < n; k++) {
            uint8_t *dst = buf + (size_t)k * sb;
            uint32_t i = order[k].index;
            memcpy(dst, rows[i], sp->row_bytes);
            memset(dst + sp->row_bytes, 0, sb - sp->row_bytes - TRAILER);
            put_le64(dst + sb - TRAILER, keys[i]);
            put_le64(dst + sb - 8, slot_checksum(keys[i], dst, sp->row_bytes));
            pskv__io_req *prev = nreq ? &req[nreq - 1] : NULL;
            if (prev && order[k - 1].slot + 1 == order[k].slot && prev->len + sb <= MERGE_MAX)
                prev->len += sb;
            else
                req[nreq++] = (pskv__io_req){.fd = sp->fd, .write = true, .buf = dst, .len = sb,
                                             .off = (uint64_t)order[k].slot * sb};
        }
        rc = pskv__io_run(sp->io, req, nreq);
    }
    free(buf);
    free(order);
    free(req);
    return rc;
}

int pskv__spill_read(pskv__spill *sp, uint32_t n, const uint64_t *keys, const uint32_t *slots,
                     float *const *rows, int *results)
{
    if (n == 0)
        return 0;
    const size_t sb = sp->slot_bytes;
    uint8_t *buf = aligned_alloc(4096, ((size_t)n * sb + 4095) / 4096 * 4096);
    pskv__io_req *req = malloc((size_t)n * sizeof *req);
    if (buf == NULL || req == NULL) {
        free(buf);
        free(req);
        return PSKV_ENOMEM;
    }
    for (uint32_t i = 0; i < n; i++)
        req[i] = (pskv__io_req){.fd = sp->fd, .buf = buf + (size_t)i * sb, .len = sb,
                                .off = (uint64_t)slots[i] * sb};
    int rc = pskv__io_run(sp->io, req, n);
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *src = buf + (size_t)i * sb;
        int r = req[i].result;
        if (r == 0 && (get_le64(src + sb - TRAILER) != keys[i] ||
                       get_le64(src + sb - 8) != slot_checksum(keys[i], src, sp->row_bytes)))
            r = PSKV_ECORRUPT;
        if (r == 0)
            memcpy(rows[i], src, sp->row_bytes);
        if (results)
            results[i] = r;
        if (rc == 0 && r != 0)
            rc = r;
    }
    free(buf);
    free(req);
    return rc;
}
