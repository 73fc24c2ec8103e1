/* Key-seeded initial weights: a pure function of (init kind, its arguments,
 * table seed, key), so every instance and every order of first touch gives
 * the same row. The stream is splitmix64 seeded by XXH3 of the key; normal
 * values come from Marsaglia's polar method (one log per pair, no sin/cos).
 * SPDX-License-Identifier: BSD-2-Clause */
#include <math.h>

#include "init.h"
#include "hash.h"

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform double in [0, 1) with 53 random bits. */
static double unit_double(uint64_t *state) { return (double)(splitmix64(state) >> 11) * 0x1.0p-53; }

void pskv__init_weights(const pskv_table_options *o, uint64_t key, float *w, uint32_t dim)
{
    uint64_t state = pskv__key_hash(key, o->seed);
    switch (o->init) {
    case PSKV_INIT_ZEROS:
        for (uint32_t j = 0; j < dim; j++)
            w[j] = 0.0f;
        break;
    case PSKV_INIT_CONSTANT:
        for (uint32_t j = 0; j < dim; j++)
            w[j] = o->init_a;
        break;
    case PSKV_INIT_UNIFORM: {
        double lo = o->init_a, span = (double)o->init_b - (double)o->init_a;
        for (uint32_t j = 0; j < dim; j++) {
            float v = (float)(lo + span * unit_double(&state));
            /* Rounding to float may reach the open upper bound. */
            w[j] = v < o->init_b ? v : nextafterf(o->init_b, o->init_a);
        }
        break;
    }
    default: { /* normal: Marsaglia's polar method, both outputs used */
        for (uint32_t j = 0; j < dim; j += 2) {
            double u, v, q;
            do {
                u = 2.0 * unit_double(&state) - 1.0;
                v = 2.0 * unit_double(&state) - 1.0;
                q = u * u + v * v;
            } while (q >= 1.0 || q == 0.0);
            double f = sqrt(-2.0 * log(q) / q);
            w[j] = (float)(o->init_a + o->init_b * u * f);
            if (j + 1 < dim)
                w[j + 1] = (float)(o->init_a + o->init_b * v * f);
        }
        break;
    }
    }
}
