/* Fuzz the config-string parsers. Properties: no crash or leak on any
 * input; a rejected string leaves the options untouched; an accepted table
 * config validates, and formatting then re-parsing it is a fixed point. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pskv.h"
#include "fuzz_target.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (text == NULL)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';

    pskv_store_options so, so_before;
    pskv_store_options_init(&so);
    so_before = so;
    if (pskv_store_options_parse(&so, text) != 0)
        CHECK(memcmp(&so, &so_before, sizeof so) == 0);

    pskv_table_options to, to_before;
    pskv_table_options_init(&to);
    to_before = to;
    if (pskv_table_options_parse(&to, text) == 0) {
        CHECK(pskv_table_options_validate(&to) == 0);
        char a[1024], b[1024];
        int n = pskv_table_options_format(&to, a, sizeof a);
        CHECK(n > 0);
        pskv_table_options again;
        pskv_table_options_init(&again);
        CHECK(pskv_table_options_parse(&again, a) == 0);
        CHECK(pskv_table_options_format(&again, b, sizeof b) == n);
        CHECK(strcmp(a, b) == 0);
    } else {
        CHECK(memcmp(&to, &to_before, sizeof to) == 0);
    }
    free(text);
    return 0;
}
