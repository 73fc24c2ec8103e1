/* The trainer thread that pskv-bench runs beside a job (a checkpoint, an
 * export): pull then push batches of uniform random keys, recording every
 * call's duration; and a memory-copying thread that gives the baseline the
 * same contention for two cores as the job.
 * SPDX-License-Identifier: BSD-2-Clause */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench.h"

uint64_t bench_mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return x;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double bench_trainer_quantile(bench_trainer *tr, double q)
{
    if (tr->ndurs == 0)
        return 0;
    qsort(tr->durs, tr->ndurs, sizeof *tr->durs, cmp_double);
    size_t i = (size_t)(q * (double)(tr->ndurs - 1));
    return tr->durs[i];
}

static void record(bench_trainer *tr, double t0, double dt, double cpu)
{
    if (dt > tr->max_call) { /* busy in the call, or waiting / preempted? */
        tr->max_cpu = cpu;
        tr->max_call = dt;
        tr->max_at = t0;
    }
    tr->total += dt;
    tr->calls++;
    if (tr->ndurs == tr->durs_cap) {
        size_t cap = tr->durs_cap ? tr->durs_cap * 2 : 4096;
        double *d = realloc(tr->durs, cap * sizeof *d);
        if (d != NULL) {
            tr->durs = d;
            tr->durs_cap = cap;
        }
    }
    if (tr->ndurs < tr->durs_cap)
        tr->durs[tr->ndurs++] = dt;
}

void *bench_trainer_main(void *arg)
{
    bench_trainer *tr = arg;
    uint64_t keys[BENCH_TRAIN_BATCH];
    float *w = malloc(BENCH_TRAIN_BATCH * DIM * sizeof(float));
    uint64_t r = 12345;
    if (w == NULL) {
        tr->error = PSKV_ENOMEM;
        return NULL;
    }
    for (size_t i = 0; i < BENCH_TRAIN_BATCH * DIM; i++)
        w[i] = 0.001f;
    while (!atomic_load(&tr->stop)) {
        for (int i = 0; i < BENCH_TRAIN_BATCH; i++)
            keys[i] = bench_scramble(bench_mix(r++) % tr->n);
        for (int op = 0; op < 2; op++) {
            double t0 = bench_now();
            struct timespec c0, c1;
            clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c0);
            int rc = op == 0 ? pskv_pull(tr->t, keys, BENCH_TRAIN_BATCH, w)
                             : pskv_push(tr->t, keys, BENCH_TRAIN_BATCH, w);
            double dt = bench_now() - t0;
            clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c1);
            if (rc != 0)
                tr->error = rc;
            record(tr, t0, dt,
                   (double)(c1.tv_sec - c0.tv_sec) + (double)(c1.tv_nsec - c0.tv_nsec) * 1e-9);
            if (op == 0)
                for (size_t i = 0; i < BENCH_TRAIN_BATCH * DIM; i++)
                    w[i] = 0.001f; /* the pulled weights become small gradients */
        }
    }
    free(w);
    return NULL;
}

atomic_bool bench_hog_stop;

void *bench_hog_main(void *arg)
{
    (void)arg;
    size_t bytes = 64u << 20;
    char *a = malloc(bytes), *b = malloc(bytes);
    if (a != NULL && b != NULL) {
        memset(a, 1, bytes);
        while (!atomic_load(&bench_hog_stop))
            memcpy(b, a, bytes);
    }
    free(a);
    free(b);
    return NULL;
}
