/* Fuzz pskv_chunk_encode then pskv_chunk_decode with every codec.
 *
 * Input: a codec byte (codec, lz4), a dim byte (1..72), a row count byte
 * (0..63); then each row's key (one byte: a small universe, so keys repeat;
 * 0xff takes the next 8 bytes as a full 64-bit id) and its values (4 bytes
 * each: any float, NaN, Inf, subnormal and huge included). Properties: the
 * encoder refuses exactly what the codec cannot carry (EINVAL for NaN/Inf,
 * ECODEC beyond fp16's or bf16's range) and says how many bytes it needs;
 * what it writes, info describes and decode reads back: keys sorted, repeated
 * keys in the order given, every value within its codec's bound (docs/API.md);
 * fp16 and bf16 chunks re-encode to the same bytes. */
#include <float.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_target.h"
#include "pskv.h"

/* Whether the codec can carry x (finite): independent of lib/chunk.c, from
 * the formats' largest values and round-to-nearest-even at the midpoint. */
static bool fits(uint32_t codec, float x)
{
    double a = fabs((double)x);
    switch (codec) {
    case PSKV_CODEC_FP16: return a < 65520.0; /* 65504 and its next, 65536 */
    case PSKV_CODEC_BF16: return a < ldexp(2.0 - ldexp(1.0, -8), 127);
    default: return true;
    }
}

/* The codec's error bound for x in a row whose largest |value| is amax. */
static bool within(uint32_t codec, float x, float y, float amax)
{
    double err = fabs((double)x - (double)y), ax = fabs((double)x);
    switch (codec) {
    case PSKV_CODEC_FP32: return memcmp(&x, &y, 4) == 0;
    case PSKV_CODEC_FP16: return err <= fmax(ax * ldexp(1.0, -11), ldexp(1.0, -25));
    case PSKV_CODEC_BF16: return err <= fmax(ax * ldexp(1.0, -8), ldexp(1.0, -134));
    default: /* half a step of amax / 127 rounded up to a bf16 (whose
              * smallest step is 2^-133), plus the rounding of the product */
        return err <= (double)amax / 127.0 * 0.5 * (1.0 + ldexp(1.0, -7)) + ax * ldexp(1.0, -22) +
                          ldexp(1.0, -134);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const cfgs[8] = {"codec=fp32", "codec=fp16", "codec=bf16", "codec=int8",
                                        "codec=fp32 lz4=on", "codec=fp16 lz4=on",
                                        "codec=bf16 lz4=on", "codec=int8 lz4=on"};
    reader r = {data, size};
    const uint8_t sel = byte(&r) % 8;
    const uint32_t codec = sel % 4, dim = 1 + byte(&r) % 72, n = byte(&r) % 64;
    uint64_t *keys = calloc(n + 1, 8);
    float *vals = calloc((size_t)n * dim + 1, 4);
    CHECK(keys != NULL && vals != NULL);
    bool finite = true, fit = true;
    for (uint32_t i = 0; i < n; i++) {
        uint8_t k = byte(&r);
        keys[i] = k;
        if (k == 0xff)
            for (int b = 0; b < 8; b++)
                keys[i] = keys[i] << 8 | byte(&r);
        for (uint32_t j = 0; j < dim; j++) {
            uint32_t bits = 0;
            for (int b = 0; b < 4; b++)
                bits = bits << 8 | byte(&r);
            float x;
            memcpy(&x, &bits, 4);
            vals[(size_t)i * dim + j] = x;
            finite = finite && isfinite(x);
            fit = fit && (!isfinite(x) || fits(codec, x));
        }
    }
    /* int8 refuses a row whose largest step would round past FLT_MAX: near
     * it (amax within 2^-6 of FLT_MAX) either answer is right. */
    bool either = false;
    for (uint32_t i = 0; i < n && codec == PSKV_CODEC_INT8 && finite; i++) {
        float amax = 0;
        for (uint32_t j = 0; j < dim; j++)
            amax = fmaxf(amax, fabsf(vals[(size_t)i * dim + j]));
        either = either || (double)amax * (1.0 + ldexp(1.0, -6)) > (double)FLT_MAX;
    }
    size_t need = 0, len = 0;
    int rc = pskv_chunk_encode(dim, keys, n, vals, cfgs[sel], NULL, 0, &need);
    if (!finite) {
        CHECK(rc == PSKV_EINVAL);
        goto out;
    }
    if (!fit) {
        /* Out of the codec's range: PSKV_ECODEC, at once or (a chunk
         * written in place checks its size first) with the buffer asked
         * for; never an endless "bigger buffer" loop. */
        CHECK(rc == PSKV_ECODEC || (rc == PSKV_ERANGE && need > 0));
        if (rc == PSKV_ERANGE) {
            uint8_t *probe = malloc(need);
            CHECK(probe != NULL);
            CHECK(pskv_chunk_encode(dim, keys, n, vals, cfgs[sel], probe, need, &len) ==
                  PSKV_ECODEC);
            free(probe);
        }
        goto out;
    }
    CHECK((rc == PSKV_ERANGE && need > 0) || (either && rc == PSKV_ECODEC));
    if (rc == PSKV_ECODEC)
        goto out;
    if (either) {
        uint8_t *probe = malloc(need);
        CHECK(probe != NULL);
        int prc = pskv_chunk_encode(dim, keys, n, vals, cfgs[sel], probe, need, &len);
        free(probe);
        CHECK(prc == 0 || prc == PSKV_ECODEC);
        if (prc == PSKV_ECODEC)
            goto out;
    }
    uint8_t *buf = malloc(need);
    CHECK(buf != NULL);
    CHECK(pskv_chunk_encode(dim, keys, n, vals, cfgs[sel], buf, need - 1, &len) == PSKV_ERANGE &&
          len == need);
    CHECK(pskv_chunk_encode(dim, keys, n, vals, cfgs[sel], buf, need, &len) == 0 && len == need);
    pskv_chunk_info in;
    CHECK(pskv_chunk_info_get(buf, len, &in) == 0);
    CHECK(in.kind == PSKV_CHUNK_VALUES && in.codec == codec && in.dim == dim && in.rows == n &&
          in.tombstones == 0 && in.state_floats == 0 && in.optimizer == -1 && in.bytes == len &&
          in.since == 0 && in.version == 0 && (in.lz4 == 0 || sel >= 4));
    uint64_t *back_keys = malloc((size_t)n * 8 + 1);
    float *back = malloc((size_t)n * dim * 4 + 1);
    CHECK(back_keys != NULL && back != NULL);
    CHECK(pskv_chunk_decode(buf, len, back_keys, n, back, (size_t)n * dim, NULL, 0, NULL, 0) == 0);
    /* Keys ascending; a repeated key's rows in the order given. */
    bool *used = calloc(n + 1, 1);
    CHECK(used != NULL);
    for (uint32_t i = 0; i < n; i++) {
        CHECK(i == 0 || back_keys[i] >= back_keys[i - 1]);
        uint32_t src = n;
        for (uint32_t k = 0; k < n && src == n; k++)
            if (!used[k] && keys[k] == back_keys[i])
                src = k;
        CHECK(src < n);
        used[src] = true;
        const float *x = vals + (size_t)src * dim, *y = back + (size_t)i * dim;
        float amax = 0;
        for (uint32_t j = 0; j < dim; j++)
            amax = fmaxf(amax, fabsf(x[j]));
        for (uint32_t j = 0; j < dim; j++)
            CHECK(isfinite(y[j]) && within(codec, x[j], y[j], amax));
    }
    /* fp16 and bf16 values decode to floats the codec holds exactly. */
    if (codec == PSKV_CODEC_FP16 || codec == PSKV_CODEC_BF16) {
        uint8_t *again = malloc(len);
        size_t len2;
        CHECK(again != NULL);
        CHECK(pskv_chunk_encode(dim, back_keys, n, back, cfgs[sel], again, len, &len2) == 0);
        CHECK(len2 == len && memcmp(again, buf, len) == 0);
        free(again);
    }
    free(used);
    free(back_keys);
    free(back);
    free(buf);
out:
    free(keys);
    free(vals);
    return 0;
}
