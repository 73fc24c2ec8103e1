/* A program linked fully statically with `pkg-config --static --libs
 * pskv` (tests/static_link.sh): the .pc file names everything a static
 * link needs, and the library works there (checksums included: the
 * static libxxhash has no run-time dispatch, and pskv falls back). */
#include <pskv.h>
#include <stdio.h>

int main(void)
{
    pskv_store *s;
    pskv_table *t;
    if (pskv_open(NULL, NULL, &s) != 0 || pskv_table_open(s, "t", "dim=4", &t) != 0)
        return 1;
    uint64_t keys[3] = {1, 2, 3};
    float g[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, w[12];
    if (pskv_push(t, keys, 3, g) != 0 || pskv_pull(t, keys, 3, w) != 0)
        return 2;
    static unsigned char buf[4096];
    size_t len;
    pskv_export *e;
    if (pskv_export_open(t, 0, NULL, &e) != 0 || pskv_export_next(e, buf, sizeof buf, &len) != 1)
        return 3;
    pskv_export_close(e);
    pskv_table *u;
    if (pskv_table_open(s, "u", "dim=4", &u) != 0 || pskv_apply(u, buf, len, PSKV_APPLY_ANY_TABLE) != 0 ||
        pskv_table_rows(u) != 3)
        return 4; /* the chunk's checksum held */
    pskv_close(s);
    printf("static link: pskv %s works\n", pskv_version_string());
    return 0;
}
