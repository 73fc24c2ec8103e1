/* Consistent-hash ring: weighted nodes, virtual nodes, batch routing.
 *
 * Each node owns round(vnodes * weight) points on a 64-bit circle, placed by
 * XXH3 of (node, point number). A key belongs to the first point at or after
 * XXH3(key). Adding or removing a node only changes the arcs next to its own
 * points, so only its keys move. A bucket table over the top bits of the
 * circle makes a lookup O(1) on average instead of a binary search: with four
 * buckets per point most buckets hold no point, and those name their node
 * directly (one load routes a key; the rest search from the bucket's first
 * point).
 * SPDX-License-Identifier: BSD-2-Clause */
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "array.h"
#include "errors.h"
#include "hash.h"
#include "pskv.h"
#include "ring.h"

typedef struct ring_point {
    uint64_t hash;
    uint32_t node;
    uint32_t pad;
} ring_point;

typedef struct ring_node {
    uint32_t id;
    uint32_t points;
    double weight;
} ring_node;

static int ring_rebuild(pskv_ring *r, ring_node *nodes, uint32_t nnodes);

/* A bucket: its first point (hash >= the bucket's start), and the node of
 * every hash in the bucket when no point lies inside it, else ROUTE_SEARCH. */
typedef struct ring_bucket {
    uint32_t first;
    uint32_t node;
} ring_bucket;
#define ROUTE_SEARCH UINT32_MAX /* a node of this id is found by the search */

struct pskv_ring {
    unsigned vnodes;
    uint64_t seed;
    ring_node *nodes;
    uint32_t nnodes, nodes_cap;
    ring_point *points; /* sorted by (hash, node) */
    uint32_t npoints;
    ring_bucket *bucket; /* [1 << bucket_bits] */
    unsigned bucket_bits;
};

/* Seeds for the point positions differ from the key seed so that a key equal
 * to a (node, i) pair does not land exactly on that point. */
#define POINT_SEED_MIX 0x5bd1e9955bd1e995ull

static uint64_t point_hash(const pskv_ring *r, uint32_t node, uint32_t i)
{
    uint8_t b[8];
    uint64_t v = ((uint64_t)node << 32) | i;
    for (int k = 0; k < 8; k++)
        b[k] = (uint8_t)(v >> (8 * k));
    return XXH3_64bits_withSeed(b, sizeof b, r->seed ^ POINT_SEED_MIX);
}

int pskv_ring_create(unsigned vnodes, uint64_t seed, pskv_ring **out)
{
    if (out == NULL)
        return PSKV_EINVAL;
    *out = NULL;
    if (vnodes == 0)
        vnodes = PSKV_RING_DEFAULT_VNODES;
    if (vnodes > PSKV_RING_MAX_POINTS)
        return PSKV_EINVAL;
    pskv_ring *r = calloc(1, sizeof *r);
    if (r == NULL)
        return PSKV_ENOMEM;
    r->vnodes = vnodes;
    r->seed = seed;
    *out = r;
    return 0;
}

void pskv_ring_destroy(pskv_ring *r)
{
    if (r == NULL)
        return;
    free(r->nodes);
    free(r->points);
    free(r->bucket);
    free(r);
}

uint32_t pskv_ring_nodes(const pskv_ring *r) { return r ? r->nnodes : 0; }

uint64_t pskv__ring_seed(const pskv_ring *r) { return r->seed; }

int pskv__ring_copy(const pskv_ring *r, pskv_ring **out)
{
    pskv_ring *c;
    int rc = pskv_ring_create(r->vnodes, r->seed, &c);
    if (rc != 0)
        return rc;
    c->nodes = malloc((r->nnodes ? r->nnodes : 1) * sizeof *c->nodes);
    rc = c->nodes ? 0 : PSKV_ENOMEM;
    if (rc == 0) {
        memcpy(c->nodes, r->nodes, r->nnodes * sizeof *c->nodes);
        c->nodes_cap = r->nnodes ? r->nnodes : 1;
        rc = ring_rebuild(c, c->nodes, r->nnodes);
    }
    if (rc != 0) {
        pskv_ring_destroy(c);
        return rc;
    }
    c->nnodes = r->nnodes;
    *out = c;
    return 0;
}

int pskv__ring_create_uniform(unsigned vnodes, uint64_t seed, uint32_t nodes, pskv_ring **out)
{
    pskv_ring *r;
    int rc = pskv_ring_create(vnodes, seed, &r);
    if (rc != 0)
        return rc;
    r->nodes = malloc((nodes ? nodes : 1) * sizeof *r->nodes);
    if (r->nodes == NULL) {
        pskv_ring_destroy(r);
        return PSKV_ENOMEM;
    }
    r->nodes_cap = nodes;
    for (uint32_t i = 0; i < nodes; i++)
        r->nodes[i] = (ring_node){i, r->vnodes, 1.0};
    rc = ring_rebuild(r, r->nodes, nodes);
    if (rc != 0) {
        pskv_ring_destroy(r);
        return rc;
    }
    r->nnodes = nodes;
    *out = r;
    return 0;
}

static int point_cmp(const void *a, const void *b)
{
    const ring_point *x = a, *y = b;
    if (x->hash != y->hash)
        return x->hash < y->hash ? -1 : 1;
    return x->node < y->node ? -1 : x->node > y->node;
}

/* Rebuild sorted points and buckets from the node list into fresh arrays;
 * the ring is only modified when everything was allocated. */
static int ring_rebuild(pskv_ring *r, ring_node *nodes, uint32_t nnodes)
{
    uint64_t total = 0;
    for (uint32_t i = 0; i < nnodes; i++)
        total += nodes[i].points;
    if (total > PSKV_RING_MAX_POINTS)
        return PSKV_ERANGE;
    unsigned bits = 1;
    while (bits < 24 && (1ull << bits) < total * 4)
        bits++;
    ring_point *pts = malloc((total ? total : 1) * sizeof *pts);
    ring_bucket *bucket = malloc(((size_t)1 << bits) * sizeof *bucket);
    if (pts == NULL || bucket == NULL) {
        free(pts);
        free(bucket);
        return PSKV_ENOMEM;
    }
    uint32_t n = 0;
    for (uint32_t i = 0; i < nnodes; i++)
        for (uint32_t k = 0; k < nodes[i].points; k++)
            pts[n++] = (ring_point){point_hash(r, nodes[i].id, k), nodes[i].id, 0};
    qsort(pts, n, sizeof *pts, point_cmp);
    uint32_t p = 0;
    for (uint64_t b = 0; b < (1ull << bits); b++) {
        uint64_t start = b << (64 - bits);
        uint64_t last = start | (UINT64_MAX >> bits);
        while (p < n && pts[p].hash < start)
            p++;
        bucket[b].first = p;
        /* No point below last in [start, last]: every hash routes to point p (or wraps). */
        bool empty = p == n || pts[p].hash >= last;
        bucket[b].node = !empty || n == 0 ? ROUTE_SEARCH : pts[p == n ? 0 : p].node;
    }
    free(r->points);
    free(r->bucket);
    r->points = pts;
    r->npoints = n;
    r->bucket = bucket;
    r->bucket_bits = bits;
    return 0;
}

static ring_node *node_find(const pskv_ring *r, uint32_t id)
{
    for (uint32_t i = 0; i < r->nnodes; i++)
        if (r->nodes[i].id == id)
            return &r->nodes[i];
    return NULL;
}

int pskv_ring_add(pskv_ring *r, uint32_t node, double weight)
{
    if (r == NULL || !(weight > 0.0) || !(weight <= 1000.0))
        return PSKV_EINVAL;
    if (node_find(r, node) != NULL)
        return PSKV_EEXIST;
    double pts = round((double)r->vnodes * weight);
    if (pts < 1)
        pts = 1;
    if (pts > PSKV_RING_MAX_POINTS)
        return PSKV_ERANGE;
    ring_node *nn = pskv__array_grow(r->nodes, &r->nodes_cap, r->nnodes + 1ull, sizeof *nn, 8);
    if (nn == NULL)
        return PSKV_ENOMEM;
    r->nodes = nn;
    r->nodes[r->nnodes] = (ring_node){node, (uint32_t)pts, weight};
    int rc = ring_rebuild(r, r->nodes, r->nnodes + 1);
    if (rc != 0)
        return rc;
    r->nnodes++;
    return 0;
}

int pskv_ring_remove(pskv_ring *r, uint32_t node)
{
    if (r == NULL)
        return PSKV_EINVAL;
    ring_node *victim = node_find(r, node);
    if (victim == NULL)
        return PSKV_ENOTFOUND;
    ring_node *rest = malloc((r->nnodes ? r->nnodes : 1) * sizeof *rest);
    if (rest == NULL)
        return PSKV_ENOMEM;
    uint32_t k = 0;
    for (uint32_t i = 0; i < r->nnodes; i++)
        if (r->nodes[i].id != node)
            rest[k++] = r->nodes[i];
    int rc = ring_rebuild(r, rest, k);
    if (rc == 0) {
        memcpy(r->nodes, rest, k * sizeof *rest);
        r->nnodes = k;
    }
    free(rest);
    return rc;
}

static inline uint32_t route_hash(const pskv_ring *r, uint64_t hash)
{
    const ring_bucket *b = &r->bucket[hash >> (64 - r->bucket_bits)];
    if (PSKV__LIKELY(b->node != ROUTE_SEARCH))
        return b->node;
    uint32_t i = b->first;
    while (i < r->npoints && r->points[i].hash < hash)
        i++;
    if (i == r->npoints)
        i = 0; /* wrap around the circle */
    return r->points[i].node;
}

uint32_t pskv__ring_route_hash(const pskv_ring *r, uint64_t hash) { return route_hash(r, hash); }

void pskv__ring_route_hashes(const pskv_ring *r, const uint64_t *hash, size_t n, uint32_t *node)
{
    for (size_t i = 0; i < n; i++)
        node[i] = route_hash(r, hash[i]);
}

int pskv_ring_route(const pskv_ring *r, const uint64_t *keys, size_t n, uint32_t *node_out)
{
    if (r == NULL || (n > 0 && (keys == NULL || node_out == NULL)))
        return PSKV_EINVAL;
    if (n == 0)
        return 0;
    if (r->npoints == 0)
        return PSKV_ENOTFOUND;
    for (size_t i = 0; i < n; i++)
        node_out[i] = pskv__ring_route_hash(r, pskv__key_hash(keys[i], r->seed));
    return 0;
}
