#!/usr/bin/python3
"""A DLRM-style CTR model trained with pskv embeddings, on one process or
on N gloo processes on 127.0.0.1.

The model: one embedding row per feature id (the stream's 8 categorical
fields, examples/pytorch/ctr_data.py, the same examples as the C demos),
the 8 rows concatenated into a small MLP (8*dim -> 64 -> 1).
  - 1 process: pskv.torch.EmbeddingBag over a local table (or, with
    --baseline, torch.nn.EmbeddingBag(sparse=True) + torch.optim.Adagrad over
    a dense vocabulary, for comparison);
  - N processes: pskv.torch.distributed.ShardedEmbeddingBag (each rank owns
    the ids a shared ring routes to it, in its own store); the MLP in
    DistributedDataParallel (its gradients all-reduced every batch).
--update hybrid: embeddings asynchronous (each batch's pushes apply at
once), dense layers synchronous (DDP). --update sync: the embedding table
is update=sync and every rank steps its rows once per batch.
--prefetch names each step's next batch between forward and backward: with
N processes its ids then travel with the gradients and its rows come back
in backward (one collective fewer per step).
--store DIR keeps each rank's store in DIR/rankR, checkpoints every K
steps with the MLP and its optimizer in the metadata, and --resume goes
on from the newest step every rank holds.

    /usr/bin/python3 examples/pytorch/train_ctr.py --world-size 2 --examples 400000
"""
import argparse
import os
import pickle
import sys
import tempfile
import time


def _threads_asked() -> str:
    for i, arg in enumerate(sys.argv):
        if arg == "--threads" and i + 1 < len(sys.argv):
            return sys.argv[i + 1]
        if arg.startswith("--threads="):
            return arg.split("=", 1)[1]
    return "1"


# BLAS and OpenMP threads as many as torch's (--threads), set before torch
# loads them: Debian's torch calls a BLAS that otherwise starts a thread
# per core and spins, and two ranks on two cores then fight (collectives
# took 2 ms each with one BLAS thread per rank, 14 ms without).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, _threads_asked())

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.nn as nn  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
if "PSKV_LIBRARY" not in os.environ:  # a checkout: the package next door
    sys.path.insert(0, os.path.join(HERE, "..", "..", "python"))

import pskv  # noqa: E402
import pskv.torch  # noqa: E402
import pskv.torch.distributed as pdist  # noqa: E402
import ctr_data  # noqa: E402

FIELDS = len(ctr_data.FIELDS)


class DLRM(nn.Module):
    def __init__(self, emb: nn.Module, dim: int):
        super().__init__()
        self.emb = emb
        self.mlp = nn.Sequential(nn.Linear(FIELDS * dim, 64), nn.ReLU(), nn.Linear(64, 1))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = self.emb(ids.reshape(-1, 1))          # one id per bag
        return self.mlp(rows.reshape(ids.shape[0], -1)).squeeze(1)


def parse():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--world-size", type=int, default=1)
    p.add_argument("--examples", type=int, default=1000000, help="training examples in all")
    p.add_argument("--batch", type=int, default=512, help="examples per rank per step")
    p.add_argument("--dim", type=int, default=16)
    p.add_argument("--update", choices=("hybrid", "sync"), default="hybrid")
    p.add_argument("--codec", choices=pskv.CODECS, default="fp32")
    p.add_argument("--topk", type=float, default=1.0)
    p.add_argument("--lr-emb", type=float, default=0.05)
    p.add_argument("--lr-dense", type=float, default=0.002)
    p.add_argument("--threads", type=int, default=1, help="torch threads per rank")
    p.add_argument("--store", help="a directory: durable stores and checkpoints")
    p.add_argument("--budget", default="", help="memory_budget of each store (e.g. 64M)")
    p.add_argument("--checkpoint-every", type=int, default=200)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--held-out", type=int, default=ctr_data.HELD_OUT)
    p.add_argument("--report-every", type=int, default=200)
    p.add_argument("--prefetch", action="store_true",
                   help="the next batch's ids ride with the gradients (hybrid only)")
    p.add_argument("--baseline", action="store_true",
                   help="torch.nn.EmbeddingBag + Adagrad instead of pskv (1 process)")
    p.add_argument("--check-auc", type=float, default=0.0,
                   help="exit 1 unless the held-out AUC is at least this")
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    if a.baseline and a.world_size != 1:
        p.error("--baseline runs in one process")
    if a.prefetch and (a.baseline or a.update == "sync"):
        p.error("--prefetch: with pskv embeddings and --update hybrid (update=sync rows "
                "change at step(), after the backward that would read them)")
    return a


def table_config(a) -> str:
    sync = " update=sync" if a.update == "sync" else ""
    return f"dim={a.dim} optimizer=adagrad lr={a.lr_emb} init=normal:0:0.01 seed={a.seed}{sync}"


def build(a, rank, world, store):
    if a.baseline:
        emb = nn.EmbeddingBag(ctr_data.TOTAL_VOCAB, a.dim, mode="sum", sparse=True)
        nn.init.normal_(emb.weight, 0.0, 0.01)
        model = DLRM(emb, a.dim)
        return model, torch.optim.Adagrad(emb.parameters(), lr=a.lr_emb), model.mlp
    if world == 1:
        emb = pskv.torch.EmbeddingBag(store.table("emb", table_config(a)), mode="sum")
    else:
        emb = pdist.ShardedEmbeddingBag(store, "emb", table_config(a), mode="sum",
                                        codec=a.codec, topk=a.topk)
    model = DLRM(emb, a.dim)
    dense = model.mlp
    if world > 1:
        model.mlp = dense = nn.parallel.DistributedDataParallel(model.mlp)
    return model, None, dense


def evaluate(a, model, stream, rank, world):
    """Held-out AUC and log-loss (rank 0's figures; every rank takes part)."""
    model.eval()
    share = a.held_out // world  # every rank the same number of lookups (collectives)
    scores = []
    with torch.no_grad():
        for start in range(rank * share, (rank + 1) * share, 1000):
            ids, _, _, index = stream.examples(2, start, min(1000, (rank + 1) * share - start))
            x = torch.from_numpy(index if a.baseline else ids)
            scores.append(model(x))
    mine = torch.cat(scores)
    if world > 1:
        parts = [torch.empty_like(mine) for _ in range(world)]
        dist.all_gather(parts, mine)
        mine = torch.cat(parts)
    model.train()
    _, labels, planted, _ = stream.examples(2, 0, share * world)
    logits = mine.numpy().astype(np.float64)
    p = 1.0 / (1.0 + np.exp(-logits))
    return ctr_data.auc(logits, labels), ctr_data.log_loss(p, labels), ctr_data.auc(planted,
                                                                                    labels)


def run(rank, a, rendezvous):
    world = a.world_size
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank,
                            world_size=world)
    log = (lambda *m: print(*m, flush=True)) if rank == 0 else (lambda *m: None)
    stream = ctr_data.Stream()
    step0 = 0
    extra = None
    cfg = f"memory_budget={a.budget}" if a.budget else ""
    if a.store:
        os.makedirs(a.store, exist_ok=True)
        path = os.path.join(a.store, f"rank{rank}")
        if a.resume:
            store, got, extra = pdist.open_consistent(path, cfg)
            step0 = got or 0
            log(f"resumed at step {step0}" if got is not None else "nothing to resume")
        else:
            store = pskv.open(path, cfg)
    else:
        store = pskv.open(None, cfg) if not a.baseline else None
    model, emb_opt, dense = build(a, rank, world, store)
    mlp = dense.module if world > 1 else dense  # its state, without DDP's wrapper
    opt = torch.optim.Adam(dense.parameters(), lr=a.lr_dense)
    if extra:
        state = pickle.loads(extra)
        mlp.load_state_dict(state["mlp"])
        opt.load_state_dict(state["opt"])
    loss_fn = nn.BCEWithLogitsLoss()
    steps = a.examples // (a.batch * world)
    log(f"train_ctr: {world} rank(s), {steps} steps of {a.batch} examples per rank, "
        f"{'torch nn.EmbeddingBag baseline' if a.baseline else 'pskv ' + a.update}, "
        f"codec {a.codec} topk {a.topk}, dim {a.dim}, {a.threads} torch thread(s) per rank")
    t0 = time.perf_counter()
    recent = []
    def batch_of(step):
        start = ((step - 1) * world + rank) * a.batch
        ids, labels, _, index = stream.examples(1, start, a.batch)
        return torch.from_numpy(index if a.baseline else ids), labels

    ahead = None
    for step in range(step0 + 1, steps + 1):
        x, labels = ahead if ahead is not None else batch_of(step)
        logit = model(x)
        ahead = None
        if a.prefetch and step < steps:  # every rank alike: the lookups are collectives
            ahead = batch_of(step + 1)
            model.emb.prefetch(ahead[0].reshape(-1, 1))
        loss = loss_fn(logit, torch.from_numpy(labels))
        opt.zero_grad()
        if emb_opt is not None:
            emb_opt.zero_grad()
        loss.backward()                    # pskv: embedding gradients pushed here
        opt.step()
        if emb_opt is not None:
            emb_opt.step()
        if a.update == "sync" and not a.baseline:
            model.emb.table.step()          # each rank steps the rows it owns
        recent.append(loss.item())
        if step % a.report_every == 0:
            dt = time.perf_counter() - t0
            done = (step - step0) * a.batch * world
            log(f"step {step:6d}  examples {step * a.batch * world:9d}  "
                f"train log-loss {np.mean(recent):.4f}  {done / dt:9.0f} examples/s")
            recent.clear()
        if a.store and step % a.checkpoint_every == 0:
            state = {"mlp": mlp.state_dict(),
                     "opt": opt.state_dict()}
            pdist.checkpoint(store, step, pickle.dumps(state))
    train_s = time.perf_counter() - t0
    done = max(steps - step0, 0) * a.batch * world
    auc, ll, planted = evaluate(a, model, stream, rank, world)
    log(f"trained {done} examples in {train_s:.1f} s: {done / max(train_s, 1e-9):.0f} "
        f"examples/s")
    log(f"held-out AUC {auc:.4f} (planted model {planted:.4f}), log-loss {ll:.4f}")
    if world > 1:
        emb = model.emb
        sent = torch.tensor([emb.grad_bytes, emb.grad_bytes_fp32], dtype=torch.int64)
        dist.all_reduce(sent)
        if sent[1] > 0:
            log(f"gradient bytes to owners: {int(sent[0])} ({sent[0] / sent[1]:.3f}x fp32 rows)")
    if store is not None:
        store.close()
    dist.destroy_process_group()
    if rank == 0:
        print(f"RESULT auc={auc:.5f} logloss={ll:.5f} examples_per_s={done / max(train_s, 1e-9):.0f}",
              flush=True)
    if auc < a.check_auc:
        print(f"held-out AUC {auc:.4f} below --check-auc {a.check_auc}", file=sys.stderr)
        sys.exit(1)


def main():
    a = parse()
    with tempfile.TemporaryDirectory() as tmp:
        rdv = os.path.join(tmp, "rendezvous")
        if a.world_size == 1:
            run(0, a, rdv)
            return 0
        ctx = torch.multiprocessing.get_context("spawn")
        procs = [ctx.Process(target=run, args=(r, a, rdv)) for r in range(a.world_size)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        bad = [p.exitcode for p in procs if p.exitcode != 0]
        return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
