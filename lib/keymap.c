/* A key -> 32-bit value map. A shard uses it for its spilled rows (key ->
 * spill slot), kept apart from the index of resident rows so that a row on
 * disk costs 12 bytes of entry at a high load factor instead of a 16-byte
 * index entry at 0.375-0.75, and for its pre-images and tombstones.
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

#include "hash.h"
#include "keymap.h"
#include "pskv.h"

#define MAP_MIN 16u

static uint32_t home_of(uint32_t cap, uint64_t hash)
{
    return (uint32_t)(((uint64_t)(uint32_t)hash * cap) >> 32);
}

static uint32_t entry_home(const pskv__keymap *m, uint32_t cap, uint64_t key)
{
    return home_of(cap, pskv__key_hash(key, m->seed));
}

static uint32_t distance(uint32_t cap, uint32_t pos, uint32_t home)
{
    return pos >= home ? pos - home : pos + cap - home;
}

/* Robin Hood insertion of an absent key into e[cap] (never full). */
static void place(const pskv__keymap *m, pskv__keyval *e, uint32_t cap, pskv__keyval cur,
                  uint64_t hash)
{
    uint32_t i = home_of(cap, hash), d = 0;
    for (;;) {
        if (e[i].value == PSKV__SLOT_EMPTY) {
            e[i] = cur;
            return;
        }
        uint32_t other = distance(cap, i, entry_home(m, cap, e[i].key));
        if (other < d) { /* the poorer entry takes the place */
            pskv__keyval t = e[i];
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
static int rebuild(pskv__keymap *m, uint32_t cap)
{
    pskv__keyval *e = malloc((size_t)cap * sizeof *e);
    if (e == NULL)
        return PSKV_ENOMEM;
    for (uint32_t i = 0; i < cap; i++)
        e[i].value = PSKV__SLOT_EMPTY;
    for (uint32_t i = 0; i < m->cap; i++)
        if (m->e[i].value != PSKV__SLOT_EMPTY)
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

void pskv__keymap_init(pskv__keymap *m, uint64_t seed)
{
    *m = (pskv__keymap){.seed = seed};
}

void pskv__keymap_free(pskv__keymap *m)
{
    free(m->e);
    m->e = NULL;
    m->cap = m->count = m->reserved = 0;
}

int pskv__keymap_reserve(pskv__keymap *m, uint32_t k)
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

void pskv__keymap_unreserve(pskv__keymap *m, uint32_t k) { m->reserved -= k; }

pskv__keyval *pskv__keymap_find(pskv__keymap *m, uint64_t key, uint64_t hash)
{
    if (m->count == 0)
        return NULL;
    uint32_t cap = m->cap;
    uint32_t i = home_of(cap, hash), d = 0;
    for (;;) {
        pskv__keyval *e = &m->e[i];
        if (e->value == PSKV__SLOT_EMPTY)
            return NULL;
        if (e->key == key)
            return e;
        if (distance(cap, i, entry_home(m, cap, e->key)) < d)
            return NULL; /* key would have taken this place */
        d++;
        i = i + 1 == cap ? 0 : i + 1;
    }
}

void pskv__keymap_insert_reserved(pskv__keymap *m, uint64_t key, uint64_t hash,
                                    uint32_t slot)
{
    PSKV__ASSERT(m->reserved > 0);
    m->reserved--;
    m->count++;
    place(m, m->e, m->cap, (pskv__keyval){key, slot}, hash);
}

void pskv__keymap_remove(pskv__keymap *m, pskv__keyval *e)
{
    uint32_t cap = m->cap;
    uint32_t i = (uint32_t)(e - m->e);
    for (;;) {
        uint32_t j = i + 1 == cap ? 0 : i + 1;
        pskv__keyval *n = &m->e[j];
        if (n->value == PSKV__SLOT_EMPTY || distance(cap, j, entry_home(m, cap, n->key)) == 0)
            break;
        m->e[i] = *n;
        i = j;
    }
    m->e[i].value = PSKV__SLOT_EMPTY;
    m->count--;
    uint64_t live = (uint64_t)m->count + m->reserved;
    if (live == 0)
        pskv__keymap_free(m); /* an empty map holds no memory */
    else if (cap > MAP_MIN && live < (uint64_t)cap / 10u * 6u)
        (void)rebuild(m, (uint32_t)cap_for(live)); /* no memory: stay larger */
}

uint64_t pskv__keymap_bytes(const pskv__keymap *m)
{
    return (uint64_t)m->cap * sizeof(pskv__keyval);
}
