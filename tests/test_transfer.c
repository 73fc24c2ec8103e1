/* Moving rows between instances: versions, chunks and their codecs, delta
 * export and apply, replicas, migration. */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <xxhash.h>

#include "test_common.h"
#include "lib/codec.h"
#include "lib/iter.h"
#include "lib/rows.h"

#define CHUNK_CAP (8u << 20)
/* Replicas in these tests are tables of other names (often in the same
 * store): applying a leader's chunk to one is a rename, said so. */
#define REPLICA_APPLY (PSKV_APPLY_REPLACE | PSKV_APPLY_ANY_TABLE)

/* Every row of t (key order) with weights and state: a table's full picture. */
typedef struct snapshot {
    uint64_t *keys;
    float *rows; /* row_floats each */
    size_t n, row_floats;
} snapshot;

static int cmp_key_row(const void *a, const void *b)
{
    uint64_t x, y; /* records are not 8-byte aligned */
    memcpy(&x, a, 8);
    memcpy(&y, b, 8);
    return (x > y) - (x < y);
}

static snapshot snap(pskv_table *t)
{
    pskv_table_info info;
    ck_assert_ok(pskv_table_info_get(t, &info));
    size_t rf = info.dim + info.state_floats, cap = 1024, n = 0;
    /* rows as records (key | row floats) so that they sort together */
    size_t rec = 8 + rf * 4;
    uint8_t *recs = malloc(cap * rec);
    pskv_iter *it;
    ck_assert_ok(pskv_iter_create(t, &it));
    uint64_t key;
    float *w = malloc(rf * 4);
    int rc;
    while ((rc = pskv_iter_next(it, &key, w, w + info.dim)) == 1) {
        if (n == cap)
            recs = realloc(recs, (cap *= 2) * rec);
        memcpy(recs + n * rec, &key, 8);
        memcpy(recs + n * rec + 8, w, rf * 4);
        n++;
    }
    ck_assert_int_eq(rc, 0);
    pskv_iter_destroy(it);
    free(w);
    qsort(recs, n, rec, cmp_key_row);
    snapshot s = {malloc((n ? n : 1) * 8), malloc((n ? n : 1) * rf * 4), n, rf};
    for (size_t i = 0; i < n; i++) {
        memcpy(&s.keys[i], recs + i * rec, 8);
        memcpy(s.rows + i * rf, recs + i * rec + 8, rf * 4);
    }
    free(recs);
    return s;
}

static void snap_free(snapshot *s)
{
    free(s->keys);
    free(s->rows);
}

/* Bit for bit, weights and state. */
static void expect_same(pskv_table *a, pskv_table *b)
{
    snapshot x = snap(a), y = snap(b);
    ck_assert_uint_eq(x.n, y.n);
    ck_assert_uint_eq(x.row_floats, y.row_floats);
    for (size_t i = 0; i < x.n; i++) {
        ck_assert_uint_eq(x.keys[i], y.keys[i]);
        ck_assert_msg(memcmp(x.rows + i * x.row_floats, y.rows + i * y.row_floats,
                             x.row_floats * 4) == 0,
                      "row %llu differs", (unsigned long long)x.keys[i]);
    }
    snap_free(&x);
    snap_free(&y);
}

/* Export from since into dst (REPLACE); returns the next cursor. */
static uint64_t sync_once(pskv_table *src, pskv_table *dst, uint64_t since, const char *cfg,
                          uint32_t *chunks)
{
    pskv_export *e;
    ck_assert_ok(pskv_export_open(src, since, cfg, &e));
    uint8_t *buf = malloc(CHUNK_CAP);
    size_t len;
    int rc;
    uint32_t n = 0;
    while ((rc = pskv_export_next(e, buf, CHUNK_CAP, &len)) == 1) {
        ck_assert_ok(pskv_apply(dst, buf, len, REPLICA_APPLY));
        n++;
    }
    ck_assert_int_eq(rc, 0);
    uint64_t v = pskv_export_version(e);
    pskv_export_close(e);
    free(buf);
    if (chunks)
        *chunks = n;
    return v;
}

/* 1..most random keys below 3000 and BATCH_DIM random values each, for
 * the dim-8 tables of the replica tests: the batch's size. */
#define BATCH_DIM 8
static uint32_t random_batch(test_rng *r, uint32_t most, uint64_t *keys, float *vals)
{
    uint32_t n = 1 + rng_below(r, most);
    for (uint32_t i = 0; i < n; i++)
        keys[i] = rng_below(r, 3000);
    for (uint32_t i = 0; i < n * BATCH_DIM; i++)
        vals[i] = rng_float(r);
    return n;
}

/* ---------------------------------------------------------------- versions */

START_TEST(versions_stamp_every_change)
{
    pskv_store *s;
    pskv_table *t = open_table(&s, "dim=4 optimizer=adagrad");
    /* A new table's versions start past a random multiple of 2^40. */
    const uint64_t v0 = pskv_table_version(t);
    ck_assert_uint_gt(v0, 0);
    ck_assert_uint_eq(v0 % (1ull << 40), 0);
    uint64_t keys[3] = {1, 2, 3};
    float v[12] = {0};
    ck_assert_ok(pskv_pull(t, keys, 3, v));
    uint64_t v1 = pskv_table_version(t);
    ck_assert_uint_gt(v1, 0);
    ck_assert_ok(pskv_pull(t, keys, 3, v)); /* reads change nothing */
    ck_assert_uint_eq(pskv_table_version(t), v1);
    ck_assert_ok(pskv_push(t, keys, 1, v));
    uint64_t v2 = pskv_table_version(t);
    ck_assert_uint_gt(v2, v1);
    ck_assert_ok(pskv_erase(t, keys + 1, 1));
    ck_assert_uint_gt(pskv_table_version(t), v2);
    uint64_t v3 = pskv_table_version(t);
    uint64_t absent = 99;
    ck_assert_ok(pskv_erase(t, &absent, 1)); /* nothing erased: no change */
    ck_assert_uint_eq(pskv_table_version(t), v3);
    /* A delta from v2 holds the erase (a tombstone) and nothing else; its
     * reads count as exported, not as gets (nor the tombstone as a miss). */
    pskv_table_stats before, after;
    ck_assert_ok(pskv_table_stats_get(t, &before));
    pskv_export *e;
    ck_assert_ok(pskv_export_open(t, v2, NULL, &e));
    uint8_t buf[4096];
    size_t len;
    ck_assert_int_eq(pskv_export_next(e, buf, sizeof buf, &len), 1);
    pskv_chunk_info in;
    ck_assert_ok(pskv_chunk_info_get(buf, len, &in));
    ck_assert_uint_eq(in.rows, 0);
    ck_assert_uint_eq(in.tombstones, 1);
    ck_assert_uint_eq(in.since, v2);
    ck_assert_uint_eq(in.version, v3);
    uint64_t tomb;
    ck_assert_ok(pskv_chunk_decode(buf, len, NULL, 0, NULL, 0, NULL, 0, &tomb, 1));
    ck_assert_uint_eq(tomb, 2);
    ck_assert_int_eq(pskv_export_next(e, buf, sizeof buf, &len), 0);
    ck_assert_uint_eq(pskv_export_version(e), v3);
    pskv_export_close(e);
    ck_assert_ok(pskv_table_stats_get(t, &after));
    ck_assert_uint_eq(after.exported, before.exported + 1);
    ck_assert_uint_eq(after.got, before.got);
    ck_assert_uint_eq(after.get_misses, before.get_misses);
    pskv_close(s);
}
END_TEST

START_TEST(versions_survive_reopen)
{
    char dir[256];
    test_mkdtemp(dir, "transfer");
    pskv_store *s;
    pskv_table *t;
    ck_assert_ok(pskv_open(dir, NULL, &s));
    ck_assert_ok(pskv_table_open(s, "t", "dim=2 optimizer=sgd", &t));
    test_fill(t, 1, 100, 2, 1.0f);
    uint64_t v = pskv_table_version(t);
    pskv_close(s); /* clean: the next run goes on from v */
    ck_assert_ok(pskv_open(dir, NULL, &s));
    ck_assert_ok(pskv_table_open(s, "t", NULL, &t));
    ck_assert_uint_eq(pskv_table_version(t), v);
    /* A consumer at v is still in step: its delta is what changed since. */
    test_fill(t, 50, 10, 2, 5.0f);
    pskv_export *e;
    ck_assert_ok(pskv_export_open(t, v, NULL, &e));
    static uint8_t buf[1 << 16];
    size_t len;
    ck_assert_int_eq(pskv_export_next(e, buf, sizeof buf, &len), 1);
    pskv_chunk_info in;
    ck_assert_ok(pskv_chunk_info_get(buf, len, &in));
    ck_assert_uint_eq(in.rows, 10);
    pskv_export_close(e);
    /* A cursor older than the reopen is stale. */
    ck_assert_err(pskv_export_open(t, v - 1, NULL, &e), PSKV_ESTALE);
    ck_assert_ptr_nonnull(strstr(pskv_last_error(), "export from 0"));
    pskv_close(s);
    test_remove_dir(dir);
}
END_TEST

/* ---------------------------------------------------------------- codecs */

static void roundtrip(uint32_t codec, const char *cfg)
{
    test_rng r = {codec + 11};
    enum { N = 300, DIM = 33 };
    uint64_t keys[N];
    float *vals = malloc(N * DIM * sizeof *vals), *back = malloc(N * DIM * sizeof *back);
    for (int i = 0; i < N; i++) {
        keys[i] = rng_below(&r, 100); /* repeats */
        float scale = powf(10.0f, (float)rng_below(&r, 9) - 6.0f);
        for (int j = 0; j < DIM; j++)
            vals[i * DIM + j] = rng_float(&r) * scale;
    }
    size_t len;
    uint8_t *buf = malloc(1 << 20);
    ck_assert_ok(pskv_chunk_encode(DIM, keys, N, vals, cfg, buf, 1 << 20, &len));
    pskv_chunk_info in;
    ck_assert_ok(pskv_chunk_info_get(buf, len, &in));
    ck_assert_uint_eq(in.codec, codec);
    ck_assert_uint_eq(in.rows, N);
    ck_assert_uint_eq(in.kind, PSKV_CHUNK_VALUES);
    uint64_t *bk = malloc(N * sizeof *bk);
    ck_assert_ok(pskv_chunk_decode(buf, len, bk, N, back, (size_t)N * in.dim, NULL, 0, NULL, 0));
    /* Keys come back sorted, repeated keys in the order given. */
    bool used[N] = {0};
    for (int i = 0; i < N; i++) {
        if (i > 0)
            ck_assert_uint_ge(bk[i], bk[i - 1]);
        int src = -1;
        for (int k = 0; k < N && src < 0; k++)
            if (!used[k] && keys[k] == bk[i])
                src = k;
        ck_assert_int_ge(src, 0);
        used[src] = true;
        float amax = 0;
        for (int j = 0; j < DIM; j++)
            amax = fmaxf(amax, fabsf(vals[src * DIM + j]));
        for (int j = 0; j < DIM; j++) {
            float x = vals[src * DIM + j], y = back[i * DIM + j], err = fabsf(x - y);
            switch (codec) {
            case PSKV_CODEC_FP32: ck_assert(memcmp(&x, &y, 4) == 0); break;
            case PSKV_CODEC_FP16:
                ck_assert_msg(err <= fmaxf(fabsf(x) * 0x1p-11f, 0x1p-25f), "fp16 %g -> %g", x, y);
                break;
            case PSKV_CODEC_BF16:
                ck_assert_msg(err <= fabsf(x) * 0x1p-8f, "bf16 %g -> %g", x, y);
                break;
            default:
                /* half a step of the scale, amax / 127 rounded up to a bf16 */
                ck_assert_msg(err <= amax / 127.0f * 0.5f * (1.0f + 0x1p-7f), "int8 %g -> %g", x, y);
            }
        }
    }
    free(bk);
    free(buf);
    free(vals);
    free(back);
}

/* Reference codecs written from the definitions (docs/FORMAT.md), with
 * frexpf/ldexpf and double arithmetic: the vectorized kernels of
 * lib/codec.c must give the same bits. */
static uint16_t ref_f16(float x)
{
    uint16_t sign = signbit(x) ? 0x8000u : 0;
    float a = fabsf(x);
    if (a < 0x1p-14f)
        return (uint16_t)(sign | lrintf(ldexpf(a, 24))); /* subnormal: multiples of 2^-24 */
    int k;
    frexpf(a, &k);
    int e = k - 1; /* a = (1 + m / 1024) * 2^e */
    long m = lrintf(ldexpf(a, 10 - e)) - 1024;
    if (m == 1024) {
        m = 0;
        e++;
    }
    return (uint16_t)(sign | (uint16_t)((e + 15) << 10) | (uint16_t)m);
}

static float ref_f16_value(uint16_t h)
{
    int e = (h >> 10) & 0x1f, m = h & 0x3ff;
    float v = e == 0 ? ldexpf((float)m, -24) : e == 31 ? (m ? NAN : INFINITY)
                                                       : ldexpf((float)(1024 + m), e - 25);
    return h & 0x8000u ? -v : v;
}

/* The bf16 nearest to x (ties: the even one), from its two neighbours. */
static uint16_t ref_bf16(float x)
{
    uint32_t b;
    memcpy(&b, &x, 4);
    uint16_t lo = (uint16_t)(b >> 16), hi = (uint16_t)(lo + 1);
    uint32_t lb = (uint32_t)lo << 16, hb = (uint32_t)hi << 16;
    float lf, hf;
    memcpy(&lf, &lb, 4);
    memcpy(&hf, &hb, 4);
    /* past the largest finite bf16 the next step would be 2^128 */
    double hv = isinf(hf) ? copysign(0x1p128, (double)x) : (double)hf;
    double dl = fabs((double)x - lf), dh = fabs((double)x - hv);
    return dl < dh ? lo : dh < dl ? hi : (lo & 1u) ? hi : lo;
}

#if defined(__x86_64__) && defined(__SSE2__)
#include <xmmintrin.h>
/* A caller that flushes denormals (MXCSR FTZ and DAZ, as some trainers
 * set) gets the same fp16 bits: half subnormals come from float normals
 * and are neither flushed on the way in nor on the way out. */
START_TEST(fp16_bits_under_flush_to_zero)
{
    const unsigned saved = _mm_getcsr();
    _mm_setcsr(saved | 0x8040u);
    float w[16] = {0x1p-14f, 0x1.ffcp-15f, 0x1p-24f, 0x1p-25f, 0x1.8p-25f, 0x1.0p-149f, -0.0f,
                   -0x1.234p-20f, 0x1.555p-17f, 1.0f, -65504.0f, 0x1.fffp-16f, 0x1p-23f,
                   -0x1p-24f, 0x1.2p-22f, 3.0e-6f};
    uint8_t out[64];
    float back[16];
    int rc = pskv__codec_encode_row(PSKV_CODEC_FP16, w, 16, out);
    int drc = pskv__codec_decode_row(2, PSKV_CODEC_FP16, out, 16, back);
    _mm_setcsr(saved); /* before any check can leave */
    ck_assert_int_eq(rc, 0);
    ck_assert_int_eq(drc, 0);
    for (int j = 0; j < 16; j++) {
        uint16_t h, want = ref_f16(w[j]);
        memcpy(&h, out + 2 * j, 2);
        ck_assert_msg(h == want, "fp16 of %a under FTZ/DAZ: %04x, want %04x", w[j], h, want);
        float v = ref_f16_value(h);
        ck_assert(memcmp(&v, &back[j], 4) == 0);
    }
}
END_TEST
#endif

START_TEST(codecs_match_reference_bits)
{
    enum { N = 64 };
    float w[N], w16[N], back[N];
    uint8_t out[2 * N + 8];
    /* Every 16-bit pattern decodes as the definitions say (Inf and NaN are
     * refused). */
    for (uint32_t base = 0; base < 65536; base += N) {
        for (int c = PSKV_CODEC_FP16; c <= PSKV_CODEC_BF16; c++) {
            bool finite = true;
            for (int j = 0; j < N; j++) {
                uint16_t h = (uint16_t)(base + j);
                memcpy(out + 2 * j, &h, 2);
                uint32_t b = (uint32_t)h << 16;
                float v;
                memcpy(&v, &b, 4);
                w[j] = c == PSKV_CODEC_FP16 ? ref_f16_value(h) : v;
                finite = finite && isfinite(w[j]);
            }
            int rc = pskv__codec_decode_row(2, c, out, N, back);
            ck_assert_int_eq(rc, finite ? 0 : -1);
            if (finite)
                ck_assert(memcmp(w, back, sizeof w) == 0);
        }
    }
    /* Encoding: float patterns spread over every exponent, plus the edges
     * (the fp16 subnormal boundary, 65504..65520, ties). */
    uint64_t x = 0;
    for (uint32_t round = 0; round < 20000; round++) {
        for (int j = 0; j < N; j++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            uint32_t b = (uint32_t)(x >> 32);
            if (j % 8 == 1) /* near a tie of fp16 normals: low 13 bits 0x1000 */
                b = (b & ~0x1fffu) | 0x1000u;
            if (j % 8 == 2) /* ties of bf16 */
                b = (b & ~0xffffu) | 0x8000u;
            if (j % 8 == 3) /* the fp16 subnormal range and its top */
                b = 0x33000000u + (b % 0x5800000u);
            memcpy(&w[j], &b, 4);
            if (!isfinite(w[j]))
                w[j] = 0.0f;
            /* the same pattern with an exponent fp16 can carry, 2^-26 .. 2^14 */
            uint32_t b16 = (b & 0x807fffffu) | ((101u + (b >> 23) % 41u) << 23);
            memcpy(&w16[j], &b16, 4);
        }
        if (round == 0) {
            const float edges[] = {65504.0f, 65519.99f, -65519.99f, 0x1p-14f, 0x1.ffcp-15f,
                                   0x1p-24f, 0x1p-25f, 0x1.8p-25f, 0x1.0p-149f, -0.0f};
            memcpy(w16, edges, sizeof edges);
        }
        bool fits16 = true;
        for (int j = 0; j < N; j++)
            fits16 = fits16 && fabsf(w[j]) < 65520.0f;
        ck_assert_int_eq(pskv__codec_encode_row(PSKV_CODEC_FP16, w, N, out), fits16 ? 0 : -1);
        ck_assert_int_eq(pskv__codec_encode_row(PSKV_CODEC_FP16, w16, N, out), 0);
        for (int j = 0; j < N; j++) {
            uint16_t h, want = ref_f16(w16[j]);
            memcpy(&h, out + 2 * j, 2);
            ck_assert_msg(h == want, "fp16 of %a: %04x, want %04x", w16[j], h, want);
        }
        bool fitsb = true;
        for (int j = 0; j < N; j++)
            fitsb = fitsb && (ref_bf16(w[j]) & 0x7f80u) != 0x7f80u;
        int rc = pskv__codec_encode_row(PSKV_CODEC_BF16, w, N, out);
        ck_assert_int_eq(rc, fitsb ? 0 : -1);
        for (int j = 0; fitsb && j < N; j++) {
            uint16_t h, want = ref_bf16(w[j]);
            memcpy(&h, out + 2 * j, 2);
            ck_assert_msg(h == want, "bf16 of %a: %04x, want %04x", w[j], h, want);
        }
        /* int8: the scale is max |w| / 127 rounded up to a bf16, each value
         * round(w / scale) (nearest even), decoded as q * scale. */
        float amax = 0.0f;
        for (int j = 0; j < N; j++)
            amax = fmaxf(amax, fabsf(w[j]));
        rc = pskv__codec_encode_row(PSKV_CODEC_INT8, w, N, out);
        uint16_t sh;
        memcpy(&sh, out, 2);
        uint32_t sb = (uint32_t)sh << 16;
        float scale;
        memcpy(&scale, &sb, 4);
        ck_assert(scale >= amax / 127.0f);
        if (rc != 0) {
            ck_assert(!isfinite(scale * rintf(amax / scale)) || !isfinite(scale));
            continue;
        }
        for (int j = 0; j < N; j++) {
            long want = scale > 0.0f ? lrintf(w[j] / scale) : 0;
            ck_assert_int_eq((int8_t)out[2 + j], want > 127 ? 127 : want < -127 ? -127 : want);
        }
        ck_assert_int_eq(pskv__codec_decode_row(2, PSKV_CODEC_INT8, out, N, back), 0);
        for (int j = 0; j < N; j++)
            ck_assert(back[j] == (float)(int8_t)out[2 + j] * scale);
    }
    /* 65520 rounds to infinity in fp16; the float below it does not. */
    const float limit[2] = {65520.0f, -65520.0f}, below = nextafterf(65520.0f, 0.0f);
    ck_assert_int_eq(pskv__codec_encode_row(PSKV_CODEC_FP16, limit, 1, out), -1);
    ck_assert_int_eq(pskv__codec_encode_row(PSKV_CODEC_FP16, limit + 1, 1, out), -1);
    ck_assert_int_eq(pskv__codec_encode_row(PSKV_CODEC_FP16, &below, 1, out), 0);
}
END_TEST

START_TEST(codecs_within_their_bounds)
{
    roundtrip(PSKV_CODEC_FP32, "codec=fp32");
    roundtrip(PSKV_CODEC_FP16, "codec=fp16");
    roundtrip(PSKV_CODEC_BF16, "codec=bf16 lz4=on");
    roundtrip(PSKV_CODEC_INT8, "codec=int8");
    roundtrip(PSKV_CODEC_INT8, "codec=int8 lz4=on");
    /* fp16 cannot carry 1e5 */
    uint64_t k = 1;
    float big = 1e5f;
    uint8_t buf[256];
    size_t len;
    ck_assert_err(pskv_chunk_encode(1, &k, 1, &big, "codec=fp16", buf, sizeof buf, &len),
                  PSKV_ECODEC);
    ck_assert_err(pskv_chunk_encode(1, &k, 1, &big, "codec=fp8", buf, sizeof buf, &len),
                  PSKV_EINVAL);
    ck_assert_err(pskv_chunk_encode(1, &k, 1, &big, "payload=rows", buf, sizeof buf, &len),
                  PSKV_EINVAL);
    /* Too small a buffer says how much. */
    ck_assert_err(pskv_chunk_encode(1, &k, 1, &big, NULL, buf, 10, &len), PSKV_ERANGE);
    ck_assert_uint_gt(len, 10);
    ck_assert_ok(pskv_chunk_encode(1, &k, 1, &big, NULL, buf, len, &len));
}
END_TEST

/* ---------------------------------------------------------------- damage */

START_TEST(damaged_chunks_change_nothing)
{
    pskv_store *s;
    pskv_table *src = open_table(&s, "dim=3 optimizer=adam");
    pskv_table *dst;
    ck_assert_ok(pskv_table_open(s, "dst", "dim=3 optimizer=adam", &dst));
    test_fill(src, 1, 40, 3, 1.0f);
    uint64_t gone[2] = {5, 6};
    test_fill(dst, 5, 2, 3, 9.0f);
    ck_assert_ok(pskv_erase(src, gone, 2));
    static uint8_t buf[1 << 16], bad[1 << 16];
    size_t len;
    pskv_export *e;
    /* A delta that holds rows, state and tombstones, lz4 on. */
    ck_assert_ok(pskv_export_open(src, 0, "lz4=on", &e));
    ck_assert_int_eq(pskv_export_next(e, buf, sizeof buf, &len), 1);
    pskv_export_close(e);
    pskv_chunk_info in;
    ck_assert_ok(pskv_chunk_info_get(buf, len, &in));
    ck_assert_uint_eq(in.rows, 38);
    snapshot before = snap(dst);
    uint64_t v = pskv_table_version(dst);
    for (size_t at = 0; at < len; at++) {
        memcpy(bad, buf, len);
        bad[at] ^= (uint8_t)(1u << (at % 8));
        int rc = pskv_apply(dst, bad, len, REPLICA_APPLY);
        ck_assert_msg(rc == PSKV_ECORRUPT || rc == PSKV_EVERSION, "byte %zu: %d", at, rc);
    }
    for (size_t cut = 0; cut < len; cut++)
        ck_assert_err(pskv_apply(dst, buf, cut, REPLICA_APPLY), PSKV_ECORRUPT);
    ck_assert_uint_eq(pskv_table_version(dst), v);
    snapshot after = snap(dst);
    ck_assert_uint_eq(after.n, before.n);
    ck_assert(memcmp(after.rows, before.rows, before.n * before.row_floats * 4) == 0);
    snap_free(&before);
    snap_free(&after);
    /* Another dim, another optimizer's state. */
    pskv_table *other, *sgd;
    ck_assert_ok(pskv_table_open(s, "other", "dim=4", &other));
    ck_assert_ok(pskv_table_open(s, "sgd", "dim=3 optimizer=sgd", &sgd));
    ck_assert_err(pskv_apply(other, buf, len, REPLICA_APPLY), PSKV_ESCHEMA);
    ck_assert_err(pskv_apply(sgd, buf, len, REPLICA_APPLY), PSKV_ESCHEMA);
    ck_assert_err(pskv_apply(dst, buf, len, 7), PSKV_EINVAL);
    ck_assert_err(pskv_apply(dst, buf, len, PSKV_APPLY_REPLACE), PSKV_ESCHEMA); /* another name */
    /* The intact chunk applies, twice the same (idempotent). */
    ck_assert_ok(pskv_apply(dst, buf, len, REPLICA_APPLY));
    ck_assert_ok(pskv_apply(dst, buf, len, REPLICA_APPLY));
    pskv_close(s);
}
END_TEST

static const char *data_dir; /* tests/data */

/* Format 3 and later are refused with EVERSION, 0 as damage; a format-1
 * chunk (int8 with an fp32 scale, written by the release before the bf16
 * scale) still decodes, exactly as format 1 defines its values. */
START_TEST(chunk_formats_by_version)
{
    uint64_t k = 1;
    float x = 1;
    uint8_t buf[256];
    size_t len;
    pskv_chunk_info in;
    ck_assert_ok(pskv_chunk_encode(1, &k, 1, &x, NULL, buf, sizeof buf, &len));
    ck_assert_uint_eq(buf[4], 3);
    const uint8_t versions[2] = {4, 0};
    for (int v = 0; v < 2; v++) {
        buf[4] = versions[v]; /* and the checksum made right again */
        uint64_t h = XXH3_64bits(buf, len - 8);
        memcpy(buf + len - 8, &h, 8);
        ck_assert_err(pskv_chunk_info_get(buf, len, &in), v == 0 ? PSKV_EVERSION : PSKV_ECORRUPT);
    }
    /* tests/data/chunk-v1-int8.pskc: keys {9, 1, 2^40, 7, 1}, dim 6,
     * values (i - 7) * 0.37 for i = 0..29 in that order, codec int8. */
    char path[512];
    snprintf(path, sizeof path, "%s/chunk-v1-int8.pskc", data_dir);
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    len = fread(buf, 1, sizeof buf, f);
    fclose(f);
    ck_assert_ok(pskv_chunk_info_get(buf, len, &in));
    ck_assert_uint_eq(buf[4], 1);
    ck_assert_uint_eq(in.codec, PSKV_CODEC_INT8);
    ck_assert_uint_eq(in.rows, 5);
    ck_assert_uint_eq(in.dim, 6);
    uint64_t keys[5];
    float vals[30];
    ck_assert_ok(pskv_chunk_decode(buf, len, keys, 5, vals, 30, NULL, 0, NULL, 0));
    const uint64_t sorted[5] = {1, 1, 7, 9, 1ull << 40};
    const int from[5] = {1, 4, 3, 0, 2}; /* the row each sorted key came from */
    for (int i = 0; i < 5; i++) {
        ck_assert_uint_eq(keys[i], sorted[i]);
        float amax = 0, src[6];
        for (int j = 0; j < 6; j++) {
            src[j] = (float)(from[i] * 6 + j - 7) * 0.37f;
            amax = fmaxf(amax, fabsf(src[j]));
        }
        float scale = amax / 127.0f; /* format 1: the fp32 scale itself */
        for (int j = 0; j < 6; j++) {
            long q = lrintf(src[j] / scale);
            ck_assert(vals[i * 6 + j] == (float)q * scale);
        }
    }
}
END_TEST

/* tests/data/chunk-v2-rows.pskc: an export (payload=rows) of a table "emb"
 * (dim=4 optimizer=adagrad) written by the release before chunk format 3
 * (bb4252a): keys {3, 1, 2^40, 7, 2} put with (i - 7) * 0.37 for value i
 * = 0..19 in that order. A version-2 chunk names no table: it applies to
 * a table of any name whose schema fits. */
START_TEST(chunk_v2_of_previous_release_applies)
{
    char path[512];
    snprintf(path, sizeof path, "%s/chunk-v2-rows.pskc", data_dir);
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    uint8_t buf[1024];
    size_t len = fread(buf, 1, sizeof buf, f);
    fclose(f);
    ck_assert_uint_eq(buf[4], 2);
    pskv_chunk_info in;
    ck_assert_ok(pskv_chunk_info_get(buf, len, &in));
    ck_assert_uint_eq(in.rows, 5);
    ck_assert_uint_eq(in.state_floats, 4);
    pskv_store *s;
    pskv_table *t = open_table(&s, "dim=4 optimizer=adagrad");
    ck_assert_ok(pskv_apply(t, buf, len, PSKV_APPLY_REPLACE));
    const uint64_t keys[5] = {3, 1, 1ull << 40, 7, 2};
    for (int i = 0; i < 5; i++) {
        float w[4];
        uint8_t found;
        ck_assert_ok(pskv_get(t, &keys[i], 1, w, &found));
        ck_assert(found);
        for (int j = 0; j < 4; j++)
            ck_assert(w[j] == (float)(i * 4 + j - 7) * 0.37f);
    }
    pskv_close(s);
}
END_TEST

/* Chunk keys are sorted and repeated keys keep their order, whatever the
 * shape of the input: short (insertion sort), a few ascending runs (a
 * merge, as a delta export's chunk is: one run per shard), many runs or
 * none (radix), all with repeats. Each row carries its input position. */
START_TEST(chunk_keys_sorted_stable)
{
    enum { MOST = 3000, D = 2 };
    test_rng r = {77};
    uint64_t *keys = malloc(MOST * sizeof *keys), *back = malloc(MOST * sizeof *back);
    float *vals = malloc(MOST * D * sizeof *vals), *got = malloc(MOST * D * sizeof *got);
    uint8_t *buf = malloc(1 << 20);
    const uint32_t sizes[] = {1, 5, 48, 49, 300, 2999};
    const uint32_t runs[] = {1, 2, 3, 8, 9, 40, 0 /* random */};
    for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++) {
        for (size_t ri = 0; ri < sizeof runs / sizeof *runs; ri++) {
            uint32_t n = sizes[si], nr = runs[ri];
            uint64_t span = rng_below(&r, 2) ? 64 : UINT64_MAX; /* repeats, or wide keys */
            for (uint32_t i = 0; i < n; i++) {
                keys[i] = rng_next(&r) % span;
                vals[i * D] = (float)i;
                vals[i * D + 1] = -1.0f;
            }
            /* nr ascending runs: sort each slice of the input. */
            for (uint32_t k = 0; nr > 0 && k < nr; k++) {
                uint32_t lo = (uint32_t)((uint64_t)n * k / nr), hi = (uint32_t)((uint64_t)n * (k + 1) / nr);
                for (uint32_t i = lo + 1; i < hi; i++)
                    for (uint32_t j = i; j > lo && keys[j - 1] > keys[j]; j--) {
                        uint64_t x = keys[j];
                        keys[j] = keys[j - 1];
                        keys[j - 1] = x;
                    }
            }
            size_t len;
            ck_assert_ok(pskv_chunk_encode(D, keys, n, vals, NULL, buf, 1 << 20, &len));
            ck_assert_ok(pskv_chunk_decode(buf, len, back, n, got, (size_t)n * D, NULL, 0, NULL, 0));
            uint32_t *seen = calloc(n, sizeof *seen);
            for (uint32_t i = 0; i < n; i++) {
                uint32_t from = (uint32_t)got[i * D];
                ck_assert_uint_lt(from, n);
                ck_assert_uint_eq(seen[from]++, 0);
                ck_assert_uint_eq(back[i], keys[from]);
                if (i > 0) {
                    ck_assert_uint_ge(back[i], back[i - 1]);
                    if (back[i] == back[i - 1]) /* stable */
                        ck_assert_uint_gt(from, (uint32_t)got[(i - 1) * D]);
                }
            }
            free(seen);
        }
    }
    free(keys);
    free(back);
    free(vals);
    free(got);
    free(buf);
}
END_TEST

/* ---------------------------------------------------------------- modes */

START_TEST(push_and_add_modes)
{
    pskv_store *s;
    pskv_table *a = open_table(&s, "dim=2 optimizer=adagrad lr=0.1");
    pskv_table *b;
    ck_assert_ok(pskv_table_open(s, "b", "dim=2 optimizer=adagrad lr=0.1", &b));
    uint64_t keys[4] = {7, 3, 7, 9};
    float g[8] = {0.5f, -1, 0.25f, 2, 0.5f, 0.5f, -3, 1};
    uint8_t buf[1024];
    size_t len;
    ck_assert_ok(pskv_chunk_encode(2, keys, 4, g, NULL, buf, sizeof buf, &len));
    ck_assert_ok(pskv_push(a, keys, 4, g));
    ck_assert_ok(pskv_apply(b, buf, len, PSKV_APPLY_PUSH));
    expect_same(a, b); /* the same optimizer steps, repeated keys summed */
    ck_assert_ok(pskv_apply(b, buf, len, PSKV_APPLY_ADD));
    float w[6];
    uint64_t q[3] = {7, 3, 9};
    float wa[6];
    ck_assert_ok(pskv_get(a, q, 3, wa, NULL));
    ck_assert_ok(pskv_get(b, q, 3, w, NULL));
    ck_assert_float_eq(w[0], wa[0] + (0.5f + 0.5f));
    ck_assert_float_eq(w[1], wa[1] + (-1 + 0.5f)); /* summed, then added */
    ck_assert_float_eq(w[2], wa[2] + 0.25f);
    ck_assert_float_eq(w[5], wa[5] + 1);
    pskv_close(s);
}
END_TEST

/* ---------------------------------------------------------------- replicas */

/* Random pulls, pushes, puts, erases, reshards (and, durable, checkpoints
 * and reopens) on a leader with a spill tier; every few steps a delta into
 * the follower, which must then equal the leader bit for bit. */
static void replica_run(bool durable, uint64_t seed, const char *codec_cfg)
{
    char dir[256] = "";
    pskv_store *ls, *fs;
    pskv_table *l, *f;
    const char *tcfg = "dim=8 optimizer=adam shards=8";
    if (durable) {
        test_mkdtemp(dir, "replica");
        ck_assert_ok(pskv_open(dir, "memory_budget=64K", &ls));
    } else {
        ck_assert_ok(pskv_open(NULL, NULL, &ls));
    }
    ck_assert_ok(pskv_table_open(ls, "t", tcfg, &l));
    ck_assert_ok(pskv_open(NULL, NULL, &fs));
    ck_assert_ok(pskv_table_open(fs, "t", tcfg, &f));
    test_rng r = {seed};
    uint64_t cursor = sync_once(l, f, 0, codec_cfg, NULL);
    enum { B = 64 };
    uint64_t keys[B];
    float vals[B * BATCH_DIM];
    for (int step = 0; step < 300; step++) {
        uint32_t n = random_batch(&r, B, keys, vals);
        switch (rng_below(&r, 10)) {
        case 0: ck_assert_ok(pskv_put(l, keys, n, vals)); break;
        case 1: ck_assert_ok(pskv_erase(l, keys, n)); break;
        case 2: ck_assert_ok(pskv_pull(l, keys, n, vals)); break;
        default: ck_assert_ok(pskv_push(l, keys, n, vals)); break;
        }
        if (step % 97 == 96)
            ck_assert_ok(pskv_table_reshard(l, 4 + rng_below(&r, 12)));
        if (durable && step % 50 == 49)
            ck_assert_ok(pskv_checkpoint(ls));
        if (durable && step == 150) { /* a clean restart keeps a caught-up cursor valid */
            cursor = sync_once(l, f, cursor, codec_cfg, NULL);
            pskv_close(ls);
            ck_assert_ok(pskv_open(dir, "memory_budget=64K", &ls));
            ck_assert_ok(pskv_table_open(ls, "t", NULL, &l));
        }
        if (step % 7 == 6)
            cursor = sync_once(l, f, cursor, codec_cfg, NULL);
    }
    sync_once(l, f, cursor, codec_cfg, NULL);
    expect_same(l, f);
    /* A chain: the follower exported from 0 into a third table. */
    pskv_table *g;
    ck_assert_ok(pskv_table_open(fs, "g", tcfg, &g));
    sync_once(f, g, 0, codec_cfg, NULL);
    expect_same(f, g);
    pskv_close(fs);
    pskv_close(ls);
    if (durable)
        test_remove_dir(dir);
}

START_TEST(replica_memory)
{
    replica_run(false, 5, NULL);
    replica_run(false, 6, "lz4=on chunk_bytes=4K");
}
END_TEST

START_TEST(replica_durable_spill)
{
    replica_run(true, 7, NULL);
}
END_TEST

/* ---------------------------------------------------------------- concurrency */

/* Writers push, put and erase (one also reshards once, the other
 * checkpoints) on a durable leader with a spill tier while two consumers
 * export deltas, each with its own cursor, config and pace. When the writers
 * stop, one last delta each: both followers equal the leader bit for bit.
 * Run under ThreadSanitizer by .ci/run. */
typedef struct writer_arg {
    pskv_store *s;
    pskv_table *t;
    uint64_t seed;
    int role; /* 0 reshards once, 1 checkpoints, 2 neither */
    atomic_int *failures;
    atomic_int *running;
} writer_arg;

static void *writer_main(void *p)
{
    writer_arg *w = p;
    test_rng r = {w->seed};
    enum { B = 16 };
    uint64_t keys[B];
    float vals[B * BATCH_DIM];
    for (int op = 0; op < 1500; op++) {
        uint32_t n = random_batch(&r, B, keys, vals);
        int rc;
        switch (rng_below(&r, 10)) {
        case 0: case 1: rc = pskv_put(w->t, keys, n, vals); break;
        case 2: rc = pskv_erase(w->t, keys, n); break;
        default: rc = pskv_push(w->t, keys, n, vals); break;
        }
        if (rc == 0 && w->role == 0 && op == 700)
            rc = pskv_table_reshard(w->t, 6);
        if (rc == 0 && w->role == 1 && op % 400 == 399)
            rc = pskv_checkpoint(w->s);
        if (rc != 0)
            atomic_fetch_add(w->failures, 1);
    }
    atomic_fetch_sub(w->running, 1);
    return NULL;
}

/* sync_once that starts over from the same cursor when a reshard
 * interrupts it (PSKV_ESTALE): chunks already applied apply again alike. A
 * full export (since 0) carries no tombstones, so before it starts over
 * the consumer is emptied, as the contract asks: rows the interrupted
 * export sent and the leader erased meanwhile would stay otherwise. */
static uint64_t sync_retrying(pskv_table *src, pskv_table *dst, uint64_t since, const char *cfg,
                              uint8_t *buf, uint32_t *busy)
{
    for (bool again = false;; again = true) {
        if (since == 0 && again) {
            snapshot held = snap(dst);
            ck_assert_ok(pskv_erase(dst, held.keys, held.n));
            snap_free(&held);
        }
        pskv_export *e;
        ck_assert_ok(pskv_export_open(src, since, cfg, &e));
        size_t len;
        int rc;
        while ((rc = pskv_export_next(e, buf, CHUNK_CAP, &len)) == 1)
            ck_assert_ok(pskv_apply(dst, buf, len, REPLICA_APPLY));
        uint64_t v = pskv_export_version(e);
        pskv_export_close(e);
        if (rc == 0)
            return v;
        ck_assert_err(rc, PSKV_ESTALE);
        (*busy)++;
    }
}

START_TEST(exports_beside_writers)
{
    char dir[256];
    test_mkdtemp(dir, "beside");
    pskv_store *ls, *fs;
    pskv_table *l, *f1, *f2;
    const char *tcfg = "dim=8 optimizer=adagrad shards=4";
    ck_assert_ok(pskv_open(dir, "memory_budget=128K", &ls));
    ck_assert_ok(pskv_table_open(ls, "t", tcfg, &l));
    ck_assert_ok(pskv_open(NULL, NULL, &fs));
    ck_assert_ok(pskv_table_open(fs, "f1", tcfg, &f1));
    ck_assert_ok(pskv_table_open(fs, "f2", tcfg, &f2));
    atomic_int failures = 0, running = 2;
    writer_arg w[2] = {{ls, l, 31, 0, &failures, &running}, {ls, l, 32, 1, &failures, &running}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(pthread_create(&th[i], NULL, writer_main, &w[i]), 0);
    uint8_t *buf = malloc(CHUNK_CAP);
    uint64_t c1 = 0, c2 = 0;
    uint32_t rounds = 0, busy = 0;
    while (atomic_load(&running) > 0) {
        c1 = sync_retrying(l, f1, c1, NULL, buf, &busy);
        if (rounds++ % 3 == 0)
            c2 = sync_retrying(l, f2, c2, "lz4=on chunk_bytes=4K", buf, &busy);
    }
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    ck_assert_int_eq(atomic_load(&failures), 0);
    sync_retrying(l, f1, c1, NULL, buf, &busy);
    sync_retrying(l, f2, c2, "lz4=on chunk_bytes=4K", buf, &busy);
    ck_assert_uint_gt(rounds, 1);
    expect_same(l, f1);
    expect_same(l, f2);
    free(buf);
    pskv_close(fs);
    pskv_close(ls);
    test_remove_dir(dir);
}
END_TEST

START_TEST(stale_cursor_after_log_trim)
{
    pskv_store *s;
    ck_assert_ok(pskv_open(NULL, "changes=256", &s));
    pskv_table *t;
    ck_assert_ok(pskv_table_open(s, "t", "dim=1 shards=2", &t));
    test_fill(t, 1, 10, 1, 1.0f);
    uint64_t v = pskv_table_version(t);
    test_fill(t, 100, 5000, 1, 1.0f); /* far more distinct keys than the log keeps */
    pskv_export *e;
    ck_assert_err(pskv_export_open(t, v, NULL, &e), PSKV_ESTALE);
    ck_assert_ok(pskv_export_open(t, 0, NULL, &e)); /* a full export always works */
    pskv_export_close(e);
    /* Keys changed again and again stay in a small log (compaction). */
    uint64_t w = pskv_table_version(t);
    for (int i = 0; i < 1000; i++)
        test_fill(t, 1, 10, 1, (float)i);
    ck_assert_ok(pskv_export_open(t, w, NULL, &e));
    pskv_export_close(e);
    pskv_close(s);
    /* A log trimmed while an export runs ends it: the shard it had not
     * read yet lost changes, so every later call says PSKV_ESTALE rather
     * than completing without them. 1024 entries a shard; 4K chunks of
     * about 290 rows, so the first call reads shard 0 only. */
    ck_assert_ok(pskv_open(NULL, "changes=2048", &s));
    ck_assert_ok(pskv_table_open(s, "t", "dim=1 shards=2", &t));
    test_fill(t, 1, 1200, 1, 1.0f);
    uint64_t x = pskv_table_version(t); /* a delta, not a full export */
    test_fill(t, 1, 1200, 1, 2.0f);
    ck_assert_ok(pskv_export_open(t, x, "chunk_bytes=4K", &e));
    uint8_t buf[4096];
    size_t len;
    ck_assert_int_eq(pskv_export_next(e, buf, sizeof buf, &len), 1);
    test_fill(t, 100000, 5000, 1, 3.0f);
    int rc;
    while ((rc = pskv_export_next(e, buf, sizeof buf, &len)) == 1)
        ;
    ck_assert_err(rc, PSKV_ESTALE);
    ck_assert_err(pskv_export_next(e, buf, sizeof buf, &len), PSKV_ESTALE);
    pskv_export_close(e);
    pskv_close(s);
}
END_TEST

/* Full exports whose chunks are encoded under the shard's lock, straight
 * from the rows (a whole piece of DRAM rows, a chunk of 1024 to 4096
 * rows: here one shard of about 2600 rows, 80K chunks of 1105 rows), while
 * writers push, put, erase and checkpoint on a durable leader that spills.
 * Each round starts a new follower from a full export and a delta after
 * it; once the writers stop, every follower catches up from its own
 * cursor and equals the leader. */
START_TEST(full_exports_beside_writers)
{
    char dir[256];
    test_mkdtemp(dir, "fullbeside");
    pskv_store *ls, *fs;
    pskv_table *l;
    const char *tcfg = "dim=8 optimizer=adagrad shards=1", *xcfg = "chunk_bytes=80K";
    ck_assert_ok(pskv_open(dir, "memory_budget=192K", &ls));
    ck_assert_ok(pskv_table_open(ls, "t", tcfg, &l));
    ck_assert_ok(pskv_open(NULL, NULL, &fs));
    /* Rows before the writers start: the first exports have full pieces. */
    uint64_t keys[3000];
    float vals[3000 * BATCH_DIM];
    for (uint32_t i = 0; i < 3000; i++)
        keys[i] = i;
    for (uint32_t i = 0; i < 3000 * BATCH_DIM; i++)
        vals[i] = (float)i * 0.001f;
    ck_assert_ok(pskv_put(l, keys, 3000, vals));
    atomic_int failures = 0, running = 2;
    writer_arg w[2] = {{ls, l, 41, 2, &failures, &running}, {ls, l, 42, 1, &failures, &running}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(pthread_create(&th[i], NULL, writer_main, &w[i]), 0);
    enum { ROUNDS = 48 };
    pskv_table *f[ROUNDS];
    uint64_t c[ROUNDS];
    uint8_t *buf = malloc(CHUNK_CAP);
    uint32_t rounds = 0, busy = 0;
    while (atomic_load(&running) > 0 && rounds < ROUNDS) {
        char name[16];
        snprintf(name, sizeof name, "f%u", rounds);
        ck_assert_ok(pskv_table_open(fs, name, tcfg, &f[rounds]));
        c[rounds] = sync_retrying(l, f[rounds], 0, xcfg, buf, &busy);
        c[rounds] = sync_retrying(l, f[rounds], c[rounds], xcfg, buf, &busy);
        rounds++;
    }
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    ck_assert_int_eq(atomic_load(&failures), 0);
    ck_assert_uint_gt(rounds, 0);
    for (uint32_t i = 0; i < rounds; i++) {
        sync_retrying(l, f[i], c[i], xcfg, buf, &busy);
        expect_same(l, f[i]);
    }
    free(buf);
    pskv_close(fs);
    pskv_close(ls);
    test_remove_dir(dir);
}
END_TEST

/* Cursors at the edges. An export opened before a table's first change
 * hands out the table's first version as its cursor, never 0: rows written
 * before its chunks are taken may come in it, and the next export is a
 * delta with the tombstones of rows erased meanwhile (under cursor 0 the
 * next export would be a full one, without tombstones, and leave the
 * follower with them: found by exports_beside_writers). A cursor newer than
 * the table is refused. */
START_TEST(cursor_edges)
{
    pskv_store *ls, *fs;
    pskv_table *l = open_table(&ls, "dim=4 optimizer=adagrad");
    pskv_table *f = open_table(&fs, "dim=4 optimizer=adagrad");
    pskv_export *e;
    ck_assert_ok(pskv_export_open(l, 0, NULL, &e));
    test_fill(l, 1, 10, 4, 1.0f); /* after the export's version, before its chunks */
    uint8_t *buf = malloc(CHUNK_CAP);
    size_t len;
    int rc;
    while ((rc = pskv_export_next(e, buf, CHUNK_CAP, &len)) == 1)
        ck_assert_ok(pskv_apply(f, buf, len, PSKV_APPLY_REPLACE));
    ck_assert_int_eq(rc, 0);
    uint64_t c = pskv_export_version(e);
    pskv_export_close(e);
    ck_assert_uint_gt(c, 0);
    ck_assert_uint_eq(c % (1ull << 40), 0); /* the table's first version */
    uint64_t erased[5] = {1, 2, 3, 4, 5};
    ck_assert_ok(pskv_erase(l, erased, 5));
    c = sync_once(l, f, c, NULL, NULL); /* a delta: the rows, and five tombstones */
    expect_same(l, f);
    ck_assert_uint_eq(pskv_table_rows(f), 5);
    /* A cursor at the table's version: no chunk, the same cursor. */
    uint32_t chunks = 1;
    ck_assert_uint_eq(sync_once(l, f, c, NULL, &chunks), c);
    ck_assert_uint_eq(chunks, 0);
    /* A cursor the table never handed out. */
    ck_assert_err(pskv_export_open(l, c + 1, NULL, &e), PSKV_ESTALE);
    ck_assert_ptr_nonnull(strstr(pskv_last_error(), "newer"));
    free(buf);
    pskv_close(fs);
    pskv_close(ls);
}
END_TEST

/* ---------------------------------------------------------------- migration */

START_TEST(migration_conserves_rows)
{
    enum { NODES = 3, KEYS = 5000 };
    pskv_store *s[NODES + 1];
    pskv_table *t[NODES + 1];
    pskv_ring *ring;
    ck_assert_ok(pskv_ring_create(0, 42, &ring));
    for (uint32_t i = 0; i < NODES; i++)
        ck_assert_ok(pskv_ring_add(ring, i, 1.0));
    for (uint32_t i = 0; i <= NODES; i++) {
        ck_assert_ok(pskv_open(NULL, NULL, &s[i]));
        ck_assert_ok(pskv_table_open(s[i], "t", "dim=4 optimizer=adagrad", &t[i]));
    }
    uint64_t *keys = malloc(KEYS * 8);
    uint32_t *owner = malloc(KEYS * 4);
    float *g = malloc(KEYS * 4 * 4);
    for (uint32_t k = 0; k < KEYS; k++) {
        keys[k] = k * 7919u + 3;
        for (int j = 0; j < 4; j++)
            g[k * 4 + j] = (float)((k + j) % 13) - 6.0f;
    }
    ck_assert_ok(pskv_ring_route(ring, keys, KEYS, owner));
    for (uint32_t k = 0; k < KEYS; k++)
        ck_assert_ok(pskv_push(t[owner[k]], &keys[k], 1, &g[k * 4]));
    /* The reference: one table holding everything. */
    pskv_store *rs;
    pskv_table *ref = open_table(&rs, "dim=4 optimizer=adagrad");
    for (uint32_t k = 0; k < KEYS; k++)
        ck_assert_ok(pskv_push(ref, &keys[k], 1, &g[k * 4]));
    /* Node 3 joins: the owners export what now routes to it. */
    ck_assert_ok(pskv_ring_add(ring, NODES, 1.0));
    uint32_t *now = malloc(KEYS * 4);
    ck_assert_ok(pskv_ring_route(ring, keys, KEYS, now));
    uint32_t expect_moved = 0;
    for (uint32_t k = 0; k < KEYS; k++) {
        expect_moved += now[k] == NODES;
        ck_assert(now[k] == owner[k] || now[k] == NODES); /* consistent hashing */
    }
    uint8_t *buf = malloc(CHUNK_CAP);
    uint64_t *moved = malloc(KEYS * 8);
    uint32_t nmoved = 0;
    for (uint32_t i = 0; i < NODES; i++) {
        pskv_export *e;
        ck_assert_ok(pskv_export_open(t[i], 0, "chunk_bytes=16K", &e));
        ck_assert_ok(pskv_export_ring(e, ring, NODES));
        size_t len;
        int rc;
        while ((rc = pskv_export_next(e, buf, CHUNK_CAP, &len)) == 1) {
            pskv_chunk_info in;
            ck_assert_ok(pskv_chunk_info_get(buf, len, &in));
            uint64_t *ks = malloc((in.rows + 1) * 8);
            float *vs = malloc((in.rows + 1) * 16);
            ck_assert_ok(pskv_chunk_decode(buf, len, ks, in.rows + 1, vs, (in.rows + 1) * 4, NULL, 0, NULL, 0));
            ck_assert_ok(pskv_apply(t[NODES], buf, len, PSKV_APPLY_REPLACE));
            ck_assert_ok(pskv_erase(t[i], ks, in.rows));
            memcpy(moved + nmoved, ks, in.rows * 8);
            nmoved += in.rows;
            free(ks);
            free(vs);
        }
        ck_assert_int_eq(rc, 0);
        pskv_export_close(e);
    }
    ck_assert_uint_eq(nmoved, expect_moved);
    /* Every key lives exactly on its owner, its row (and state) unchanged. */
    uint64_t total = 0;
    for (uint32_t i = 0; i <= NODES; i++)
        total += pskv_table_rows(t[i]);
    ck_assert_uint_eq(total, KEYS);
    for (uint32_t k = 0; k < KEYS; k++) {
        float w[4], want[4];
        uint8_t found;
        for (uint32_t i = 0; i <= NODES; i++) {
            ck_assert_ok(pskv_get(t[i], &keys[k], 1, w, &found));
            ck_assert_int_eq(found, i == now[k]);
        }
        ck_assert_ok(pskv_get(t[now[k]], &keys[k], 1, w, NULL));
        ck_assert_ok(pskv_get(ref, &keys[k], 1, want, NULL));
        ck_assert(memcmp(w, want, sizeof w) == 0);
    }
    /* The state moved too: one more step agrees with the reference. */
    for (uint32_t k = 0; k < KEYS; k += 17) {
        float w[4], want[4];
        ck_assert_ok(pskv_push(t[now[k]], &keys[k], 1, &g[k * 4]));
        ck_assert_ok(pskv_push(ref, &keys[k], 1, &g[k * 4]));
        ck_assert_ok(pskv_get(t[now[k]], &keys[k], 1, w, NULL));
        ck_assert_ok(pskv_get(ref, &keys[k], 1, want, NULL));
        ck_assert(memcmp(w, want, sizeof w) == 0);
    }
    free(buf);
    free(moved);
    free(keys);
    free(owner);
    free(now);
    free(g);
    pskv_ring_destroy(ring);
    for (uint32_t i = 0; i <= NODES; i++)
        pskv_close(s[i]);
    pskv_close(rs);
}
END_TEST

/* ---------------------------------------------------------------- misuse (issue 22) */

static void reseal(uint8_t *chunk, size_t len)
{
    uint64_t h = XXH3_64bits(chunk, len - 8);
    memcpy(chunk + len - 8, &h, 8);
}

/* Items 4 and 13: an export or iterator outliving its store's close gets
 * an error from every later call (never a read of the freed tables), and
 * closing it afterwards frees it (ASan sees any use after free). */
START_TEST(handles_outliving_their_store)
{
    for (int kind = 0; kind < 3; kind++) { /* full export, delta export, iterator */
        pskv_store *s;
        pskv_table *t = open_table(&s, "dim=4 shards=2");
        test_fill(t, 1, 3000, 4, 1.0f);
        uint64_t v0 = pskv_table_version(t);
        test_fill(t, 1, 100, 4, 2.0f);
        pskv_export *e = NULL;
        pskv_iter *it = NULL;
        if (kind < 2)
            ck_assert_ok(pskv_export_open(t, kind == 0 ? 0 : v0, "chunk_bytes=4K", &e));
        else
            ck_assert_ok(pskv_iter_create(t, &it));
        uint8_t buf[8192];
        size_t len;
        uint64_t key;
        float w[4];
        if (e) /* part way through */
            ck_assert_int_eq(pskv_export_next(e, buf, sizeof buf, &len), 1);
        else
            ck_assert_int_eq(pskv_iter_next(it, &key, w, NULL), 1);
        pskv_close(s);
        if (e) {
            ck_assert_err(pskv_export_next(e, buf, sizeof buf, &len), PSKV_EINVAL);
            ck_assert_ptr_nonnull(strstr(pskv_last_error(), "closed"));
            pskv_ring *r;
            ck_assert_ok(pskv_ring_create(0, 1, &r));
            ck_assert_ok(pskv_ring_add(r, 0, 1.0));
            ck_assert_err(pskv_export_ring(e, r, 0), PSKV_EINVAL);
            pskv_ring_destroy(r);
            pskv_export_close(e);
        } else {
            ck_assert_err(pskv_iter_next(it, &key, w, NULL), PSKV_EINVAL);
            pskv_iter_destroy(it);
        }
    }
    /* A store closed with a durable table's iterator open: the table's
     * iteration count is not touched after the close. */
    char d[64];
    test_mkdtemp(d, "transfer-handles");
    pskv_store *s;
    pskv_table *t;
    ck_assert_ok(pskv_open(d, NULL, &s));
    ck_assert_ok(pskv_table_open(s, "t", "dim=4", &t));
    test_fill(t, 1, 100, 4, 1.0f);
    pskv_iter *it;
    ck_assert_ok(pskv_iter_create(t, &it));
    pskv_close(s);
    pskv_iter_destroy(it);
    test_remove_dir(d);
}
END_TEST

/* Item 4: one export handle used by two threads at once (documented as
 * forbidden) gets PSKV_EBUSY on the call that overlaps, never a corrupted
 * export: every chunk handed out is whole and each row is in one chunk. */
typedef struct shared_export {
    pskv_export *e;
    atomic_uint rows, busy;
    atomic_int bad;
} shared_export;

static void *shared_export_thread(void *arg)
{
    shared_export *x = arg;
    uint8_t *buf = malloc(64 << 10);
    size_t len;
    for (;;) {
        int rc = pskv_export_next(x->e, buf, 64 << 10, &len);
        if (rc == 0)
            break;
        if (rc == PSKV_EBUSY) {
            atomic_fetch_add(&x->busy, 1);
            continue;
        }
        pskv_chunk_info in;
        if (rc != 1 || pskv_chunk_info_get(buf, len, &in) != 0) {
            atomic_store(&x->bad, rc == 1 ? -100 : rc);
            break;
        }
        atomic_fetch_add(&x->rows, in.rows);
    }
    free(buf);
    return NULL;
}

START_TEST(shared_export_handle_is_busy)
{
    pskv_store *s;
    pskv_table *t = open_table(&s, "dim=4 shards=4");
    enum { ROWS = 60000 };
    test_fill(t, 1, ROWS, 4, 1.0f);
    unsigned busy = 0;
    for (int round = 0; round < 10; round++) {
        shared_export x = {0};
        ck_assert_ok(pskv_export_open(t, 0, "chunk_bytes=16K", &x.e));
        pthread_t a, b;
        ck_assert_int_eq(pthread_create(&a, NULL, shared_export_thread, &x), 0);
        ck_assert_int_eq(pthread_create(&b, NULL, shared_export_thread, &x), 0);
        pthread_join(a, NULL);
        pthread_join(b, NULL);
        ck_assert_int_eq(atomic_load(&x.bad), 0);
        ck_assert_uint_eq(atomic_load(&x.rows), ROWS);
        busy += atomic_load(&x.busy);
        pskv_export_close(x.e);
    }
    printf("shared_export_handle_is_busy: %u overlapping calls refused\n", busy);
    pskv_close(s);
}
END_TEST

/* Item 5: an export of rows with their Adagrad state applied as gradients
 * or increments is refused, nothing changed. */
START_TEST(rows_chunk_is_not_gradients)
{
    uint8_t *buf = malloc(CHUNK_CAP);
    size_t len;
    pskv_store *s;
    pskv_table *t = open_table(&s, "dim=4 optimizer=adagrad");
    pskv_table *u;
    ck_assert_ok(pskv_table_open(s, "u", "dim=4 optimizer=adagrad", &u));
    test_fill(t, 1, 50, 4, 1.0f);
    test_fill(u, 1, 50, 4, 3.0f);
    pskv_export *e;
    ck_assert_ok(pskv_export_open(t, 0, NULL, &e));
    ck_assert_int_eq(pskv_export_next(e, buf, CHUNK_CAP, &len), 1);
    pskv_export_close(e);
    const uint64_t uv = pskv_table_version(u);
    ck_assert_err(pskv_apply(u, buf, len, PSKV_APPLY_PUSH | PSKV_APPLY_ANY_TABLE), PSKV_EINVAL);
    ck_assert_ptr_nonnull(strstr(pskv_last_error(), "REPLACE"));
    ck_assert_err(pskv_apply(u, buf, len, PSKV_APPLY_ADD | PSKV_APPLY_ANY_TABLE), PSKV_EINVAL);
    ck_assert_uint_eq(pskv_table_version(u), uv);
    test_expect_rows(u, 1, 50, 4, 3.0f);
    ck_assert_ok(pskv_apply(u, buf, len, REPLICA_APPLY)); /* what it is for */
    test_expect_rows(u, 1, 50, 4, 1.0f);
    /* ...while weights alone may be added (model averaging). */
    ck_assert_ok(pskv_export_open(t, 0, "payload=weights", &e));
    ck_assert_int_eq(pskv_export_next(e, buf, CHUNK_CAP, &len), 1);
    pskv_export_close(e);
    ck_assert_ok(pskv_apply(u, buf, len, PSKV_APPLY_ADD | PSKV_APPLY_ANY_TABLE));
    pskv_close(s);
    free(buf);
}
END_TEST

/* Item 15: a chunk naming an optimizer without carrying state; an export
 * filtered by a ring without nodes. */
START_TEST(optimizer_without_state_and_empty_ring)
{
    uint8_t buf[256];
    size_t len;
    uint64_t k = 5;
    float x[4] = {1, 2, 3, 4};
    ck_assert_ok(pskv_chunk_encode(4, &k, 1, x, NULL, buf, sizeof buf, &len));
    pskv_chunk_info in;
    ck_assert_ok(pskv_chunk_info_get(buf, len, &in));
    buf[20] = PSKV_OPT_ADAM;
    reseal(buf, len);
    ck_assert_err(pskv_chunk_info_get(buf, len, &in), PSKV_ECORRUPT);
    pskv_store *s;
    pskv_table *t = open_table(&s, "dim=4");
    ck_assert_err(pskv_apply(t, buf, len, PSKV_APPLY_REPLACE), PSKV_ECORRUPT);
    test_fill(t, 1, 10, 4, 1.0f);
    pskv_ring *r;
    ck_assert_ok(pskv_ring_create(0, 1, &r));
    pskv_export *e;
    ck_assert_ok(pskv_export_open(t, 0, NULL, &e));
    ck_assert_err(pskv_export_ring(e, r, 0), PSKV_EINVAL);
    pskv_export_close(e);
    pskv_ring_destroy(r);
    pskv_close(s);
}
END_TEST

/* Item 12: a value fp16 cannot carry gives PSKV_ECODEC whatever the
 * buffer, so the documented "bigger buffer" loop ends. */
START_TEST(codec_range_has_its_own_code)
{
    uint8_t *buf = malloc(CHUNK_CAP);
    size_t len;
    pskv_store *s;
    pskv_table *t = open_table(&s, "dim=4");
    test_fill(t, 1, 10, 4, 1.0f);
    float big[4] = {1e5f, 0, 0, 0};
    uint64_t kb = 77;
    ck_assert_ok(pskv_put(t, &kb, 1, big));
    for (int lz4 = 0; lz4 < 2; lz4++) {
        pskv_export *e;
        ck_assert_ok(pskv_export_open(t, 0, lz4 ? "codec=fp16 lz4=on" : "codec=fp16", &e));
        size_t cap = 64;
        int rc, rounds = 0;
        while ((rc = pskv_export_next(e, buf, cap, &len)) == PSKV_ERANGE || rc == 1) {
            ck_assert_int_lt(rounds++, 40); /* the loop ends */
            if (rc == PSKV_ERANGE)
                cap = len;
        }
        ck_assert_err(rc, PSKV_ECODEC);
        ck_assert_err(pskv_export_next(e, buf, CHUNK_CAP, &len), PSKV_ECODEC); /* again */
        pskv_export_close(e);
        ck_assert_err(pskv_chunk_encode(4, &kb, 1, big, lz4 ? "codec=fp16 lz4=on" : "codec=fp16",
                                        buf, CHUNK_CAP, &len),
                      PSKV_ECODEC);
    }
    pskv_close(s);
    free(buf);
}
END_TEST

/* Item 11: an Adam row's step count past 2^31 (its bits read as Inf or
 * NaN as a float): the row's own export applies, and pushes go on without
 * a wrap (the count saturates at 2^32 - 1). */
START_TEST(adam_count_is_not_a_float)
{
    uint8_t *buf = malloc(CHUNK_CAP), *again = malloc(CHUNK_CAP);
    size_t len, alen;
    pskv_store *s;
    pskv_table *a = open_table(&s, "dim=4 optimizer=adam");
    pskv_table *b, *c;
    ck_assert_ok(pskv_table_open(s, "b", "dim=4 optimizer=adam", &b));
    ck_assert_ok(pskv_table_open(s, "c", "dim=4 optimizer=adam", &c));
    uint64_t k = 5;
    float g[4] = {0.5f, -0.5f, 0.25f, 1};
    ck_assert_ok(pskv_push(a, &k, 1, g));
    pskv_export *e;
    ck_assert_ok(pskv_export_open(a, 0, NULL, &e));
    ck_assert_int_eq(pskv_export_next(e, buf, CHUNK_CAP, &len), 1);
    pskv_export_close(e);
    pskv_chunk_info in;
    ck_assert_ok(pskv_chunk_info_get(buf, len, &in));
    ck_assert_uint_eq(in.state_floats, 9);
    const uint32_t counts[3] = {0x7f800000u, 0xfffffffeu, 0xffffffffu}; /* Inf, NaN bits */
    for (int i = 0; i < 3; i++) {
        memcpy(buf + len - 8 - 4, &counts[i], 4); /* the last state float: t */
        reseal(buf, len);
        ck_assert_ok(pskv_apply(b, buf, len, REPLICA_APPLY));
        ck_assert_ok(pskv_push(b, &k, 1, g));
        ck_assert_ok(pskv_push(b, &k, 1, g));
        ck_assert_ok(pskv_export_open(b, 0, NULL, &e));
        ck_assert_int_eq(pskv_export_next(e, again, CHUNK_CAP, &alen), 1);
        pskv_export_close(e);
        ck_assert_ok(pskv_apply(c, again, alen, REPLICA_APPLY)); /* the replica goes on */
        uint32_t t_now;
        memcpy(&t_now, again + alen - 8 - 4, 4);
        ck_assert_uint_eq(t_now, counts[i] < 0xfffffffeu ? counts[i] + 2 : 0xffffffffu);
        float w[4];
        uint8_t found;
        ck_assert_ok(pskv_get(c, &k, 1, w, &found));
        for (int j = 0; j < 4; j++)
            ck_assert(isfinite(w[j]));
    }
    pskv_close(s);
    free(buf);
    free(again);
}
END_TEST

/* Item 7: chunks are cut to the caller's buffer. Every cap that holds one
 * row works, also when it changes from call to call (rows carried from a
 * bigger chunk's batch come out in smaller ones); a cap that holds none is
 * PSKV_ERANGE with the bytes one row needs. Full and delta exports, lz4,
 * a ring filter, tombstones: the follower equals the leader. */
START_TEST(chunks_cut_to_cap)
{
    static const char *const cfgs[] = {"payload=rows", "payload=rows lz4=on",
                                       "payload=weights codec=bf16", "payload=rows chunk_bytes=64K"};
    test_rng rng = {7};
    uint8_t *buf = malloc(CHUNK_CAP);
    for (unsigned c = 0; c < sizeof cfgs / sizeof cfgs[0]; c++) {
        for (int ring = 0; ring < 2; ring++) {
            pskv_store *s;
            pskv_table *t = open_table(&s, "dim=8 shards=3");
            pskv_table *f, *all;
            ck_assert_ok(pskv_table_open(s, "f", "dim=8", &f));
            ck_assert_ok(pskv_table_open(s, "all", "dim=8", &all));
            pskv_ring *r = NULL;
            if (ring) {
                ck_assert_ok(pskv_ring_create(0, 3, &r));
                ck_assert_ok(pskv_ring_add(r, 0, 1.0));
                ck_assert_ok(pskv_ring_add(r, 1, 1.0));
            }
            test_fill(t, 1, 6000, 8, 1.0f);
            uint64_t cursor = 0;
            for (int round = 0; round < 4; round++) {
                pskv_export *e;
                ck_assert_ok(pskv_export_open(t, cursor, cfgs[c], &e));
                if (r)
                    ck_assert_ok(pskv_export_ring(e, r, 1));
                int rc;
                size_t len;
                unsigned chunks = 0;
                for (;;) {
                    size_t cap = 40 + rng_below(&rng, 3) * rng_below(&rng, 6000);
                    rc = pskv_export_next(e, buf, cap, &len);
                    if (rc == PSKV_ERANGE) {
                        ck_assert_uint_gt(len, cap);
                        ck_assert_uint_lt(len, 200); /* one row's bound */
                        continue;
                    }
                    if (rc != 1)
                        break;
                    ck_assert_uint_le(len, cap);
                    chunks++;
                    ck_assert_ok(pskv_apply(f, buf, len, REPLICA_APPLY));
                }
                ck_assert_int_eq(rc, 0);
                cursor = pskv_export_version(e);
                pskv_export_close(e);
                ck_assert_uint_gt(chunks, round == 0 ? 10 : 0);
                uint64_t keys[400];
                float v[400 * 8];
                uint32_t n = random_batch(&rng, 400, keys, v);
                ck_assert_ok(pskv_put(t, keys, n, v));
                ck_assert_ok(pskv_erase(t, keys, n / 4));
            }
            /* After a last delta the follower equals the leader's share. */
            pskv_export *e;
            ck_assert_ok(pskv_export_open(t, cursor, cfgs[c], &e));
            if (r)
                ck_assert_ok(pskv_export_ring(e, r, 1));
            size_t len;
            int rc;
            while ((rc = pskv_export_next(e, buf, 300, &len)) == 1)
                ck_assert_ok(pskv_apply(f, buf, len, REPLICA_APPLY));
            ck_assert_int_eq(rc, 0);
            pskv_export_close(e);
            /* The share in one big chunk stream into `all`. */
            ck_assert_ok(pskv_export_open(t, 0, cfgs[c], &e));
            if (r)
                ck_assert_ok(pskv_export_ring(e, r, 1));
            while ((rc = pskv_export_next(e, buf, CHUNK_CAP, &len)) == 1)
                ck_assert_ok(pskv_apply(all, buf, len, REPLICA_APPLY));
            ck_assert_int_eq(rc, 0);
            pskv_export_close(e);
            expect_same(f, all);
            pskv_ring_destroy(r);
            pskv_close(s);
        }
    }
    free(buf);
}
END_TEST

/* An lz4 export writes the same chunks whatever room the caller's buffer
 * leaves it: the compressed body and the raw one both in the buffer, the
 * compressed body only, or neither (the export's work memory), and the
 * chunks apply to the same rows. */
START_TEST(lz4_chunks_alike_for_any_buffer)
{
    static const size_t caps[] = {64u << 10, (64u << 10) + 2048, 256u << 10};
    pskv_store *s;
    pskv_table *t = open_table(&s, "dim=32 optimizer=adagrad shards=2");
    test_fill(t, 1, 5000, 32, 1.0f);
    uint8_t *stream[3];
    size_t total[3], lens[1024];
    unsigned nchunks = 0;
    for (int c = 0; c < 3; c++) {
        stream[c] = malloc(8u << 20);
        total[c] = 0;
        uint8_t *buf = malloc(caps[c]);
        pskv_export *e;
        ck_assert_ok(pskv_export_open(t, 0, "payload=rows lz4=on chunk_bytes=64K", &e));
        size_t len;
        int rc;
        unsigned packed = 0;
        while ((rc = pskv_export_next(e, buf, caps[c], &len)) == 1) {
            pskv_chunk_info info;
            ck_assert_ok(pskv_chunk_info_get(buf, len, &info));
            packed += info.lz4;
            ck_assert_uint_le(total[c] + len, 8u << 20);
            ck_assert_uint_lt(nchunks, 1024);
            if (c == 0)
                lens[nchunks++] = len;
            memcpy(stream[c] + total[c], buf, len);
            total[c] += len;
        }
        ck_assert_int_eq(rc, 0);
        ck_assert_uint_gt(packed, 3);
        pskv_export_close(e);
        free(buf);
    }
    ck_assert_uint_eq(total[0], total[1]);
    ck_assert_uint_eq(total[0], total[2]);
    ck_assert_mem_eq(stream[0], stream[1], total[0]);
    ck_assert_mem_eq(stream[0], stream[2], total[0]);
    pskv_table *f;
    ck_assert_ok(pskv_table_open(s, "f", "dim=32 optimizer=adagrad", &f));
    for (size_t i = 0, at = 0; i < nchunks; at += lens[i++])
        ck_assert_ok(pskv_apply(f, stream[0] + at, lens[i], REPLICA_APPLY));
    expect_same(t, f);
    for (int c = 0; c < 3; c++)
        free(stream[c]);
    pskv_close(s);
}
END_TEST

/* A full export's chunks (0.4.1: at most 4096 rows, encoded where the
 * rows sit, a shard's last rows as a short chunk): every row exactly once,
 * with the table's values, over shards of several pieces plus a tail, of
 * one piece and a tail, and of a tail only; with and without a ring. */
START_TEST(full_export_sends_each_row_once)
{
    static const char *const cfgs[] = {"payload=weights codec=fp32",
                                       "payload=weights codec=fp32 chunk_bytes=64K",
                                       "payload=rows lz4=on"};
    enum { DIM = 8, ROWS = 30000, MOST = 32768 };
    uint8_t *buf = malloc(CHUNK_CAP);
    uint64_t *keys = malloc(MOST * sizeof *keys);
    float *vals = malloc((size_t)MOST * DIM * sizeof *vals);
    float *got = malloc(DIM * sizeof *got);
    for (unsigned c = 0; c < sizeof cfgs / sizeof cfgs[0]; c++) {
        for (int ring = 0; ring < 2; ring++) {
            pskv_store *s;
            /* 4 shards of ~7500 rows: pieces of 4096, tails of ~3400. */
            pskv_table *t = open_table(&s, "dim=8 shards=4");
            test_fill(t, 1, ROWS, DIM, 1.0f);
            pskv_ring *r = NULL;
            if (ring) {
                ck_assert_ok(pskv_ring_create(0, 9, &r));
                ck_assert_ok(pskv_ring_add(r, 0, 1.0));
                ck_assert_ok(pskv_ring_add(r, 1, 1.0));
            }
            uint8_t *seen = calloc(ROWS + 1, 1);
            pskv_export *e;
            ck_assert_ok(pskv_export_open(t, 0, cfgs[c], &e));
            if (r)
                ck_assert_ok(pskv_export_ring(e, r, 1));
            size_t len;
            int rc;
            uint32_t rows = 0;
            while ((rc = pskv_export_next(e, buf, CHUNK_CAP, &len)) == 1) {
                pskv_chunk_info in;
                ck_assert_ok(pskv_chunk_info_get(buf, len, &in));
                if (r == NULL && strstr(cfgs[c], "lz4") == NULL)
                    ck_assert_uint_le(in.rows, PSKV__ITER_PIECE_MAX);
                ck_assert_ok(pskv_chunk_decode(buf, len, keys, MOST, vals, (size_t)MOST * DIM,
                                               NULL, 0, NULL, 0));
                for (uint32_t i = 0; i < in.rows; i++) {
                    ck_assert_uint_ge(keys[i], 1);
                    ck_assert_uint_le(keys[i], ROWS);
                    ck_assert_msg(!seen[keys[i]], "key %llu sent twice",
                                  (unsigned long long)keys[i]);
                    seen[keys[i]] = 1;
                    uint8_t found;
                    ck_assert_ok(pskv_get(t, &keys[i], 1, got, &found));
                    ck_assert(found && memcmp(got, vals + (size_t)i * DIM, sizeof *got * DIM) == 0);
                }
                rows += in.rows;
            }
            ck_assert_int_eq(rc, 0);
            pskv_export_close(e);
            /* Every row the ring gives node 1 (or every row) was sent. */
            uint32_t want = 0;
            for (uint64_t k = 1; k <= ROWS; k++) {
                uint32_t node = 1;
                if (r)
                    ck_assert_ok(pskv_ring_route(r, &k, 1, &node));
                want += node == 1;
                ck_assert_msg(seen[k] == (node == 1), "key %llu: sent %d, owned %d",
                              (unsigned long long)k, seen[k], node == 1);
            }
            ck_assert_uint_eq(rows, want);
            free(seen);
            pskv_ring_destroy(r);
            pskv_close(s);
        }
    }
    free(got);
    free(vals);
    free(keys);
    free(buf);
}
END_TEST

/* Item 6: chunks and cursors know their table. */
static uint64_t changed_table(pskv_table *t, uint32_t n)
{
    test_fill(t, 1, n, 4, 1.0f);
    return pskv_table_version(t);
}

START_TEST(cursor_of_another_table_is_stale)
{
    pskv_store *s;
    pskv_table *a = open_table(&s, "dim=4");
    pskv_table *b;
    ck_assert_ok(pskv_table_open(s, "b", "dim=4", &b));
    changed_table(a, 50);
    const uint64_t ca = changed_table(a, 50), cb = changed_table(b, 50);
    test_fill(a, 100, 10, 4, 2.0f);
    test_fill(b, 100, 10, 4, 2.0f);
    pskv_export *e;
    ck_assert_err(pskv_export_open(b, ca, NULL, &e), PSKV_ESTALE);
    ck_assert_err(pskv_export_open(a, cb, NULL, &e), PSKV_ESTALE);
    ck_assert_ok(pskv_export_open(a, ca, NULL, &e)); /* its own */
    pskv_export_close(e);
    pskv_close(s);
    /* An earlier life of a table of the same name (a memory store opened
     * again): its cursor is stale too. */
    pskv_table *a2 = open_table(&s, "dim=4");
    changed_table(a2, 200);
    test_fill(a2, 1, 200, 4, 3.0f);
    ck_assert_err(pskv_export_open(a2, ca, NULL, &e), PSKV_ESTALE);
    pskv_close(s);
}
END_TEST

START_TEST(chunk_of_another_table_refused)
{
    uint8_t *buf = malloc(CHUNK_CAP);
    size_t len;
    pskv_store *s, *s2;
    pskv_table *a = open_table(&s, "dim=4");
    pskv_table *b, *a_elsewhere;
    ck_assert_ok(pskv_table_open(s, "b", "dim=4", &b));
    test_fill(a, 1, 100, 4, 1.0f);
    test_fill(b, 1, 100, 4, 2.0f);
    pskv_export *e;
    ck_assert_ok(pskv_export_open(a, 0, NULL, &e));
    ck_assert_int_eq(pskv_export_next(e, buf, CHUNK_CAP, &len), 1);
    pskv_export_close(e);
    const uint64_t vb = pskv_table_version(b);
    ck_assert_err(pskv_apply(b, buf, len, PSKV_APPLY_REPLACE), PSKV_ESCHEMA);
    ck_assert_ptr_nonnull(strstr(pskv_last_error(), "another table"));
    ck_assert_uint_eq(pskv_table_version(b), vb);
    test_expect_rows(b, 1, 100, 4, 2.0f);
    /* Meant: a rename. */
    ck_assert_ok(pskv_apply(b, buf, len, PSKV_APPLY_REPLACE | PSKV_APPLY_ANY_TABLE));
    test_expect_rows(b, 1, 100, 4, 1.0f);
    ck_assert_err(pskv_apply(b, buf, len, 0x200), PSKV_EINVAL);
    /* The same table on another instance (migration, a replica): applies. */
    ck_assert_ok(pskv_open(NULL, NULL, &s2));
    ck_assert_ok(pskv_table_open(s2, "t", "dim=4", &a_elsewhere));
    ck_assert_ok(pskv_apply(a_elsewhere, buf, len, PSKV_APPLY_REPLACE));
    test_expect_rows(a_elsewhere, 1, 100, 4, 1.0f);
    /* A chunk of the caller's arrays names no table: it applies anywhere. */
    uint64_t k = 5;
    float x[4] = {1, 2, 3, 4};
    ck_assert_ok(pskv_chunk_encode(4, &k, 1, x, NULL, buf, CHUNK_CAP, &len));
    ck_assert_ok(pskv_apply(b, buf, len, PSKV_APPLY_ADD));
    pskv_close(s2);
    pskv_close(s);
    free(buf);
}
END_TEST

/* A replica that states the cursor it is at: a missed delta is
 * PSKV_ESTALE, nothing applied; truncate and a full export start it over. */
static int apply_export(pskv_table *from, uint64_t since, pskv_table *to, uint64_t at,
                        uint64_t *next)
{
    pskv_export *e;
    ck_assert_ok(pskv_export_open(from, since, "chunk_bytes=4K", &e));
    uint8_t *buf = malloc(CHUNK_CAP);
    size_t len;
    int rc, arc = 0;
    while (arc == 0 && (rc = pskv_export_next(e, buf, CHUNK_CAP, &len)) == 1)
        arc = pskv_apply_since(to, buf, len, PSKV_APPLY_REPLACE, at);
    if (arc == 0)
        ck_assert_int_eq(rc, 0);
    *next = pskv_export_version(e);
    pskv_export_close(e);
    free(buf);
    return arc;
}

START_TEST(replica_continuity)
{
    pskv_store *ls, *rs;
    pskv_table *l = open_table(&ls, "dim=4");
    pskv_table *r = open_table(&rs, "dim=4");
    test_fill(l, 1, 1000, 4, 1.0f);
    uint64_t c0, c1, c2;
    ck_assert_ok(apply_export(l, 0, r, 0, &c0));
    expect_same(l, r);
    test_fill(l, 1, 300, 4, 2.0f);
    uint64_t gone[50];
    for (int i = 0; i < 50; i++)
        gone[i] = 500 + (uint64_t)i;
    ck_assert_ok(pskv_erase(l, gone, 50));
    /* delta 1 (c0 -> c1) is lost on the way; delta 2 arrives. */
    pskv_export *e;
    ck_assert_ok(pskv_export_open(l, c0, NULL, &e));
    c1 = pskv_export_version(e);
    pskv_export_close(e);
    test_fill(l, 900, 200, 4, 3.0f);
    const uint64_t rv = pskv_table_version(r);
    ck_assert_err(apply_export(l, c1, r, c0, &c2), PSKV_ESTALE);
    ck_assert_ptr_nonnull(strstr(pskv_last_error(), "missed"));
    ck_assert_uint_eq(pskv_table_version(r), rv); /* nothing applied */
    ck_assert_err(pskv_apply_since(r, "x", 1, 0, PSKV_SINCE_ANY), PSKV_EINVAL);
    /* Start over: the replica empties itself, then a full export. */
    uint64_t erased;
    ck_assert_ok(pskv_table_truncate(r, &erased));
    ck_assert_uint_eq(erased, 1000);
    ck_assert_uint_eq(pskv_table_rows(r), 0);
    ck_assert_ok(apply_export(l, 0, r, 0, &c2));
    expect_same(l, r);
    /* And on from there, in order. */
    test_fill(l, 2000, 10, 4, 4.0f);
    uint64_t c3;
    ck_assert_ok(apply_export(l, c2, r, c2, &c3));
    expect_same(l, r);
    pskv_close(rs);
    pskv_close(ls);
}
END_TEST

/* pskv_table_truncate on a durable store with spilled rows and rows only
 * LMDB holds: every row goes, for good after a checkpoint, and a delta
 * export carries the tombstones. */
START_TEST(truncate_durable)
{
    char d[64];
    test_mkdtemp(d, "transfer-truncate");
    pskv_store *s;
    pskv_table *t;
    ck_assert_ok(pskv_open(d, "memory_budget=64K", &s));
    ck_assert_ok(pskv_table_open(s, "t", "dim=8", &t));
    test_fill(t, 1, 5000, 8, 1.0f);
    pskv_close(s);
    ck_assert_ok(pskv_open(d, "memory_budget=64K", &s));
    ck_assert_ok(pskv_table_open(s, "t", NULL, &t));
    test_expect_rows(t, 1, 1000, 8, 1.0f); /* some read back (and spilled), the rest cold */
    const uint64_t v = pskv_table_version(t);
    uint64_t erased;
    ck_assert_ok(pskv_table_truncate(t, &erased));
    ck_assert_uint_eq(erased, 5000);
    ck_assert_uint_eq(pskv_table_rows(t), 0);
    pskv_export *e;
    ck_assert_ok(pskv_export_open(t, v, NULL, &e));
    uint8_t *buf = malloc(CHUNK_CAP);
    size_t len;
    uint32_t tombs = 0;
    int rc;
    while ((rc = pskv_export_next(e, buf, CHUNK_CAP, &len)) == 1) {
        pskv_chunk_info in;
        ck_assert_ok(pskv_chunk_info_get(buf, len, &in));
        tombs += in.tombstones;
    }
    ck_assert_int_eq(rc, 0);
    ck_assert_uint_eq(tombs, 5000);
    pskv_export_close(e);
    free(buf);
    ck_assert_ok(pskv_checkpoint(s));
    pskv_close(s);
    ck_assert_ok(pskv_open(d, NULL, &s));
    ck_assert_ok(pskv_table_open(s, "t", NULL, &t));
    ck_assert_uint_eq(pskv_table_rows(t), 0);
    pskv_close(s);
    test_remove_dir(d);
}
END_TEST

/* pskv_chunk_decode checks each array's capacity against the chunk before
 * it writes anything: a chunk from elsewhere cannot overrun an array sized
 * for another. */
START_TEST(decode_checks_capacities)
{
    pskv_store *s;
    pskv_table *t = open_table(&s, "dim=3 optimizer=adagrad");
    enum { N = 10, DIM = 3, STATE = 3 };
    uint64_t keys[N];
    float w[N * DIM];
    for (int i = 0; i < N; i++) {
        keys[i] = (uint64_t)i * 7 + 1;
        for (int j = 0; j < DIM; j++)
            w[i * DIM + j] = (float)(i + j);
    }
    ck_assert_ok(pskv_put(t, keys, N, w));
    ck_assert_ok(pskv_erase(t, keys, 1));
    /* A delta from the put's version: rows with state and one tombstone. */
    pskv_export *e;
    ck_assert_ok(pskv_export_open(t, 0, "payload=rows", &e));
    uint8_t buf[8192];
    size_t len;
    ck_assert_int_eq(pskv_export_next(e, buf, sizeof buf, &len), 1);
    pskv_export_close(e);
    pskv_chunk_info in;
    ck_assert_ok(pskv_chunk_info_get(buf, len, &in));
    ck_assert_uint_eq(in.rows, N - 1);
    ck_assert_uint_eq(in.state_floats, STATE);
    for (int k = 0; k < 8; k++)
        ck_assert_uint_eq(in.reserved[k], 0);
    const size_t nr = in.rows;
    uint64_t ks[N + 1], tombs[2];
    float vs[(N + 1) * DIM], st[(N + 1) * STATE];
    memset(ks, 0x5a, sizeof ks);
    memset(vs, 0x5a, sizeof vs);
    memset(st, 0x5a, sizeof st);
    /* One element short in any array: PSKV_ERANGE, nothing written. */
    ck_assert_err(pskv_chunk_decode(buf, len, ks, nr - 1, vs, nr * DIM, st, nr * STATE, tombs, 2),
                  PSKV_ERANGE);
    ck_assert_err(pskv_chunk_decode(buf, len, ks, nr, vs, nr * DIM - 1, st, nr * STATE, tombs, 2),
                  PSKV_ERANGE);
    ck_assert_err(pskv_chunk_decode(buf, len, ks, nr, vs, nr * DIM, st, nr * STATE - 1, tombs, 2),
                  PSKV_ERANGE);
    ck_assert_uint_eq(ks[0], 0x5a5a5a5a5a5a5a5aull);
    uint32_t bits;
    memcpy(&bits, vs, sizeof bits);
    ck_assert_uint_eq(bits, 0x5a5a5a5au);
    memcpy(&bits, st, sizeof bits);
    ck_assert_uint_eq(bits, 0x5a5a5a5au);
    /* NULL with a capacity is a bad argument; NULL state with 0: not wanted. */
    ck_assert_err(pskv_chunk_decode(buf, len, NULL, nr, vs, nr * DIM, NULL, 0, NULL, 0),
                  PSKV_EINVAL);
    ck_assert_ok(pskv_chunk_decode(buf, len, ks, nr, vs, nr * DIM, NULL, 0, NULL, 0));
    ck_assert_ok(pskv_chunk_decode(buf, len, ks, N + 1, vs, (N + 1) * DIM, st, (N + 1) * STATE,
                                   NULL, 0));
    for (size_t i = 0; i < nr; i++) {
        ck_assert_uint_eq(ks[i], keys[i + 1]);
        ck_assert(vs[i * DIM] == w[(i + 1) * DIM]);
    }
    ck_assert_uint_eq(ks[nr], 0x5a5a5a5a5a5a5a5aull); /* past the rows: untouched */
    /* A delta with a tombstone needs room for it. */
    uint64_t v = pskv_table_version(t);
    ck_assert_ok(pskv_erase(t, keys + 1, 1));
    ck_assert_ok(pskv_export_open(t, v, NULL, &e));
    ck_assert_int_eq(pskv_export_next(e, buf, sizeof buf, &len), 1);
    pskv_export_close(e);
    ck_assert_err(pskv_chunk_decode(buf, len, NULL, 0, NULL, 0, NULL, 0, tombs, 0), PSKV_ERANGE);
    ck_assert_ok(pskv_chunk_decode(buf, len, NULL, 0, NULL, 0, NULL, 0, tombs, 1));
    ck_assert_uint_eq(tombs[0], keys[1]);
    pskv_close(s);
}
END_TEST

/* ---------------------------------------------------------------- gradient messages */

enum { GD = 8, GKEYS = 300 };

/* Add a message's decoded rows to sums[key][GD] (keys below GKEYS). */
static void add_message(const void *buf, size_t len, double *sums, uint32_t *rows)
{
    pskv_chunk_info in;
    ck_assert_ok(pskv_chunk_info_get(buf, len, &in));
    ck_assert_uint_eq(in.kind, PSKV_CHUNK_VALUES);
    ck_assert_uint_eq(in.dim, GD);
    uint64_t *k = malloc((in.rows + 1) * sizeof *k);
    float *v = malloc(((size_t)in.rows * GD + 1) * sizeof *v);
    ck_assert_ok(pskv_chunk_decode(buf, len, k, in.rows, v, (size_t)in.rows * GD, NULL, 0, NULL,
                                   0));
    for (uint32_t i = 0; i < in.rows; i++) {
        ck_assert(i == 0 || k[i] > k[i - 1]); /* one row per key, ascending */
        ck_assert_uint_lt(k[i], GKEYS);
        for (int j = 0; j < GD; j++)
            sums[k[i] * GD + j] += v[i * GD + j];
    }
    *rows = in.rows;
    free(k);
    free(v);
}

/* Error feedback conserves gradients: after many messages, for every key
 * the decoded rows plus the residual equal every gradient given (fp32
 * rounding of the sums aside), for each codec and top-k, with a residual
 * in DRAM and one that spills to disk. */
static void ef_conserves(const char *cfg, bool spill, uint64_t seed)
{
    char dir[256] = "";
    pskv_store *s;
    pskv_table *res;
    if (spill) {
        test_mkdtemp(dir, "ef");
        ck_assert_ok(pskv_open(dir, "memory_budget=16K", &s));
    } else {
        ck_assert_ok(pskv_open(NULL, NULL, &s));
    }
    ck_assert_ok(pskv_table_open(s, "residual", "dim=8 optimizer=none", &res));
    double *given = calloc(GKEYS * GD, sizeof *given), *got = calloc(GKEYS * GD, sizeof *got);
    double *mag = calloc(GKEYS * GD, sizeof *mag);
    enum { B = 96 };
    uint64_t keys[B];
    float g[B * GD];
    static uint8_t buf[1 << 16];
    test_rng r = {seed};
    for (int round = 0; round < 150; round++) {
        uint32_t n = 1 + rng_below(&r, B);
        for (uint32_t i = 0; i < n; i++) {
            keys[i] = rng_below(&r, 4) == 0 ? rng_below(&r, 8) : rng_below(&r, GKEYS); /* repeats */
            float scale = (float)(1u << rng_below(&r, 8)) * 1e-3f;
            for (int j = 0; j < GD; j++) {
                g[i * GD + j] = rng_float(&r) * scale;
                given[keys[i] * GD + j] += g[i * GD + j];
                mag[keys[i] * GD + j] += fabsf(g[i * GD + j]);
            }
        }
        size_t len;
        uint32_t rows;
        ck_assert_ok(pskv_grad_encode(res, keys, n, g, cfg, buf, sizeof buf, &len));
        add_message(buf, len, got, &rows);
        ck_assert_uint_ge(rows, 1);
    }
    uint64_t all[GKEYS];
    for (int k = 0; k < GKEYS; k++)
        all[k] = (uint64_t)k;
    float *rv = malloc(GKEYS * GD * sizeof *rv);
    ck_assert_ok(pskv_get(res, all, GKEYS, rv, NULL));
    for (int i = 0; i < GKEYS * GD; i++) {
        double err = fabs(got[i] + rv[i] - given[i]);
        ck_assert_msg(err <= 1e-5 * mag[i] + 1e-9, "%s key %d: sent %g + residual %g, given %g",
                      cfg, i / GD, got[i], (double)rv[i], given[i]);
    }
    free(rv);
    free(given);
    free(got);
    free(mag);
    pskv_close(s);
    if (spill)
        test_remove_dir(dir);
}

START_TEST(grad_encode_error_feedback_conserves)
{
    const char *cfgs[] = {"codec=fp32", "codec=fp16", "codec=bf16", "codec=int8",
                          "codec=int8 topk=0.1", "codec=fp16 topk=0.05 lz4=on",
                          "codec=fp32 topk=0.3", "codec=bf16 topk=0.5"};
    for (size_t c = 0; c < sizeof cfgs / sizeof *cfgs; c++)
        ef_conserves(cfgs[c], false, 100 + c);
    ef_conserves("codec=int8 topk=0.1", true, 7);
    ef_conserves("codec=fp16 topk=0.3", true, 8);
}
END_TEST

/* The residual of a sent row is exactly its value minus what the receiver
 * decodes (float subtraction, bit for bit), for every lossy codec, with
 * and without lz4 (which makes the encoder code the row a second time). */
START_TEST(grad_encode_residual_is_exact)
{
    const char *cfgs[] = {"codec=fp16", "codec=bf16", "codec=int8", "codec=int8 lz4=on",
                          "codec=fp16 lz4=on"};
    enum { N = 64, D = 16 };
    for (size_t c = 0; c < sizeof cfgs / sizeof *cfgs; c++) {
        pskv_store *s;
        pskv_table *res;
        ck_assert_ok(pskv_open(NULL, NULL, &s));
        ck_assert_ok(pskv_table_open(s, "residual", "dim=16 optimizer=none", &res));
        uint64_t keys[N], k[N];
        float g[N * D], dec[N * D], r[N * D];
        test_rng rng = {31 + c};
        for (int i = 0; i < N; i++) {
            keys[i] = (uint64_t)i * 7919u + 1; /* ascending, distinct */
            for (int j = 0; j < D; j++)
                g[i * D + j] = rng_float(&rng) * (float)(1u << rng_below(&rng, 12)) * 1e-3f;
        }
        static uint8_t buf[1 << 15];
        size_t len;
        ck_assert_ok(pskv_grad_encode(res, keys, N, g, cfgs[c], buf, sizeof buf, &len));
        ck_assert_ok(pskv_chunk_decode(buf, len, k, N, dec, N * D, NULL, 0, NULL, 0));
        uint8_t found[N];
        ck_assert_ok(pskv_get(res, keys, N, r, found));
        for (int i = 0; i < N; i++) {
            ck_assert_uint_eq(k[i], keys[i]);
            for (int j = 0; j < D; j++) {
                float want = g[i * D + j] - dec[i * D + j];
                ck_assert_msg(memcmp(&want, &r[i * D + j], sizeof want) == 0,
                              "%s row %d value %d: residual %a, want %a", cfgs[c], i, j,
                              (double)r[i * D + j], (double)want);
            }
        }
        pskv_close(s);
    }
}
END_TEST

/* grad.c's batch over the residual: a reshard between its get and its put
 * makes the put plan again for the new shards; every row lands where a
 * plain get finds it. */
START_TEST(rows_batch_survives_reshard)
{
    enum { N = 500, D = 4 };
    pskv_store *s;
    pskv_table *t;
    ck_assert_ok(pskv_open(NULL, NULL, &s));
    ck_assert_ok(pskv_table_open(s, "r", "dim=4 optimizer=none shards=8", &t));
    uint64_t keys[N];
    static float v[N * D], back[N * D];
    for (int i = 0; i < N; i++) {
        keys[i] = (uint64_t)i * 2654435761u + 7;
        for (int j = 0; j < D; j++)
            v[i * D + j] = (float)(i * D + j);
    }
    ck_assert_ok(pskv_put(t, keys, N / 2, v)); /* half of them exist, the rest read as 0 */
    memset(v + (N / 2) * D, 0, sizeof(float) * (N - N / 2) * D);
    for (uint32_t shards = 3; shards <= 32; shards += 29) {
        pskv__rows_batch b;
        pskv__batch_begin(t, keys, N, &b);
        ck_assert_ok(pskv__batch_get(&b, back));
        ck_assert(memcmp(back, v, sizeof v) == 0);
        ck_assert_ok(pskv_table_reshard(t, shards));
        for (int i = 0; i < N * D; i++)
            back[i] = v[i] = -(float)i - (float)shards;
        ck_assert_ok(pskv__batch_put(&b, back));
        pskv__batch_end(&b);
        pskv__batch_end(&b); /* harmless twice */
        float got[N * D];
        uint8_t found[N];
        ck_assert_ok(pskv_get(t, keys, N, got, found));
        for (int i = 0; i < N; i++)
            ck_assert(found[i]);
        ck_assert(memcmp(got, back, sizeof got) == 0);
        ck_assert_uint_eq(pskv_table_rows(t), N);
    }
    pskv_close(s);
}
END_TEST

/* top-k keeps exactly the rows of largest norm; equal norms keep the
 * smaller keys; repeated keys count by their sum. */
START_TEST(grad_encode_topk_keeps_largest)
{
    enum { N = 40 };
    uint64_t keys[N + 2];
    float g[(N + 2) * 4];
    for (int i = 0; i < N; i++) {
        keys[i] = 1000 - (uint64_t)i; /* descending: the encoder sorts */
        /* norms: key 1000-i has norm 10 + (i % 10): ties in groups */
        for (int j = 0; j < 4; j++)
            g[i * 4 + j] = j == 0 ? (float)(10 + i % 10) : 0.0f;
    }
    /* key 5 twice: 30 + 30 = 60, the largest */
    keys[N] = keys[N + 1] = 5;
    for (int j = 0; j < 4; j++)
        g[N * 4 + j] = g[(N + 1) * 4 + j] = j == 0 ? 30.0f : 0.0f;
    uint8_t buf[4096];
    size_t len;
    /* 41 distinct keys, topk=0.2: ceil(8.2) = 9 rows */
    ck_assert_ok(pskv_grad_encode(NULL, keys, N + 2, g, "dim=4 topk=0.2", buf, sizeof buf, &len));
    uint64_t k[16];
    float v[64];
    pskv_chunk_info in;
    ck_assert_ok(pskv_chunk_info_get(buf, len, &in));
    ck_assert_uint_eq(in.rows, 9);
    ck_assert_ok(pskv_chunk_decode(buf, len, k, 16, v, 64, NULL, 0, NULL, 0));
    /* key 5 (60), then norm 19: i = 9, 19, 29, 39 (keys 991, 981, 971,
     * 961), then norm 18: i = 8, 18, 28, 38 (keys 992, 982, 972, 962): four
     * of the norm-18 keys are wanted, the smaller ones first. */
    const uint64_t want[9] = {5, 961, 962, 971, 972, 981, 982, 991, 992};
    for (int i = 0; i < 9; i++)
        ck_assert_uint_eq(k[i], want[i]);
    ck_assert(v[0] == 60.0f);
    /* topk=1 keeps all; a tiny topk keeps one row */
    ck_assert_ok(pskv_grad_encode(NULL, keys, N + 2, g, "dim=4", buf, sizeof buf, &len));
    ck_assert_ok(pskv_chunk_info_get(buf, len, &in));
    ck_assert_uint_eq(in.rows, N + 1);
    ck_assert_ok(pskv_grad_encode(NULL, keys, N + 2, g, "dim=4 topk=0.001", buf, sizeof buf, &len));
    ck_assert_ok(pskv_chunk_info_get(buf, len, &in));
    ck_assert_uint_eq(in.rows, 1);
    /* F x rows a whole number: exactly that many (0.1 is not exact in binary) */
    uint64_t ten[100];
    float gten[400] = {0};
    for (int i = 0; i < 100; i++) {
        ten[i] = (uint64_t)i + 1;
        gten[i * 4] = (float)(i + 1);
    }
    ck_assert_ok(pskv_grad_encode(NULL, ten, 10, gten, "dim=4 topk=0.1", buf, sizeof buf, &len));
    ck_assert_ok(pskv_chunk_info_get(buf, len, &in));
    ck_assert_uint_eq(in.rows, 1);
    ck_assert_ok(pskv_grad_encode(NULL, ten, 100, gten, "dim=4 topk=0.1", buf, sizeof buf, &len));
    ck_assert_ok(pskv_chunk_info_get(buf, len, &in));
    ck_assert_uint_eq(in.rows, 10);
    ck_assert_ok(pskv_grad_encode(NULL, ten, 100, gten, "dim=4 topk=0.3", buf, sizeof buf, &len));
    ck_assert_ok(pskv_chunk_info_get(buf, len, &in));
    ck_assert_uint_eq(in.rows, 30);
    /* no rows: an empty message */
    ck_assert_ok(pskv_grad_encode(NULL, NULL, 0, NULL, "dim=4 topk=0.5", buf, sizeof buf, &len));
    ck_assert_ok(pskv_chunk_info_get(buf, len, &in));
    ck_assert_uint_eq(in.rows, 0);
}
END_TEST

/* The message is gradients: applied with PUSH it steps the rows as a push
 * of the decoded values would; errors change nothing. */
START_TEST(grad_encode_applies_and_refuses)
{
    pskv_store *s;
    pskv_table *res, *a, *b;
    ck_assert_ok(pskv_open(NULL, NULL, &s));
    ck_assert_ok(pskv_table_open(s, "residual", "dim=4 optimizer=none", &res));
    ck_assert_ok(pskv_table_open(s, "a", "dim=4 optimizer=adagrad init=zeros", &a));
    ck_assert_ok(pskv_table_open(s, "b", "dim=4 optimizer=adagrad init=zeros", &b));
    uint64_t keys[3] = {3, 1, 3};
    float g[12] = {0.5f, -1, 2, 0.25f, 1, 1, 1, 1, 0.5f, 0, 0, 0};
    uint8_t buf[1024];
    size_t len;
    ck_assert_ok(pskv_grad_encode(res, keys, 3, g, "codec=int8", buf, sizeof buf, &len));
    ck_assert_ok(pskv_apply(a, buf, len, PSKV_APPLY_PUSH));
    uint64_t k[2];
    float v[8];
    ck_assert_ok(pskv_chunk_decode(buf, len, k, 2, v, 8, NULL, 0, NULL, 0));
    ck_assert_ok(pskv_push(b, k, 2, v));
    float ra[8], rb[8];
    uint64_t both[2] = {1, 3};
    ck_assert_ok(pskv_get(a, both, 2, ra, NULL));
    ck_assert_ok(pskv_get(b, both, 2, rb, NULL));
    ck_assert(memcmp(ra, rb, sizeof ra) == 0);

    /* Errors leave the residual as it was. */
    float before[8], after[8];
    ck_assert_ok(pskv_get(res, both, 2, before, NULL));
    ck_assert_err(pskv_grad_encode(res, keys, 3, g, "codec=fp16", buf, 20, &len), PSKV_ERANGE);
    ck_assert_uint_gt(len, 20);
    ck_assert_ok(pskv_grad_encode(res, keys, 3, g, "codec=fp16", buf, len, &len)); /* fits */
    ck_assert_ok(pskv_get(res, both, 2, before, NULL));
    float huge[12];
    memcpy(huge, g, sizeof huge);
    huge[5] = 1e6f;
    ck_assert_err(pskv_grad_encode(res, keys, 3, huge, "codec=fp16", buf, sizeof buf, &len),
                  PSKV_ECODEC);
    huge[5] = NAN;
    ck_assert_err(pskv_grad_encode(res, keys, 3, huge, "codec=fp32", buf, sizeof buf, &len),
                  PSKV_EINVAL);
    huge[5] = 3e38f;
    huge[1] = 3e38f; /* key 3 twice: the sum overflows */
    huge[9] = 3e38f;
    ck_assert_err(pskv_grad_encode(res, keys, 3, huge, "codec=fp32", buf, sizeof buf, &len),
                  PSKV_EINVAL);
    ck_assert_ok(pskv_get(res, both, 2, after, NULL));
    ck_assert(memcmp(before, after, sizeof before) == 0);
    /* configs */
    ck_assert_err(pskv_grad_encode(NULL, keys, 3, g, "codec=int8", buf, sizeof buf, &len),
                  PSKV_EINVAL); /* no dim */
    ck_assert_err(pskv_grad_encode(res, keys, 3, g, "dim=8", buf, sizeof buf, &len), PSKV_EINVAL);
    ck_assert_err(pskv_grad_encode(res, keys, 3, g, "topk=0", buf, sizeof buf, &len), PSKV_EINVAL);
    ck_assert_err(pskv_grad_encode(res, keys, 3, g, "topk=1.5", buf, sizeof buf, &len),
                  PSKV_EINVAL);
    ck_assert_err(pskv_grad_encode(res, keys, 3, g, "payload=rows", buf, sizeof buf, &len),
                  PSKV_EINVAL);
    ck_assert_err(pskv_grad_encode(res, keys, 3, g, "codec=fp8", buf, sizeof buf, &len),
                  PSKV_EINVAL);
    ck_assert_err(pskv_grad_encode(res, NULL, 3, g, NULL, buf, sizeof buf, &len), PSKV_EINVAL);
    ck_assert_err(pskv_grad_encode(res, keys, 3, g, NULL, buf, sizeof buf, NULL), PSKV_EINVAL);
    ck_assert_ok(pskv_get(res, both, 2, after, NULL));
    ck_assert(memcmp(before, after, sizeof before) == 0);
    /* fp32 without top-k sends everything: the residual is emptied */
    ck_assert_ok(pskv_grad_encode(res, keys, 3, g, "codec=fp32", buf, sizeof buf, &len));
    uint8_t found[2];
    ck_assert_ok(pskv_get(res, both, 2, after, found));
    ck_assert(!found[0] && !found[1]);
    pskv_close(s);
}
END_TEST

int main(int argc, char **argv)
{
    data_dir = argc > 1 ? argv[1] : "tests/data";
    Suite *s = suite_create("transfer");
#define ADD_CASE(suite, fn)                                                    \
    do {                                                                       \
        TCase *tc = tcase_create(#fn);                                         \
        tcase_set_timeout(tc, 300);                                            \
        tcase_add_test(tc, fn);                                                \
        suite_add_tcase(suite, tc);                                            \
    } while (0)
    ADD_CASE(s, versions_stamp_every_change);
    ADD_CASE(s, versions_survive_reopen);
    ADD_CASE(s, codecs_within_their_bounds);
    ADD_CASE(s, codecs_match_reference_bits);
#if defined(__x86_64__) && defined(__SSE2__)
    ADD_CASE(s, fp16_bits_under_flush_to_zero);
#endif
    ADD_CASE(s, damaged_chunks_change_nothing);
    ADD_CASE(s, chunk_formats_by_version);
    ADD_CASE(s, chunk_v2_of_previous_release_applies);
    ADD_CASE(s, chunk_keys_sorted_stable);
    ADD_CASE(s, push_and_add_modes);
    ADD_CASE(s, replica_memory);
    ADD_CASE(s, replica_durable_spill);
    ADD_CASE(s, stale_cursor_after_log_trim);
    ADD_CASE(s, cursor_edges);
    ADD_CASE(s, migration_conserves_rows);
    ADD_CASE(s, exports_beside_writers);
    ADD_CASE(s, full_exports_beside_writers);
    ADD_CASE(s, handles_outliving_their_store);
    ADD_CASE(s, shared_export_handle_is_busy);
    ADD_CASE(s, rows_chunk_is_not_gradients);
    ADD_CASE(s, optimizer_without_state_and_empty_ring);
    ADD_CASE(s, codec_range_has_its_own_code);
    ADD_CASE(s, adam_count_is_not_a_float);
    ADD_CASE(s, chunks_cut_to_cap);
    ADD_CASE(s, full_export_sends_each_row_once);
    ADD_CASE(s, lz4_chunks_alike_for_any_buffer);
    ADD_CASE(s, cursor_of_another_table_is_stale);
    ADD_CASE(s, chunk_of_another_table_refused);
    ADD_CASE(s, replica_continuity);
    ADD_CASE(s, truncate_durable);
    ADD_CASE(s, decode_checks_capacities);
    ADD_CASE(s, grad_encode_error_feedback_conserves);
    ADD_CASE(s, grad_encode_residual_is_exact);
    ADD_CASE(s, rows_batch_survives_reshard);
    ADD_CASE(s, grad_encode_topk_keeps_largest);
    ADD_CASE(s, grad_encode_applies_and_refuses);
    return run_suite(s);
}
