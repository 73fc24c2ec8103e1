/* Fuzz sequences of table operations against the reference model
 * (tests/ref_model.h). The first bytes choose dim, optimizer, shards and
 * the update mode (async, sync, staleness);
 * then each operation is: op byte, count byte, keys (one byte each: a small
 * universe, with 0xff taking the next 8 bytes as a full 64-bit id) and
 * gradient/value bytes (a byte each, 0xff meaning NaN). Any mismatch with
 * the model traps. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_target.h"
#include "ref_model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const opt_names[] = {"sgd", "adagrad", "rowwise_adagrad", "adam", "ftrl"};
    reader r = {data, size};
    uint32_t dim = 1 + byte(&r) % 9;
    const char *opt = opt_names[byte(&r) % 5];
    uint8_t b = byte(&r);
    uint32_t shards = 1 + b % 8;
    /* The update mode from the same byte: async, sync, or staleness 0..4. */
    static const char *const modes[] = {"", " update=sync", " staleness=0", " staleness=2",
                                        " staleness=4", ""};
    const char *mode = modes[(b / 8) % 6];
    char cfg[200];
    snprintf(cfg, sizeof cfg, "dim=%u optimizer=%s shards=%u init=uniform:-1:1 seed=7 lr=0.1%s",
             dim, opt, shards, mode);
    pskv_store *s;
    pskv_table *t;
    if (pskv_open(NULL, NULL, &s) != 0)
        __builtin_trap();
    if (pskv_table_open(s, "f", cfg, &t) != 0)
        __builtin_trap();
    enum { MAXB = 32 };
    ref_model m;
    ref_open(&m, t, MAXB);
    uint64_t keys[MAXB];
    float vals[MAXB * 9];
    for (int ops = 0; r.left > 0 && ops < 256; ops++) {
        enum ref_op op = (enum ref_op)(byte(&r) % REF_OPS);
        uint32_t n = 1 + byte(&r) % MAXB;
        for (uint32_t i = 0; i < n; i++) {
            uint8_t k = byte(&r);
            if (k == 0xff) {
                uint64_t v = 0;
                for (int b = 0; b < 8; b++)
                    v = v << 8 | byte(&r);
                keys[i] = v;
            } else {
                keys[i] = k % 48;
            }
        }
        if (op == REF_PUSH_AT) /* a step around a clock that advances with the ops */
            m.at_step = 16 + (uint64_t)ops / 4 + byte(&r) % 16;
        if (op == REF_PUSH || op == REF_PUSH_AT || op == REF_PUT)
            for (uint32_t i = 0; i < n * dim; i++) {
                uint8_t b = byte(&r);
                vals[i] = b == 0xff ? __builtin_nanf("") : ((float)b - 127.0f) / 64.0f;
            }
        if (op == REF_RESHARD)
            n = 1 + n % 12;
        if (!ref_step(&m, t, op, keys, n, vals))
            __builtin_trap();
    }
    if (!ref_compare_all(&m, t))
        __builtin_trap();
    ref_close(&m);
    pskv_close(s);
    return 0;
}
