/* federation_mpi: ctr_demo's model trained by P Open MPI ranks, each owning
 * the ring share of the weights in its own pskv store. pskv moves no bytes
 * itself: every transfer below is an MPI call on chunks pskv encodes and
 * applies (docs/API.md, "Moving rows between instances").
 *
 * Ranks 0 .. P-2 start as owners and trainers; rank P-1 joins midway, and
 * from the start keeps a replica of rank 0's table. Every step:
 *  1. each trainer takes its share of the step's examples (stream 1, in
 *     order, the same examples whatever P), routes the batch's distinct
 *     feature ids with the ring and sends each owner its keys
 *     (MPI_Alltoallv);
 *  2. each owner pulls the keys it was sent and answers with one row chunk
 *     per trainer (pskv_chunk_encode, fp32);
 *  3. the trainers compute the log-loss gradients and send each owner one
 *     gradient message (pskv_grad_encode: --codec, default fp16, --topk,
 *     default 1, with error feedback through the trainer's residual table
 *     unless --no-ef), which the owner applies with PSKV_APPLY_PUSH (its
 *     table's Adagrad); with --update sync the owners' tables accumulate
 *     and every owner steps its table once the step's messages are in;
 *  4. every K steps rank 0 exports the rows changed since its last export
 *     (whole rows: weights and Adagrad state) and sends the chunks to rank
 *     P-1, which applies them to the replica (PSKV_APPLY_REPLACE).
 * At the join the ring gains rank P-1; every owner exports the rows the new
 * ring routes to it (pskv_export_ring, whole rows), sends them, and erases
 * them once sent; the moved keys are counted against what the new ring
 * assigns, and every rank checks that it holds only keys it owns.
 * At the end: the replica against rank 0's rows, bit for bit; the held-out
 * AUC of the federated model against ctr_demo's single-process training
 * (batch 512, same examples), which rank 0 runs after the federation.
 *
 *   mpirun -n 3 federation_mpi [--examples N] [--step-batch G] [--replica-every K]
 *                              [--check-auc D] [--update async|sync]
 *                              [--codec fp32|fp16|bf16|int8] [--topk F] [--no-ef]
 * --check-auc D: exit status 1 when the AUCs differ by more than D (or the
 * replica or the migration check fails). */
#include <mpi.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ctr_stream.h"
#include "pskv.h"

#define RING_SEED 42
enum { TAG_REPLICA = 1, TAG_MIGRATE = 2, TAG_ROWS = 3 };

static struct {
    uint64_t examples;
    uint32_t step_batch;
    uint32_t replica_every;
    double check_auc;
    const char *update; /* async or sync: the owners' tables */
    const char *codec;  /* of the gradient messages */
    double topk;
    bool ef;
} cfg = {2000000, 1536, 20, -1, "async", "fp16", 1.0, true};
static char grad_cfg[80];

static int rank, nranks;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* A pskv error ends every rank: this is an example, not a service. */
static void ok(int rc, const char *what)
{
    if (rc == 0)
        return;
    fprintf(stderr, "federation_mpi rank %d: %s: %s (%s)\n", rank, what, pskv_strerror(rc),
            pskv_last_error());
    MPI_Abort(MPI_COMM_WORLD, 1);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL) {
        fprintf(stderr, "federation_mpi rank %d: out of memory\n", rank);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    return p;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* ---------------------------------------------------------------- bytes */

/* A growing byte buffer of chunks, one run per destination rank. */
typedef struct bytes {
    uint8_t *p;
    size_t len, cap;
} bytes;

static uint8_t *bytes_room(bytes *b, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n)
            cap *= 2;
        uint8_t *p = realloc(b->p, cap);
        if (p == NULL) {
            fprintf(stderr, "federation_mpi rank %d: out of memory\n", rank);
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
        b->p = p;
        b->cap = cap;
    }
    return b->p + b->len;
}

/* Append one chunk of n rows (dim 1) encoded with config: its length. */
static int append_chunk(bytes *b, const uint64_t *keys, size_t n, const float *values,
                        const char *config)
{
    size_t need = 0;
    int rc = pskv_chunk_encode(1, keys, n, values, config, NULL, 0, &need);
    if (rc != PSKV_ERANGE)
        ok(rc == 0 ? PSKV_EINVAL : rc, "chunk size");
    ok(pskv_chunk_encode(1, keys, n, values, config, bytes_room(b, need), need, &need),
       "chunk encode");
    b->len += need;
    return (int)need;
}

/* Append the gradient message of n keys (dim 1) for one owner: its length. */
static int append_grad(bytes *b, pskv_table *residual, const uint64_t *keys, size_t n,
                       const float *grads)
{
    /* Room for any codec's message of n dim-1 rows (a key takes at most 10
     * bytes, a value 4); on PSKV_ERANGE nothing changed and need says how
     * much: once more with that. */
    size_t need = 64 + n * 14;
    int rc = pskv_grad_encode(residual, keys, n, grads, grad_cfg, bytes_room(b, need), need,
                              &need);
    if (rc == PSKV_ERANGE)
        rc = pskv_grad_encode(residual, keys, n, grads, grad_cfg, bytes_room(b, need), need,
                              &need);
    ok(rc, "gradient message");
    b->len += need;
    return (int)need;
}

/* Send every chunk of an export to rank `to`, then an empty message; the
 * keys of its rows go to *keys (when not NULL) for an erase afterwards. */
static uint64_t send_export(pskv_export *e, int to, int tag, uint64_t **keys, size_t *nkeys)
{
    size_t cap = 1u << 20, len;
    uint8_t *buf = xmalloc(cap);
    uint64_t rows = 0;
    int rc;
    while ((rc = pskv_export_next(e, buf, cap, &len)) != 0) {
        if (rc == PSKV_ERANGE) { /* one row bigger than the buffer */
            free(buf);
            buf = xmalloc(cap = len);
            continue;
        }
        ok(rc < 0 ? rc : 0, "export");
        pskv_chunk_info in;
        ok(pskv_chunk_info_get(buf, len, &in), "chunk info");
        if (keys != NULL) {
            uint64_t *k = realloc(*keys, (*nkeys + in.rows) * sizeof *k + 8);
            float *w = xmalloc((size_t)in.rows * in.dim * sizeof *w);
            uint64_t *tombs = xmalloc(in.tombstones * sizeof *tombs);
            if (k == NULL)
                ok(PSKV_ENOMEM, "keys");
            *keys = k;
            ok(pskv_chunk_decode(buf, len, k + *nkeys, in.rows, w, (size_t)in.rows * in.dim, NULL,
                                 0, tombs, in.tombstones),
               "decode");
            *nkeys += in.rows;
            free(w);
            free(tombs);
        }
        rows += in.rows;
        MPI_Send(buf, (int)len, MPI_BYTE, to, tag, MPI_COMM_WORLD);
    }
    MPI_Send(buf, 0, MPI_BYTE, to, tag, MPI_COMM_WORLD);
    free(buf);
    return rows;
}

/* Apply (REPLACE) every chunk rank `from` sends until its empty message. */
static uint64_t receive_chunks(pskv_table *t, int from, int tag)
{
    uint64_t rows = 0;
    for (;;) {
        MPI_Status st;
        int len;
        MPI_Probe(from, tag, MPI_COMM_WORLD, &st);
        MPI_Get_count(&st, MPI_BYTE, &len);
        uint8_t *buf = xmalloc((size_t)len);
        MPI_Recv(buf, len, MPI_BYTE, from, tag, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        if (len == 0) {
            free(buf);
            return rows;
        }
        pskv_chunk_info in;
        ok(pskv_chunk_info_get(buf, (size_t)len, &in), "chunk info");
        ok(pskv_apply(t, buf, (size_t)len, PSKV_APPLY_REPLACE), "apply");
        rows += in.rows;
        free(buf);
    }
}

/* Exchange one byte run per rank: counts first, then the bytes. */
static uint8_t *exchange(const bytes *b, const int *send_len, int *recv_len, int *recv_at)
{
    int send_at[nranks], total = 0;
    for (int r = 0, at = 0; r < nranks; r++) {
        send_at[r] = at;
        at += send_len[r];
    }
    MPI_Alltoall(send_len, 1, MPI_INT, recv_len, 1, MPI_INT, MPI_COMM_WORLD);
    for (int r = 0; r < nranks; r++) {
        recv_at[r] = total;
        total += recv_len[r];
    }
    uint8_t *in = xmalloc((size_t)total);
    MPI_Alltoallv(b->p, send_len, send_at, MPI_BYTE, in, recv_len, recv_at, MPI_BYTE,
                  MPI_COMM_WORLD);
    return in;
}

/* ---------------------------------------------------------------- a step */

typedef struct node {
    pskv_store *store;
    pskv_table *t;       /* this rank's share of the model */
    pskv_table *residual; /* what its gradient messages have not carried yet */
    pskv_ring *ring;
    bool owner;          /* in the ring (trains too) */
    uint32_t trainers;   /* ranks that train this step */
    double loss;
    uint64_t trained;    /* examples this rank trained */
    uint64_t wire_rows, wire_grads; /* bytes this rank sent: row and gradient chunks */
} node;

/* One synchronous step over examples [first, first + count) of stream 1. */
static void step(node *nd, uint64_t first, uint64_t count)
{
    /* This rank's share of the step's examples. */
    uint64_t lo = 0, hi = 0;
    if (nd->owner) {
        lo = first + count * (uint64_t)rank / nd->trainers;
        hi = first + count * (uint64_t)(rank + 1) / nd->trainers;
    }
    const uint32_t n = (uint32_t)(hi - lo);
    ctr_example *ex = xmalloc(n * sizeof *ex);
    uint64_t *uniq = xmalloc((size_t)n * CTR_PER * sizeof *uniq);
    for (uint32_t i = 0; i < n; i++) {
        ctr_make_example(1, lo + i, &ex[i]);
        memcpy(uniq + (size_t)i * CTR_PER, ex[i].ids, sizeof ex[i].ids);
    }
    /* The batch's distinct keys, ascending, grouped by owner (each group
     * stays ascending: the order the owner's chunk comes back in). */
    size_t u = 0;
    qsort(uniq, (size_t)n * CTR_PER, sizeof *uniq, cmp_u64);
    for (size_t i = 0; i < (size_t)n * CTR_PER; i++)
        if (u == 0 || uniq[i] != uniq[u - 1])
            uniq[u++] = uniq[i];
    uint32_t *owner = xmalloc(u * sizeof *owner);
    if (u > 0)
        ok(pskv_ring_route(nd->ring, uniq, u, owner), "route");
    int send_n[nranks], send_at[nranks], recv_n[nranks], recv_at[nranks];
    memset(send_n, 0, sizeof send_n);
    for (size_t i = 0; i < u; i++)
        send_n[owner[i]]++;
    for (int r = 0, at = 0; r < nranks; r++) {
        send_at[r] = at;
        at += send_n[r];
    }
    uint64_t *req = xmalloc(u * sizeof *req);
    size_t *slot = xmalloc(u * sizeof *slot); /* where uniq[i] sits in req */
    int fill[nranks];
    memcpy(fill, send_at, sizeof fill);
    for (size_t i = 0; i < u; i++) {
        slot[i] = (size_t)fill[owner[i]]++;
        req[slot[i]] = uniq[i];
    }
    /* 1. Pull requests: keys to their owners. */
    MPI_Alltoall(send_n, 1, MPI_INT, recv_n, 1, MPI_INT, MPI_COMM_WORLD);
    int asked = 0;
    for (int r = 0; r < nranks; r++) {
        recv_at[r] = asked;
        asked += recv_n[r];
    }
    uint64_t *wanted = xmalloc((size_t)asked * sizeof *wanted);
    MPI_Alltoallv(req, send_n, send_at, MPI_UINT64_T, wanted, recv_n, recv_at, MPI_UINT64_T,
                  MPI_COMM_WORLD);
    /* 2. The owner pulls them (creating new rows) and answers with row chunks. */
    float *rows = xmalloc((size_t)asked * sizeof *rows);
    if (asked > 0)
        ok(pskv_pull(nd->t, wanted, (size_t)asked, rows), "pull");
    bytes out = {0};
    int out_len[nranks], in_len[nranks], in_at[nranks];
    for (int r = 0; r < nranks; r++) {
        out_len[r] = recv_n[r] ? append_chunk(&out, wanted + recv_at[r], (size_t)recv_n[r],
                                              rows + recv_at[r], "codec=fp32")
                               : 0;
        nd->wire_rows += (uint64_t)out_len[r];
    }
    uint8_t *in = exchange(&out, out_len, in_len, in_at);
    float *w_req = xmalloc(u * sizeof *w_req); /* weight of req[i] */
    for (int r = 0; r < nranks; r++) {
        if (send_n[r] == 0)
            continue;
        uint64_t *k = xmalloc((size_t)send_n[r] * sizeof *k);
        ok(pskv_chunk_decode(in + in_at[r], (size_t)in_len[r], k, (size_t)send_n[r],
                             w_req + send_at[r], (size_t)send_n[r], NULL, 0, NULL, 0),
           "row chunk");
        if (memcmp(k, req + send_at[r], (size_t)send_n[r] * sizeof *k) != 0)
            ok(PSKV_ECORRUPT, "row chunk keys");
        free(k);
    }
    /* 3. Gradients: per occurrence, summed per key, one message per owner. */
    float *w = xmalloc((size_t)n * CTR_PER * sizeof *w), *g = xmalloc((size_t)n * CTR_PER * sizeof *g);
    size_t *at = xmalloc((size_t)n * CTR_PER * sizeof *at);
    for (size_t i = 0; i < (size_t)n * CTR_PER; i++) {
        uint64_t key = ex[i / CTR_PER].ids[i % CTR_PER];
        const uint64_t *hit = bsearch(&key, uniq, u, sizeof *uniq, cmp_u64);
        at[i] = slot[hit - uniq];
        w[i] = w_req[at[i]];
    }
    nd->loss += ctr_gradients(ex, n, w, g);
    float *gsum = xmalloc(u * sizeof *gsum);
    memset(gsum, 0, u * sizeof *gsum);
    for (size_t i = 0; i < (size_t)n * CTR_PER; i++)
        gsum[at[i]] += g[i];
    out.len = 0;
    for (int r = 0; r < nranks; r++) {
        out_len[r] = send_n[r] ? append_grad(&out, cfg.ef ? nd->residual : NULL,
                                             req + send_at[r], (size_t)send_n[r],
                                             gsum + send_at[r])
                               : 0;
        nd->wire_grads += (uint64_t)out_len[r];
    }
    free(in);
    in = exchange(&out, out_len, in_len, in_at);
    for (int r = 0; r < nranks; r++)
        if (in_len[r] > 0)
            ok(pskv_apply(nd->t, in + in_at[r], (size_t)in_len[r], PSKV_APPLY_PUSH),
               "apply gradients");
    /* Sync: every message of the step is in: one optimizer step per row. */
    if (strcmp(cfg.update, "sync") == 0) {
        int src = pskv_step(nd->t);
        ok(src == PSKV_ERANGE ? 0 : src, "step");
    }
    nd->trained += n;
    free(in);
    free(out.p);
    free(ex);
    free(uniq);
    free(owner);
    free(req);
    free(slot);
    free(wanted);
    free(rows);
    free(w_req);
    free(w);
    free(g);
    free(at);
    free(gsum);
}

/* ---------------------------------------------------------------- join */

/* How many of t's rows the ring routes to node. */
static uint64_t rows_routed_to(pskv_table *t, const pskv_ring *ring, uint32_t node)
{
    uint64_t n = 0, key;
    float row[2];
    pskv_iter *it;
    ok(pskv_iter_create(t, &it), "iter");
    int rc;
    while ((rc = pskv_iter_next(it, &key, row, row + 1)) == 1) {
        uint32_t to;
        ok(pskv_ring_route(ring, &key, 1, &to), "route");
        n += to == node;
    }
    ok(rc, "iter");
    pskv_iter_destroy(it);
    return n;
}

/* Rank `joiner` enters the ring: the owners send it the rows the new ring
 * routes to it and erase them. Returns false when a check fails. */
static bool join(node *nd, int joiner)
{
    /* What should move: rows the new ring gives the joiner, counted first. */
    pskv_ring *next;
    ok(pskv_ring_create(0, RING_SEED, &next), "ring");
    for (int r = 0; r <= joiner; r++)
        ok(pskv_ring_add(next, (uint32_t)r, 1.0), "ring add");
    uint64_t expect = 0, moved = 0;
    if (nd->owner) {
        expect = rows_routed_to(nd->t, next, (uint32_t)joiner);
        pskv_export *e;
        uint64_t *keys = NULL;
        size_t nkeys = 0;
        ok(pskv_export_open(nd->t, 0, "payload=rows", &e), "export");
        ok(pskv_export_ring(e, next, (uint32_t)joiner), "export ring");
        moved = send_export(e, joiner, TAG_MIGRATE, &keys, &nkeys);
        pskv_export_close(e);
        ok(pskv_erase(nd->t, keys, nkeys), "erase moved rows"); /* sent: the joiner has them */
        free(keys);
    }
    if (rank == joiner) {
        for (int r = 0; r < joiner; r++)
            moved += receive_chunks(nd->t, r, TAG_MIGRATE);
        nd->owner = true;
    }
    pskv_ring_destroy(nd->ring);
    nd->ring = next;
    nd->trainers = (uint32_t)joiner + 1;
    /* Every rank holds exactly the keys the ring routes to it. */
    uint64_t held = pskv_table_rows(nd->t);
    uint64_t misplaced = held - rows_routed_to(nd->t, next, (uint32_t)rank);
    uint64_t mine[4] = {expect, rank == joiner ? moved : 0, misplaced, held}, all[4];
    MPI_Allreduce(mine, all, 4, MPI_UINT64_T, MPI_SUM, MPI_COMM_WORLD);
    bool good = all[0] == all[1] && all[2] == 0;
    if (rank == 0)
        printf("  join: rank %d enters the ring; %llu rows moved to it, %llu expected (the "
               "keys the new ring assigns it), %llu misplaced keys over %llu rows: %s\n",
               joiner, (unsigned long long)all[1], (unsigned long long)all[0],
               (unsigned long long)all[2], (unsigned long long)all[3], good ? "ok" : "FAILED");
    return good;
}

/* ---------------------------------------------------------------- checks */

/* A row as rank 0 sends it: key, weight, Adagrad state. */
typedef struct record {
    uint64_t key;
    float row[2];
} record;

static int by_record_key(const void *a, const void *b)
{
    return cmp_u64(&((const record *)a)->key, &((const record *)b)->key);
}

/* Every row of t, sorted by key. */
static record *table_records(pskv_table *t, uint64_t *n_out)
{
    uint64_t n = pskv_table_rows(t), i = 0;
    record *rec = xmalloc(n * sizeof *rec);
    pskv_iter *it;
    uint64_t key;
    float row[2];
    ok(pskv_iter_create(t, &it), "iter");
    int rc;
    while (i < n && (rc = pskv_iter_next(it, &key, row, row + 1)) == 1)
        rec[i++] = (record){key, {row[0], row[1]}};
    ok(rc < 0 ? rc : 0, "iter");
    pskv_iter_destroy(it);
    qsort(rec, i, sizeof *rec, by_record_key);
    *n_out = i;
    return rec;
}

/* Rank 0's rows against the replica's (on rank `host`): bit for bit. */
static bool replica_matches(pskv_table *t, int host)
{
    int same = 1;
    uint64_t n = 0;
    if (rank == 0 || rank == host) {
        record *rec = table_records(t, &n);
        if (rank == 0) {
            MPI_Send(&n, 1, MPI_UINT64_T, host, TAG_ROWS, MPI_COMM_WORLD);
            MPI_Send(rec, (int)(n * sizeof *rec), MPI_BYTE, host, TAG_ROWS, MPI_COMM_WORLD);
        } else {
            uint64_t m;
            MPI_Recv(&m, 1, MPI_UINT64_T, 0, TAG_ROWS, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            record *leader = xmalloc(m * sizeof *leader);
            MPI_Recv(leader, (int)(m * sizeof *leader), MPI_BYTE, 0, TAG_ROWS, MPI_COMM_WORLD,
                     MPI_STATUS_IGNORE);
            same = m == n && memcmp(leader, rec, n * sizeof *rec) == 0;
            printf("  replica on rank %d: %llu rows, rank 0 has %llu: %s\n", host,
                   (unsigned long long)n, (unsigned long long)m,
                   same ? "equal bit for bit (weights and Adagrad state)" : "DIFFERENT");
            free(leader);
        }
        free(rec);
    }
    MPI_Bcast(&same, 1, MPI_INT, host, MPI_COMM_WORLD);
    return same;
}

/* Rank 0 gathers every owner's weights into one table, to score them. */
static pskv_table *gather_model(pskv_table *t, pskv_store *into)
{
    uint64_t n;
    record *rec = table_records(t, &n);
    int mine = (int)(n * sizeof *rec), counts[nranks], displs[nranks], total = 0;
    MPI_Gather(&mine, 1, MPI_INT, counts, 1, MPI_INT, 0, MPI_COMM_WORLD);
    for (int r = 0; rank == 0 && r < nranks; r++) {
        displs[r] = total;
        total += counts[r];
    }
    record *all = rank == 0 ? xmalloc((size_t)total) : NULL;
    MPI_Gatherv(rec, mine, MPI_BYTE, all, counts, displs, MPI_BYTE, 0, MPI_COMM_WORLD);
    free(rec);
    if (rank != 0)
        return NULL;
    pskv_table *m;
    ok(pskv_table_open(into, "federated", CTR_TABLE_CONFIG, &m), "table");
    for (size_t i = 0; i < (size_t)total / sizeof *all; i++)
        ok(pskv_put(m, &all[i].key, 1, all[i].row), "put");
    free(all);
    return m;
}

/* ctr_demo's single-process training (batch 512) on the same examples. */
static pskv_table *train_reference(pskv_store *into, double *seconds)
{
    enum { B = 512 };
    pskv_table *t;
    ok(pskv_table_open(into, "single", CTR_TABLE_CONFIG, &t), "table");
    ctr_example *ex = xmalloc(B * sizeof *ex);
    uint64_t *keys = xmalloc(B * CTR_PER * sizeof *keys);
    float *w = xmalloc(B * CTR_PER * sizeof *w), *g = xmalloc(B * CTR_PER * sizeof *g);
    double t0 = now();
    for (uint64_t b = 0; b < cfg.examples; b += B) {
        uint32_t n = cfg.examples - b < B ? (uint32_t)(cfg.examples - b) : B;
        for (uint32_t i = 0; i < n; i++) {
            ctr_make_example(1, b + i, &ex[i]);
            memcpy(keys + (size_t)i * CTR_PER, ex[i].ids, sizeof ex[i].ids);
        }
        ok(pskv_pull(t, keys, (size_t)n * CTR_PER, w), "pull");
        ctr_gradients(ex, n, w, g);
        ok(pskv_push(t, keys, (size_t)n * CTR_PER, g), "push");
    }
    *seconds = now() - t0;
    free(ex);
    free(keys);
    free(w);
    free(g);
    return t;
}

/* ---------------------------------------------------------------- main */

static int usage(void)
{
    if (rank == 0)
        fprintf(stderr, "usage: mpirun -n P federation_mpi [--examples N] [--step-batch G] "
                        "[--replica-every K] [--check-auc D] [--update async|sync] "
                        "[--codec fp32|fp16|bf16|int8] [--topk F] [--no-ef]   (P >= 2)\n");
    MPI_Finalize();
    return 2;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &nranks);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--no-ef") == 0) {
            cfg.ef = false;
            continue;
        }
        if (i + 1 >= argc)
            return usage();
        if (strcmp(argv[i], "--update") == 0)
            cfg.update = argv[++i];
        else if (strcmp(argv[i], "--codec") == 0)
            cfg.codec = argv[++i];
        else if (strcmp(argv[i], "--topk") == 0)
            cfg.topk = atof(argv[++i]);
        else if (strcmp(argv[i], "--examples") == 0)
            cfg.examples = strtoull(argv[++i], NULL, 0);
        else if (strcmp(argv[i], "--step-batch") == 0)
            cfg.step_batch = (uint32_t)strtoul(argv[++i], NULL, 0);
        else if (strcmp(argv[i], "--replica-every") == 0)
            cfg.replica_every = (uint32_t)strtoul(argv[++i], NULL, 0);
        else if (strcmp(argv[i], "--check-auc") == 0)
            cfg.check_auc = atof(argv[++i]);
        else
            return usage();
    }
    if (nranks < 2 || cfg.step_batch < 64 || cfg.step_batch > 1u << 20 ||
        cfg.examples < 4ull * cfg.step_batch || cfg.replica_every < 1 ||
        (strcmp(cfg.update, "async") != 0 && strcmp(cfg.update, "sync") != 0) ||
        !(cfg.topk > 0 && cfg.topk <= 1))
        return usage();
    snprintf(grad_cfg, sizeof grad_cfg, "dim=1 codec=%s topk=%g", cfg.codec, cfg.topk);
    ctr_stream_init();
    const int joiner = nranks - 1; /* joins midway; keeps rank 0's replica */
    node nd = {.owner = rank < joiner, .trainers = (uint32_t)joiner};
    ok(pskv_open(NULL, NULL, &nd.store), "open");
    char table_cfg[128];
    snprintf(table_cfg, sizeof table_cfg, "%s update=%s", CTR_TABLE_CONFIG, cfg.update);
    ok(pskv_table_open(nd.store, "ctr_lr", table_cfg, &nd.t), "table");
    ok(pskv_table_open(nd.store, "residual", "dim=1 optimizer=none", &nd.residual), "table");
    ok(pskv_ring_create(0, RING_SEED, &nd.ring), "ring");
    for (int r = 0; r < joiner; r++)
        ok(pskv_ring_add(nd.ring, (uint32_t)r, 1.0), "ring add");
    pskv_store *replica_store = NULL;
    pskv_table *replica = NULL;
    if (rank == joiner) {
        ok(pskv_open(NULL, NULL, &replica_store), "open");
        /* A replica is the same table on another instance: the same name
         * (a chunk names its table; another name would be refused). */
        ok(pskv_table_open(replica_store, "ctr_lr", CTR_TABLE_CONFIG, &replica), "table");
    }
    if (rank == 0)
        printf("federation_mpi: %d ranks, %llu examples in steps of %u; ranks 0..%d own and "
               "train, rank %d keeps a replica of rank 0 and joins midway; pskv %s\n",
               nranks, (unsigned long long)cfg.examples, cfg.step_batch, joiner - 1, joiner,
               pskv_version_string());

    const uint64_t steps = cfg.examples / cfg.step_batch, join_at = steps / 2;
    uint64_t cursor = 0, replica_rows = 0, exports = 0;
    bool good = true;
    double t0 = now();
    for (uint64_t s = 0; s < steps; s++) {
        if (s == join_at)
            good &= join(&nd, joiner);
        uint64_t first = s * cfg.step_batch;
        uint64_t count = s + 1 == steps ? cfg.examples - first : cfg.step_batch;
        step(&nd, first, count);
        if ((s + 1) % cfg.replica_every == 0 || s + 1 == steps) {
            if (rank == 0) { /* the rows changed since the last export, whole */
                pskv_export *e;
                ok(pskv_export_open(nd.t, cursor, "payload=rows", &e), "export");
                send_export(e, joiner, TAG_REPLICA, NULL, NULL);
                cursor = pskv_export_version(e);
                pskv_export_close(e);
                exports++;
            } else if (rank == joiner) {
                replica_rows += receive_chunks(replica, 0, TAG_REPLICA);
            }
        }
        if (rank == 0 && steps >= 10 && (s + 1) % (steps / 10) == 0)
            printf("  %3.0f%%  step %llu  %.0fk examples/s  rank 0: %llu rows\n",
                   100.0 * (double)(s + 1) / (double)steps, (unsigned long long)s + 1,
                   (double)(first + count) / (now() - t0) / 1e3,
                   (unsigned long long)pskv_table_rows(nd.t));
    }
    double fed_s = now() - t0;
    uint64_t sent[3] = {nd.wire_rows, nd.wire_grads, nd.trained}, sent_all[3];
    double loss_all = 0;
    MPI_Reduce(sent, sent_all, 3, MPI_UINT64_T, MPI_SUM, 0, MPI_COMM_WORLD);
    MPI_Reduce(&nd.loss, &loss_all, 1, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD);
    if (rank == 0)
        printf("trained %llu examples in %.2f s on %d ranks (mean log-loss %.4f, update=%s); "
               "wire: %.1f MB of row chunks (fp32), %.1f MB of gradient messages (%s, top-k %g, "
               "error feedback %s)\n",
               (unsigned long long)sent_all[2], fed_s, nranks, loss_all / (double)sent_all[2],
               cfg.update, (double)sent_all[0] / 1e6, (double)sent_all[1] / 1e6, cfg.codec,
               cfg.topk, cfg.ef ? "on" : "off");
    if (rank == joiner)
        printf("  replica: %llu rows applied from rank 0's delta exports every %u steps\n",
               (unsigned long long)replica_rows, cfg.replica_every);
    good &= replica_matches(rank == joiner ? replica : nd.t, joiner);

    pskv_store *eval = NULL;
    if (rank == 0)
        ok(pskv_open(NULL, NULL, &eval), "open");
    pskv_table *model = gather_model(nd.t, eval);
    if (rank == 0) {
        double fed_auc, planted_auc, ref_auc, ref_s;
        ok(ctr_evaluate(model, &fed_auc, &planted_auc), "evaluate");
        pskv_table *ref = train_reference(eval, &ref_s);
        ok(ctr_evaluate(ref, &ref_auc, &planted_auc), "evaluate");
        double diff = fed_auc > ref_auc ? fed_auc - ref_auc : ref_auc - fed_auc;
        printf("held-out AUC: federated %.4f, single-process ctr_demo training %.4f (%.2f s), "
               "difference %.4f; planted model %.4f\n",
               fed_auc, ref_auc, ref_s, diff, planted_auc);
        if (cfg.check_auc >= 0 && diff > cfg.check_auc) {
            fprintf(stderr, "federation_mpi: AUC difference %.4f exceeds %.4f\n", diff,
                    cfg.check_auc);
            good = false;
        }
        pskv_close(eval);
    }
    int bad = !good, any_bad = 0;
    MPI_Allreduce(&bad, &any_bad, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    if (replica_store != NULL)
        pskv_close(replica_store);
    pskv_ring_destroy(nd.ring);
    pskv_close(nd.store);
    ctr_stream_free();
    MPI_Finalize();
    return any_bad ? 1 : 0;
}
