/* The gate's sleeping side (gate.h): a writer waits on the gate's word
 * itself, so a wait returns at once when the word moved since it was read
 * and the last reader's wake cannot be missed.
 * SPDX-License-Identifier: BSD-2-Clause */
#include <errno.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "gate.h"

/* The futex calls leave their EAGAIN or EINTR out of the caller's errno, as
 * taking a mutex does. */
void pskv__gate_wait(pskv__gate *g)
{
    const int saved = errno;
    for (;;) {
        uint32_t w = atomic_load_explicit(&g->word, memory_order_acquire);
        if (w == PSKV__GATE_CLOSED)
            break;
        syscall(SYS_futex, &g->word, FUTEX_WAIT_PRIVATE, w, NULL, NULL, 0);
    }
    errno = saved;
}

void pskv__gate_wake(pskv__gate *g)
{
    const int saved = errno;
    syscall(SYS_futex, &g->word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
    errno = saved;
}
