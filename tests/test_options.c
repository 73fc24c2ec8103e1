/* Config strings, typed options, error names and the version call. */
#include <math.h>
#include <string.h>

#include "options.h"
#include "test_common.h"

START_TEST(store_options_parse)
{
    pskv_store_options o;
    pskv_store_options_init(&o);
    ck_assert_ok(pskv_store_options_parse(&o, "memory_budget=1GiB, spill_max=2T durability=none"));
    ck_assert_uint_eq(o.memory_budget, 1ull << 30);
    ck_assert_uint_eq(o.spill_max, 2ull << 40);
    ck_assert_int_eq(o.durability, PSKV_DURABILITY_NONE);
    ck_assert_ok(pskv_store_options_parse(&o, "memory_budget=512K"));
    ck_assert_uint_eq(o.memory_budget, 512ull << 10);
    ck_assert_ok(pskv_store_options_parse(&o, "memory_budget=7"));
    ck_assert_uint_eq(o.memory_budget, 7);
    ck_assert_ok(pskv_store_options_parse(&o, NULL));
    ck_assert_ok(pskv_store_options_parse(&o, "  ,, "));
    const char *bad[] = {"memory_budget", "memory_budget=", "=1", "memory_budget=1X",
                         "memory_budget=1KB", "memory_budget=-1", "memory_budget=1.5G",
                         "memory_budget=99999999999999999999", "memory_budget=17179869184T",
                         "durability=fast", "unknown=1", "memory_budget=1 memory_budget=2",
                         "spill_max=1Gi"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        pskv_store_options before = o;
        ck_assert_msg(pskv_store_options_parse(&o, bad[i]) == PSKV_EINVAL, "%s", bad[i]);
        ck_assert_msg(memcmp(&before, &o, sizeof o) == 0, "changed by %s", bad[i]);
    }
}
END_TEST

START_TEST(table_options_parse)
{
    pskv_table_options o;
    pskv_table_options_init(&o);
    ck_assert_ok(pskv_table_options_parse(&o, "dim=64 optimizer=adam lr=0.5 beta1=0.8 "
                                              "beta2=0.99 eps=1e-6 init=uniform:-0.1:0.1 "
                                              "seed=0xff shards=7"));
    ck_assert_uint_eq(o.dim, 64);
    ck_assert_int_eq(o.optimizer, PSKV_OPT_ADAM);
    ck_assert(o.lr == 0.5f && o.beta1 == 0.8f && o.beta2 == 0.99f && o.eps == 1e-6f);
    ck_assert_int_eq(o.init, PSKV_INIT_UNIFORM);
    ck_assert(o.init_a == -0.1f && o.init_b == 0.1f);
    ck_assert_uint_eq(o.seed, 255);
    ck_assert_uint_eq(o.shards, 7);
    ck_assert_ok(pskv_table_options_parse(&o, "init=normal:0:0.01,optimizer=ftrl,l1=0.1,l2=1,"
                                              "lr_power=-0.25,initial_accumulator=0.2"));
    ck_assert_int_eq(o.init, PSKV_INIT_NORMAL);
    ck_assert_ok(pskv_table_options_parse(&o, "init=constant:3"));
    ck_assert(o.init == PSKV_INIT_CONSTANT && o.init_a == 3.0f);
    ck_assert_ok(pskv_table_options_parse(&o, "init=zeros"));
    ck_assert_int_eq(o.init, PSKV_INIT_ZEROS);

    const char *bad[] = {
        "dim=0", "dim=4097", "dim=x", "dim=1.5", "optimizer=adamw", "lr=0", "lr=-1", "lr=nan",
        "lr=inf", "lr=1e99", "eps=0", "beta1=1", "beta2=-0.1", "l1=-1", "l2=-0.5",
        "lr_power=0.5", "init=uniform:1:1", "init=uniform:1", "init=normal:0:-1",
        "init=constant", "init=constant:1:2", "init=zeros:1", "init=gauss:0:1",
        "init=uniform:0:1:2", "shards=0", "shards=4097", "seed=-1",
        "seed=0x10000000000000000", "dim=4 dim=4", "dim", "bogus=1", "initial_accumulator=-2",
        "lr=0.1x", "init=normal::1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        pskv_table_options before = o;
        ck_assert_msg(pskv_table_options_parse(&o, bad[i]) == PSKV_EINVAL, "%s", bad[i]);
        ck_assert_msg(memcmp(&before, &o, sizeof o) == 0, "changed by %s", bad[i]);
    }
    ck_assert_err(pskv_table_options_parse(NULL, "dim=1"), PSKV_EINVAL);
}
END_TEST

START_TEST(table_options_format_roundtrip)
{
    const char *configs[] = {"dim=8", "dim=3 optimizer=ftrl l1=0.25 lr_power=-0.75",
                             "dim=4096 optimizer=adam init=normal:0.5:0.125 seed=18446744073709551615",
                             "dim=1 optimizer=sgd lr=0.333333343 init=uniform:-1e-07:3.5 shards=4096",
                             "dim=2 optimizer=rowwise_adagrad init=constant:-0"};
    for (size_t i = 0; i < sizeof configs / sizeof configs[0]; i++) {
        pskv_table_options a, b;
        pskv_table_options_init(&a);
        ck_assert_ok(pskv_table_options_parse(&a, configs[i]));
        char buf[512];
        int n = pskv_table_options_format(&a, buf, sizeof buf);
        ck_assert_int_gt(n, 0);
        ck_assert_uint_eq(strlen(buf), (size_t)n);
        pskv_table_options_init(&b);
        ck_assert_msg(pskv_table_options_parse(&b, buf) == 0, "reparse %s", buf);
        char buf2[512];
        ck_assert_int_eq(pskv_table_options_format(&b, buf2, sizeof buf2), n);
        ck_assert_str_eq(buf, buf2);
        ck_assert_err(pskv_table_options_format(&a, buf, 10), PSKV_ERANGE);
    }
}
END_TEST

/* The shortest exact floats, and only the keys an optimizer reads. */
START_TEST(table_options_describe)
{
    pskv_table_options o, back;
    char buf[512];
    pskv_table_options_init(&o);
    ck_assert_ok(pskv_table_options_parse(&o, "dim=8 optimizer=adagrad lr=0.005 seed=3"));
    ck_assert_int_gt(pskv_table_options_describe(&o, buf, sizeof buf), 0);
    ck_assert_str_eq(buf, "dim=8 optimizer=adagrad lr=0.005 eps=1e-10 initial_accumulator=0 "
                          "init=zeros seed=3 shards=64");
    ck_assert_int_gt(pskv_table_options_format(&o, buf, sizeof buf), 0);
    ck_assert_str_eq(buf, "dim=8 optimizer=adagrad lr=0.005 eps=1e-10 initial_accumulator=0 "
                          "beta1=0.9 beta2=0.999 l1=0 l2=0 lr_power=-0.5 init=zeros seed=3 "
                          "shards=64");
    pskv_table_options_init(&o);
    ck_assert_ok(pskv_table_options_parse(
        &o, "dim=2 optimizer=ftrl lr=0.1 l1=0.25 init=uniform:-0.01:0.01"));
    ck_assert_int_gt(pskv_table_options_describe(&o, buf, sizeof buf), 0);
    ck_assert_str_eq(buf, "dim=2 optimizer=ftrl lr=0.1 initial_accumulator=0.1 l1=0.25 l2=0 "
                          "lr_power=-0.5 init=uniform:-0.01:0.01 seed=0 shards=64 init_gen=2");
    /* The generator: named where values come from one; 1 is kept, 0 is the
     * current one, anything else refused. */
    pskv_table_options g;
    pskv_table_options_init(&g);
    ck_assert_uint_eq(g.init_gen, 0);
    ck_assert_ok(pskv_table_options_parse(&g, "dim=2 init=normal:0:1 init_gen=1"));
    ck_assert_uint_eq(g.init_gen, 1);
    char gbuf[256];
    ck_assert_int_gt(pskv_table_options_describe(&g, gbuf, sizeof gbuf), 0);
    ck_assert_ptr_nonnull(strstr(gbuf, " init_gen=1"));
    ck_assert(!pskv__table_schema_equal(&g, &o));
    pskv_table_options g2 = g;
    g2.init_gen = 0;
    ck_assert(!pskv__table_schema_equal(&g, &g2)); /* 0 is 2, not 1 */
    g2.init_gen = 2;
    g.init_gen = 0;
    ck_assert(pskv__table_schema_equal(&g, &g2));
    g.init = g2.init = PSKV_INIT_ZEROS;
    g.init_gen = 1; /* zeros use no generator: not part of the schema */
    ck_assert(pskv__table_schema_equal(&g, &g2));
    ck_assert_int_gt(pskv_table_options_describe(&g, gbuf, sizeof gbuf), 0);
    ck_assert_ptr_null(strstr(gbuf, "init_gen"));
    ck_assert_err(pskv_table_options_parse(&g, "init_gen=3"), PSKV_EINVAL);
    ck_assert_err(pskv_table_options_parse(&g, "init_gen=0"), PSKV_EINVAL);
    g.init_gen = 3;
    ck_assert_err(pskv_table_options_validate(&g), PSKV_EINVAL);
    /* Parsing the short form gives the same schema; every float of a
     * random-ish value comes back exactly from the canonical form. */
    pskv_table_options_init(&back);
    ck_assert_ok(pskv_table_options_parse(&back, buf));
    ck_assert(pskv__table_schema_equal(&o, &back));
    for (uint32_t i = 1; i < 2000; i++) {
        pskv_table_options_init(&o);
        o.dim = 4;
        o.lr = (float)i * 0.000731f;
        o.init = PSKV_INIT_NORMAL;
        o.init_b = 1.0f / (float)i;
        ck_assert_int_gt(pskv_table_options_format(&o, buf, sizeof buf), 0);
        pskv_table_options_init(&back);
        ck_assert_ok(pskv_table_options_parse(&back, buf));
        ck_assert(back.lr == o.lr && back.init_b == o.init_b);
    }
    ck_assert_err(pskv_table_options_describe(&o, buf, 10), PSKV_ERANGE);
    ck_assert_err(pskv_table_options_describe(NULL, buf, sizeof buf), PSKV_EINVAL);

    /* A key the optimizer does not read is not part of the schema. */
    pskv_store *s;
    pskv_table *t;
    ck_assert_ok(pskv_open(NULL, NULL, &s));
    ck_assert_ok(pskv_table_open(s, "sgd", "dim=2 optimizer=sgd beta1=0.5", &t));
    ck_assert_ok(pskv_table_open(s, "sgd", "beta1=0.3 l1=2", &t));
    ck_assert_err(pskv_table_open(s, "sgd", "lr=0.02", &t), PSKV_ESCHEMA);
    ck_assert_ok(pskv_table_open(s, "adam", "dim=2 optimizer=adam beta1=0.5", &t));
    ck_assert_err(pskv_table_open(s, "adam", "beta1=0.3", &t), PSKV_ESCHEMA);
    ck_assert_ok(pskv_table_open(s, "adam", "l1=0.3", &t));
    pskv_close(s);
}
END_TEST

/* The detail of a failed call names the key, the value and what was
 * expected (the cases a new user met). */
static void expect_detail(int rc, int code, const char *text)
{
    ck_assert_int_eq(rc, code);
    ck_assert_msg(strstr(pskv_last_error(), text) != NULL, "detail '%s' lacks '%s'",
                  pskv_last_error(), text);
}

START_TEST(error_details)
{
    pskv_table_options o;
    pskv_store_options so;
    pskv_table_options_init(&o);
    pskv_store_options_init(&so);
    expect_detail(pskv_table_options_parse(&o, "dim=8 optimiser=adam"), PSKV_EINVAL,
                  "unknown table key 'optimiser' (did you mean 'optimizer'?)");
    expect_detail(pskv_table_options_parse(&o, "optimizer=Adam"), PSKV_EINVAL,
                  "optimizer=Adam: expected one of sgd, adagrad, rowwise_adagrad, adam, ftrl, none "
                  "(did you mean 'adam'?)");
    expect_detail(pskv_table_options_parse(&o, "dim=8; lr=0.1"), PSKV_EINVAL,
                  "dim=8;: expected an integer in 1..4096 (separate keys with spaces or "
                  "commas, not ';')");
    expect_detail(pskv_table_options_parse(&o, "lr=0.1 lr=0.2"), PSKV_EINVAL,
                  "'lr' is given twice");
    expect_detail(pskv_table_options_parse(&o, "beta1=1.5"), PSKV_EINVAL,
                  "beta1=1.5: expected a value in [0, 1)");
    expect_detail(pskv_table_options_parse(&o, "dim"), PSKV_EINVAL, "'dim' is not key=value");
    expect_detail(pskv_table_options_parse(&o, "memory_budget=1G"), PSKV_EINVAL,
                  "'memory_budget' is a store key, not a table key");
    expect_detail(pskv_table_options_parse(&o, "init=gauss:0:1"), PSKV_EINVAL,
                  "expected zeros, constant:V, uniform:LO:HI or normal:MEAN:STD");
    expect_detail(pskv_table_options_parse(&o, "colour=red"), PSKV_EINVAL,
                  "unknown table key 'colour'");
    ck_assert_ptr_null(strstr(pskv_last_error(), "did you mean"));
    ck_assert_ok(pskv_table_options_parse(&o, "dim=8"));
    ck_assert_str_eq(pskv_last_error(), ""); /* a call that starts clears it */

    /* Sizes: any case, K..T or KiB..TiB; "GB" is refused, saying why. */
    expect_detail(pskv_store_options_parse(&so, "memory_budget=8GB"), PSKV_EINVAL,
                  "memory_budget=8GB: a suffix like GB is ambiguous (10^9 or 2^30 bytes?)");
    expect_detail(pskv_store_options_parse(&so, "memory_budget=8 GB"), PSKV_EINVAL,
                  "'GB' is not key=value");
    expect_detail(pskv_store_options_parse(&so, "memory_budget=lots"), PSKV_EINVAL,
                  "expected bytes: digits with an optional K, M, G, T");
    expect_detail(pskv_store_options_parse(&so, "durabilty=none"), PSKV_EINVAL,
                  "(did you mean 'durability'?)");
    expect_detail(pskv_store_options_parse(&so, "durability=None"), PSKV_EINVAL,
                  "(did you mean 'none'?)");
    ck_assert_ok(pskv_store_options_parse(&so, "memory_budget=8g spill_max=2gib map_size=1m"));
    ck_assert_uint_eq(so.memory_budget, 8ull << 30);
    ck_assert_uint_eq(so.spill_max, 2ull << 30);
    ck_assert_uint_eq(so.map_size, 1ull << 20);

    /* Opening. */
    pskv_store *s;
    pskv_table *t;
    expect_detail(pskv_open(NULL, "spill_max=1G", &s), PSKV_EINVAL,
                  "spill_max: a memory-only store (no directory) has no spill tier");
    ck_assert_ok(pskv_open(NULL, NULL, &s));
    expect_detail(pskv_table_open(s, "emb", "optimizer=adam", &t), PSKV_EINVAL,
                  "table 'emb' does not exist yet: creating it needs dim=N");
    ck_assert_ok(pskv_table_open(s, "emb", "dim=4 lr=0.05", &t));
    expect_detail(pskv_table_open(s, "emb", "lr=0.1", &t), PSKV_ESCHEMA,
                  "table 'emb': lr=0.1 contradicts the open table's schema (lr=0.05)");
    expect_detail(pskv_table_open(s, "a/b", "dim=4", &t), PSKV_EINVAL,
                  "expected 1..255 bytes without '/'");
    float nan_row[8] = {0, 1, 2, 3, 4, 5, NAN, 7};
    uint64_t keys[2] = {10, 20};
    expect_detail(pskv_push(t, keys, 2, nan_row), PSKV_EINVAL,
                  "gradient row 1 (key 20), value 2 is NaN: nothing was changed");
    expect_detail(pskv_pull(t, NULL, 2, nan_row), PSKV_EINVAL, "keys is NULL");
    expect_detail(pskv_checkpoint(s), PSKV_ENOTSUP, "a memory-only store persists nothing");
    pskv_close(s);
}
END_TEST

START_TEST(errors_and_version)
{
    ck_assert_str_eq(pskv_err_name(PSKV_EINVAL), "PSKV_EINVAL");
    ck_assert_str_eq(pskv_err_name(0), "PSKV_OK");
    ck_assert_str_eq(pskv_err_name(-999), "PSKV_UNKNOWN");
    ck_assert_str_eq(pskv_strerror(-999), "unknown error");
    for (int e = -1; e >= PSKV_ERANGE; e--) {
        ck_assert_ptr_nonnull(pskv_strerror(e));
        ck_assert_str_ne(pskv_strerror(e), "unknown error");
    }
    ck_assert_uint_eq(pskv_version(), PSKV_VERSION_NUMBER);
    ck_assert_str_eq(pskv_version_string(), PSKV_VERSION_STRING);
    ck_assert(PSKV_CHECK_VERSION(0, 1, 0));
}
END_TEST

START_TEST(feature_ids)
{
    uint64_t a = pskv_feature_id("user", "alice", 5);
    ck_assert_uint_eq(a, pskv_feature_id("user", "alice", 5));
    ck_assert_uint_ne(a, pskv_feature_id("item", "alice", 5));
    ck_assert_uint_ne(a, pskv_feature_id("user", "alicf", 5));
    ck_assert_uint_eq(pskv_feature_id(NULL, NULL, 0), pskv_feature_id("", "", 0));
    /* Pinned value: ids must never change between versions or platforms. */
    ck_assert_uint_eq(pskv_feature_id("", "", 0), pskv_feature_id(NULL, "x", 0));
}
END_TEST

/* The batched form gives the ids of one call per string. */
START_TEST(feature_ids_batched)
{
    const char *words[] = {"", "user:42", "item:7", "", "a much longer string of bytes"};
    char packed[128];
    uint64_t offsets[6] = {0}, ids[5], at = 0;
    for (int i = 0; i < 5; i++) {
        memcpy(packed + at, words[i], strlen(words[i]));
        at += strlen(words[i]);
        offsets[i + 1] = at;
    }
    ck_assert_ok(pskv_feature_ids("ctr", packed, offsets, 5, ids));
    for (int i = 0; i < 5; i++)
        ck_assert_uint_eq(ids[i], pskv_feature_id("ctr", words[i], strlen(words[i])));
    ck_assert_ok(pskv_feature_ids(NULL, packed, offsets + 1, 1, ids));
    ck_assert_uint_eq(ids[0], pskv_feature_id(NULL, "user:42", 7));
    uint64_t empty[3] = {0, 0, 0};
    ck_assert_ok(pskv_feature_ids("ns", NULL, empty, 2, ids));
    ck_assert_uint_eq(ids[1], pskv_feature_id("ns", NULL, 0));
    ck_assert_ok(pskv_feature_ids("ns", NULL, NULL, 0, NULL));
    uint64_t bad[3] = {0, 5, 4};
    ids[0] = 77;
    ck_assert_err(pskv_feature_ids("ns", packed, bad, 2, ids), PSKV_EINVAL);
    ck_assert_uint_eq(ids[0], 77);
    ck_assert_ptr_nonnull(strstr(pskv_last_error(), "offsets[2] = 4 is below offsets[1] = 5"));
    ck_assert_err(pskv_feature_ids("ns", NULL, offsets, 5, ids), PSKV_EINVAL);
    ck_assert_err(pskv_feature_ids("ns", packed, NULL, 5, ids), PSKV_EINVAL);
}
END_TEST

START_TEST(store_open_errors)
{
    pskv_store *s = (pskv_store *)1;
    ck_assert_err(pskv_open(NULL, "bogus=1", &s), PSKV_EINVAL);
    ck_assert_ptr_null(s);
    ck_assert_err(pskv_open(NULL, NULL, NULL), PSKV_EINVAL);
    ck_assert_err(pskv_open(NULL, "map_size=1G", &s), PSKV_EINVAL); /* nothing persisted */
    ck_assert_err(pskv_open(NULL, "spill_max=1G", &s), PSKV_EINVAL); /* no spill tier */
    ck_assert_ok(pskv_open(NULL, "memory_budget=1G", &s));
    pskv_close(s);
    pskv_store_options o;
    pskv_store_options_init(&o);
    o.reserved[3] = 1;
    ck_assert_err(pskv_open_opts(NULL, &o, &s), PSKV_EINVAL);
    ck_assert_ok(pskv_open(NULL, "durability=none", &s));
    ck_assert_err(pskv_checkpoint(s), PSKV_ENOTSUP);
    pskv_close(s);
    pskv_close(NULL);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("options");
    TCase *tc = tcase_create("options");
    tcase_add_test(tc, store_options_parse);
    tcase_add_test(tc, table_options_parse);
    tcase_add_test(tc, table_options_format_roundtrip);
    tcase_add_test(tc, table_options_describe);
    tcase_add_test(tc, error_details);
    tcase_add_test(tc, errors_and_version);
    tcase_add_test(tc, feature_ids);
    tcase_add_test(tc, feature_ids_batched);
    tcase_add_test(tc, store_open_errors);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
