/* Byte-level damage to a closed store's data.mdb, for the tests that check
 * what pskv does with pages LMDB itself does not validate. Knows LMDB
 * 0.9's page layout (lmdb.h/mdb.c of Debian's 0.9.24):
 *   page:  pgno u64 | pad u16 | flags u16 | lower u16 | upper u16 | ptrs u16[]
 *   node:  lo u16 | hi u16 | flags u16 | ksize u16 | key | data
 *          (leaf: data size lo | hi << 16; branch: child pgno lo | hi << 16 |
 *          flags << 32)
 *   meta (pages 0, 1, after the page header): magic u32 | version u32 |
 *          address u64 | mapsize u64 | dbs[2] (48 bytes each: ... entries
 *          at 32, root at 40) | last_pg u64 | txnid u64
 * Only pages reachable from the current meta page are picked, so that the
 * damage is to what a reader sees. */
#ifndef PSKV_TEST_DAMAGE_H
#define PSKV_TEST_DAMAGE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DMG_PSIZE 4096u
#define DMG_P_BRANCH 0x01u
#define DMG_P_LEAF 0x02u
#define DMG_P_OVERFLOW 0x04u
#define DMG_F_BIGDATA 0x01u
#define DMG_F_SUBDATA 0x02u
#define DMG_META_TXNID (16u + 128u)
#define DMG_META_DBS (16u + 24u)
#define DMG_NONE UINT64_MAX

typedef struct dmg_file {
    uint8_t *b;
    size_t len;
} dmg_file;

static inline bool dmg_load(const char *path, dmg_file *f)
{
    FILE *fp = fopen(path, "rb");
    if (fp == NULL)
        return false;
    fseek(fp, 0, SEEK_END);
    f->len = (size_t)ftell(fp);
    fseek(fp, 0, SEEK_SET);
    f->b = malloc(f->len ? f->len : 1);
    bool ok = f->b != NULL && fread(f->b, 1, f->len, fp) == f->len;
    fclose(fp);
    return ok;
}

static inline bool dmg_save(const char *path, const dmg_file *f)
{
    FILE *fp = fopen(path, "wb");
    if (fp == NULL)
        return false;
    bool ok = fwrite(f->b, 1, f->len, fp) == f->len;
    return fclose(fp) == 0 && ok;
}

static inline uint16_t dmg_u16(const uint8_t *p)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}
static inline uint64_t dmg_u64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}
static inline void dmg_put16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
static inline void dmg_put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }

static inline uint8_t *dmg_page(const dmg_file *f, uint64_t pgno)
{
    return pgno < f->len / DMG_PSIZE ? f->b + pgno * DMG_PSIZE : NULL;
}

/* The meta page LMDB opens (the higher txnid). */
static inline int dmg_meta_current(const dmg_file *f)
{
    return dmg_u64(f->b + DMG_PSIZE + DMG_META_TXNID) > dmg_u64(f->b + DMG_META_TXNID) ? 1 : 0;
}

static inline unsigned dmg_nkeys(const uint8_t *page)
{
    uint16_t lower = dmg_u16(page + 12);
    return lower >= 16 && lower <= DMG_PSIZE ? (lower - 16u) / 2u : 0;
}

static inline uint8_t *dmg_node(const dmg_file *f, uint8_t *page, unsigned i)
{
    uint16_t off = dmg_u16(page + 16 + 2 * i);
    return off >= 16 && off + 8u <= DMG_PSIZE && page + off + 8 <= f->b + f->len ? page + off
                                                                                 : NULL;
}

/* Every page of the tree under root, depth first (bounded: damage can make
 * cycles); fn gets each page number. */
typedef void (*dmg_page_fn)(const dmg_file *f, uint64_t pgno, void *arg);
static inline void dmg_walk_depth(const dmg_file *f, uint64_t root, dmg_page_fn fn, void *arg,
                                  int depth)
{
    uint8_t *p = dmg_page(f, root);
    if (p == NULL || depth > 16)
        return;
    fn(f, root, arg);
    if (!(dmg_u16(p + 10) & DMG_P_BRANCH))
        return;
    for (unsigned i = 0; i < dmg_nkeys(p); i++) {
        uint8_t *n = dmg_node(f, p, i);
        if (n != NULL)
            dmg_walk_depth(f, dmg_u16(n) | (uint64_t)dmg_u16(n + 2) << 16 |
                                  (uint64_t)dmg_u16(n + 4) << 32,
                           fn, arg, depth + 1);
    }
}
static inline void dmg_walk(const dmg_file *f, uint64_t root, dmg_page_fn fn, void *arg)
{
    dmg_walk_depth(f, root, fn, arg, 0);
}

typedef struct dmg_find {
    const void *key;
    size_t klen;
    uint64_t pgno;
    uint8_t *node;
} dmg_find;

static inline void dmg_find_fn(const dmg_file *f, uint64_t pgno, void *arg)
{
    dmg_find *q = arg;
    uint8_t *p = dmg_page(f, pgno);
    if (q->node != NULL || !(dmg_u16(p + 10) & DMG_P_LEAF))
        return;
    for (unsigned i = 0; i < dmg_nkeys(p); i++) {
        uint8_t *n = dmg_node(f, p, i);
        if (n != NULL && dmg_u16(n + 6) == q->klen && n + 8 + q->klen <= p + DMG_PSIZE &&
            memcmp(n + 8, q->key, q->klen) == 0) {
            q->pgno = pgno;
            q->node = n;
            return;
        }
    }
}

/* The leaf node of key in the tree under root, or NULL. */
static inline uint8_t *dmg_find_node(const dmg_file *f, uint64_t root, const void *key,
                                     size_t klen, uint64_t *pgno)
{
    dmg_find q = {key, klen, DMG_NONE, NULL};
    dmg_walk(f, root, dmg_find_fn, &q);
    if (pgno != NULL)
        *pgno = q.pgno;
    return q.node;
}

/* Hide key and every later key of its leaf: the leaf's key count lowered
 * to key's index (never to 0). */
static inline bool dmg_hide_from(const dmg_file *f, uint64_t root, const void *key, size_t klen)
{
    uint64_t pg;
    uint8_t *n = dmg_find_node(f, root, key, klen, &pg), *p;
    if (n == NULL || (p = dmg_page(f, pg)) == NULL)
        return false;
    for (unsigned i = 1; i < dmg_nkeys(p); i++)
        if (dmg_node(f, p, i) == n) {
            dmg_put16(p + 12, (uint16_t)(16 + 2 * i));
            return true;
        }
    return false;
}

/* The first leaf under root (root itself when it is one), or NULL. */
static inline uint8_t *dmg_first_leaf(const dmg_file *f, uint64_t root)
{
    uint8_t *p = dmg_page(f, root);
    for (int depth = 0; p != NULL && depth < 16 && (dmg_u16(p + 10) & DMG_P_BRANCH); depth++) {
        uint8_t *n = dmg_node(f, p, 0);
        p = n ? dmg_page(f, dmg_u16(n) | (uint64_t)dmg_u16(n + 2) << 16 |
                                (uint64_t)dmg_u16(n + 4) << 32)
              : NULL;
    }
    return p;
}

/* The root page of the main database, or of named database name. */
static inline uint64_t dmg_root(const dmg_file *f, const char *name)
{
    const uint8_t *meta = f->b + (size_t)dmg_meta_current(f) * DMG_PSIZE;
    uint64_t main_root = dmg_u64(meta + DMG_META_DBS + 48 + 40);
    if (name == NULL)
        return main_root;
    uint8_t *n = dmg_find_node(f, main_root, name, strlen(name), NULL);
    if (n == NULL || !(dmg_u16(n + 4) & DMG_F_SUBDATA))
        return DMG_NONE;
    return dmg_u64(n + 8 + strlen(name) + 40);
}

#endif
