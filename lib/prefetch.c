/* Asynchronous prefetch: pskv_prefetch copies the keys into a job and
 * returns; a store-wide worker thread, started on first use, loads the
 * spilled rows of each job in one I/O batch (the same path as a pull's
 * misses, tier.c). A pull that comes while the load is in flight finds the
 * rows BUSY and waits only for them. Errors are counted, not reported: the
 * pull that needs the rows loads them again and reports its own result.
 * SPDX-License-Identifier: BSD-2-Clause */
#include <stdlib.h>
#include <string.h>

#include "budget.h"
#include "plan.h"
#include "prefetch.h"
#include "pskv_internal.h"
#include "tier.h"

#define QUEUE_MAX 64u /* pending jobs before pskv_prefetch waits for room */

struct pskv__prefetch_job {
    pskv__prefetch_job *next;
    pskv_table *t;
    size_t n;
    uint64_t keys[];
};

static bool job_waiting(pskv_store *s)
{
    pthread_mutex_lock(&s->pf_lock);
    bool waiting = s->pf_head != NULL;
    pthread_mutex_unlock(&s->pf_lock);
    return waiting;
}

static void job_run(pskv__prefetch_job *j)
{
    pskv_table *t = j->t;
    pthread_rwlock_rdlock(&t->layout_lock);
    pskv__plan p;
    int rc = pskv__plan_build(&p, t->ring, t->nshards, j->keys, j->n, PSKV__DEDUP_FIRST);
    uint64_t loaded = 0;
    if (rc == 0)
        rc = pskv__tier_load(t, &p, &loaded);
    pskv__plan_free(&p);
    pthread_rwlock_unlock(&t->layout_lock);
    if (rc != 0)
        atomic_fetch_add(&t->n_prefetch_errors, 1);
    /* Best effort, as after a pull, and only until the next job arrives:
     * its reads are what a pull will wait for; evictions are not. The
     * store stays over budget meanwhile by at most a few jobs' rows (calls
     * evict themselves past 1/16 over, see pskv__budget_admit). */
    pskv__budget_account(t->store, (int64_t)(loaded * t->budget_bytes));
    (void)pskv__budget_evict(t->store, job_waiting);
}

static void *worker_main(void *arg)
{
    pskv_store *s = arg;
    pthread_mutex_lock(&s->pf_lock);
    for (;;) {
        while (s->pf_head == NULL && !s->pf_stop)
            pthread_cond_wait(&s->pf_cv, &s->pf_lock);
        pskv__prefetch_job *j = s->pf_head;
        if (j == NULL)
            break; /* stopping and drained */
        s->pf_head = j->next;
        if (s->pf_head == NULL)
            s->pf_tail = NULL;
        s->pf_count--;
        pthread_cond_broadcast(&s->pf_room_cv);
        pthread_mutex_unlock(&s->pf_lock);
        job_run(j);
        free(j);
        pthread_mutex_lock(&s->pf_lock);
    }
    pthread_mutex_unlock(&s->pf_lock);
    return NULL;
}

int pskv__prefetch_submit(pskv_table *t, const uint64_t *keys, size_t n)
{
    pskv_store *s = t->store;
    pskv__prefetch_job *j = malloc(sizeof *j + n * sizeof(uint64_t));
    if (j == NULL)
        return PSKV_ENOMEM;
    j->next = NULL;
    j->t = t;
    j->n = n;
    memcpy(j->keys, keys, n * sizeof(uint64_t));
    pthread_mutex_lock(&s->pf_lock);
    if (!s->pf_started) {
        if (pthread_create(&s->pf_thread, NULL, worker_main, s) != 0) {
            pthread_mutex_unlock(&s->pf_lock);
            free(j);
            return PSKV_ENOMEM;
        }
        s->pf_started = true;
    }
    while (s->pf_count >= QUEUE_MAX)
        pthread_cond_wait(&s->pf_room_cv, &s->pf_lock);
    if (s->pf_tail != NULL)
        s->pf_tail->next = j;
    else
        s->pf_head = j;
    s->pf_tail = j;
    s->pf_count++;
    pthread_cond_signal(&s->pf_cv);
    pthread_mutex_unlock(&s->pf_lock);
    return 0;
}

void pskv__prefetch_init(pskv_store *s)
{
    pthread_mutex_init(&s->pf_lock, NULL);
    pthread_cond_init(&s->pf_cv, NULL);
    pthread_cond_init(&s->pf_room_cv, NULL);
}

void pskv__prefetch_stop(pskv_store *s)
{
    pthread_mutex_lock(&s->pf_lock);
    s->pf_stop = true;
    pthread_cond_signal(&s->pf_cv);
    bool started = s->pf_started;
    pthread_mutex_unlock(&s->pf_lock);
    if (started)
        pthread_join(s->pf_thread, NULL); /* runs the queued jobs first */
    pthread_cond_destroy(&s->pf_room_cv);
    pthread_cond_destroy(&s->pf_cv);
    pthread_mutex_destroy(&s->pf_lock);
}
