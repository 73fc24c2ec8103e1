/* The change log of a shard: which keys changed at which version, so that
 * a delta export (export.c) costs what changed since its cursor, not the
 * table's size.
 *
 * Each shard keeps (key, version) pairs in version order: versions are
 * taken under the shard's lock (pskv__visit_version), so appends to one
 * shard come in increasing order. A key changed again is appended again;
 * when the log is full it is compacted to the newest pair of each key, and
 * if it is still more than half full the oldest pairs go and the shard's
 * floor rises to the newest version dropped: exports from a cursor below
 * it get PSKV_ESTALE. The log never fails a row call: without memory it
 * drops its oldest half instead.
 *
 * The table's versions and the cursors of exports are this file's too:
 * where a new table's versions start (a random base), where a reopened
 * one's go on (the resume rule: on after a clean close, a jump past
 * anything the lost run handed out otherwise), the version record a
 * rollback leaves (unclean), and the check an export's cursor gets
 * (stale, empty, go). Invariant: a shard's log is in version order.
 * SPDX-License-Identifier: BSD-2-Clause */
#include <lmdb.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "changes.h"
#include "hash.h"
#include "records.h"
#include "pskv_internal.h"

#define LOG_MIN 64u

uint64_t pskv__version_base(void)
{
    uint64_t r = 0;
    if (getrandom(&r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r) {
        struct timespec ts; /* no entropy yet: time and pid differ enough */
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t seed[3] = {(uint64_t)ts.tv_sec, (uint64_t)ts.tv_nsec, (uint64_t)getpid()};
        r = pskv__key_hash(seed[0] ^ seed[1] << 20, seed[2]);
    }
    return ((r % PSKV__VERSION_BASES) + 1) * PSKV__VERSION_JUMP;
}

void pskv__changes_free(pskv__changes *c)
{
    free(c->e);
    memset(c, 0, sizeof *c);
}

uint64_t pskv__changes_bytes(const pskv__changes *c) { return (uint64_t)c->cap * sizeof *c->e; }

/* Drop the oldest entries so that keep remain; the floor rises. */
static void drop_oldest(pskv__changes *c, uint32_t keep)
{
    if (c->len <= keep)
        return;
    uint32_t drop = c->len - keep;
    if (c->e[drop - 1].version > c->floor)
        c->floor = c->e[drop - 1].version;
    memmove(c->e, c->e + drop, (size_t)keep * sizeof *c->e);
    c->len = keep;
}

/* Keep the newest entry of each key (order kept): 0, or PSKV_ENOMEM with
 * the log unchanged. One pass from the newest entry back through an
 * open-addressing set of the keys seen (entry positions + 1, twice as many
 * buckets as entries) marks each key's newest; a second keeps the marked.
 * It replaced a sort by key, which took a tenth of a Zipf(0.99) push's
 * time (perf, 4M rows, batches of 4096; this pass: 6%). */
static int compact(pskv__changes *c)
{
    size_t buckets = 2; /* a power of two, at least 2 * len (len < 2^31) */
    while (buckets < 2 * (size_t)c->len)
        buckets *= 2;
    const size_t mask = buckets - 1;
    uint32_t *seen = calloc(buckets, sizeof *seen);
    uint8_t *keep = malloc(c->len);
    if (seen == NULL || keep == NULL) {
        free(seen);
        free(keep);
        return PSKV_ENOMEM;
    }
    for (uint32_t i = c->len; i-- > 0;) {
        const uint64_t key = c->e[i].key;
        size_t h = (size_t)pskv__key_hash(key, 0) & mask;
        while (seen[h] != 0 && c->e[seen[h] - 1].key != key)
            h = (h + 1) & mask;
        keep[i] = seen[h] == 0;
        if (keep[i])
            seen[h] = i + 1;
    }
    uint32_t kept = 0;
    for (uint32_t i = 0; i < c->len; i++)
        if (keep[i])
            c->e[kept++] = c->e[i];
    c->len = kept;
    free(seen);
    free(keep);
    return 0;
}

void pskv__changes_add_full(pskv__shard *sh, uint64_t key, uint64_t version, uint32_t max)
{
    pskv__changes *c = &sh->log;
    PSKV__ASSERT(c->len == c->cap);
    uint32_t want = c->cap < LOG_MIN ? LOG_MIN : c->cap * 2;
    if (want > max)
        want = max < LOG_MIN ? LOG_MIN : max;
    pskv__change *ne = want > c->cap ? realloc(c->e, (size_t)want * sizeof *ne) : NULL;
    if (ne != NULL) {
        c->e = ne;
        c->cap = want;
    } else if (c->cap == 0) {
        /* No memory for a log at all: every cursor so far is stale. */
        c->floor = version;
        return;
    } else {
        if (compact(c) != 0 || c->len > c->cap / 2)
            drop_oldest(c, c->cap / 2);
    }
    pskv__changes_append(c, key, version);
}

/* First entry with version > since (entries are in version order). */
static uint32_t first_after(const pskv__changes *c, uint64_t since)
{
    uint32_t lo = 0, hi = c->len;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (c->e[mid].version <= since)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

int pskv__changes_collect(const pskv__changes *c, uint64_t since, uint64_t **keys, uint32_t *n)
{
    *keys = NULL;
    *n = 0;
    if (since < c->floor)
        return PSKV_ESTALE;
    uint32_t from = first_after(c, since), k = c->len - from;
    if (k == 0)
        return 0;
    uint64_t *out = malloc((size_t)k * sizeof *out);
    if (out == NULL)
        return PSKV_ENOMEM;
    for (uint32_t i = 0; i < k; i++)
        out[i] = c->e[from + i].key;
    *keys = out;
    *n = k;
    return 0;
}

static int by_version(const void *a, const void *b)
{
    uint64_t x = ((const pskv__change *)a)->version, y = ((const pskv__change *)b)->version;
    return (x > y) - (x < y);
}

int pskv__changes_move(const pskv_table *t, const pskv_ring *ring, pskv__shard *to, uint32_t nto)
{
    uint32_t *count = calloc(nto, sizeof *count);
    if (count == NULL)
        return PSKV_ENOMEM;
    uint64_t floor = 0;
    for (uint32_t s = 0; s < t->nshards; s++) {
        const pskv__changes *c = &t->shards[s].log;
        floor = c->floor > floor ? c->floor : floor;
        for (uint32_t i = 0; i < c->len; i++)
            count[pskv__table_route(t, ring, c->e[i].key)]++;
    }
    int rc = 0;
    for (uint32_t s = 0; s < nto && rc == 0; s++) {
        pskv__changes *d = &to[s].log;
        uint32_t cap = count[s] < LOG_MIN ? LOG_MIN : count[s];
        d->e = malloc((size_t)cap * sizeof *d->e);
        d->cap = d->e ? cap : 0;
        d->floor = floor; /* the oldest cursor every old shard could serve */
        rc = d->e ? 0 : PSKV_ENOMEM;
    }
    free(count);
    if (rc != 0)
        return rc; /* the caller frees the new shards, logs included */
    for (uint32_t s = 0; s < t->nshards; s++) {
        const pskv__changes *c = &t->shards[s].log;
        for (uint32_t i = 0; i < c->len; i++) {
            pskv__changes *d = &to[pskv__table_route(t, ring, c->e[i].key)].log;
            d->e[d->len++] = c->e[i];
        }
    }
    /* Each new shard's entries come from several old logs: back into
     * version order (qsort is not stable; the order of one version's keys
     * does not matter). */
    for (uint32_t s = 0; s < nto; s++)
        qsort(to[s].log.e, to[s].log.len, sizeof *to[s].log.e, by_version);
    return 0;
}

/* ---------------------------------------------------------------- versions and cursors */

void pskv__changes_start(pskv_table *t, uint64_t version)
{
    /* No bound to assert: a table closed cleanly by a release before the
     * random bases goes on from its small version (tests/data/format3). */
    atomic_store(&t->version, version);
    atomic_store(&t->changes_floor, version);
}

pskv__cursor pskv__changes_cursor(pskv_table *t, uint64_t since, uint64_t *version,
                                  uint64_t *floor)
{
    *version = atomic_load(&t->version);
    *floor = atomic_load(&t->changes_floor);
    for (uint32_t s = 0; s < t->nshards && since > 0; s++) {
        pskv__shard *sh = &t->shards[s];
        pskv__shard_lock(sh);
        *floor = sh->log.floor > *floor ? sh->log.floor : *floor;
        pskv__shard_unlock(sh);
    }
    if (since > 0 && since < *floor)
        return PSKV__CURSOR_DROPPED;
    if (since > *version)
        return PSKV__CURSOR_FOREIGN;
    return since == *version ? PSKV__CURSOR_EMPTY : PSKV__CURSOR_GO;
}

int pskv__changes_resume(pskv_store *s, MDB_txn *txn, pskv_table *t, bool create,
                         uint64_t *version)
{
    /* A created table starts at its base and is clean (nothing handed
     * out). A record that says clean: the last close handed out nothing
     * after it, go on from there. Not clean (a crash, a rollback): jump
     * past anything the lost run can have handed out. No record: a store
     * upgraded from format 2, which no cursor can predate. */
    uint64_t v = create ? atomic_load(&t->version) : 0;
    bool clean = create;
    int rc = create ? 0 : pskv__record_version_get(s, txn, t->name, &v, &clean);
    if (rc == PSKV_ENOTFOUND)
        rc = 0;
    if (rc != 0)
        return rc;
    if (!clean)
        v += PSKV__VERSION_JUMP;
    *version = v;
    /* This run is not clean until its close says so. */
    return pskv__record_put_version(s, txn, t->name, v, false);
}

int pskv__changes_rolled_back(pskv_store *s, MDB_txn *txn, const char *table, uint64_t version,
                              bool clean)
{
    /* A record that claims a clean close no longer describes the rows a
     * rollback leaves: the next open must jump past the versions the
     * rolled-back run handed out. */
    return clean ? pskv__record_put_version(s, txn, table, version, false) : 0;
}
