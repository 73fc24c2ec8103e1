/* A spill file: fixed-size, slot-addressed storage for the rows of one
 * table, in pages read and written with O_DIRECT through the I/O layer.
 *
 * The file is an array of pages (4 KiB, or one row rounded up to the
 * direct-I/O alignment when a row needs more than half of that); a page
 * holds per_page records packed back to back, and slot s is record
 * s % per_page of page s / per_page. A record is
 *     [row bytes][key: 8 bytes LE][XXH3-64 of key + row: 8 bytes LE]
 * so every record can be verified alone: a record whose checksum or key
 * does not match gives PSKV_ECORRUPT, never wrong numbers, and a record of
 * another key (a stale or misdirected write) is caught too. A read fetches
 * just the aligned sectors that cover its record.
 *
 * Writes go out in whole pages. Allocation prefers empty pages, so that an
 * eviction batch fills pages completely and consecutive pages merge into
 * long transfers: one 4 KiB write carries 7 dim-64 Adagrad rows instead of
 * each taking a write of its own. Slots freed by loads leave holes in pages
 * that still hold other rows. While the file is at most 1/4 larger than the
 * rows it holds, it grows instead of filling holes; beyond that, holes are
 * reused by rewriting their page (read it, fill its free records, write it
 * back), pages with two or more free records first, so a reused slot costs
 * at most one I/O. No row ever moves, so nothing needs compaction.
 * SPDX-License-Identifier: BSD-2-Clause */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "array.h"
#include "format.h" /* the little-endian field helpers, the XXH3 of checksums */
#include "pskv.h"
#include "spill.h"

#define TRAILER 16u
#define PAGE 4096u
#define MERGE_MAX (256u * 1024u) /* largest merged write */
/* The file may grow while its slots exceed the rows it holds by at most
 * 1/SLACK_DIV (plus SLACK_PAGES pages); past that, holes are filled. */
#define SLACK_DIV 4u
#define SLACK_PAGES 1u

struct pskv__spill {
    int fd;
    char *path;
    pskv__io *io;
    uint32_t stored_bytes, rec_bytes, page_bytes, per_page, align;
    uint32_t read_span; /* bytes of the aligned sectors covering a record, at worst */
    uint64_t cap;                     /* on *disk_bytes; 0 = none */
    atomic_uint_fast64_t *disk_bytes; /* file extents, shared by a store's files */
    atomic_uint_fast64_t own_bytes;
    pthread_mutex_t write_lock; /* one page writer at a time: rewrites read, then write */
    pthread_mutex_t lock;       /* allocation state */
    uint64_t *used_bits;        /* one bit per slot: allocated */
    uint32_t bits_cap;          /* words */
    uint16_t *page_used;        /* allocated slots per page */
    uint32_t page_cap;
    uint32_t pages;             /* the file's extent in pages */
    uint32_t written_pages;     /* pages below this one have been written */
    uint32_t *free_pages;       /* pages with no allocated slot (a stack) */
    uint32_t nfree_pages, free_pages_cap;
    uint32_t hole_cursor;       /* where the search for holes goes on */
    uint64_t used;              /* allocated slots */
    uint64_t rewrites;          /* pages read back to fill their holes */
};

static uint64_t record_checksum(uint64_t key, const uint8_t *row, uint32_t stored_bytes)
{
    uint8_t k[8];
    pskv_fmt_put64(k, key);
    return pskv_fmt_xxh3_seed(row, stored_bytes, pskv_fmt_xxh3(k, sizeof k));
}

int pskv__spill_open(const char *path, uint32_t stored_bytes, uint64_t max_bytes,
                     atomic_uint_fast64_t *shared_bytes, pskv__io *io, pskv__spill **out)
{
    if (path == NULL || stored_bytes == 0 || stored_bytes > (64u << 20) || io == NULL || out == NULL)
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
    if (pthread_mutex_init(&sp->write_lock, NULL) != 0) {
        pthread_mutex_destroy(&sp->lock);
        free(sp);
        free(p);
        close(fd);
        unlink(path);
        return PSKV_ENOMEM;
    }
    sp->fd = fd;
    sp->path = p;
    sp->io = io;
    sp->stored_bytes = stored_bytes;
    sp->align = pskv__io_dio_align(fd);
    sp->rec_bytes = stored_bytes + TRAILER;
    uint32_t page = PAGE > sp->align ? PAGE : sp->align;
    if (sp->rec_bytes * 2 > page)
        page = (sp->rec_bytes + sp->align - 1) / sp->align * sp->align;
    sp->page_bytes = page;
    sp->per_page = page / sp->rec_bytes;
    /* The aligned sectors covering a record at the worst offset in a page:
     * what one read transfers at most. */
    for (uint32_t i = 0; i < sp->per_page; i++) {
        uint32_t start = i * sp->rec_bytes / sp->align * sp->align;
        uint32_t end = (i * sp->rec_bytes + sp->rec_bytes + sp->align - 1) / sp->align * sp->align;
        sp->read_span = end - start > sp->read_span ? end - start : sp->read_span;
    }
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
    atomic_fetch_sub(sp->disk_bytes, (uint64_t)sp->pages * sp->page_bytes);
    free(sp->path);
    free(sp->used_bits);
    free(sp->page_used);
    free(sp->free_pages);
    pthread_mutex_destroy(&sp->write_lock);
    pthread_mutex_destroy(&sp->lock);
    free(sp);
}

uint32_t pskv__spill_slot_bytes(const pskv__spill *sp) { return sp->rec_bytes; }

uint32_t pskv__spill_read_bytes(const pskv__spill *sp) { return sp->read_span; }

uint64_t pskv__spill_slot_offset(const pskv__spill *sp, uint32_t slot)
{
    return (uint64_t)(slot / sp->per_page) * sp->page_bytes +
           (uint64_t)(slot % sp->per_page) * sp->rec_bytes;
}

void pskv__spill_usage(pskv__spill *sp, uint64_t *used_slots, uint64_t *file_bytes)
{
    pthread_mutex_lock(&sp->lock);
    *used_slots = sp->used;
    *file_bytes = (uint64_t)sp->pages * sp->page_bytes;
    pthread_mutex_unlock(&sp->lock);
}

uint64_t pskv__spill_dram_bytes(pskv__spill *sp)
{
    pthread_mutex_lock(&sp->lock);
    uint64_t b = (uint64_t)sp->bits_cap * 8 + (uint64_t)sp->page_cap * 2 +
                 (uint64_t)sp->free_pages_cap * 4;
    pthread_mutex_unlock(&sp->lock);
    return b;
}

uint64_t pskv__spill_rewrites(pskv__spill *sp)
{
    pthread_mutex_lock(&sp->lock);
    uint64_t r = sp->rewrites;
    pthread_mutex_unlock(&sp->lock);
    return r;
}

/* ---------------------------------------------------------------- allocation (lock held) */

static bool bit_get(const pskv__spill *sp, uint32_t slot)
{
    return (sp->used_bits[slot / 64] >> (slot % 64)) & 1;
}

static void bit_flip(pskv__spill *sp, uint32_t slot)
{
    sp->used_bits[slot / 64] ^= 1ull << (slot % 64);
}

static void take_slot(pskv__spill *sp, uint32_t slot)
{
    bit_flip(sp, slot);
    sp->page_used[slot / sp->per_page]++;
    sp->used++;
}

/* Release one slot; an emptied page goes on the free-page stack (when the
 * stack cannot grow, its slots are still found as holes). */
static void give_slot(pskv__spill *sp, uint32_t slot)
{
    bit_flip(sp, slot);
    uint32_t page = slot / sp->per_page;
    sp->used--;
    if (--sp->page_used[page] == 0) {
        uint32_t *f = pskv__array_grow(sp->free_pages, &sp->free_pages_cap,
                                       (uint64_t)sp->nfree_pages + 1, sizeof *f, 64);
        if (f != NULL) {
            sp->free_pages = f;
            sp->free_pages[sp->nfree_pages++] = page;
        }
    }
}

/* Room for `need` elements in *items: grown by a quarter rather than
 * doubled, so that the allocation state stays small per spilled row. NULL
 * when memory runs out (items unchanged). */
static void *grow_quarter(void *items, uint32_t *cap, uint64_t need, size_t elem)
{
    if (need <= *cap)
        return items;
    uint64_t n = (uint64_t)*cap + *cap / 4 + 64;
    n = n < need ? need : n;
    if (n > UINT32_MAX)
        return NULL;
    void *p = realloc(items, (size_t)n * elem);
    if (p != NULL)
        *cap = (uint32_t)n;
    return p;
}

/* Append one page to the file's extent: 0, PSKV_ENOSPC (spill_max, or 29-bit
 * slot numbers), PSKV_ENOMEM. */
static int grow_page(pskv__spill *sp)
{
    uint64_t slots = ((uint64_t)sp->pages + 1) * sp->per_page;
    if (slots > PSKV__SPILL_SLOT_MAX)
        return PSKV_ENOSPC;
    uint16_t *pu = grow_quarter(sp->page_used, &sp->page_cap, (uint64_t)sp->pages + 1, sizeof *pu);
    if (pu == NULL)
        return PSKV_ENOMEM;
    sp->page_used = pu;
    uint32_t old_words = sp->bits_cap;
    uint64_t *bits = grow_quarter(sp->used_bits, &sp->bits_cap, (slots + 63) / 64, sizeof *bits);
    if (bits == NULL)
        return PSKV_ENOMEM;
    sp->used_bits = bits;
    memset(bits + old_words, 0, (size_t)(sp->bits_cap - old_words) * sizeof *bits);
    /* The cap is on the bytes of all files sharing the counter. */
    uint64_t cur = atomic_load(sp->disk_bytes);
    do {
        if (sp->cap && cur + sp->page_bytes > sp->cap)
            return PSKV_ENOSPC;
    } while (!atomic_compare_exchange_weak(sp->disk_bytes, &cur, cur + sp->page_bytes));
    sp->page_used[sp->pages++] = 0;
    return 0;
}

/* Take up to `want` free slots of page into slots[]; returns how many. */
static uint32_t take_from_page(pskv__spill *sp, uint32_t page, uint32_t want, uint32_t *slots)
{
    uint32_t got = 0, first = page * sp->per_page;
    for (uint32_t i = 0; i < sp->per_page && got < want; i++)
        if (!bit_get(sp, first + i)) {
            take_slot(sp, first + i);
            slots[got++] = first + i;
        }
    return got;
}

/* The next page, from the hole cursor on and at most once around, with at
 * least min_free free slots; UINT32_MAX when there is none. */
static uint32_t find_holes(pskv__spill *sp, uint32_t min_free)
{
    for (uint32_t k = 0; k < sp->pages; k++) {
        uint32_t page = (sp->hole_cursor + k) % sp->pages;
        uint32_t free_here = sp->per_page - sp->page_used[page];
        /* Empty pages belong to the free-page stack, except as a last
         * resort (a page the stack had no room for). */
        if (free_here >= min_free && (sp->page_used[page] > 0 || min_free == 1)) {
            sp->hole_cursor = page + 1;
            return page;
        }
    }
    return UINT32_MAX;
}

static bool may_grow(const pskv__spill *sp, uint32_t need)
{
    uint64_t slots_after = ((uint64_t)sp->pages + 1) * sp->per_page;
    uint64_t allowed = sp->used + need;
    allowed += allowed / SLACK_DIV + (uint64_t)SLACK_PAGES * sp->per_page;
    return slots_after <= allowed;
}

int pskv__spill_alloc(pskv__spill *sp, uint32_t n, uint32_t *slots)
{
    pthread_mutex_lock(&sp->lock);
    uint32_t got = 0, grown = 0;
    int rc = 0;
    while (got < n && rc == 0) {
        /* 1. an empty page: the batch fills it, no read needed */
        while (sp->nfree_pages > 0 && got < n) {
            uint32_t page = sp->free_pages[--sp->nfree_pages];
            if (sp->page_used[page] == 0) /* else taken as holes meanwhile */
                got += take_from_page(sp, page, n - got, slots + got);
        }
        if (got == n)
            break;
        uint32_t need = n - got;
        /* 2. a new page, while the file holds little free space */
        if (may_grow(sp, need) && (rc = grow_page(sp)) == 0) {
            grown++;
            got += take_from_page(sp, sp->pages - 1, need, slots + got);
            continue;
        }
        if (rc == PSKV_ENOMEM)
            break;
        rc = 0;
        /* 3. holes: pages with two or more free slots, then any new page
         * the cap allows, then single holes */
        uint32_t page = find_holes(sp, 2);
        if (page == UINT32_MAX) {
            rc = grow_page(sp);
            if (rc == 0) {
                grown++;
                page = sp->pages - 1;
            } else if (rc == PSKV_ENOSPC) {
                rc = 0;
                page = find_holes(sp, 1);
                if (page == UINT32_MAX)
                    rc = PSKV_ENOSPC;
            }
        }
        if (rc == 0)
            got += take_from_page(sp, page, need, slots + got);
    }
    if (rc != 0) {
        /* All or nothing: give back what this call took, and the pages it
         * added (they are the last ones, and empty again). */
        for (uint32_t i = 0; i < got; i++)
            give_slot(sp, slots[i]);
        if (grown > 0) {
            sp->pages -= grown;
            atomic_fetch_sub(sp->disk_bytes, (uint64_t)grown * sp->page_bytes);
            uint32_t keep = 0; /* drop the stack entries of the removed pages */
            for (uint32_t i = 0; i < sp->nfree_pages; i++)
                if (sp->free_pages[i] < sp->pages)
                    sp->free_pages[keep++] = sp->free_pages[i];
            sp->nfree_pages = keep;
            if (sp->hole_cursor >= sp->pages)
                sp->hole_cursor = 0;
        }
    }
    pthread_mutex_unlock(&sp->lock);
    return rc;
}

void pskv__spill_free(pskv__spill *sp, const uint32_t *slots, uint32_t n)
{
    pthread_mutex_lock(&sp->lock);
    for (uint32_t i = 0; i < n; i++)
        give_slot(sp, slots[i]);
    pthread_mutex_unlock(&sp->lock);
}

/* ---------------------------------------------------------------- I/O */

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
    const uint32_t k = sp->per_page, pb = sp->page_bytes;
    slot_ref *order = malloc((size_t)n * sizeof *order);
    uint32_t *pages = malloc((size_t)n * sizeof *pages);
    bool *rewrite = malloc((size_t)n * sizeof *rewrite);
    pskv__io_req *req = malloc((size_t)n * sizeof *req);
    uint8_t *buf = NULL;
    int rc = order && pages && rewrite && req ? 0 : PSKV_ENOMEM;
    uint32_t npages = 0;
    if (rc == 0) {
        for (uint32_t i = 0; i < n; i++)
            order[i] = (slot_ref){slots[i], i};
        qsort(order, n, sizeof *order, by_slot);
        for (uint32_t i = 0; i < n; i++)
            if (npages == 0 || pages[npages - 1] != order[i].slot / k)
                pages[npages++] = order[i].slot / k;
        buf = aligned_alloc(4096, ((size_t)npages * pb + 4095) / 4096 * 4096);
        rc = buf ? 0 : PSKV_ENOMEM;
    }
    pthread_mutex_lock(&sp->write_lock);
    if (rc == 0) {
        /* A page also holding slots outside this batch is read first, so
         * that its other records go back unchanged. */
        uint32_t nread = 0, j = 0;
        pthread_mutex_lock(&sp->lock);
        for (uint32_t p = 0; p < npages; p++) {
            uint32_t mine = 0;
            while (j < n && order[j].slot / k == pages[p]) {
                mine++;
                j++;
            }
            /* (A page past everything written holds nothing to keep:
             * reading it would read past the end of the file.) */
            rewrite[p] = sp->page_used[pages[p]] > mine && pages[p] < sp->written_pages;
            sp->rewrites += rewrite[p];
        }
        pthread_mutex_unlock(&sp->lock);
        for (uint32_t p = 0; p < npages; p++) {
            uint8_t *dst = buf + (size_t)p * pb;
            if (rewrite[p])
                req[nread++] = (pskv__io_req){.fd = sp->fd, .buf = dst, .len = pb,
                                              .off = (uint64_t)pages[p] * pb};
            else
                memset(dst, 0, pb);
        }
        rc = pskv__io_run(sp->io, req, nread);
    }
    if (rc == 0) {
        uint32_t p = 0;
        for (uint32_t j = 0; j < n; j++) {
            uint32_t slot = order[j].slot, i = order[j].index;
            while (pages[p] != slot / k)
                p++;
            uint8_t *dst = buf + (size_t)p * pb + (size_t)(slot % k) * sp->rec_bytes;
            memcpy(dst, rows[i], sp->stored_bytes);
            pskv_fmt_put64(dst + sp->stored_bytes, keys[i]);
            pskv_fmt_put64(dst + sp->stored_bytes + 8, record_checksum(keys[i], dst, sp->stored_bytes));
        }
        /* Consecutive pages are contiguous in the buffer: one transfer. */
        uint32_t nreq = 0;
        for (p = 0; p < npages; p++) {
            pskv__io_req *prev = nreq ? &req[nreq - 1] : NULL;
            if (prev && pages[p - 1] + 1 == pages[p] && prev->len + pb <= MERGE_MAX)
                prev->len += pb;
            else
                req[nreq++] = (pskv__io_req){.fd = sp->fd, .write = true,
                                             .buf = buf + (size_t)p * pb, .len = pb,
                                             .off = (uint64_t)pages[p] * pb};
        }
        rc = pskv__io_run(sp->io, req, nreq);
    }
    if (rc == 0) {
        pthread_mutex_lock(&sp->lock);
        if (pages[npages - 1] >= sp->written_pages)
            sp->written_pages = pages[npages - 1] + 1;
        pthread_mutex_unlock(&sp->lock);
    }
    pthread_mutex_unlock(&sp->write_lock);
    free(buf);
    free(order);
    free(pages);
    free(rewrite);
    free(req);
    return rc;
}

int pskv__spill_read(pskv__spill *sp, uint32_t n, const uint64_t *keys, const uint32_t *slots,
                     float *const *rows, int *results)
{
    if (n == 0)
        return 0;
    const size_t span = sp->read_span;
    uint8_t *buf = aligned_alloc(4096, ((size_t)n * span + 4095) / 4096 * 4096);
    pskv__io_req *req = malloc((size_t)n * sizeof *req);
    if (buf == NULL || req == NULL) {
        free(buf);
        free(req);
        for (uint32_t i = 0; results != NULL && i < n; i++)
            results[i] = PSKV_ENOMEM; /* no row was read: none may be installed */
        return PSKV_ENOMEM;
    }
    /* Only the aligned sectors that cover each record. */
    for (uint32_t i = 0; i < n; i++) {
        uint64_t off = pskv__spill_slot_offset(sp, slots[i]);
        uint64_t start = off / sp->align * sp->align;
        uint64_t end = (off + sp->rec_bytes + sp->align - 1) / sp->align * sp->align;
        req[i] = (pskv__io_req){.fd = sp->fd, .buf = buf + (size_t)i * span,
                                .len = (size_t)(end - start), .off = start};
    }
    int rc = pskv__io_run(sp->io, req, n);
    for (uint32_t i = 0; i < n; i++) {
        uint64_t off = pskv__spill_slot_offset(sp, slots[i]);
        const uint8_t *src = buf + (size_t)i * span + (off - req[i].off);
        int r = req[i].result;
        if (r == 0 && (pskv_fmt_get64(src + sp->stored_bytes) != keys[i] ||
                       pskv_fmt_get64(src + sp->stored_bytes + 8) !=
                           record_checksum(keys[i], src, sp->stored_bytes)))
            r = PSKV_ECORRUPT;
        if (r == 0)
            memcpy(rows[i], src, sp->stored_bytes);
        if (results)
            results[i] = r;
        if (rc == 0 && r != 0)
            rc = r;
    }
    free(buf);
    free(req);
    return rc;
}
