/* Gradient messages with error feedback (pskv_grad_encode).
 *
 * One call: sort the keys (stable), start each distinct key's row from its
 * residual row (zeros without), add its gradients in the order given, keep the rows of largest L2
 * norm (topk: ceil(F * rows); equal norms keep the smaller keys), encode
 * the kept rows as one values chunk, then store into the residual table
 * what the receiver will not see: the value minus its decoded form for
 * rows sent, the whole value for rows not sent. Invariant: for every key,
 * the decoded rows of every message plus the final residual equal the sum
 * of every gradient given, up to fp32 rounding of the sums.
 *
 * All or nothing: the residual changes only after the chunk is written
 * (a buffer too small, a value out of the codec's range: nothing changed),
 * and with one put of every row (all or nothing itself). The residual's
 * rows are read and written as one rows.c batch: the keys are hashed and
 * grouped once for both. Rows whose residual is exactly zero are erased
 * afterwards (best effort: a zero row left behind is still the right
 * value).
 *
 * Selection is a radix select over the norms' bits (non-negative doubles
 * order as unsigned integers): linear time, no sort of the rows.
 * SPDX-License-Identifier: BSD-2-Clause */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "chunk.h"
#include "codec.h"
#include "errors.h"
#include "format.h"
#include "optimizer.h"
#include "options.h"
#include "pskv_internal.h"
#include "rows.h"
#include "sort.h"

/* The k-th largest (1 <= k <= m) of v[0..m), as unsigned integers, one
 * byte at a time from the top; v is reordered. */
static uint64_t kth_largest(uint64_t *v, size_t m, size_t k)
{
    for (int shift = 56; shift >= 0; shift -= 8) {
        size_t count[256] = {0};
        for (size_t i = 0; i < m; i++)
            count[(v[i] >> shift) & 0xff]++;
        unsigned b = 255;
        while (count[b] < k) {
            k -= count[b];
            b--;
        }
        size_t w = 0;
        for (size_t i = 0; i < m; i++)
            if (((v[i] >> shift) & 0xff) == b)
                v[w++] = v[i];
        m = w;
    }
    return v[0];
}

static uint64_t norm_bits(double d)
{
    uint64_t x;
    memcpy(&x, &d, 8);
    return x;
}

/* Squared L2 norm of a row in double (no overflow for finite floats), in
 * four partial sums added in a fixed order: the same bits on every
 * machine, so every machine keeps the same rows. */
static double row_norm2(const float *r, uint32_t dim)
{
    double s[4] = {0.0, 0.0, 0.0, 0.0};
    uint32_t j = 0;
    for (; j + 4 <= dim; j += 4)
        for (int q = 0; q < 4; q++)
            s[q] += (double)r[j + q] * (double)r[j + q];
    for (; j < dim; j++)
        s[0] += (double)r[j] * (double)r[j];
    return (s[0] + s[1]) + (s[2] + s[3]);
}

/* keep[i] for the k rows of largest norm among m (rows in key order). */
static int choose_rows(const float *v, uint32_t m, uint32_t dim, uint32_t k, uint8_t *keep)
{
    if (k >= m) {
        memset(keep, 1, m);
        return 0;
    }
    uint64_t *norm = malloc((size_t)m * sizeof *norm), *scratch = malloc((size_t)m * sizeof *scratch);
    if (norm == NULL || scratch == NULL) {
        free(norm);
        free(scratch);
        return PSKV_ENOMEM;
    }
    for (uint32_t i = 0; i < m; i++)
        norm[i] = scratch[i] = norm_bits(row_norm2(v + (size_t)i * dim, dim));
    uint64_t t = kth_largest(scratch, m, k);
    uint32_t above = 0;
    for (uint32_t i = 0; i < m; i++)
        above += norm[i] > t;
    /* Rows at the threshold: the first ones, the smaller keys. */
    uint32_t at = k - above;
    for (uint32_t i = 0; i < m; i++) {
        keep[i] = norm[i] > t || (norm[i] == t && at > 0);
        at -= norm[i] == t && at > 0;
    }
    free(norm);
    free(scratch);
    return 0;
}

/* Sent row v becomes its residual: v minus what the receiver decodes from
 * `coded`, the row's bytes in the chunk (NULL: encode it again, as the
 * chunk did, into scratch). */
static void sent_residual(uint32_t codec, float *v, uint32_t dim, const uint8_t *coded,
                          uint8_t *scratch)
{
    if (codec == PSKV_CODEC_FP32) {
        memset(v, 0, (size_t)dim * sizeof *v);
        return;
    }
    if (coded == NULL) {
        (void)pskv__codec_encode_row(codec, v, dim, scratch); /* no error: the chunk took it */
        coded = scratch;
    }
    pskv__codec_subtract_row(codec, coded, dim, v);
}

static bool row_is_zero(const float *r, uint32_t dim)
{
    for (uint32_t j = 0; j < dim; j++)
        if (r[j] != 0.0f)
            return false;
    return true;
}

/* The distinct keys, ascending (ukeys[m]), and which of them each
 * position of the sorted order holds: order[i].at stays the position given,
 * unique[i] the distinct key's index. */
static int distinct_keys(const uint64_t *keys, size_t n, pskv__keyed *order, uint32_t *unique,
                         uint64_t *ukeys, uint32_t *m_out)
{
    for (size_t i = 0; i < n; i++)
        order[i] = (pskv__keyed){keys[i], (uint32_t)i};
    int rc = pskv__keyed_sort(order, n); /* stable: repeats add in the order given */
    uint32_t m = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (m == 0 || ukeys[m - 1] != order[i].key)
            ukeys[m++] = order[i].key;
        unique[i] = m - 1;
    }
    *m_out = m;
    return rc;
}

/* The first row of v[m][dim] with a value not finite, or m. */
static uint32_t first_nonfinite_row(const float *v, uint32_t m, uint32_t dim)
{
    if (!pskv__floats_nonfinite(v, (size_t)m * dim))
        return m;
    uint32_t i = 0;
    while (i < m && !pskv__floats_nonfinite(v + (size_t)i * dim, dim))
        i++;
    return i;
}

int pskv_grad_encode(pskv_table *residual, const uint64_t *keys, size_t n, const float *grads,
                     const char *config, void *buf, size_t cap, size_t *len)
{
    pskv__detail_clear();
    if (len == NULL || (n > 0 && (keys == NULL || grads == NULL)) || (cap > 0 && buf == NULL))
        return pskv__fail(PSKV_EINVAL, "%s is NULL", len == NULL                ? "len"
                                                     : n > 0 && keys == NULL  ? "keys"
                                                     : n > 0 && grads == NULL ? "grads"
                                                                              : "buf");
    *len = 0; /* no message until one is written */
    if (n > UINT32_MAX - 1)
        return pskv__fail(PSKV_EINVAL, "%zu rows in one message: at most %u", n, UINT32_MAX - 1);
    pskv__transfer_options o = {PSKV_CODEC_FP32, false, false, 0, 1.0, 0};
    int rc = pskv__transfer_options_parse(config, PSKV__XFER_GRAD, &o);
    if (rc != 0)
        return rc;
    uint32_t dim = o.dim;
    if (residual != NULL) {
        if (o.dim != 0 && o.dim != residual->dim)
            return pskv__fail(PSKV_EINVAL, "dim=%u, but the residual table '%s' has dim %u",
                              o.dim, residual->name, residual->dim);
        dim = residual->dim;
    } else if (dim == 0) {
        return pskv__fail(PSKV_EINVAL, "without a residual table the config needs dim=N");
    }
    const size_t row_bytes = (size_t)dim * sizeof(float);
    uint64_t *ukeys = malloc((n ? n : 1) * sizeof *ukeys);
    pskv__keyed *order = malloc((n ? n : 1) * sizeof *order);
    uint32_t *unique = malloc((n ? n : 1) * sizeof *unique);
    float *v = malloc((n ? n : 1) * row_bytes);
    const float **rows = malloc((n ? n : 1) * sizeof *rows);
    uint64_t *sent_keys = malloc((n ? n : 1) * sizeof *sent_keys);
    uint8_t *keep = malloc(n ? n : 1);
    uint8_t *coded = malloc(pskv__codec_row_bytes(PSKV_FMT_CHUNK_VERSION, o.codec, dim));
    uint32_t m = 0;
    rc = ukeys && order && unique && v && rows && sent_keys && keep && coded
             ? 0
             : PSKV_ENOMEM;
    if (rc == 0)
        rc = distinct_keys(keys, n, order, unique, ukeys, &m);
    /* Each row starts from what this sender still owes from earlier
     * messages (zeros without a residual), then its gradients add. The
     * residual's rows are read and written back under one plan. */
    pskv__rows_batch batch;
    const bool feedback = residual != NULL && m > 0;
    pskv__batch_begin(residual, ukeys, m, &batch);
    if (rc == 0 && feedback)
        rc = pskv__batch_get(&batch, v);
    else if (rc == 0)
        memset(v, 0, (size_t)m * row_bytes);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        float *row = v + (size_t)unique[i] * dim;
        const float *g = grads + (size_t)order[i].at * dim;
        for (uint32_t j = 0; j < dim; j++)
            row[j] += g[j];
    }
    /* A gradient not finite makes its row's sum not finite: one check of
     * the sums finds both, the gradients are looked at only then. */
    uint32_t bad = rc == 0 ? first_nonfinite_row(v, m, dim) : m;
    uint32_t bad_grad = bad < m ? first_nonfinite_row(grads, (uint32_t)n, dim) : (uint32_t)n;
    if (bad_grad < n)
        rc = pskv__fail(PSKV_EINVAL, "gradient row %u (key %llu) has a value that is not "
                                     "finite: nothing was encoded", bad_grad,
                        (unsigned long long)keys[bad_grad]);
    else if (bad < m)
        rc = pskv__fail(PSKV_EINVAL, "key %llu: its gradients%s sum to a value that is not "
                                     "finite: nothing was encoded",
                        (unsigned long long)ukeys[bad], residual ? " and residual" : "");
    uint32_t k = 0;
    if (rc == 0 && m > 0) {
        /* F x rows within rounding of a whole number is that number */
        double exact = o.topk * (double)m, want = ceil(exact - 1e-9 * exact);
        k = want < 1.0 ? 1 : want > (double)m ? m : (uint32_t)want;
        rc = choose_rows(v, m, dim, k, keep);
    }
    uint32_t sent = 0;
    for (uint32_t i = 0; rc == 0 && i < m; i++)
        if (keep[i]) {
            sent_keys[sent] = ukeys[i];
            rows[sent++] = v + (size_t)i * dim;
        }
    if (rc == 0) {
        pskv__chunk_spec sp = {.kind = PSKV_CHUNK_VALUES, .codec = o.codec, .lz4 = o.lz4,
                               .dim = dim};
        rc = pskv__chunk_write(&sp, sent_keys, rows, sent, NULL, 0, buf, cap, len);
        if (rc == PSKV_ERANGE && *len == 0) /* beyond any chunk, not beyond cap */
            rc = pskv__fail(PSKV_EINVAL, "%u rows make a message beyond the chunk format's "
                                         "size: send the gradients in several messages", sent);
    }
    /* Error feedback: what the receiver will not see, in place of v (the
     * chunk is written). Without lz4 the chunk's own bytes are decoded. */
    if (rc == 0 && feedback) {
        const size_t vb = pskv__codec_row_bytes(PSKV_FMT_CHUNK_VERSION, o.codec, dim);
        const uint8_t *at = o.lz4 ? NULL : pskv__chunk_values(buf, sent_keys, sent);
        for (uint32_t i = 0; i < m; i++)
            if (keep[i]) {
                sent_residual(o.codec, v + (size_t)i * dim, dim, at, coded);
                at = at != NULL ? at + vb : NULL;
            }
        rc = pskv__batch_put(&batch, v);
        if (rc != 0)
            *len = 0; /* the message must not be sent: the residual did not take its part */
        if (rc == 0) { /* best effort: a zero row left behind is still right */
            uint32_t z = 0;
            for (uint32_t i = 0; i < m; i++)
                if (row_is_zero(v + (size_t)i * dim, dim))
                    ukeys[z++] = ukeys[i];
            if (z > 0)
                (void)pskv_erase(residual, ukeys, z);
            pskv__detail_clear();
        }
    }
    pskv__batch_end(&batch);
    free(ukeys);
    free(order);
    free(unique);
    free(v);
    free(rows);
    free(sent_keys);
    free(keep);
    free(coded);
    return rc;
}
