/* What tables a store holds, opened or not: pskv_store_tables on an open
 * store, pskv_dir_tables on a directory read beside its owner. The walk
 * over the schema records is persist.c's.
 * SPDX-License-Identifier: BSD-2-Clause */
#include <stdlib.h>
#include <string.h>

#include "dirlock.h"
#include "errors.h"
#include "persist.h"
#include "pskv_internal.h"

/* Copy n descriptions out when they fit (out untouched otherwise). */
static int hand_out(const pskv_table_desc *d, size_t count, pskv_table_desc *out, size_t cap,
                    size_t *n)
{
    *n = count;
    if (cap < count)
        return PSKV_ERANGE;
    if (count > 0)
        memcpy(out, d, count * sizeof *d);
    return 0;
}

static void describe_open(const pskv_table *t, pskv_table_desc *d)
{
    memset(d, 0, sizeof *d);
    memcpy(d->name, t->name, strlen(t->name) + 1);
    d->options = t->opts;
    d->options.shards = t->nshards;
    d->dim = t->opts.dim;
    d->state_floats = t->state_floats;
    d->row_bytes = t->payload_bytes;
    d->rows = pskv_table_rows(t);
    d->open = 1;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(((const pskv_table_desc *)a)->name, ((const pskv_table_desc *)b)->name);
}

int pskv_store_tables(pskv_store *s, pskv_table_desc *out, size_t cap, size_t *n)
{
    pskv__detail_clear();
    if (s == NULL || n == NULL || (out == NULL && cap > 0))
        return PSKV_EINVAL;
    pskv_table_desc *d = NULL;
    size_t count = 0;
    int rc = 0;
    if (s->env != NULL) {
        rc = pskv__persist_tables(s, &d, &count);
        if (rc != 0)
            return rc;
        /* Mark the open ones (every open table of a durable store has its
         * schema persisted when it is created). */
        pthread_mutex_lock(&s->lock);
        for (uint32_t i = 0; i < s->ntables; i++)
            for (size_t j = 0; j < count; j++)
                if (strcmp(d[j].name, s->tables[i]->name) == 0)
                    d[j].open = 1;
        pthread_mutex_unlock(&s->lock);
    } else {
        pthread_mutex_lock(&s->lock);
        count = s->ntables;
        d = malloc((count ? count : 1) * sizeof *d);
        if (d != NULL)
            for (size_t i = 0; i < count; i++)
                describe_open(s->tables[i], &d[i]);
        pthread_mutex_unlock(&s->lock);
        if (d == NULL)
            return PSKV_ENOMEM;
        qsort(d, count, sizeof *d, by_name);
    }
    rc = hand_out(d, count, out, cap, n);
    free(d);
    return rc;
}

int pskv_dir_tables(const char *dir, pskv_table_desc *out, size_t cap, size_t *n)
{
    pskv__detail_clear();
    if (dir == NULL || dir[0] == '\0' || n == NULL || (out == NULL && cap > 0))
        return PSKV_EINVAL;
    if (pskv__dir_held_here(dir))
        return PSKV_EBUSY; /* a second LMDB environment in one process breaks its locks */
    pskv_store *s = NULL;
    pskv_table_desc *d = NULL;
    size_t count = 0;
    /* One reader environment at a time in this process: two on one file
     * share LMDB's per-process lock of the reader table, and the first to
     * close drops it, leaving the other's slot to look dead to an owner
     * that clears stale readers before its writes. */
    static pthread_mutex_t one_reader = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&one_reader);
    int rc = pskv__persist_reader(dir, &s);
    if (rc == 0)
        rc = pskv__persist_tables(s, &d, &count);
    if (rc == 0)
        rc = hand_out(d, count, out, cap, n);
    free(d);
    pskv__persist_reader_close(s);
    pthread_mutex_unlock(&one_reader);
    return rc;
}
