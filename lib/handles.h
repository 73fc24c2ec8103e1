/* Handles that outlive their store's close by mistake (iterators and
 * exports): the store keeps a list of the open ones, and pskv_close marks
 * each closed, so a later call on one returns an error instead of reading
 * freed tables. A handle is also claimed by each call on it: a second
 * thread that uses it meanwhile gets PSKV_EBUSY.
 * SPDX-License-Identifier: BSD-2-Clause */
#ifndef PSKV_HANDLES_H
#define PSKV_HANDLES_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "common.h"

typedef struct pskv__handle {
    struct pskv__handle *prev, *next; /* in its store's list while open */
    atomic_bool closed;               /* its store was closed */
    atomic_bool busy;                 /* a call is using it */
} pskv__handle;

typedef struct pskv__handles {
    pthread_mutex_t lock;
    pskv__handle head; /* a ring through head: empty when head.next == &head */
} pskv__handles;

PSKV__HIDDEN void pskv__handles_init(pskv__handles *l);
/* At the store's close: every handle still listed is marked closed and
 * left out of the list (its owner frees it later). */
PSKV__HIDDEN void pskv__handles_close(pskv__handles *l);
PSKV__HIDDEN void pskv__handle_attach(pskv__handles *l, pskv__handle *h);
/* Out of the list. Only while its store is open: the caller checks
 * `closed` first, before it reaches the list through its table. */
PSKV__HIDDEN void pskv__handle_detach(pskv__handles *l, pskv__handle *h);
/* Claim h for one call: 0, PSKV_EINVAL (its store was closed) or
 * PSKV_EBUSY (another thread is in a call on it), each with a detail
 * naming `what`. pskv__handle_leave ends a claim that returned 0. */
PSKV__HIDDEN int pskv__handle_enter(pskv__handle *h, const char *what);
PSKV__HIDDEN void pskv__handle_leave(pskv__handle *h);

#endif
