/* Shared by the fuzz targets: the libFuzzer entry point and the property
 * check (a trap, which libFuzzer and the replayer both report). */
#ifndef PSKV_FUZZ_TARGET_H
#define PSKV_FUZZ_TARGET_H

#include <stddef.h>
#include <stdint.h>

#define CHECK(c)                                                               \
    do {                                                                       \
        if (!(c))                                                              \
            __builtin_trap();                                                  \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The input read a byte at a time; 0 once it is used up. */
typedef struct reader {
    const uint8_t *p;
    size_t left;
} reader;

static inline uint8_t byte(reader *r)
{
    if (r->left == 0)
        return 0;
    r->left--;
    return *r->p++;
}

#endif
