/* Value codecs of chunks: rows of dim floats as fp32, fp16, bf16 or int8.
 *
 * Every conversion is a branch-free loop the compiler vectorizes (an AVX2
 * clone on x86-64, PSKV__KERNEL): range checks accumulate into one flag
 * instead of leaving the loop, and rounding uses float arithmetic that
 * gives the same bits as the scalar formulas of docs/FORMAT.md (round to
 * nearest even everywhere). Unaligned chunk bytes go through a row-sized
 * buffer on the stack (at most PSKV_DIM_MAX values).
 * SPDX-License-Identifier: BSD-2-Clause */
#include <math.h>
#include <stdbool.h>
#include <string.h>

#include "codec.h"
#include "optimizer.h"
#include "pskv.h"

static inline uint32_t f32_bits(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    return x;
}

static inline float bits_f32(uint32_t x)
{
    float f;
    memcpy(&f, &x, 4);
    return f;
}

/* The bytes of an int8 row's scale: fp32 in chunk format 1, bf16 since. */
static size_t scale_bytes(uint32_t version) { return version == 1 ? 4 : 2; }

size_t pskv__codec_row_bytes(uint32_t version, uint32_t codec, uint32_t dim)
{
    switch (codec) {
    case PSKV_CODEC_FP32: return (size_t)dim * 4;
    case PSKV_CODEC_FP16:
    case PSKV_CODEC_BF16: return (size_t)dim * 2;
    default: return scale_bytes(version) + (size_t)dim;
    }
}

/* ---------------------------------------------------------------- kernels */

/* fp16, round to nearest even; nonzero when some |w| >= 65520 (it would
 * round to infinity) or is not a number. Below 2^-14 the half is
 * subnormal: its mantissa is |w| / 2^-24 rounded, the float's 24-bit
 * significand shifted right by 126 - exponent (integers only, so that the
 * loop has no floating-point operation to keep out of a select). */
PSKV__KERNEL static uint32_t fp16_encode(const float *restrict w, uint32_t n,
                                         uint16_t *restrict h)
{
    uint32_t bad = 0;
    for (uint32_t j = 0; j < n; j++) {
        uint32_t x = f32_bits(w[j]);
        uint32_t sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
        bad |= ax >= 0x477ff000u; /* 65520.0f */
        uint32_t r = ax - 0x38000000u; /* exponent bias 127 -> 15 */
        r = (r + 0xfffu + ((r >> 13) & 1u)) >> 13;
        uint32_t e = ax >> 23, sig = (ax & 0x7fffffu) | (e != 0 ? 0x800000u : 0u);
        /* 14..31 in every lane (lanes of normal halves compute it unused) */
        uint32_t shift = e > 112u ? 14u : 126u - e < 31u ? 126u - e : 31u;
        uint32_t q = sig >> shift, rem = sig & ((1u << shift) - 1u), half = 1u << (shift - 1u);
        uint32_t sub = q + (rem > half || (rem == half && (q & 1u)));
        h[j] = (uint16_t)(sign | (ax < 0x38800000u ? sub : r));
    }
    return bad;
}

/* Two passes, so that the int-to-float conversion the subnormals need is
 * not under a select (the compiler would branch around it): w first holds
 * each mantissa as a float. */
PSKV__KERNEL static void fp16_decode(const uint16_t *restrict h, uint32_t n, float *restrict w)
{
    for (uint32_t j = 0; j < n; j++)
        w[j] = (float)(int32_t)(h[j] & 0x3ffu);
    for (uint32_t j = 0; j < n; j++) {
        uint32_t v = h[j];
        uint32_t sign = (v & 0x8000u) << 16, e = (v >> 10) & 0x1fu, m = v & 0x3ffu;
        /* exponent 31 (Inf, NaN: refused by the caller) stays all ones */
        uint32_t normal = ((e == 31u ? 255u : e + 112u) << 23) | (m << 13);
        /* subnormal: m * 2^-24, the exact float m with its exponent lowered by 24 */
        uint32_t sub = m == 0 ? 0u : f32_bits(w[j]) - (24u << 23);
        w[j] = bits_f32(sign | (e == 0 ? sub : normal));
    }
}

/* fp16 through the F16C conversions of x86-64 (8 values an instruction,
 * where the kernels above take about ten instructions a value). Their
 * rounding is IEEE round to nearest even, so the bits are the kernels'
 * (tests/test_transfer.c checks both against the definitions). Taken only
 * when the CPU has F16C and the caller's MXCSR neither flushes results nor
 * reads denormal inputs as zero, which could change half subnormals (on
 * the test machine they did not: the check is for CPUs where they would). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11 &&     \
    !defined(PSKV_NO_CLONES) /* older GCC and clang do not know "f16c" in cpu_supports */
#include <immintrin.h>
#define F16C_PATH 1
#define F16C_TARGET __attribute__((target("avx,f16c")))

static bool f16c_usable(void)
{
    return __builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx") &&
           (_mm_getcsr() & 0x8040u) == 0; /* FTZ, DAZ */
}

F16C_TARGET static uint32_t fp16_encode_f16c(const float *w, uint32_t n, uint16_t *h)
{
    const __m256 limit = _mm256_set1_ps(65520.0f);
    const __m256 magnitude = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m256 bad = _mm256_setzero_ps();
    uint32_t j = 0;
    for (; j + 8 <= n; j += 8) {
        __m256 v = _mm256_loadu_ps(w + j);
        /* not below 65520 (NaN included) */
        bad = _mm256_or_ps(bad, _mm256_cmp_ps(_mm256_and_ps(v, magnitude), limit, _CMP_NLT_UQ));
        _mm_storeu_si128((__m128i *)(void *)(h + j),
                         _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
    uint32_t rest = j < n ? fp16_encode(w + j, n - j, h + j) : 0;
    return (uint32_t)_mm256_movemask_ps(bad) | rest;
}

F16C_TARGET static void fp16_decode_f16c(const uint16_t *h, uint32_t n, float *w)
{
    uint32_t j = 0;
    for (; j + 8 <= n; j += 8)
        _mm256_storeu_ps(w + j,
                         _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(h + j))));
    if (j < n)
        fp16_decode(h + j, n - j, w + j);
}
#endif

static uint32_t fp16_encode_any(const float *w, uint32_t n, uint16_t *h)
{
#ifdef F16C_PATH
    if (f16c_usable())
        return fp16_encode_f16c(w, n, h);
#endif
    return fp16_encode(w, n, h);
}

static void fp16_decode_any(const uint16_t *h, uint32_t n, float *w)
{
#ifdef F16C_PATH
    if (f16c_usable()) {
        fp16_decode_f16c(h, n, w);
        return;
    }
#endif
    fp16_decode(h, n, w);
}

/* bf16, round to nearest even; nonzero when a value rounds to infinity. */
PSKV__KERNEL static uint32_t bf16_encode(const float *restrict w, uint32_t n,
                                         uint16_t *restrict h)
{
    uint32_t bad = 0;
    for (uint32_t j = 0; j < n; j++) {
        uint32_t x = f32_bits(w[j]);
        x += 0x7fffu + ((x >> 16) & 1u);
        uint16_t v = (uint16_t)(x >> 16);
        bad |= (v & 0x7f80u) == 0x7f80u;
        h[j] = v;
    }
    return bad;
}

PSKV__KERNEL static void bf16_decode(const uint16_t *restrict h, uint32_t n, float *restrict w)
{
    for (uint32_t j = 0; j < n; j++)
        w[j] = bits_f32((uint32_t)h[j] << 16);
}

/* The largest |w| of finite values: their magnitudes' bits order as
 * unsigned integers, so the maximum is an integer one. */
PSKV__KERNEL static float abs_max(const float *w, uint32_t n)
{
    uint32_t m = 0;
    for (uint32_t j = 0; j < n; j++) {
        uint32_t a = f32_bits(w[j]) & 0x7fffffffu;
        m = a > m ? a : m;
    }
    return bits_f32(m);
}

PSKV__KERNEL static void int8_quantize(const float *restrict w, uint32_t n, float scale,
                                       int8_t *restrict q)
{
    for (uint32_t j = 0; j < n; j++) {
        float v = rintf(w[j] / scale);
        v = v > 127.0f ? 127.0f : v;
        v = v < -127.0f ? -127.0f : v;
        q[j] = (int8_t)(int32_t)v;
    }
}

/* Nonzero when some q is -128 (no encoder writes it). */
PSKV__KERNEL static uint32_t int8_decode(const int8_t *restrict q, uint32_t n, float scale,
                                         float *restrict w)
{
    uint32_t bad = 0;
    for (uint32_t j = 0; j < n; j++) {
        bad |= q[j] == -128;
        w[j] = (float)q[j] * scale;
    }
    return bad;
}

/* w -= the int8 values q decode to (as int8_decode computes them). */
PSKV__KERNEL static void int8_subtract(const int8_t *restrict q, uint32_t n, float scale,
                                       float *restrict w)
{
    for (uint32_t j = 0; j < n; j++)
        w[j] -= (float)q[j] * scale;
}

/* ---------------------------------------------------------------- rows */

/* int8, symmetric: scale = max |w| / 127 rounded up to a bf16, so that
 * |q| <= 127 and |q * scale - w| <= scale / 2; q = round(w / scale). */
static int int8_encode_row(const float *w, uint32_t dim, uint8_t *out)
{
    float amax = abs_max(w, dim);
    uint32_t x = f32_bits(amax / 127.0f);
    uint16_t h = (uint16_t)(x >> 16);
    if ((x & 0xffffu) != 0 || (x == 0 && amax > 0.0f))
        h++; /* up to the next bf16 (or Inf); a quotient that underflowed to 0:
                the smallest, 2^-133, so that the error stays <= scale / 2 */
    float scale = bits_f32((uint32_t)h << 16);
    memcpy(out, &h, 2);
    if (scale == 0.0f) { /* all zeros */
        memset(out + 2, 0, dim);
        return 0;
    }
    int8_t q[PSKV_DIM_MAX];
    int8_quantize(w, dim, scale, q);
    memcpy(out + 2, q, dim);
    /* The largest |q| * scale comes from the largest |w|: near FLT_MAX it
     * would decode to infinity (and with an infinite scale, every q is 0). */
    float qmax = rintf(amax / scale);
    qmax = qmax > 127.0f ? 127.0f : qmax;
    return isfinite(qmax * scale) ? 0 : -1;
}

int pskv__codec_encode_row(uint32_t codec, const float *w, uint32_t dim, void *out)
{
    uint16_t h[PSKV_DIM_MAX];
    switch (codec) {
    case PSKV_CODEC_FP32:
        memcpy(out, w, (size_t)dim * 4);
        return 0;
    case PSKV_CODEC_FP16:
    case PSKV_CODEC_BF16:
        if ((codec == PSKV_CODEC_FP16 ? fp16_encode_any(w, dim, h) : bf16_encode(w, dim, h)) != 0)
            return -1;
        memcpy(out, h, (size_t)dim * 2);
        return 0;
    default:
        return int8_encode_row(w, dim, out);
    }
}

/* fp16 or bf16 values at b (any alignment) into w. */
static void halves_decode(uint32_t codec, const uint8_t *b, uint32_t dim, float *w)
{
    uint16_t h[PSKV_DIM_MAX];
    memcpy(h, b, (size_t)dim * 2);
    if (codec == PSKV_CODEC_FP16)
        fp16_decode_any(h, dim, w);
    else
        bf16_decode(h, dim, w);
}

int pskv__codec_decode_row(uint32_t version, uint32_t codec, const void *in, uint32_t dim,
                           float *w)
{
    const uint8_t *b = in;
    switch (codec) {
    case PSKV_CODEC_FP32:
        memcpy(w, in, (size_t)dim * 4);
        break;
    case PSKV_CODEC_FP16:
    case PSKV_CODEC_BF16:
        halves_decode(codec, b, dim, w);
        break;
    default: {
        float scale;
        if (version == 1) {
            memcpy(&scale, b, 4);
        } else {
            uint16_t h;
            memcpy(&h, b, 2);
            scale = bits_f32((uint32_t)h << 16);
        }
        if (!(scale >= 0.0f) || !isfinite(scale))
            return -1;
        if (int8_decode((const int8_t *)(b + scale_bytes(version)), dim, scale, w) != 0)
            return -1;
        break;
    }
    }
    return pskv__floats_nonfinite(w, dim) ? -1 : 0; /* int8 products may overflow */
}

void pskv__codec_subtract_row(uint32_t codec, const void *in, uint32_t dim, float *w)
{
    const uint8_t *b = in;
    float back[PSKV_DIM_MAX];
    switch (codec) {
    case PSKV_CODEC_FP32:
        memcpy(back, in, (size_t)dim * 4);
        break;
    case PSKV_CODEC_FP16:
    case PSKV_CODEC_BF16:
        halves_decode(codec, b, dim, back);
        break;
    default: {
        uint16_t s;
        memcpy(&s, b, 2);
        int8_t q[PSKV_DIM_MAX];
        memcpy(q, b + 2, dim);
        int8_subtract(q, dim, bits_f32((uint32_t)s << 16), w);
        return;
    }
    }
    for (uint32_t j = 0; j < dim; j++)
        w[j] -= back[j];
}
