/* A shard's spilled rows: key -> spill slot, kept apart from the index of
 * resident rows so that a row on disk costs 12 bytes of entry at a high
 * load factor instead of a 16-byte index entry at 0.375-0.75.
 *
 * Robin Hood linear probing over a capacity that is not a power of two
 * (positions by multiply-shift of the key hash): probe runs stay short at
 * load factors up to 0.9, and a lookup of an absent key stops as soon as it
 * meets an entry closer to its home than the key would be. Deletion shifts
 * the rest of the run back, so there are no tombstones.
 *
 * The map grows when an insertion would pass 0.9 and then holds exactly
 * 0.8 of its capacity (15 bytes per entry); it shrinks back to 0.8 when
 * removals take it below 0.6 (at most 20 bytes per entry meanwhile).
 * SPDX-License-Identifier: BSD-2-Clause */
#include <stdlib.h>

#include "pskv_internal.h"

#define MAP_MIN 16u

static uint32_t home_of(uint32_t cap, uint64_t hash)
{
    return (uint32_t)(((uint64_t)(uint32_t)hash * cap) >> 32);
}

static uint32_t entry_home(const pskv__spillmap *m, uint32_t cap, uint64_t key)
{
    return home_of(cap, pskv__key_hash(key, m->seed));
}

static uint32_t distance(uint32_t cap, uint32_t pos, uint32_t home)
{
    return pos >= home ? pos - home : pos + cap - home;
}

/* Robin Hood insertion of an absent key into e[cap] (never full). */
static void place(const pskv__spillmap *m, pskv__spilled *e, uint32_t cap, pskv__spilled cur,
                  uint64_t hash)
{
    uint32_t i = home_of(cap, hash), d = 0;
    for (;;) {
        if (e[i].slot == PSKV__SLOT_EMPTY) {
            e[i] = cur;
            return;
        }
        uint32_t other = distance(cap, i, entry_home(m, cap, e[i].key));
        if (other < d) { /* the poorer entry takes the place */
            pskv__spilled t = e[i];
            e[i] = cur;
            cur = t;
            d = other;
        }
        d++;
        i = i + 1 == cap ? 0 : i + 1;
    }
}

/* Move every entry into a new array of cap entries; PSKV_ENOMEM leaves the
 * map as it was. */
static int rebuild(pskv__spillmap *m, uint32_t cap)
{
    pskv__spilled *e = malloc((size_t)cap * sizeof *e);
    if (e == NULL)
        return PSKV_ENOMEM;
    for (uint32_t i = 0; i < cap; i++)
        e[i].slot = PSKV__SLOT_EMPTY;
    for (uint32_t i = 0; i < m->cap; i++)
        if (m->e[i].slot != PSKV__SLOT_EMPTY)
            place(m, e, cap, m->e[i], pskv__key_hash(m->e[i].key, m->seed));
    free(m->e);
    m->e = e;
    m->cap = cap;
    return 0;
}

/* The capacity that holds n entries at a load factor of 0.8. */
static uint64_t cap_for(uint64_t n)
{
    uint64_t cap = n + n / 4 + 1;
    return cap < MAP_MIN ? MAP_MIN : cap;
}

void pskv__spillmap_init(pskv__spillmap *m, uint64_t seed)
{
    *m = (pskv__spillmap){.seed = seed};
}

void pskv__spillmap_free(pskv__spillmap *m)
{
    free(m->e);
    m->e = NULL;
    m->cap = m->count = m->reserved = 0;
}

int pskv__spillmap_reserve(pskv__spillmap *m, uint32_t k)
{
    uint64_t need = (uint64_t)m->count + m->reserved + k;
    if (need > (uint64_t)m->cap / 10u * 9u) {
        uint64_t cap = cap_for(need);
        if (cap >= PSKV__SLOT_EMPTY)
            return PSKV_ENOMEM;
        int rc = rebuild(m, (uint32_t)cap);
        if (rc != 0)
            return rc;
    }
    m->reserved += k;
    return 0;
}

void pskv__spillmap_unreserve(pskv__spillmap *m, uint32_t k) { m->reserved -= k; }

pskv__spilled *pskv__spillmap_find(pskv__spillmap *m, uint64_t key, uint64_t hash)
{
    if (m->count == 0)
        return NULL;
    uint32_t cap = m->cap;
    uint32_t i = home_of(cap, hash), d = 0;
    for (;;) {
        pskv__spilled *e = &m->e[i];
        if (e->slot == PSKV__SLOT_EMPTY)
            return NULL;
        if (e->key == key)
            return e;
        if (distance(cap, i, entry_home(m, cap, e->key)) < d)
            return NULL; /* key would have taken this place */
        d++;
        i = i + 1 == cap ? 0 : i + 1;
    }
}

void pskv__spillmap_insert_reserved(pskv__spillmap *m, uint64_t key, uint64_t hash,
                                    uint32_t slot)
{
    m->reserved--;
    m->count++;
    place(m, m->e, m->cap, (pskv__spilled){key, slot}, hash);
}

void pskv__spillmap_remove(pskv__spillmap *m, pskv__spilled *e)
{
    uint32_t cap = m->cap;
    uint32_t i = (uint32_t)(e - m->e);
    for (;;) {
        uint32_t j = i + 1 == cap ? 0 : i + 1;
        pskv__spilled *n = &m->e[j];
        if (n->slot == PSKV__SLOT_EMPTY || distance(cap, j, entry_home(m, cap, n->key)) == 0)
            break;
        m->e[i] = *n;
        i = j;
    }
    m->e[i].slot = PSKV__SLOT_EMPTY;
    m->count--;
    uint64_t live = (uint64_t)m->count + m->reserved;
    if (live == 0)
        pskv__spillmap_free(m); /* an empty map holds no memory */
    else if (cap > MAP_MIN && live < (uint64_t)cap / 10u * 6u)
        (void)rebuild(m, (uint32_t)cap_for(live)); /* no memory: stay larger */
}

uint64_t pskv__spillmap_bytes(const pskv__spillmap *m)
{
    return (uint64_t)m->cap * sizeof(pskv__spilled);
}
