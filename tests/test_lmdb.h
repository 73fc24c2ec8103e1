/* Tests that damage or rewrite a closed durable store through LMDB itself,
 * keeping the B-tree intact, to check pskv's own checks. */
#ifndef PSKV_TEST_LMDB_H
#define PSKV_TEST_LMDB_H

#include <lmdb.h>
#include <string.h>

#include "format.h"
#include "test_common.h"

/* A write transaction on database db of the closed store in dir. */
typedef struct lmdb_write {
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
} lmdb_write;

static inline void lmdb_write_begin(const char *dir, const char *db, lmdb_write *w)
{
    ck_assert_int_eq(mdb_env_create(&w->env), 0);
    mdb_env_set_maxdbs(w->env, 8);
    ck_assert_int_eq(mdb_env_open(w->env, dir, 0, 0644), 0);
    ck_assert_int_eq(mdb_txn_begin(w->env, NULL, 0, &w->txn), 0);
    ck_assert_int_eq(mdb_dbi_open(w->txn, db, 0, &w->dbi), 0);
}

static inline void lmdb_write_commit(lmdb_write *w)
{
    ck_assert_int_eq(mdb_txn_commit(w->txn), 0);
    mdb_env_close(w->env);
}

/* Put (key, val) into database db of the store in dir. */
static inline void lmdb_put(const char *dir, const char *db, const void *key, size_t klen,
                            const void *val, size_t vlen)
{
    lmdb_write w;
    lmdb_write_begin(dir, db, &w);
    MDB_val k = {klen, (void *)key}, v = {vlen, (void *)val};
    ck_assert_int_eq(mdb_put(w.txn, w.dbi, &k, &v, 0), 0);
    lmdb_write_commit(&w);
}

/* Delete key from database db of the store in dir. */
static inline void lmdb_del(const char *dir, const char *db, const void *key, size_t klen)
{
    lmdb_write w;
    lmdb_write_begin(dir, db, &w);
    MDB_val k = {klen, (void *)key};
    ck_assert_int_eq(mdb_del(w.txn, w.dbi, &k, NULL), 0);
    lmdb_write_commit(&w);
}

/* Flip bits `mask` of byte `at` of the value of key in database db. */
static inline void lmdb_damage_value(const char *dir, const char *db, const void *key,
                                     size_t klen, size_t at, uint8_t mask)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    ck_assert_int_eq(mdb_env_create(&env), 0);
    mdb_env_set_maxdbs(env, 8);
    ck_assert_int_eq(mdb_env_open(env, dir, MDB_RDONLY, 0644), 0);
    ck_assert_int_eq(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
    ck_assert_int_eq(mdb_dbi_open(txn, db, 0, &dbi), 0);
    MDB_val k = {klen, (void *)key}, v;
    ck_assert_int_eq(mdb_get(txn, dbi, &k, &v), 0);
    ck_assert_uint_lt(at, v.mv_size);
    size_t len = v.mv_size;
    uint8_t *buf = malloc(len);
    memcpy(buf, v.mv_data, len);
    mdb_txn_abort(txn);
    mdb_env_close(env);
    buf[at] ^= mask;
    lmdb_put(dir, db, key, klen, buf, len);
    free(buf);
}

/* Flip bits `mask` of byte `at` in the stored row of key in table. */
static inline void lmdb_damage_row(const char *dir, const char *table, uint64_t key, size_t at,
                                   uint8_t mask)
{
    char db[PSKV_NAME_MAX + 16];
    snprintf(db, sizeof db, "%s%s", PSKV_FMT_ROWS_PREFIX, table);
    uint8_t kb[8];
    pskv_fmt_key(kb, key);
    lmdb_damage_value(dir, db, kb, 8, at, mask);
}

#endif
