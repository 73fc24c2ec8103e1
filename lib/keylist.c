/* A growing list of keys in fixed blocks (pskv__keylist): appending never
 * moves or copies what is there, so that many shards growing their dirty
 * lists at once do not stall on reallocations.
 * SPDX-License-Identifier: BSD-2-Clause */
#include <stdlib.h>

#include "array.h"
#include "keylist.h"
#include "pskv.h"

int pskv__keylist_reserve(pskv__keylist *l, uint32_t k)
{
    uint64_t need = (uint64_t)l->count + l->reserved + k;
    while ((uint64_t)l->nblocks * PSKV__KEYS_PER_BLOCK < need) {
        uint64_t **b = pskv__array_grow(l->blocks, &l->blocks_cap, l->nblocks + 1ull, sizeof *b, 4);
        if (b == NULL)
            return PSKV_ENOMEM;
        l->blocks = b;
        if ((b[l->nblocks] = malloc(PSKV__KEYS_PER_BLOCK * sizeof **b)) == NULL)
            return PSKV_ENOMEM;
        l->nblocks++;
    }
    l->reserved += k;
    return 0;
}

void pskv__keylist_append(pskv__keylist *l, uint64_t key)
{
    PSKV__ASSERT(l->reserved > 0);
    l->reserved--;
    l->blocks[l->count / PSKV__KEYS_PER_BLOCK][l->count % PSKV__KEYS_PER_BLOCK] = key;
    l->count++;
}

void pskv__keylist_drop_front(pskv__keylist *l, uint32_t k)
{
    PSKV__ASSERT(k <= l->count);
    for (uint32_t i = k; i < l->count; i++)
        l->blocks[(i - k) / PSKV__KEYS_PER_BLOCK][(i - k) % PSKV__KEYS_PER_BLOCK] =
            pskv__keylist_at(l, i);
    l->count -= k;
}

void pskv__keylist_free(pskv__keylist *l)
{
    for (uint32_t i = 0; i < l->nblocks; i++)
        free(l->blocks[i]);
    free(l->blocks);
    *l = (pskv__keylist){0};
}
