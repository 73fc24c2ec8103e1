/*
 * pskv — an embeddable store for sparse embedding tables.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * Conventions that hold for every function below unless its comment says
 * otherwise:
 *  - Functions return 0 on success or a negative PSKV_E* code. A failed call
 *    leaves the store, its tables and every output buffer's meaning unchanged
 *    (output buffers may hold partial data after a failure; do not read them).
 *  - Invalid arguments (NULL where a pointer is required, n > 0 with NULL
 *    arrays, malformed config) give PSKV_EINVAL and change nothing.
 *  - Memory passed in stays owned by the caller and is not retained after the
 *    call returns. Handles returned through `out` parameters are owned by the
 *    caller until the matching close/destroy call.
 *  - Thread-safety is stated per function. "Any thread" means the function may
 *    be called concurrently from many threads on the same handle. Functions
 *    that are not marked so must not run concurrently with any other call on
 *    the same handle.
 *  - The library never prints, never aborts and never exits, whatever the
 *    arguments and whatever the bytes of pskv's own records and files. The
 *    trust boundary is LMDB's page structure: like LMDB, pskv trusts the
 *    B-tree pages of its own data.mdb, and LMDB (which validates no page)
 *    can fault on a damaged one. Everything pskv writes inside the file is
 *    checksummed and bounded by the file before it is read; `pskv verify`
 *    checks a store from a child process (docs/API.md, "What pskv promises
 *    under faults").
 */
#ifndef PSKV_H
#define PSKV_H

#include <stddef.h>
#include <stdint.h>

#include "pskv_version.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(PSKV_BUILDING) && defined(__GNUC__)
#define PSKV_API __attribute__((visibility("default")))
#else
#define PSKV_API
#endif

/* ---------------------------------------------------------------- errors */

/* One table generates the codes, their names and their messages. Codes are
 * stable: a released code is never renumbered. */
#define PSKV_ERRNO_MAP(X)                                                      \
    X(EINVAL, -1, "invalid argument or configuration")                         \
    X(ENOMEM, -2, "out of memory")                                             \
    X(ENOTFOUND, -3, "not found")                                              \
    X(EEXIST, -4, "already exists")                                            \
    X(ESCHEMA, -5, "configuration contradicts the table's schema")            \
    X(ENOTSUP, -6, "not supported by this build or store kind")                \
    X(EBUSY, -7, "busy: owned or in use elsewhere (pskv_last_error says by whom)") \
    X(EIO, -8, "I/O error")                                                    \
    X(ECORRUPT, -9, "data failed its checksum or format check")                \
    X(ENOSPC, -10, "spill or disk space cap reached")                          \
    X(EVERSION, -11, "format version not supported")                           \
    X(ERANGE, -12, "value out of range")                                      \
    X(ESTALE, -13, "cursor outside the table's change log: export again from 0")          \
    X(ECODEC, -14, "a value is out of the chunk codec's range (fp16 beyond 65504)")

enum pskv_error {
#define PSKV__ERR_ENUM(name, code, msg) PSKV_##name = (code),
    PSKV_ERRNO_MAP(PSKV__ERR_ENUM)
#undef PSKV__ERR_ENUM
};

/* Message for a code. Returns a static string (never NULL, never freed);
 * unknown codes give "unknown error". Any thread. */
PSKV_API const char *pskv_strerror(int err);

/* Name of a code, e.g. "PSKV_EINVAL"; "PSKV_OK" for 0; "PSKV_UNKNOWN" for
 * others. Static string. Any thread. */
PSKV_API const char *pskv_err_name(int err);

/* What the last failed call of this thread said about its error, beyond
 * its code: the key and value that were wrong and what was expected
 * ("unknown table key 'optimiser' (did you mean 'optimizer'?)"), which
 * schema key a reopen contradicts, which process owns a directory. ""
 * when it said nothing. Config parsing, pskv_open, pskv_table_open, the
 * checkpoint, backup, listing and row calls clear it when they start, so
 * it never describes an older call than the last of those. The string
 * stays valid until the thread's next pskv call. Any thread (each its
 * own). */
PSKV_API const char *pskv_last_error(void);

/* ---------------------------------------------------------------- version */

/* Run-time version: PSKV_VERSION_NUMBER of the linked library, and its text.
 * Any thread. */
PSKV_API unsigned pskv_version(void);
PSKV_API const char *pskv_version_string(void);

/* ---------------------------------------------------------------- handles */

typedef struct pskv_store pskv_store;
typedef struct pskv_table pskv_table;
typedef struct pskv_ring pskv_ring;
typedef struct pskv_iter pskv_iter;
typedef struct pskv_ckpt pskv_ckpt;

/* ---------------------------------------------------------------- options */

enum pskv_durability {
    PSKV_DURABILITY_DEFAULT = 0, /* checkpoint for a directory store */
    PSKV_DURABILITY_CHECKPOINT = 1,
    PSKV_DURABILITY_NONE = 2, /* scratch store: nothing survives close */
};

/* Store options. Initialize with pskv_store_options_init() before setting
 * fields; fields left alone keep their defaults. */
typedef struct pskv_store_options {
    uint64_t memory_budget; /* bytes of DRAM for rows, store-wide; 0 = none */
    uint64_t spill_max;     /* cap on spill bytes on disk; 0 = no cap */
    int durability;         /* enum pskv_durability */
    uint64_t map_size;      /* initial LMDB map of a durable store; 0 = twice the
                               data file, at least 64 MiB. The map grows on
                               demand either way. */
    uint32_t at_seq_set;    /* 1: open a durable store at checkpoint at_seq */
    uint32_t undo_off;      /* 1 (config "undo=off"): checkpoints keep no undo; they
                               write each row once, and at_seq reaches only the
                               last checkpoint. Default: undo_keep generations */
    uint64_t at_seq;        /* (config "at_seq=N"): the last committed checkpoint,
                               or one of the undo_keep before it, which rolls
                               the store back for good (see pskv_open) */
    uint64_t changes;       /* (config "changes=N"): change log entries kept per
                               table for delta exports (pskv_export_open); 0 =
                               the default, 1048576 (16 MiB at most) */
    uint32_t undo_keep;     /* (config "undo_keep=K", 1..PSKV_UNDO_KEEP_MAX): the
                               undo generations kept, so that at_seq reaches the
                               last K checkpoints before the last one; 0 = the
                               default, 2. Each costs about one checkpoint's
                               changed rows in the data file */
    uint32_t reserved[6];   /* must be zero */
} pskv_store_options;

#define PSKV_UNDO_KEEP_MAX 8u
#define PSKV_UNDO_KEEP_DEFAULT 2u

enum pskv_optimizer {
    PSKV_OPT_SGD = 0,
    PSKV_OPT_ADAGRAD = 1,
    PSKV_OPT_ROWWISE_ADAGRAD = 2,
    PSKV_OPT_ADAM = 3,
    PSKV_OPT_FTRL = 4,
    /* No optimizer: rows are weights only (no state in DRAM, the budget or
     * the files), written by pskv_put or an apply in REPLACE or ADD mode.
     * pskv_push (and an apply in PUSH mode) gives PSKV_EINVAL. For caches
     * of embeddings trained elsewhere. */
    PSKV_OPT_NONE = 5,
};

enum pskv_init_kind {
    PSKV_INIT_ZEROS = 0,
    PSKV_INIT_CONSTANT = 1, /* every weight = a */
    PSKV_INIT_UNIFORM = 2,  /* uniform in [a, b) */
    PSKV_INIT_NORMAL = 3,   /* normal, mean a, standard deviation b */
};

#define PSKV_DIM_MAX 4096u
#define PSKV_SHARDS_MAX 4096u
#define PSKV_NAME_MAX 255u

/* Table options. pskv_table_options_init() sets every default; `dim` must
 * then be set (1..PSKV_DIM_MAX) when the table is created. Defaults:
 * optimizer adagrad; lr 0.01 (adam 0.001, ftrl 0.05); eps 1e-10 for adagrad,
 * 1e-8 for rowwise_adagrad and adam; initial_accumulator 0 (ftrl 0.1);
 * beta1 0.9; beta2 0.999; l1 0; l2 0; lr_power -0.5; init zeros; seed 0;
 * shards 64. The value -1 in lr, eps or initial_accumulator (what the init
 * function sets) means "the default of the chosen optimizer"; any other
 * negative value there, and a beta1 or beta2 outside [0, 1), is
 * PSKV_EINVAL. */
typedef struct pskv_table_options {
    uint32_t dim;
    int optimizer; /* enum pskv_optimizer */
    float lr, eps, initial_accumulator, beta1, beta2, l1, l2, lr_power;
    int init;          /* enum pskv_init_kind */
    float init_a;      /* constant value, uniform low, normal mean */
    float init_b;      /* uniform high, normal standard deviation */
    uint64_t seed;     /* initializer seed */
    uint32_t shards;   /* 1..PSKV_SHARDS_MAX */
    uint32_t init_gen; /* the key-seeded generator of uniform and normal (config
                          "init_gen=G"): 0 = the current one, PSKV_INIT_GEN (2);
                          1 = the one of releases before 0.3, which tables they
                          created keep (their schemas name none) */
    uint32_t update;   /* enum pskv_update (config "update=async|sync"; 0.4 on) */
    uint32_t staleness_on; /* 1 (config "staleness=S"; 0.4 on): with pskv_push_at, a
                              gradient computed more than `staleness` steps before the
                              newest step applied to its row is dropped; 0: no bound */
    uint32_t staleness;    /* S, 0..2147483647, read when staleness_on is 1 */
    uint32_t reserved[11]; /* must be zero */
} pskv_table_options;

/* How a table applies pushes (part of its schema).
 *   ASYNC  each push steps the rows at once (the default).
 *   SYNC   a push adds each row's gradient into the row's accumulator
 *          (created like push creates rows); pull and get keep returning
 *          the weights of the last step; pskv_step applies every
 *          accumulated row once with the optimizer and clears it: one
 *          optimizer step per row per training step, whatever number of
 *          workers pushed. The step applies the sum of the pushes: for a
 *          mean, scale the gradients by 1/W on the workers or the
 *          learning rate by 1/W. A memory-only store with a
 *          memory_budget refuses sync tables (PSKV_EINVAL): eviction drops
 *          rows there, and would drop accumulated gradients. */
enum pskv_update { PSKV_UPDATE_ASYNC = 0, PSKV_UPDATE_SYNC = 1 };

/* The current generator of uniform and normal initial values: 2 (0.3 on),
 * several times faster than 1; both are pure functions of (seed, key). */
#define PSKV_INIT_GEN 2u

/* Fill with defaults. Any thread. */
PSKV_API void pskv_store_options_init(pskv_store_options *o);
PSKV_API void pskv_table_options_init(pskv_table_options *o);

/* Parse a config string ("key=value" separated by spaces or commas; NULL or
 * "" is empty) on top of the options already in *o. Unknown keys, repeated
 * keys and malformed values give PSKV_EINVAL and leave *o unchanged.
 * Sizes accept K/M/G/T and KiB/MiB/GiB/TiB (both powers of 1024).
 * Any thread (on distinct *o). */
PSKV_API int pskv_store_options_parse(pskv_store_options *o, const char *config);
PSKV_API int pskv_table_options_parse(pskv_table_options *o, const char *config);

/* Write the canonical config string of *o (every key, round-trip exact:
 * parsing it into freshly initialized options gives back *o) into buf of
 * size len, NUL-terminated. Returns the string length (not counting NUL) or
 * PSKV_ERANGE if it does not fit, PSKV_EINVAL for invalid options.
 * Any thread. */
PSKV_API int pskv_table_options_format(const pskv_table_options *o, char *buf,
                                       size_t len);

/* The same string with only the keys that matter for *o: dim, optimizer,
 * the hyperparameters its optimizer reads, init, seed, shards (what
 * tools/pskv prints). Parsing it gives options with the same schema.
 * Floats in both strings are the shortest decimal that parses back to the
 * same float (0.005, not 0.00499999989). Any thread. */
PSKV_API int pskv_table_options_describe(const pskv_table_options *o, char *buf, size_t len);

/* Check *o for consistency (ranges, reserved zero). 0 or PSKV_EINVAL. */
PSKV_API int pskv_table_options_validate(const pskv_table_options *o);

/* ---------------------------------------------------------------- store */

/* Open a store. dir == NULL makes a memory-only store (no spill, no
 * persistence). config: store config string or NULL.
 *
 * memory_budget caps the bytes of resident rows over all tables: each row
 * costs its weights and optimizer state (pskv_table_info.row_bytes) plus
 * its 8-byte version stamp (plus 8 bytes for the admission sketch in a
 * memory-only store); index and slab overhead come on top (see pskv_store_stats.dram_bytes). In a
 * memory-only store the budget makes a cache: when rows are created past
 * the budget, the calling thread drops rows until resident bytes are back
 * under the budget, and counts them in rows_evicted. Which rows: CLOCK
 * (second chance) among the rows in DRAM, with a frequency-based admission
 * in front (after W-TinyLFU): once the budget is reached, a row created
 * in DRAM waits in a small window and joins the others only if the keys'
 * read counts say it is read more often than CLOCK's victim, so a scan of
 * new keys does not push the hot rows out. A dropped row is gone: get
 * reports it absent and pull re-creates it from the initializer. The budget
 * may be exceeded by the rows created by calls still in flight.
 *
 * A directory store with durability=none is a scratch store with a spill
 * tier: dir is created if missing, each table gets a spill file
 * <dir>/<table>.spill (created empty, removed at close), and rows over the
 * budget are written there instead of dropped; they come back on their next
 * use. spill_max caps the spill files: when it is reached, pull/push/put
 * fail with PSKV_ENOSPC before changing anything. The environment variable
 * PSKV_IO=sync makes the spill tier use pread/pwrite instead of io_uring
 * (which is also the fallback when io_uring cannot be set up).
 *
 * A directory store with the default durability=checkpoint is durable: the
 * spill tier as above, plus an LMDB environment in dir (data.mdb) that holds
 * the schema of every table and every row with its optimizer state as of
 * the last pskv_checkpoint. Opening it reads metadata only; rows come back
 * from LMDB on first use (a miss in DRAM and the spill file looks there).
 * After a crash at any instant, the store opens at exactly its last
 * committed checkpoint. With at_seq=N it opens at checkpoint N: the last
 * committed one (nothing changes), or one of the undo_keep checkpoints
 * before it (default 2), to which the store is rolled back for good (one
 * write transaction per checkpoint undone, crash-safe; the protocol for
 * jobs of several stores is in docs/API.md); any other N is
 * PSKV_ENOTFOUND and changes nothing. undo=off keeps no undo (at_seq then
 * reaches only the last checkpoint). One process at a time owns a directory: a second
 * open of the same directory, in this process or another, gives
 * PSKV_EBUSY (tools/pskv reads beside the owner without opening it). Do not
 * use a store in a child after fork(); open it in the child instead.
 *
 * Errors: PSKV_EINVAL (bad config, NULL out, spill_max, map_size or at_seq
 * on a memory-only store, at_seq on a scratch store, dir "" or not a
 * directory), PSKV_ENOTFOUND (at_seq names no checkpoint this store can
 * open at), PSKV_EIO (dir cannot be
 * created or read), PSKV_EBUSY (the directory is open elsewhere),
 * PSKV_ECORRUPT (data.mdb is truncated, damaged, emptied, not a pskv store,
 * or at an older checkpoint than pskv.seq names: it went backwards; the
 * directory holds an unfinished backup),
 * PSKV_EVERSION (written by a format version this build does not read; a
 * store of format 1 is upgraded in place, in one transaction), PSKV_ENOMEM,
 * PSKV_ENOSPC.
 * On success *out owns the store until pskv_close(). Any thread. */
PSKV_API int pskv_open(const char *dir, const char *config, pskv_store **out);
PSKV_API int pskv_open_opts(const char *dir, const pskv_store_options *opts,
                            pskv_store **out);

/* Close the store and every table of it; table handles become invalid.
 * Iterators and exports still open are marked closed: every later call on
 * one returns PSKV_EINVAL, and pskv_iter_destroy / pskv_export_close only
 * free it.
 * A durable store checkpoints first; if that checkpoint fails, the previous
 * one stays on disk (call pskv_checkpoint before closing to see the error).
 * NULL is a no-op. Must not run concurrently with any other call on the store
 * or its tables. */
PSKV_API void pskv_close(pskv_store *s);

/* The failure-path close: as pskv_close, without the final checkpoint.
 * Nothing is written to the store's directory (data.mdb and pskv.seq stay
 * as the last committed checkpoint left them); rows changed since then are
 * dropped, as a crash would drop them, and the next open goes on from
 * that checkpoint (table versions jump as after a crash). An asynchronous
 * checkpoint already started still commits first. Use it where a peer
 * failed (a launcher's SIGTERM, an aborted collective): a clean
 * pskv_close would commit one more checkpoint, without metadata, past the
 * step the job restarts from (docs/API.md, "Consistent checkpoints across
 * instances"). On a memory-only or scratch store it is pskv_close. NULL is
 * a no-op. Same thread rule as pskv_close. */
PSKV_API void pskv_close_discard(pskv_store *s);

/* ---------------------------------------------------------------- tables */

/* Create the table `name` (1..PSKV_NAME_MAX bytes, no NUL, no '/'), or return
 * the open one of that name. Opening an existing table with a config that
 * sets a schema key (dim, optimizer and its hyperparameters, init, seed) to
 * a different value gives PSKV_ESCHEMA (hyperparameters its optimizer does
 * not read are not compared); `shards` may differ (use
 * pskv_table_reshard to change it). Creating requires `dim`. On a durable
 * store, a table persisted earlier is opened with its persisted schema (the
 * config may then leave the schema keys out), and a new table's schema is
 * written at once (it waits for a running checkpoint).
 * The table handle is owned by the store: it stays valid until pskv_close()
 * and must not be freed by the caller.
 * Errors: PSKV_EINVAL, PSKV_ESCHEMA, PSKV_ENOMEM; on durable stores also
 * PSKV_ECORRUPT (damaged schema record), PSKV_EIO, PSKV_ENOSPC, PSKV_ERANGE
 * (more than 1024 tables). Any thread. */
PSKV_API int pskv_table_open(pskv_store *s, const char *name, const char *config,
                             pskv_table **out);
PSKV_API int pskv_table_open_opts(pskv_store *s, const char *name,
                                  const pskv_table_options *opts,
                                  pskv_table **out);

/* The open table `name`, without creating or opening it: PSKV_ENOTFOUND
 * if it is not open (a persisted table must be opened with
 * pskv_table_open first). Any thread. */
PSKV_API int pskv_table_find(pskv_store *s, const char *name, pskv_table **out);

/* A table a store holds, opened or not. */
typedef struct pskv_table_desc {
    char name[PSKV_NAME_MAX + 1];
    pskv_table_options options; /* its schema (shards: as last persisted) */
    uint32_t dim, state_floats, row_bytes;
    int open;        /* 1: open in this store (pskv_store_tables only) */
    uint64_t rows;   /* durable stores: rows in LMDB as of the last checkpoint;
                        otherwise rows now */
    uint64_t reserved[4];
} pskv_table_desc;

/* The tables of s, in name order: on a durable store every table it holds
 * (persisted schemas, opened in this process or not), otherwise the open
 * tables. *n = how many; out[0 .. *n) filled when cap >= *n, else
 * PSKV_ERANGE with *n set and out untouched (call with cap 0 to size).
 * Errors: PSKV_EINVAL (s or n NULL, out NULL with cap > 0), PSKV_ERANGE,
 * PSKV_ECORRUPT (a damaged schema or count record), PSKV_ENOMEM, PSKV_EIO.
 * Any thread. */
PSKV_API int pskv_store_tables(pskv_store *s, pskv_table_desc *out, size_t cap, size_t *n);

/* The same for the durable store in dir without opening it: LMDB is read
 * read-only beside its owner, which may be training in another process
 * (tools/pskv stat uses this). open is 0 in every entry. Not for a
 * directory this process has open (PSKV_EBUSY: use pskv_store_tables).
 * Errors: those of pskv_store_tables, PSKV_ENOTFOUND (no store in dir),
 * PSKV_EVERSION, PSKV_EBUSY. Any thread. */
PSKV_API int pskv_dir_tables(const char *dir, pskv_table_desc *out, size_t cap, size_t *n);

/* Static facts of a table. Any thread. */
typedef struct pskv_table_info {
    uint32_t dim;
    uint32_t state_floats;  /* optimizer state floats per row */
    uint32_t row_bytes;     /* weights + state, the row's payload */
    uint32_t shards;        /* current shard count */
    pskv_table_options options; /* effective options */
    uint32_t reserved[8];   /* zero: room for later fields */
} pskv_table_info;
PSKV_API int pskv_table_info_get(const pskv_table *t, pskv_table_info *out);

/* Number of rows in the table. Any thread (a racing count is approximate). */
PSKV_API uint64_t pskv_table_rows(const pskv_table *t);

/* The table's version: the last one a row change was stamped with. Every
 * change of a row (created by pull, push, put or apply, written by push,
 * put or apply, erased, or dropped by a memory-only store's budget) takes
 * the next version; the rows one call changes in one shard share one.
 * A new table's versions start at a random multiple of 2^40 (so a table
 * that never changed has a non-zero version), which no other table and no
 * earlier life of this one shares: an export refuses their cursors
 * (PSKV_ESTALE) instead of sending a partial delta.
 * Rows keep their version in DRAM, the spill file and LMDB. A durable table
 * goes on from its last checkpoint's version after a clean pskv_close, and
 * jumps 2^40 past it after a crash or a rollback (past any version the
 * lost run handed out: cursors from it get PSKV_ESTALE). 0 for NULL. Any
 * thread. */
PSKV_API uint64_t pskv_table_version(const pskv_table *t);

/* Counters since the table was opened. Any thread; each field is exact, the
 * set is not a snapshot when other threads are writing. */
typedef struct pskv_table_stats {
    uint64_t rows;          /* rows, resident or spilled */
    uint64_t row_bytes;     /* rows * payload bytes */
    uint64_t dram_bytes;    /* DRAM held by rows and indexes (slabs, index, spill index) */
    uint64_t rows_created;  /* by pull or put */
    uint64_t rows_erased;
    uint64_t pulled, pushed, got, put; /* rows handled by each call */
    uint64_t get_misses;
    uint64_t reshards;
    uint64_t rows_evicted;  /* pushed out by the memory budget: dropped (memory-only
                               store) or written to the spill file */
    uint64_t rows_spilled;  /* rows in the spill file now (included in rows) */
    uint64_t spill_reads;   /* rows read back from the spill file */
    uint64_t spill_writes;  /* rows written to the spill file */
    uint64_t prefetch_errors; /* prefetch jobs whose loads failed (the pull retries) */
    uint64_t spill_read_ns;   /* time in spill-file read batches (the miss path) */
    uint64_t spill_write_ns;  /* time in spill-file write batches (evictions) */
    uint64_t spill_index_bytes; /* DRAM that tracks spilled rows (part of dram_bytes):
                                   the spill map and the spill file's page
                                   allocation state; under 16 bytes per
                                   spilled row while the table grows, about
                                   21 after mass erasure */
    uint64_t rows_cold;     /* durable stores: rows only LMDB holds since the
                               reopen, read back on first use (included in rows) */
    uint64_t cold_lookups;  /* LMDB lookups of keys missing in DRAM and the spill
                               file (the filter of persisted keys spares most
                               brand-new keys one) */
    uint64_t push_nonfinite; /* rows a push left unchanged because their step would
                                have made a weight or state value Inf/NaN (the
                                push returned PSKV_ERANGE) */
    uint64_t exported;       /* rows and tombstones in the chunks of exports (their
                                reads are not in got or get_misses) */
    uint64_t stepped;        /* update=sync: rows pskv_step applied (0.4 on) */
    uint64_t stale_dropped;  /* staleness=S: rows pskv_push_at dropped as too old */
    uint64_t reserved[6];    /* zero: room for later counters */
} pskv_table_stats;
PSKV_API int pskv_table_stats_get(const pskv_table *t, pskv_table_stats *out);

/* Store-wide totals over all tables. Any thread. */
typedef struct pskv_store_stats {
    uint64_t tables;
    uint64_t rows;
    uint64_t row_bytes;
    uint64_t dram_bytes;
    uint64_t memory_budget;  /* 0 = none */
    uint64_t resident_bytes; /* bytes of rows in DRAM, the budgeted figure: each
                                row's row_bytes plus its 8-byte version (plus
                                8 for admission in a memory-only store) */
    uint64_t rows_evicted;   /* rows the budget pushed out, all tables */
    uint64_t spill_bytes;    /* size of the spill files, capped by spill_max */
    /* Durable stores (0 otherwise): */
    uint64_t checkpoint_seq;     /* sequence number of the last committed checkpoint
                                    (survives reopen; 0 = none yet) */
    uint64_t checkpoint_rows;    /* rows the last checkpoint of this open wrote or deleted */
    uint64_t checkpoint_ns;      /* its duration */
    uint64_t checkpoints_failed; /* checkpoints of this open that returned an error */
    uint64_t db_bytes;           /* pages in use in the LMDB data file */
    uint64_t map_grows;          /* times the LMDB map was grown */
    uint64_t lmdb_reopens;       /* times LMDB's environment was reopened after it
                                    gave up on a failed write (the checkpoint that
                                    met the failure returned its error) */
    uint64_t stale_readers;      /* LMDB reader slots of dead processes cleared (a
                                    `pskv dump` killed inside its read transaction
                                    would otherwise keep every page freed after its
                                    snapshot from reuse); cleared at open and before
                                    every write transaction */
    uint64_t reserved[8];        /* zero: room for later counters */
} pskv_store_stats;
PSKV_API int pskv_store_stats_get(const pskv_store *s, pskv_store_stats *out);

/* ---------------------------------------------------------------- training */

/* For every i < n, copy the weights of keys[i] into out[i*dim .. +dim).
 * Missing rows are created first from the table's key-seeded initializer,
 * so a row's first value depends only on (init, seed, key).
 * Errors: PSKV_EINVAL (t/keys/out NULL with n > 0), PSKV_ENOMEM (rows
 * created before the failure stay, with their initial values); with a
 * spill tier also PSKV_EIO / PSKV_ECORRUPT (a spilled row could not be read:
 * it stays spilled and unchanged) and PSKV_ENOSPC (over budget and the spill
 * tier is full: nothing changed).
 * Any thread, concurrently with every other row call on the table. Each
 * row is copied whole, from one point in time, but a call is not a
 * snapshot of the table: a row that another thread writes meanwhile may
 * be seen before or after that write, and a key given twice may show
 * both (the same holds for pskv_get). */
PSKV_API int pskv_pull(pskv_table *t, const uint64_t *keys, size_t n, float *out);

/* Apply gradients grads[i*dim .. +dim) to the row of keys[i] with the
 * table's optimizer. Gradients of a key appearing several times are summed
 * (in order of appearance) and applied once. Missing rows are created first.
 * A push never stores a non-finite value: a row whose step would make a
 * weight or state value Inf/NaN (finite gradients can overflow: |w| near
 * FLT_MAX, or a gradient of 3e38 under ftrl) keeps its weights and state as
 * they were, is counted in push_nonfinite, and the call returns PSKV_ERANGE
 * once every other row is applied (the one error that leaves other rows
 * changed: a per-row rule, checked on each row's own result under its lock).
 * Errors: PSKV_EINVAL (NULL arrays with n > 0, any gradient NaN/Inf, the
 * sum of a repeated key's gradients Inf, or a table with optimizer=none:
 * then nothing changes), PSKV_ERANGE
 * (above), PSKV_ENOMEM (nothing is applied); with a spill tier also
 * PSKV_EIO, PSKV_ECORRUPT, PSKV_ENOSPC (nothing is applied).
 * Any thread. */
PSKV_API int pskv_push(pskv_table *t, const uint64_t *keys, size_t n,
                       const float *grads);

/* update=sync tables: apply every accumulated row once with the optimizer
 * (the sum of its pushes since the last step), clear its accumulator, and
 * return. Rows nobody pushed since the last step are not touched. A row
 * whose step would be Inf/NaN keeps its weights and state, its
 * accumulated gradient is dropped and counted in push_nonfinite, and the
 * call returns PSKV_ERANGE once the others are applied. Pushes that run
 * while a step runs land in this step or the next, each exactly once. A
 * failure part-way (PSKV_ENOMEM, PSKV_EIO) leaves the rows not yet
 * applied accumulated: call it again. After a reopen the first step also
 * reads the table's persisted rows once, to find accumulators a
 * checkpoint kept. Errors: PSKV_EINVAL (NULL, or a table with
 * update=async: its pushes applied at once), those of pskv_push. Steps
 * of one table run one at a time; any thread. */
PSKV_API int pskv_step(pskv_table *t);

/* A push tagged with the training step at which the worker computed the
 * gradients. On a table with staleness=S each row keeps the newest step
 * applied to it (0 for a new row); a gradient whose step is more than S
 * below it is dropped (the row is left as it was) and counted in
 * stale_dropped, and a newer step becomes the row's. This bounds how stale
 * a write may be, per row: unlike SSP, which bounds how far a worker's
 * reads run ahead of the slowest worker (a global clock and waiting), it
 * never blocks and needs no clock but the caller's step numbers. Dropped
 * rows are not an error: the call returns 0. Untagged pushes (pskv_push)
 * apply and leave the row's step as it is. On a table without staleness,
 * as pskv_push. update=sync tables refuse it (PSKV_EINVAL: a sync step
 * applies everything pushed since the last one). Otherwise as pskv_push. */
PSKV_API int pskv_push_at(pskv_table *t, const uint64_t *keys, size_t n, const float *grads,
                          uint64_t step);

/* ---------------------------------------------------------------- cache */

/* Like pull, but never creates: found[i] = 1 and the weights if the key
 * exists, found[i] = 0 and a zeroed out row if not. found may be NULL.
 * Any thread. */
PSKV_API int pskv_get(pskv_table *t, const uint64_t *keys, size_t n, float *out,
                      uint8_t *found);

/* Overwrite the weights of keys[i] with values[i*dim .. +dim). A new row's
 * optimizer state starts as on creation; an existing row keeps its state. If
 * a key repeats, the last value wins. Errors: PSKV_EINVAL (also any value
 * NaN/Inf: then nothing changes), PSKV_ENOMEM (nothing is written).
 * Any thread. */
PSKV_API int pskv_put(pskv_table *t, const uint64_t *keys, size_t n,
                      const float *values);

/* Remove the rows of keys (absent keys are ignored). A later pull re-creates
 * a row from the initializer. Any thread. */
PSKV_API int pskv_erase(pskv_table *t, const uint64_t *keys, size_t n);

/* Start bringing the spilled rows of keys into DRAM and return without
 * waiting for I/O: the keys are copied into a job for the store's prefetch
 * worker (a thread started on first use), which reads them in one I/O
 * batch. A later pull of those keys finds them resident, or waits only for
 * the ones still in flight. Keys without a row are ignored (prefetch never
 * creates rows). The call waits only when 64 jobs are already queued. In a
 * memory-only store every row is in DRAM: only the arguments are checked.
 * A failed load is counted in prefetch_errors; the pull that needs the row
 * reads it again and reports its own result. Rows that only LMDB holds
 * (after a reopen) are not prefetched: the pull reads them.
 * Errors: PSKV_EINVAL, PSKV_ENOMEM. Any thread. */
PSKV_API int pskv_prefetch(pskv_table *t, const uint64_t *keys, size_t n);

/* ---------------------------------------------------------------- resharding */

/* Erase every row of the table (DRAM, spill file and, on a durable store,
 * LMDB at the next checkpoint), as pskv_erase of all its keys: each erase
 * is a change, so an export of the table carries the tombstones. For a
 * replica told to start over (PSKV_ESTALE) before a full export. Rows
 * created by calls running meanwhile may stay. *erased (may be NULL): the
 * rows erased. Errors: those of pskv_iter_next and pskv_erase (the rows
 * erased before the error stay erased). Any thread. */
PSKV_API int pskv_table_truncate(pskv_table *t, uint64_t *erased);

/* Change the table's shard count online: concurrent row calls wait while
 * rows move and then continue; every row is kept, bit for bit. Keys move
 * as the consistent-hash ring dictates (growing from S to S' shards moves
 * about (S'-S)/S' of the rows). Errors: PSKV_EINVAL (shards out of range),
 * PSKV_ENOMEM (the table is left as before). Any thread. */
PSKV_API int pskv_table_reshard(pskv_table *t, uint32_t shards);

/* ---------------------------------------------------------------- checkpoints and backup */

/* Atomic, point-in-time, incremental checkpoint of every open table of a
 * durable store: one LMDB write transaction with every row written,
 * created or erased since the previous checkpoint, each row's weights and
 * optimizer state together as they were at one instant near the start of
 * the call, across all tables. It is pskv_checkpoint_start (without
 * metadata: the last metadata record stays as it is) followed by
 * pskv_checkpoint_wait; the instant is the one described there. Row calls keep running meanwhile: the
 * instant waits only for the row calls already in flight, and rows written
 * after it are copied first (their pre-images take DRAM outside the budget
 * until the checkpoint ends). The commit is the atomic point: after a
 * crash anywhere, reopening gives exactly the last committed checkpoint.
 * Cost follows the rows written since the previous checkpoint, not the
 * table size. A full LMDB map is grown and the transaction written again.
 * Checkpoints run one at a time (a second caller waits); a reshard waits
 * for a running checkpoint.
 * Errors: PSKV_ENOTSUP (memory-only or durability=none store), PSKV_EIO,
 * PSKV_ECORRUPT (a spilled row failed its check), PSKV_ENOSPC (disk full),
 * PSKV_ENOMEM. After an error nothing is lost: the previous checkpoint
 * stays on disk and the next checkpoint writes everything this one would
 * have. Any thread. */
PSKV_API int pskv_checkpoint(pskv_store *s);

/* The most bytes of metadata one checkpoint carries. */
#define PSKV_CHECKPOINT_META_MAX ((size_t)256 << 20)

/* pskv_checkpoint_start with metadata, then pskv_checkpoint_wait:
 * pskv_checkpoint, also committing len bytes of the caller's own state in
 * the same transaction: the trainer's global step, learning-rate schedule,
 * data-reader position, dense weights and their optimizer state, anything
 * that must match the rows after a restart. The bytes are copied before
 * the call returns; meta may be NULL when len is 0 (an empty record: unlike
 * pskv_checkpoint_start, which keeps the last record then). Commits even
 * when no row changed. pskv_checkpoint and the checkpoint of pskv_close keep the
 * last metadata as it was (its seq then trails checkpoint_seq).
 * Errors: those of pskv_checkpoint, and PSKV_EINVAL (meta NULL with len > 0,
 * len > PSKV_CHECKPOINT_META_MAX). Any thread. */
PSKV_API int pskv_checkpoint_with_meta(pskv_store *s, const void *meta, size_t len);

/* Asynchronous checkpoint: take the checkpoint's instant, copy the
 * caller's len bytes of metadata (committed with the rows, as by
 * pskv_checkpoint_with_meta; a meta of len 0 that is not NULL commits an
 * empty record; meta NULL with len 0 carries none and keeps the last
 * metadata record as it is, as pskv_checkpoint does: its seq then trails
 * checkpoint_seq), and return as soon as the instant has been taken,
 * while a thread of the checkpoint writes and commits the transaction.
 *
 * The guarantee, exactly: every row call (pull, push, put, erase, and a
 * get's or prefetch's loads) that returned before pskv_checkpoint_start
 * was called is in the checkpoint; no row call that starts after it
 * returns is. A call running concurrently with the start is in it whole or
 * not at all (the instant waits for the calls in flight on each table;
 * across threads there is no order to promise). The rows and the metadata
 * are then fixed: the caller may go on training and change its own state
 * at once. Later writes cost a copy of each row's bytes as of the instant
 * (its pre-image: DRAM outside the budget until the commit).
 *
 * Checkpoints run one at a time: a start while another checkpoint is
 * writing waits for its commit first. Opening a new table waits too (its
 * schema goes through a write transaction of its own); row calls,
 * iteration, stats and pskv_checkpoint_meta do not. pskv_close waits for
 * the commit. Every started checkpoint must be waited for with
 * pskv_checkpoint_wait, exactly once (also after pskv_close), which frees
 * the handle.
 * Errors (then no checkpoint was started and *out is NULL): PSKV_EINVAL
 * (NULL s or out, meta NULL with len > 0, len > PSKV_CHECKPOINT_META_MAX),
 * PSKV_ENOTSUP (memory-only or durability=none store), PSKV_ENOMEM. The
 * transaction's own errors come from pskv_checkpoint_wait. Any thread. */
PSKV_API int pskv_checkpoint_start(pskv_store *s, const void *meta, size_t len,
                                   pskv_ckpt **out);

/* Wait for the commit of c, return its result (0, or an error of
 * pskv_checkpoint: after one, nothing is lost and the next checkpoint
 * writes what this one would have), set *seq (may be NULL) to the store's
 * checkpoint_seq after it (the seq this checkpoint committed as, when it
 * succeeded), and free c. Any thread, once per handle. */
PSKV_API int pskv_checkpoint_wait(pskv_ckpt *c, uint64_t *seq);

/* 1 when c's commit has ended (pskv_checkpoint_wait will not block), 0
 * while it is being written; PSKV_EINVAL for NULL. Any thread, until c is
 * waited for. */
PSKV_API int pskv_checkpoint_done(pskv_ckpt *c);

/* The metadata committed by the last pskv_checkpoint_with_meta of the
 * store, as of the last committed checkpoint (also after a reopen): *len =
 * its length, *seq (may be NULL) = the checkpoint_seq that wrote it, and
 * the bytes copied to buf when cap >= *len (else PSKV_ERANGE, *len set, buf
 * untouched: call again with a buffer that large).
 * Errors: PSKV_EINVAL (len NULL, buf NULL with cap > 0), PSKV_ENOTSUP
 * (nothing persisted), PSKV_ENOTFOUND (no checkpoint carried metadata),
 * PSKV_ERANGE, PSKV_ECORRUPT (the record fails its check), PSKV_EIO. Any
 * thread. */
PSKV_API int pskv_checkpoint_meta(pskv_store *s, void *buf, size_t cap, size_t *len,
                                  uint64_t *seq);

/* Write a consistent, compacted copy of the last committed checkpoint into
 * dest_dir (created if missing; must not hold a store already): a store
 * that pskv_open opens. Training and checkpoints go on meanwhile (a
 * checkpoint that must grow the map waits for the copy). Rows written since
 * the last checkpoint are not in the copy: checkpoint first for them.
 * The destination is claimed first (its pskv.lock). The backup appears
 * whole or not at all: the copy is written under dest_dir/backup.partial/,
 * synced, checked by opening it, its checkpoint seq written to pskv.seq,
 * and only then renamed to dest_dir/data.mdb (then the directory is
 * synced). A backup killed at any instant leaves either a whole store or
 * remains that pskv_open refuses (PSKV_ECORRUPT, not an empty store; a kill
 * before anything was written leaves an empty directory) and
 * that a retried pskv_backup into the same directory clears and replaces.
 * A failed backup removes only what it created.
 * Errors: PSKV_EINVAL, PSKV_ENOTSUP (nothing persisted), PSKV_EEXIST (a
 * store is there, or the pskv.seq of one whose data file is gone),
 * PSKV_EBUSY (a store is open there, or another backup is writing there),
 * PSKV_EIO, PSKV_ENOSPC. Any thread. */
PSKV_API int pskv_backup(pskv_store *s, const char *dest_dir);

/* Compact the durable store in dir in place, between runs: data.mdb is
 * rewritten with only its live pages (LMDB's compacting copy of the last
 * committed checkpoint, renamed over the old file; a crash at any point
 * leaves one or the other, the same checkpoint either way: rows, metadata,
 * seq and the undo of at_seq are kept). LMDB's copy-on-write makes a file
 * settle at about the live pages plus two checkpoints' worth of rewritten
 * pages (docs/DESIGN.md, "Data file size"): compaction takes that back
 * until the next checkpoints. *before / *after (may be NULL): the file's
 * bytes. Takes the directory's lock for its duration: not while a store
 * is open there (PSKV_EBUSY, pskv_last_error names the owner); run no
 * reader (tools/pskv) during it.
 * Errors: PSKV_EINVAL, PSKV_ENOTFOUND (no store in dir), PSKV_EBUSY,
 * PSKV_ECORRUPT, PSKV_EVERSION (format 1: open it once to upgrade),
 * PSKV_EIO, PSKV_ENOSPC (room for the copy is needed beside the file).
 * Any thread. */
PSKV_API int pskv_compact(const char *dir, uint64_t *before, uint64_t *after);

/* ---------------------------------------------------------------- iteration */

/* Iterate over the rows of a table, shard by shard. A shard's keys are
 * listed under its lock, then its rows copied a piece of 1024 at a time
 * under it as pskv_iter_next needs them, so writers wait for a piece,
 * never a whole shard; each row is seen whole, as it was at its piece's
 * copy. Rows written concurrently may or
 * may not be seen as changed (rows created after their shard's listing are
 * not seen; rows erased before their piece is copied are not returned). On a
 * durable store, rows that only LMDB holds (not used since the reopen) come
 * last, in key order, each checked under its shard's lock. A whole walk
 * of those rows that saw one snapshot is checked against the table's count
 * record: rows a damaged B-tree hid give PSKV_ECORRUPT at the end, and so
 * does a key the walk saw that a lookup cannot find.
 * A row that pulls or gets read back from LMDB after its shard was copied
 * comes with those rows, as it is then. Every row that exists from
 * pskv_iter_create to the end is returned exactly once.
 * A reshard during iteration makes pskv_iter_next return PSKV_ESTALE
 * (before 0.3.0: PSKV_EBUSY), and every later call too: iterate again.
 * The iterator is owned by the caller; free it with pskv_iter_destroy,
 * before or after its store's pskv_close (after it, pskv_iter_next returns
 * PSKV_EINVAL). Any thread; one iterator is used by one thread at a time:
 * a call overlapping another thread's on the same iterator returns
 * PSKV_EBUSY. */
PSKV_API int pskv_iter_create(pskv_table *t, pskv_iter **out);

/* Next row: *key, the weights into weights[dim] and, if state is not NULL,
 * the optimizer state into state[state_floats]. Returns 1 for a row, 0 at
 * the end, or a negative code. */
PSKV_API int pskv_iter_next(pskv_iter *it, uint64_t *key, float *weights,
                            float *state);
PSKV_API void pskv_iter_destroy(pskv_iter *it); /* NULL is a no-op */

/* ---------------------------------------------------------------- ids */

/* Feature id for (namespace, bytes): XXH3-64 of the bytes, seeded with the
 * XXH3-64 of the namespace string. Same inputs give the same id on every
 * platform. ns may be NULL (same as ""); data may be NULL when len == 0.
 * Any thread. */
PSKV_API uint64_t pskv_feature_id(const char *ns, const void *data, size_t len);

/* The same for n byte strings packed back to back, in one call:
 * ids[i] = pskv_feature_id(ns, data + offsets[i], offsets[i+1] - offsets[i])
 * (offsets: n + 1 entries, non-decreasing, as Arrow and torch's
 * EmbeddingBag offsets lay them out; data may be NULL when every string is
 * empty). The namespace is hashed once per call. Errors: PSKV_EINVAL
 * (NULL arrays with n > 0, decreasing offsets: then ids is untouched).
 * Any thread. */
PSKV_API int pskv_feature_ids(const char *ns, const void *data, const uint64_t *offsets,
                              size_t n, uint64_t *ids);

/* ---------------------------------------------------------------- ring */

#define PSKV_RING_DEFAULT_VNODES 1024u
#define PSKV_RING_MAX_POINTS (1u << 24)

/* Create an empty consistent-hash ring. vnodes: virtual nodes per unit of
 * weight (0 = PSKV_RING_DEFAULT_VNODES); seed: hash seed, so that rings
 * created with the same (vnodes, seed) and the same nodes route identically
 * in every process. Errors: PSKV_EINVAL, PSKV_ENOMEM. Any thread. */
PSKV_API int pskv_ring_create(unsigned vnodes, uint64_t seed, pskv_ring **out);

/* Add node with weight in (0, 1000]; it gets round(vnodes * weight) virtual
 * nodes (at least 1). Errors: PSKV_EEXIST (node present), PSKV_EINVAL
 * (weight), PSKV_ERANGE (more than PSKV_RING_MAX_POINTS points),
 * PSKV_ENOMEM (ring unchanged). Not thread-safe: no concurrent call on r. */
PSKV_API int pskv_ring_add(pskv_ring *r, uint32_t node, double weight);

/* Remove a node; its keys move to the remaining nodes, no other key moves.
 * Errors: PSKV_ENOTFOUND, PSKV_ENOMEM. Not thread-safe. */
PSKV_API int pskv_ring_remove(pskv_ring *r, uint32_t node);

/* Route keys: node_out[i] = owner of keys[i]. Errors: PSKV_EINVAL (NULL
 * arrays with n > 0), PSKV_ENOTFOUND (ring has no nodes). Any thread,
 * concurrently with other route calls (not with add/remove). */
PSKV_API int pskv_ring_route(const pskv_ring *r, const uint64_t *keys, size_t n,
                             uint32_t *node_out);

/* Number of nodes in the ring. */
PSKV_API uint32_t pskv_ring_nodes(const pskv_ring *r);

PSKV_API void pskv_ring_destroy(pskv_ring *r); /* NULL is a no-op */

/* ---------------------------------------------------------------- moving rows between instances */

/* pskv has no network code: these calls turn rows into chunks (bytes the
 * caller sends with MPI, torch.distributed, a file...) and chunks back into
 * rows. One chunk format carries everything (docs/FORMAT.md, "Chunks"):
 * delta exports, migrations, pulled rows, gradients. Chunks are checked
 * (XXH3-64, every length) before anything is read from them. */

enum pskv_codec {
    PSKV_CODEC_FP32 = 0, /* bit exact */
    PSKV_CODEC_FP16 = 1, /* round to nearest even: relative error <= 2^-11 (|x| >= 2^-14) */
    PSKV_CODEC_BF16 = 2, /* round to nearest even: relative error <= 2^-8 */
    PSKV_CODEC_INT8 = 3, /* per row: scale = max |x| / 127 rounded up to a bf16, error <= scale / 2 */
};
enum pskv_chunk_kind {
    PSKV_CHUNK_ROWS = 1,   /* rows of a table (pskv_export_next) */
    PSKV_CHUNK_VALUES = 2, /* the caller's arrays (pskv_chunk_encode) */
};

typedef struct pskv_export pskv_export;

/* A delta export of t: the rows changed after version `since` and the
 * tombstones of keys erased (or dropped by a memory-only store's budget)
 * after it, as chunks. since = 0 exports every row (a portable dump: any
 * shard count, any machine; no tombstones: apply it to an empty table).
 * config: "payload=weights|rows codec=fp32|fp16|bf16|int8 lz4=on|off
 * chunk_bytes=SIZE" (defaults: rows, fp32, off, 1 MiB); payload=rows carries
 * the optimizer state (fp32 whatever the codec), weights only the weights.
 * The cost of a delta follows the rows changed since `since`, not the table
 * size, while `since` is within the table's change log: every change of
 * this run, unless the log (store option changes=N, entries per table)
 * dropped its oldest entries, and after a clean pskv_close the version it
 * ended at. An older cursor gets PSKV_ESTALE: export from 0 again (and
 * start the consumer's table empty: pskv_table_truncate); so does a cursor
 * newer than the table's version, which this table never handed out, and
 * a cursor of another table or of an earlier life of this one (below its
 * first version). An export from the table's version itself is empty.
 * Writers keep running: the export holds a shard's lock for one piece of
 * rows at a time (at most 4096; a full export may encode a chunk of them,
 * unhashed, under it), a delta export for one read of the shard's changed
 * rows. A change that happens during the export may be in it and in the
 * next.
 * Each consumer keeps its own cursor (pskv_export_version).
 * Errors: PSKV_EINVAL, PSKV_ESTALE, PSKV_ENOMEM. Any thread; one export
 * handle is used by one thread at a time (a call overlapping another
 * thread's on the same handle returns PSKV_EBUSY). Close it before its
 * store; after the store's pskv_close its calls return PSKV_EINVAL and
 * pskv_export_close only frees it. */
PSKV_API int pskv_export_open(pskv_table *t, uint64_t since, const char *config,
                              pskv_export **out);
/* Only keys that r routes to node (migration); before the first
 * pskv_export_next. The ring is copied. Errors: PSKV_EINVAL (also a ring
 * without nodes, or after the first chunk), PSKV_ENOMEM. */
PSKV_API int pskv_export_ring(pskv_export *e, const pskv_ring *r, uint32_t node);
/* The next chunk into buf[cap]: 1 with *len, 0 when the export is
 * complete. Chunks are cut to cap: a chunk holds at most as many rows as
 * fit in cap and in chunk_bytes (unless one row alone is bigger), so any
 * buffer that holds one row works; a full export (since 0) without lz4
 * and a ring filter puts at most 4096 rows in a chunk and may end one
 * early at a shard's last rows (since 0.4.1: chunks encoded where the
 * rows sit); PSKV_ERANGE with *len = the bytes one row
 * needs when cap holds none (nothing consumed: call again with a bigger
 * buffer). PSKV_ECODEC (*len not set, nothing consumed): a row holds a
 * value the export's codec cannot carry (fp16 beyond 65504): no buffer
 * helps, export with another codec. Errors: PSKV_EINVAL,
 * PSKV_ENOMEM, PSKV_EIO / PSKV_ECORRUPT (a row could not be read),
 * PSKV_ESTALE (the change log dropped entries this export still needed,
 * or the table was resharded meanwhile (before 0.3.0: PSKV_EBUSY): export
 * again from the same since). After an error of a delta export (since > 0) other than
 * PSKV_ERANGE, PSKV_ECODEC, PSKV_EINVAL and an overlapping call's
 * PSKV_EBUSY, every later call returns it: close the export and export
 * again from the same since. */
PSKV_API int pskv_export_next(pskv_export *e, void *buf, size_t cap, size_t *len);
/* The cursor for this consumer's next export: the table's version when the
 * export was opened. 0 for NULL. */
PSKV_API uint64_t pskv_export_version(const pskv_export *e);
PSKV_API void pskv_export_close(pskv_export *e); /* NULL is a no-op */

enum { PSKV_APPLY_REPLACE = 0, PSKV_APPLY_PUSH = 1, PSKV_APPLY_ADD = 2 };
/* OR'ed into a mode: apply a chunk exported from a table of another name
 * (which is otherwise PSKV_ESCHEMA). */
#define PSKV_APPLY_ANY_TABLE 0x100
/* No continuity asked (pskv_apply). */
#define PSKV_SINCE_ANY UINT64_MAX
/* Apply one chunk to t. The checksum, format and schema are checked before
 * anything changes: PSKV_ECORRUPT (damaged, truncated, malformed),
 * PSKV_ESCHEMA (another dim, optimizer state of another layout, or a chunk
 * exported from a table of another name: every chunk of an export names
 * its table, and the same name on any instance is the same table, so
 * migrations and replicas work; PSKV_APPLY_ANY_TABLE in mode applies it
 * anyway), PSKV_EVERSION (a newer chunk format). Then, all rows or none:
 *   REPLACE  write the rows as sent (weights, and the optimizer state when
 *            the chunk carries it; a new row without state gets the
 *            optimizer's initial state); tombstones erase. Idempotent.
 *   PUSH     the values are gradients for the table's optimizer (repeated
 *            keys summed), as pskv_push: a row whose step would be Inf/NaN
 *            keeps its values and the others are applied (PSKV_ERANGE).
 *   ADD      the values are added to the weights (rows created like pull;
 *            a sum that would be Inf/NaN: as PUSH).
 * Applied rows take t's own versions: a replica can be exported in turn.
 * Known limit: REPLACE erases its tombstones after writing its rows; an
 * erase failing then (PSKV_ENOMEM, PSKV_EIO) leaves the rows written: apply
 * the chunk again. Errors also: PSKV_EINVAL (also: a chunk carrying
 * optimizer state, an export with payload=rows, applied with PUSH or ADD:
 * its values are weights, not gradients), PSKV_ENOMEM, PSKV_ENOSPC.
 * Thread-safe like pskv_put. */
PSKV_API int pskv_apply(pskv_table *t, const void *chunk, size_t len, int mode);
/* pskv_apply for a replica that follows a leader's delta exports and must
 * not miss one: the chunk must continue from `since`, the cursor the
 * replica is at (the `since` of the leader's export it applies: 0 for a
 * full export into an empty replica; after an export's last chunk, that
 * chunk's `version`, pskv_chunk_info_get). A chunk from another since is
 * PSKV_ESTALE and changes nothing: a later one means a delta was missed
 * (start over: pskv_table_truncate, then a full export), an earlier one was
 * applied already. Otherwise as pskv_apply. Thread-safe like pskv_put. */
PSKV_API int pskv_apply_since(pskv_table *t, const void *chunk, size_t len, int mode,
                              uint64_t since);

/* One chunk of n rows from the caller's arrays (keys may repeat; values
 * n x dim floats, finite): config "codec=fp32|fp16|bf16|int8 lz4=on|off"
 * (defaults fp32, off). 0 with *len; PSKV_ERANGE with *len = the size
 * needed when cap is too small. Errors: PSKV_EINVAL (also rows beyond
 * the format's 1 GiB a chunk: encode several), PSKV_ENOMEM, PSKV_ECODEC (a
 * value does not fit the codec: fp16 beyond 65504; *len not set). Any
 * thread. */
PSKV_API int pskv_chunk_encode(uint32_t dim, const uint64_t *keys, size_t n, const float *values,
                               const char *config, void *buf, size_t cap, size_t *len);

/* A gradient message with error feedback: one values chunk to apply with
 * PSKV_APPLY_PUSH on the tables that own the keys. In this order:
 *   1. each distinct key's row starts from its residual row in
 *      `residual` (NULL: no error feedback; an absent row is zeros);
 *   2. the key's gradients are added to it, repeated keys in the order
 *      given;
 *   3. the rows of largest L2 norm are kept: topk=F keeps ceil(F * rows)
 *      of the distinct keys (at least one), rows of equal norm keep the
 *      smaller keys first; F = 1 (the default) keeps every row;
 *   4. the kept rows are encoded with the codec into buf;
 *   5. `residual` gets what the receiver will not see: for a kept row its
 *      value minus the decoded value, for a row not kept its whole value.
 *      Rows whose residual is exactly zero are erased from it.
 * So, for every key, the decoded rows of all messages plus the final
 * residual sum to every gradient given, up to fp32 rounding. Clip (if the
 * caller clips) before this call: the residual holds what clipping left.
 * config: "codec=fp32|fp16|bf16|int8 topk=F lz4=on|off dim=N"; dim is
 * needed without a residual table and must match it otherwise. residual is
 * an ordinary table of that dim (suggested "optimizer=none"): bounded by
 * the store's budget, spilled, checkpointed with everything else (in a
 * memory-only store under a budget, evicted residual rows are dropped, and
 * what they held with them: give residual tables a directory store or no
 * budget). 0 with *len; PSKV_ERANGE with *len = the size needed when cap
 * is too small; PSKV_ECODEC when a summed value does not fit the codec
 * (fp16 beyond 65504); PSKV_EINVAL (a NULL array, a bad config, a value
 * or a sum that is not finite, a message beyond the chunk format's 1 GiB:
 * send several); errors of pskv_get and pskv_put on residual. On any error
 * the residual is unchanged, and *len is 0 (PSKV_ERANGE: the size needed):
 * buf holds no message to send. Thread
 * safety: calls on the same residual table must not overlap (each reads
 * then writes its rows: one residual table per sender); without a
 * residual, any thread. */
PSKV_API int pskv_grad_encode(pskv_table *residual, const uint64_t *keys, size_t n,
                              const float *grads, const char *config, void *buf, size_t cap,
                              size_t *len);

typedef struct pskv_chunk_info {
    uint32_t kind;         /* enum pskv_chunk_kind */
    uint32_t codec;        /* enum pskv_codec */
    uint32_t dim;
    uint32_t state_floats; /* optimizer state per row (0: weights only) */
    int optimizer;         /* enum pskv_optimizer when state_floats > 0, else -1 */
    uint32_t rows;         /* rows with values (keys may repeat) */
    uint32_t tombstones;   /* keys erased */
    uint64_t since, version; /* an export's range (0, 0 from pskv_chunk_encode) */
    uint32_t lz4;          /* 1: the body is lz4-compressed */
    size_t bytes;          /* the chunk's length */
    uint32_t reserved[8];  /* zero: room for later fields */
} pskv_chunk_info;
/* Check a chunk (checksum, header, lengths) and describe it, to size the
 * arrays of pskv_chunk_decode. Errors: PSKV_EINVAL, PSKV_ECORRUPT,
 * PSKV_EVERSION. Any thread. */
PSKV_API int pskv_chunk_info_get(const void *chunk, size_t len, pskv_chunk_info *out);
/* Decode a chunk into the caller's arrays, each with its capacity in
 * elements (size them with pskv_chunk_info_get): keys[rows] (ascending),
 * values[rows * dim] (as fp32), state[rows * state_floats] (NULL with
 * state_cap 0: not wanted), tombstones[tombstones]. An array the chunk
 * has nothing for may be NULL with capacity 0. Errors: those of
 * pskv_chunk_info_get, PSKV_ERANGE (an array is shorter than the chunk
 * needs; nothing written), PSKV_ECORRUPT (a body that does not decode),
 * PSKV_ENOMEM. Any thread. (Before 0.3.0 the call took no capacities.) */
PSKV_API int pskv_chunk_decode(const void *chunk, size_t len, uint64_t *keys, size_t keys_cap,
                               float *values, size_t values_cap, float *state, size_t state_cap,
                               uint64_t *tombstones, size_t tombs_cap);

#ifdef __cplusplus
}
#endif

#endif /* PSKV_H */
