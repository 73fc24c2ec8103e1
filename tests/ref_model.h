/* A small, obviously correct reference for a pskv table — an array of rows
 * searched linearly — and the operations applied to both, compared bit for
 * bit. It follows the table's update mode: update=sync rows keep an
 * accumulator that REF_STEP applies; staleness=S rows keep the newest step
 * REF_PUSH_AT applied. Shared by tests/test_model.c (seeded random sequences) and
 * fuzz/ops_fuzzer.c (byte-driven sequences).
 *
 * Rows are built with the library's initializer and optimizer step (checked
 * against their formulas in test_optimizer); everything else — hashing,
 * shards, index, slots, dedup, batching, resharding — is what this checks. */
#ifndef PSKV_REF_MODEL_H
#define PSKV_REF_MODEL_H

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "init.h"
#include "optimizer.h"

typedef struct ref_row {
    uint64_t key;
    float *row;
    float *acc;      /* update=sync: the gradients pushed since the last step */
    uint32_t pushes; /* how many pushes acc holds */
    uint64_t step;   /* staleness=S: the newest step applied */
} ref_row;

typedef struct ref_model {
    pskv_table_options opts;
    pskv__optimizer opt;
    uint32_t dim, row_floats;
    ref_row *rows;
    uint32_t n, cap;
    float *scratch; /* a batch of summed gradients or read rows */
    uint8_t *found;
    uint32_t max_batch;
    uint64_t at_step; /* the step of the next REF_PUSH_AT */
    char what[200]; /* the first mismatch */
} ref_model;

enum ref_op {
    REF_PULL, REF_PUSH, REF_GET, REF_PUT, REF_ERASE, REF_RESHARD, REF_STEP, REF_PUSH_AT, REF_OPS
};

static inline void ref_open(ref_model *m, pskv_table *t, uint32_t max_batch)
{
    memset(m, 0, sizeof *m);
    pskv_table_info info;
    pskv_table_info_get(t, &info);
    m->opts = info.options;
    pskv__optimizer_setup(&m->opt, &m->opts);
    m->dim = info.dim;
    m->row_floats = info.dim + info.state_floats;
    m->max_batch = max_batch;
    m->scratch = malloc((size_t)max_batch * m->row_floats * sizeof(float) + 16);
    m->found = malloc(max_batch);
}

static inline void ref_close(ref_model *m)
{
    for (uint32_t i = 0; i < m->n; i++) {
        free(m->rows[i].row);
        free(m->rows[i].acc);
    }
    free(m->rows);
    free(m->scratch);
    free(m->found);
}

static inline ref_row *ref_find(ref_model *m, uint64_t key)
{
    for (uint32_t i = 0; i < m->n; i++)
        if (m->rows[i].key == key)
            return &m->rows[i];
    return NULL;
}

static inline ref_row *ref_find_or_create(ref_model *m, uint64_t key)
{
    ref_row *r = ref_find(m, key);
    if (r != NULL)
        return r;
    if (m->n == m->cap) {
        m->cap = m->cap ? m->cap * 2 : 64;
        m->rows = realloc(m->rows, m->cap * sizeof *m->rows);
    }
    r = &m->rows[m->n++];
    r->key = key;
    r->row = malloc(m->row_floats * sizeof(float));
    r->acc = calloc(m->dim, sizeof(float));
    r->pushes = 0;
    r->step = 0;
    pskv__init_weights(&m->opts, key, r->row, m->dim);
    pskv__optimizer_init_state(&m->opt, r->row + m->dim);
    return r;
}

static inline void ref_erase(ref_model *m, uint64_t key)
{
    ref_row *r = ref_find(m, key);
    if (r == NULL)
        return;
    free(r->row);
    free(r->acc);
    *r = m->rows[--m->n];
}

#define REF_FAIL(...)                                                          \
    do {                                                                       \
        snprintf(m->what, sizeof m->what, __VA_ARGS__);                        \
        return false;                                                          \
    } while (0)

static inline bool ref_any_nonfinite(const float *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(v[i]))
            return true;
    return false;
}

/* Apply one operation to the table and the model and compare what the
 * table returned. vals: n*dim floats (push gradients or put values);
 * for REF_RESHARD, n is the new shard count. */
static inline bool ref_step(ref_model *m, pskv_table *t, enum ref_op op, const uint64_t *keys,
                            uint32_t n, const float *vals)
{
    const uint32_t dim = m->dim;
    float *out = m->scratch;
    int rc;
    switch (op) {
    case REF_PULL:
        if ((rc = pskv_pull(t, keys, n, out)) != 0)
            REF_FAIL("pull returned %d", rc);
        for (uint32_t i = 0; i < n; i++)
            if (memcmp(out + i * dim, ref_find_or_create(m, keys[i])->row, dim * 4) != 0)
                REF_FAIL("pull key %llu differs", (unsigned long long)keys[i]);
        return true;
    case REF_GET:
        if ((rc = pskv_get(t, keys, n, out, m->found)) != 0)
            REF_FAIL("get returned %d", rc);
        for (uint32_t i = 0; i < n; i++) {
            ref_row *r = ref_find(m, keys[i]);
            bool same = r ? m->found[i] == 1 && memcmp(out + i * dim, r->row, dim * 4) == 0
                          : m->found[i] == 0 && out[i * dim] == 0.0f;
            if (!same)
                REF_FAIL("get key %llu differs", (unsigned long long)keys[i]);
        }
        return true;
    case REF_STEP:
        rc = pskv_step(t);
        if (m->opts.update != PSKV_UPDATE_SYNC) {
            if (rc != PSKV_EINVAL)
                REF_FAIL("step of an async table returned %d", rc);
            return true;
        }
        if (rc != 0)
            REF_FAIL("step returned %d", rc);
        for (uint32_t i = 0; i < m->n; i++)
            if (m->rows[i].pushes > 0) {
                pskv__optimizer_apply(&m->opt, m->rows[i].row, m->rows[i].acc);
                memset(m->rows[i].acc, 0, dim * sizeof(float));
                m->rows[i].pushes = 0;
            }
        return true;
    case REF_PUSH:
    case REF_PUSH_AT: {
        const bool at = op == REF_PUSH_AT;
        rc = at ? pskv_push_at(t, keys, n, vals, m->at_step) : pskv_push(t, keys, n, vals);
        if (at && m->opts.update == PSKV_UPDATE_SYNC) {
            if (rc != PSKV_EINVAL)
                REF_FAIL("push_at on a sync table returned %d", rc);
            return true;
        }
        if (ref_any_nonfinite(vals, (size_t)n * dim)) {
            if (rc != PSKV_EINVAL)
                REF_FAIL("push of NaN/Inf returned %d", rc);
            return true; /* and nothing changed: later compares check it */
        }
        if (rc != 0)
            REF_FAIL("push returned %d", rc);
        /* sum duplicates in order of appearance, apply once per key */
        for (uint32_t i = 0; i < n; i++) {
            uint32_t first = i;
            for (uint32_t k = 0; k < i && first == i; k++)
                if (keys[k] == keys[i])
                    first = k;
            if (first == i)
                memcpy(out + i * dim, vals + i * dim, dim * 4);
            else
                for (uint32_t j = 0; j < dim; j++)
                    out[first * dim + j] += vals[i * dim + j];
        }
        for (uint32_t i = 0; i < n; i++) {
            bool is_first = true;
            for (uint32_t k = 0; k < i; k++)
                is_first &= keys[k] != keys[i];
            if (!is_first)
                continue;
            ref_row *r = ref_find_or_create(m, keys[i]);
            if (m->opts.update == PSKV_UPDATE_SYNC) {
                for (uint32_t j = 0; j < dim; j++) /* from +0, as the table's */
                    r->acc[j] += out[i * dim + j];
                r->pushes++;
                continue;
            }
            if (at && m->opts.staleness_on) {
                if (r->step > m->at_step && r->step - m->at_step > (uint64_t)m->opts.staleness)
                    continue; /* too old: dropped */
                if (m->at_step > r->step)
                    r->step = m->at_step;
            }
            pskv__optimizer_apply(&m->opt, r->row, out + i * dim);
        }
        return true;
    }
    case REF_PUT:
        rc = pskv_put(t, keys, n, vals);
        if (ref_any_nonfinite(vals, (size_t)n * dim)) {
            if (rc != PSKV_EINVAL)
                REF_FAIL("put of NaN/Inf returned %d", rc);
            return true;
        }
        if (rc != 0)
            REF_FAIL("put returned %d", rc);
        for (uint32_t i = 0; i < n; i++) /* last value wins */
            memcpy(ref_find_or_create(m, keys[i])->row, vals + i * dim, dim * 4);
        return true;
    case REF_ERASE:
        if ((rc = pskv_erase(t, keys, n)) != 0)
            REF_FAIL("erase returned %d", rc);
        for (uint32_t i = 0; i < n; i++)
            ref_erase(m, keys[i]);
        return true;
    default:
        if ((rc = pskv_table_reshard(t, n)) != 0)
            REF_FAIL("reshard to %u returned %d", n, rc);
        return true;
    }
}

/* Every row of the table, with its optimizer state, equals the model. */
static inline bool ref_compare_all(ref_model *m, pskv_table *t)
{
    if (pskv_table_rows(t) != m->n)
        REF_FAIL("row count %llu, model %u", (unsigned long long)pskv_table_rows(t), m->n);
    pskv_iter *it;
    if (pskv_iter_create(t, &it) != 0)
        REF_FAIL("iter_create failed");
    float *buf = m->scratch;
    uint64_t key;
    uint32_t seen = 0;
    int rc;
    bool ok = true;
    while (ok && (rc = pskv_iter_next(it, &key, buf, buf + m->dim)) == 1) {
        ref_row *r = ref_find(m, key);
        if (r == NULL || memcmp(r->row, buf, m->row_floats * sizeof(float)) != 0) {
            snprintf(m->what, sizeof m->what, "row %llu differs or is extra",
                     (unsigned long long)key);
            ok = false;
        }
        seen++;
    }
    pskv_iter_destroy(it);
    if (ok && (rc != 0 || seen != m->n))
        REF_FAIL("iteration ended with %d after %u of %u rows", rc, seen, m->n);
    return ok;
}

#endif
