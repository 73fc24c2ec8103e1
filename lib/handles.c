/* The open iterators and exports of a store (handles.h).
 *
 * Invariant: a handle is in its store's list exactly while it is open and
 * its store is; `closed` is set (under the list's lock) when the store
 * goes first, and never cleared.
 * SPDX-License-Identifier: BSD-2-Clause */
#include "handles.h"

#include "errors.h"
#include "pskv.h"

void pskv__handles_init(pskv__handles *l)
{
    pthread_mutex_init(&l->lock, NULL);
    l->head.prev = l->head.next = &l->head;
}

void pskv__handles_close(pskv__handles *l)
{
    pthread_mutex_lock(&l->lock);
    for (pskv__handle *h = l->head.next, *next; h != &l->head; h = next) {
        next = h->next;
        h->prev = h->next = NULL;
        atomic_store(&h->closed, true);
    }
    l->head.prev = l->head.next = &l->head;
    pthread_mutex_unlock(&l->lock);
    pthread_mutex_destroy(&l->lock);
}

void pskv__handle_attach(pskv__handles *l, pskv__handle *h)
{
    atomic_init(&h->closed, false);
    atomic_init(&h->busy, false);
    pthread_mutex_lock(&l->lock);
    h->prev = &l->head;
    h->next = l->head.next;
    l->head.next->prev = h;
    l->head.next = h;
    pthread_mutex_unlock(&l->lock);
}

void pskv__handle_detach(pskv__handles *l, pskv__handle *h)
{
    PSKV__ASSERT(!atomic_load(&h->closed));
    pthread_mutex_lock(&l->lock);
    PSKV__ASSERT(h->prev != NULL && h->next != NULL && h->prev->next == h);
    h->prev->next = h->next;
    h->next->prev = h->prev;
    h->prev = h->next = NULL;
    pthread_mutex_unlock(&l->lock);
}

int pskv__handle_enter(pskv__handle *h, const char *what)
{
    if (atomic_load(&h->closed))
        return pskv__fail(PSKV_EINVAL, "%s: its store was closed (close or destroy it, which "
                                       "is all it can do now)", what);
    if (atomic_exchange(&h->busy, true))
        return pskv__fail(PSKV_EBUSY, "%s: another thread is in a call on it (one handle is "
                                      "used by one thread at a time)", what);
    return 0;
}

void pskv__handle_leave(pskv__handle *h) { atomic_store(&h->busy, false); }
