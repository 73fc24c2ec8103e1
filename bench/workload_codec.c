/* pskv-bench workload `codec`: chunk encode and decode per codec, in GB/s
 * of fp32 values, against memcpy of the same bytes in the same rounds.
 * Each round runs every candidate over 4096 rows of dim 64 (1 MiB of
 * fp32, gradient-like values) in a shuffled order; the figure is the
 * median over rounds of each candidate's rate and of its ratio to the
 * round's memcpy. Encode is pskv_chunk_encode (sorting the keys, checking
 * the values are finite, coding, XXH3 seal); decode is pskv_chunk_decode
 * (checking the seal and every decoded value). Then gradient messages
 * (pskv_grad_encode) over the same rows: per codec without error feedback,
 * and with top-k and a residual table (error feedback: reading and writing
 * its 4096 rows each call).
 * SPDX-License-Identifier: BSD-2-Clause */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

enum { ROWS = 4096, CODECS = 4, GRADS = 7, KINDS = 1 + 2 * CODECS + GRADS, ROUNDS_MAX = 33 };
static const char *const codec_names[CODECS] = {"fp32", "fp16", "bf16", "int8"};
/* Gradient messages: config, and whether with a residual table. */
static const struct {
    const char *name, *cfg;
    bool ef;
} grads[GRADS] = {
    {"grad fp32", "dim=64 codec=fp32", false},
    {"grad fp16", "dim=64 codec=fp16", false},
    {"grad int8", "dim=64 codec=int8", false},
    {"grad int8 top10%", "dim=64 codec=int8 topk=0.1", false},
    {"grad int8 EF", "codec=int8", true},
    {"grad int8 top10% EF", "codec=int8 topk=0.1", true},
    {"grad fp16 top5% EF", "codec=fp16 topk=0.05", true},
};

/* Seconds per call of kind k (0: memcpy; 1 + 2c: encode codec c; 2 + 2c:
 * decode), over enough calls for about 50 ms. */
static double run_kind(int k, const uint64_t *keys, const float *values, float *copy,
                       void *const *chunk, const size_t *chunk_len, uint8_t *scratch,
                       size_t cap, uint64_t *keys_out, pskv_table *residual)
{
    int calls = 0;
    double t0 = bench_now(), dt;
    do {
        for (int i = 0; i < 8; i++, calls++) {
            int rc = 0;
            size_t len;
            if (k == 0) {
                memcpy(copy, values, (size_t)ROWS * DIM * sizeof(float));
            } else if (k > 2 * CODECS) {
                int gk = k - 1 - 2 * CODECS;
                rc = pskv_grad_encode(grads[gk].ef ? residual : NULL, keys, ROWS, values,
                                      grads[gk].cfg, scratch, cap, &len);
            } else if (k % 2 == 1) {
                char cfg[32];
                snprintf(cfg, sizeof cfg, "codec=%s", codec_names[(k - 1) / 2]);
                rc = pskv_chunk_encode(DIM, keys, ROWS, values, cfg, scratch, cap, &len);
            } else {
                int c = (k - 2) / 2;
                rc = pskv_chunk_decode(chunk[c], chunk_len[c], keys_out, ROWS, copy,
                                       (size_t)ROWS * DIM, NULL, 0, NULL, 0);
            }
            if (rc != 0) {
                fprintf(stderr, "pskv-bench codec: %s\n", pskv_strerror(rc));
                exit(1);
            }
        }
        dt = bench_now() - t0;
    } while (dt < 0.05);
    return dt / calls;
}

int workload_codec(int json)
{
    const size_t bytes = (size_t)ROWS * DIM * sizeof(float);
    const size_t cap = bytes + (size_t)ROWS * 16 + 4096;
    uint64_t *keys = malloc(ROWS * sizeof *keys), *keys_out = malloc(ROWS * sizeof *keys_out);
    float *values = malloc(bytes), *copy = malloc(bytes);
    uint8_t *scratch = malloc(cap);
    void *chunk[CODECS];
    size_t chunk_len[CODECS];
    if (keys == NULL || keys_out == NULL || values == NULL || copy == NULL || scratch == NULL) {
        fprintf(stderr, "pskv-bench: out of memory\n");
        return 1;
    }
    /* Gradient-like rows: values around 0 with a per-row magnitude spread
     * over three decades; random keys (the encoder sorts them). */
    uint64_t rng = 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < ROWS; i++) {
        keys[i] = bench_mix(i + 1);
        float mag = powf(10.0f, -4.0f + 3.0f * (float)(bench_mix(i + 77) % 1000) / 1000.0f);
        for (size_t j = 0; j < DIM; j++) {
            rng = bench_mix(rng);
            values[i * DIM + j] = mag * ((float)(rng % 20001) / 10000.0f - 1.0f);
        }
    }
    for (int c = 0; c < CODECS; c++) {
        char cfg[32];
        snprintf(cfg, sizeof cfg, "codec=%s", codec_names[c]);
        chunk[c] = malloc(cap);
        if (chunk[c] == NULL ||
            pskv_chunk_encode(DIM, keys, ROWS, values, cfg, chunk[c], cap, &chunk_len[c]) != 0) {
            fprintf(stderr, "pskv-bench codec: cannot encode %s\n", codec_names[c]);
            return 1;
        }
    }
    pskv_store *store;
    pskv_table *residual;
    if (pskv_open(NULL, NULL, &store) != 0 ||
        pskv_table_open(store, "residual", "dim=64 optimizer=none", &residual) != 0) {
        fprintf(stderr, "pskv-bench codec: cannot open the residual table\n");
        return 1;
    }
    const unsigned rounds = bench_cfg.reps < 3 ? 3 : bench_cfg.reps < ROUNDS_MAX ? bench_cfg.reps
                                                                                 : ROUNDS_MAX;
    double rate[KINDS][ROUNDS_MAX], ratio[KINDS][ROUNDS_MAX];
    uint64_t shuffle = 42;
    for (unsigned r = 0; r < rounds; r++) {
        int order[KINDS];
        for (int k = 0; k < KINDS; k++)
            order[k] = k;
        for (int k = KINDS - 1; k > 0; k--) {
            shuffle = bench_mix(shuffle);
            int j = (int)(shuffle % (uint64_t)(k + 1)), x = order[k];
            order[k] = order[j];
            order[j] = x;
        }
        double sec[KINDS];
        for (int q = 0; q < KINDS; q++) {
            int k = order[q];
            sec[k] = run_kind(k, keys, values, copy, chunk, chunk_len, scratch, cap, keys_out,
                              residual);
        }
        for (int k = 0; k < KINDS; k++) {
            rate[k][r] = (double)bytes / sec[k] / 1e9;
            ratio[k][r] = sec[0] / sec[k];
        }
    }
    if (!json)
        printf("workload codec: chunks of %d rows of dim %d (%.1f MiB of fp32), median of %u "
               "shuffled rounds\n%-20s %8s %11s %14s\n",
               ROWS, DIM, (double)bytes / (1 << 20), rounds, "", "GB/s fp32", "vs memcpy",
               "chunk bytes");
    for (int k = 0; k < KINDS; k++) {
        char name[32];
        if (k == 0)
            snprintf(name, sizeof name, "memcpy (limit)");
        else if (k > 2 * CODECS)
            snprintf(name, sizeof name, "%s", grads[k - 1 - 2 * CODECS].name);
        else
            snprintf(name, sizeof name, "%s %s", k % 2 ? "encode" : "decode",
                     codec_names[(k - 1) / 2]);
        double g = bench_median(rate[k], rounds), q = bench_median(ratio[k], rounds);
        size_t clen = k == 0 ? bytes : k > 2 * CODECS ? 0 : chunk_len[(k - 1) / 2];
        if (json)
            printf("{\"workload\":\"codec\",\"op\":\"%s\",\"gb_per_s\":%.3f,"
                   "\"vs_memcpy\":%.4f,\"chunk_bytes\":%zu}\n",
                   name, g, q, clen);
        else
            printf("%-20s %8.2f %10.3fx %14zu\n", name, g, q, clen);
    }
    pskv_close(store);
    for (int c = 0; c < CODECS; c++)
        free(chunk[c]);
    free(keys);
    free(keys_out);
    free(values);
    free(copy);
    free(scratch);
    return 0;
}
