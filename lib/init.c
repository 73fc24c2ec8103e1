/* Key-seeded initial weights: a pure function of (init kind, its arguments,
 * generator, table seed, key), so every instance and every order of first
 * touch gives the same row.
 *
 * Generator 1 (releases before 0.3; tables they created keep it): a
 * splitmix64 stream seeded by XXH3 of the key, 53-bit doubles; normal
 * values from Marsaglia's polar method in double precision (a log and a
 * square root per pair, and rejections): about 1.6 us per dim-64 row.
 *
 * Generator 2 (the current one): value j of a row is a 32-bit hash of
 * (the key's XXH3, j), so the values of a row are independent of each
 * other's order and the loops vectorize; uniform values take the top 24
 * bits; normal pairs come from Box-Muller with a logarithm and a sine and
 * cosine written here as polynomials (errors below 3e-7; no libm call,
 * whose results may differ between machines and glibc versions).
 * Every operation is an IEEE float operation with one rounding (no fused
 * multiply-add: lib/ is built with -ffp-contract=off), and the AVX2 clone
 * does what the plain one does lane by lane, so every machine computes the
 * same bits (tests/test_table.c holds some).
 * SPDX-License-Identifier: BSD-2-Clause */
#include <float.h>
#include <math.h>
#include <string.h>

#include "hash.h"
#include "init.h"

#ifdef __clang__
#pragma clang fp contract(off)
#endif
/* Float expressions evaluated in float, not in a wider format (x87):
 * meson.build asks for SSE arithmetic on 32-bit x86. */
#if defined(FLT_EVAL_METHOD) && FLT_EVAL_METHOD != 0 && FLT_EVAL_METHOD != -1
#error "init.c needs FLT_EVAL_METHOD 0 (on 32-bit x86: -msse2 -mfpmath=sse)"
#endif

/* ---------------------------------------------------------------- generator 1 */

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform double in [0, 1) with 53 random bits. */
static double unit_double(uint64_t *state) { return (double)(splitmix64(state) >> 11) * 0x1.0p-53; }

static void gen1(const pskv_table_options *o, uint64_t key, float *w, uint32_t dim)
{
    uint64_t state = pskv__key_hash(key, o->seed);
    if (o->init == PSKV_INIT_UNIFORM) {
        double lo = o->init_a, span = (double)o->init_b - (double)o->init_a;
        for (uint32_t j = 0; j < dim; j++) {
            float v = (float)(lo + span * unit_double(&state));
            /* Rounding to float may reach the open upper bound. */
            w[j] = v < o->init_b ? v : nextafterf(o->init_b, o->init_a);
        }
        return;
    }
    for (uint32_t j = 0; j < dim; j += 2) { /* normal: Marsaglia's polar method */
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
}

/* ---------------------------------------------------------------- generator 2 */

/* A bijective 32-bit mix (two multiply-xorshift rounds). */
static inline uint32_t mix32(uint32_t x)
{
    x ^= x >> 16;
    x *= 0x21f0aaadu;
    x ^= x >> 15;
    x *= 0x735a2d97u;
    x ^= x >> 15;
    return x;
}

/* Values are made in blocks of this many, on the stack. */
#define BLOCK 64u

/* The hash of value position pos of the row whose key hash gave k0, k1. */
static inline uint32_t value_hash(uint32_t k0, uint32_t k1, uint32_t pos)
{
    return mix32((k0 + pos * 0x9e3779b9u) ^ k1);
}

/* h[i] for value positions first .. first + n - 1 of the row. */
static inline void hashes(uint32_t k0, uint32_t k1, uint32_t first, uint32_t n, uint32_t *h)
{
    for (uint32_t i = 0; i < n; i++)
        h[i] = value_hash(k0, k1, first + i);
}

/* ln(x) for x in (0, 1]: x = m 2^e with m in [sqrt(1/2), sqrt(2)), then
 * ln(m) = 2 atanh(t), t = (m - 1) / (m + 1), |t| < 0.1716, by its series to
 * t^9 (truncation below 4e-10). */
static inline float log_unit(float x)
{
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    /* Move the mantissa into [sqrt(1/2), sqrt(2)): subtract the bits of
     * sqrt(1/2) before taking the exponent. */
    const uint32_t off = bits - 0x3f3504f3u;
    const int32_t e = (int32_t)off >> 23;
    const uint32_t mbits = (off & 0x007fffffu) + 0x3f3504f3u;
    float m;
    memcpy(&m, &mbits, sizeof m);
    const float t = (m - 1.0f) / (m + 1.0f), t2 = t * t;
    const float s = t * (2.0f + t2 * (0.6666666666f + t2 * (0.4f + t2 * (0.2857142857f +
                                                                           t2 * 0.2222222222f))));
    return (float)e * 0.693147180559945f + s;
}

/* sin and cos of a in [0, pi/2]: Taylor series to a^11 and a^12
 * (truncation below 6e-8). */
static inline void sincos_quarter(float a, float *sn, float *cs)
{
    const float a2 = a * a;
    *sn = a * (1.0f + a2 * (-1.6666667e-1f + a2 * (8.3333333e-3f + a2 * (-1.9841270e-4f +
                                                 a2 * (2.7557319e-6f + a2 * -2.5052108e-8f)))));
    *cs = 1.0f + a2 * (-0.5f + a2 * (4.1666667e-2f + a2 * (-1.3888889e-3f + a2 * (2.4801587e-5f +
                                      a2 * (-2.7557319e-7f + a2 * 2.0876757e-9f)))));
}

PSKV__KERNEL static void gen2(const pskv_table_options *o, uint64_t key, float *w,
                              uint32_t dim)
{
    const uint64_t s = pskv__key_hash(key, o->seed);
    const uint32_t k0 = (uint32_t)s, k1 = mix32((uint32_t)(s >> 32));
    uint32_t h[BLOCK];
    float z[BLOCK]; /* a block's values, then copied out (the loops vectorize) */
    if (o->init == PSKV_INIT_UNIFORM) {
        const float lo = o->init_a, hi = o->init_b, below = nextafterf(hi, lo);
        for (uint32_t at = 0; at < dim; at += BLOCK) {
            const uint32_t n = dim - at < BLOCK ? dim - at : BLOCK;
            hashes(k0, k1, at, BLOCK, h); /* a whole block: past n, unused */
            for (uint32_t i = 0; i < BLOCK; i++) {
                const float u = (float)(int32_t)(h[i] >> 8) * 0x1.0p-24f; /* [0, 1), exact */
                float v = lo * (1.0f - u) + hi * u; /* no overflow for any finite lo, hi */
                v = v < hi ? v : below;             /* rounding may reach hi */
                z[i] = v > lo ? v : lo;
            }
            memcpy(w + at, z, (size_t)n * sizeof *w);
        }
        return;
    }
    /* normal: Box-Muller over the pairs (2p, 2p + 1) of a block; the even
     * and odd values' hashes and results sit in arrays of their own so
     * that the pair loop reads and writes consecutive lanes. */
    const float mean = o->init_a, sd = o->init_b;
    uint32_t ho[BLOCK / 2];
    float ze[BLOCK / 2], zo[BLOCK / 2];
    for (uint32_t at = 0; at < dim; at += BLOCK) {
        const uint32_t n = dim - at < BLOCK ? dim - at : BLOCK;
        for (uint32_t p = 0; p < BLOCK / 2; p++) { /* a whole block: past n, unused */
            h[p] = value_hash(k0, k1, at + 2 * p); /* even positions */
            ho[p] = value_hash(k0, k1, at + 2 * p + 1);
        }
        for (uint32_t p = 0; p < BLOCK / 2; p++) {
            /* (0, 1]: 1 once in 2^24 (the +0.5 rounds up), then r = 0 */
            const float u1 = ((float)(int32_t)(h[p] >> 8) + 0.5f) * 0x1.0p-24f;
            const float quarters = (float)(int32_t)(ho[p] >> 8) * 0x1.0p-22f; /* [0, 4) */
            const float r = sqrtf(-2.0f * log_unit(u1));
            const uint32_t q = (uint32_t)quarters; /* the quadrant of 2 pi u2 */
            float sn, cs;
            sincos_quarter((quarters - (float)q) * 1.57079632679f, &sn, &cs);
            /* Rotate by q quarter turns: (cos, sin) of the whole angle. */
            const float c = q == 0 ? cs : q == 1 ? -sn : q == 2 ? -cs : sn;
            const float d = q == 0 ? sn : q == 1 ? cs : q == 2 ? -sn : -cs;
            ze[p] = mean + sd * (r * c);
            zo[p] = mean + sd * (r * d);
        }
        for (uint32_t p = 0; p < BLOCK / 2; p++) {
            z[2 * p] = ze[p];
            z[2 * p + 1] = zo[p];
        }
        memcpy(w + at, z, (size_t)n * sizeof *w);
    }
}

void pskv__init_weights(const pskv_table_options *o, uint64_t key, float *w, uint32_t dim)
{
    switch (o->init) {
    case PSKV_INIT_ZEROS:
        memset(w, 0, (size_t)dim * sizeof *w);
        break;
    case PSKV_INIT_CONSTANT:
        for (uint32_t j = 0; j < dim; j++)
            w[j] = o->init_a;
        break;
    default: /* uniform, normal */
        if (o->init_gen == 1)
            gen1(o, key, w, dim);
        else
            gen2(o, key, w, dim);
        break;
    }
}
