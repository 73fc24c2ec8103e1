#!/usr/bin/python3
"""Python and PyTorch figures of pskv (issue 26), as ratios measured in
one run, rounds interleaved in a shuffled order, medians reported.

  calls     per-call cost of Table.pull against the C call (batch 1, 4096)
  train     train_ctr.py on 1 process: pskv.torch.EmbeddingBag against
            torch.nn.EmbeddingBag(sparse=True) + Adagrad, same model and stream
  ranks     train_ctr.py on 2 (and 3) gloo ranks against 1
  prefetch  a spilling table under pskv.torch.EmbeddingBag: how long forward
            waits for rows with prefetch one batch ahead and without

    /usr/bin/python3 bench/python_bench.py [calls|train|ranks|prefetch ...] [--rounds N]

Run it from a build tree (PSKV_LIBRARY or build/libpskv.so is loaded)."""
import argparse
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "python"))

import numpy as np  # noqa: E402

import pskv  # noqa: E402
from pskv import _native as N  # noqa: E402

TRAIN = os.path.join(ROOT, "examples", "pytorch", "train_ctr.py")


def per_call(fn, min_s=0.2):
    n = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        dt = time.perf_counter() - t0
        if dt >= min_s:
            return dt / n
        n *= 4


def bench_calls(rounds):
    """Python's Table.pull against the C call: the C call's time is a raw
    ctypes call on prepared pointers minus a ctypes call that does nothing
    (pskv_version), so the difference is what the binding adds."""
    print("calls: Table.pull vs the C call, memory-only table dim 64, 100k rows, "
          f"median of {rounds} rounds")
    with pskv.open() as s:
        t = s.table("t", "dim=64 optimizer=adagrad init=normal:0:0.01")
        t.pull(np.arange(100000, dtype=np.uint64))
        rng = np.random.default_rng(1)
        for n in (1, 4096):
            keys = rng.integers(0, 100000, n).astype(np.uint64)
            out = np.empty((n, 64), np.float32)
            kp, op, h = keys.ctypes.data, out.ctypes.data, t._h
            res = {"noop": [], "raw": [], "py": [], "py_out": []}
            cands = {"noop": lambda: N.version(), "raw": lambda: N.pull(h, kp, n, op),
                     "py": lambda: t.pull(keys), "py_out": lambda: t.pull(keys, out=out)}
            for _ in range(rounds):
                order = list(cands)
                random.shuffle(order)
                for c in order:
                    res[c].append(per_call(cands[c]))
            med = {c: statistics.median(v) * 1e6 for c, v in res.items()}
            c_call = med["raw"] - med["noop"]
            print(f"  batch {n:5d}: C call {c_call:8.2f} us (raw ctypes {med['raw']:.2f}, "
                  f"empty ctypes call {med['noop']:.2f}); Table.pull {med['py']:8.2f} us = "
                  f"+{med['py'] - c_call:.2f} us, {med['py'] / c_call:.3f}x the C call; "
                  f"with out= {med['py_out']:8.2f} us = {med['py_out'] / c_call:.3f}x")


def train_run(args):
    out = subprocess.run([sys.executable, TRAIN] + args, capture_output=True, text=True,
                         check=True).stdout
    m = re.search(r"RESULT auc=([\d.]+) logloss=([\d.]+) examples_per_s=(\d+)", out)
    return float(m[1]), float(m[2]), float(m[3])


def interleave(cands, rounds):
    res = {c: [] for c in cands}
    for _ in range(rounds):
        order = list(cands)
        random.shuffle(order)
        for c in order:
            res[c].append(train_run(cands[c]))
    return res


def bench_train(rounds, examples):
    common = ["--examples", str(examples), "--report-every", "100000"]
    res = interleave({"pskv": common, "torch": common + ["--baseline"]}, rounds)
    ratios = [p[2] / b[2] for p, b in zip(res["pskv"], res["torch"])]
    print(f"train: train_ctr.py, 1 process, 1 torch thread, {examples} examples, "
          f"median of {rounds} interleaved rounds")
    for c in res:
        print(f"  {c:6s}: {statistics.median(r[2] for r in res[c]):8.0f} examples/s, "
              f"AUC {statistics.median(r[0] for r in res[c]):.4f}, "
              f"log-loss {statistics.median(r[1] for r in res[c]):.4f}")
    print(f"  pskv / torch examples/s: median {statistics.median(ratios):.3f}x "
          f"(rounds: {', '.join(f'{r:.3f}' for r in ratios)}); AUC difference "
          f"{statistics.median(p[0] - b[0] for p, b in zip(res['pskv'], res['torch'])):+.4f}")


def bench_ranks(rounds, examples, batch):
    common = ["--examples", str(examples), "--report-every", "100000", "--batch", str(batch)]
    cands = {"1 rank": common, "2 ranks": common + ["--world-size", "2"],
             "2 ranks, prefetch": common + ["--world-size", "2", "--prefetch"],
             "3 ranks": common + ["--world-size", "3"],
             "3 ranks, prefetch": common + ["--world-size", "3", "--prefetch"]}
    res = interleave(cands, rounds)
    print(f"ranks: train_ctr.py (hybrid, fp32), batches of {batch} per rank, 1 torch thread per "
          f"rank, {examples} examples, median of {rounds} interleaved rounds")
    one = res["1 rank"]
    for c in res:
        r = [x[2] / o[2] for x, o in zip(res[c], one)]
        print(f"  {c:17s}: {statistics.median(x[2] for x in res[c]):8.0f} examples/s = "
              f"{statistics.median(r):.3f}x 1 rank; AUC "
              f"{statistics.median(x[0] for x in res[c]):.4f}")


def bench_prefetch(rounds, keys, budget):
    import torch
    import pskv.torch as pt
    torch.set_num_threads(1)
    print(f"prefetch: pskv.torch.EmbeddingBag over a scratch store, {keys} keys of dim 64 "
          f"(adagrad: {keys * 512 / 2**20:.0f} MiB of rows) under memory_budget={budget}, "
          "Zipf 0.99 ids, batches of 4096 ids in 256 bags, an MLP step between batches")
    rng = np.random.default_rng(7)
    ranks = np.arange(1, keys + 1, dtype=np.float64) ** -0.99
    cdf = np.cumsum(ranks) / ranks.sum()
    perm = rng.permutation(keys).astype(np.int64)

    def draw():  # fresh ids every epoch: the last epoch's rows are resident now
        return [torch.from_numpy(perm[np.minimum(np.searchsorted(cdf, rng.random(4096)),
                                                 keys - 1)]) for _ in range(41)]
    offsets = torch.arange(0, 4096, 16)
    with tempfile.TemporaryDirectory(dir=os.environ.get("PSKV_BENCH_DIR")) as d:
        with pskv.open(d, f"durability=none memory_budget={budget}") as s:
            t = s.table("emb", "dim=64 optimizer=adagrad init=normal:0:0.01")
            for lo in range(0, keys, 1 << 16):
                t.pull(np.arange(lo, min(keys, lo + (1 << 16)), dtype=np.uint64))
            bag = pt.EmbeddingBag(t)
            mlp = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(),
                                      torch.nn.Linear(256, 1))
            opt = torch.optim.SGD(mlp.parameters(), lr=0.01)

            def epoch(prefetch):
                batches = draw()
                wait = 0.0
                reads0 = t.stats().spill_reads
                for b in range(40):
                    if prefetch:
                        bag.prefetch(batches[b + 1])
                    t0 = time.perf_counter()
                    y = bag(batches[b], offsets)
                    wait += time.perf_counter() - t0
                    loss = mlp(y).square().mean()
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    for _ in range(3):  # the rest of a model's step
                        mlp(torch.randn(4096, 64)).sum().backward()
                return wait, t.stats().spill_reads - reads0

            res = {True: [], False: []}
            for _ in range(rounds):
                for p in random.sample([True, False], 2):
                    res[p].append(epoch(p))
            w_on = statistics.median(w for w, _ in res[True])
            w_off = statistics.median(w for w, _ in res[False])
            print(f"  forward waits {w_off * 1e3:.1f} ms per 40 batches without prefetch "
                  f"({statistics.median(r for _, r in res[False]):.0f} rows read back), "
                  f"{w_on * 1e3:.1f} ms with ({statistics.median(r for _, r in res[True]):.0f}"
                  f" rows read back): {w_on / w_off:.3f}x")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("what", nargs="*", default=["calls", "train", "ranks", "prefetch"])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--examples", type=int, default=600000)
    p.add_argument("--batch", type=int, nargs="+", default=[512, 2048],
                   help="ranks: examples per rank per step")
    p.add_argument("--keys", type=int, default=2000000)
    p.add_argument("--budget", default="128M")
    a = p.parse_args()
    random.seed(42)
    print(f"pskv {pskv.__version__} ({pskv.library_path}), python {sys.version.split()[0]}")
    for w in a.what:
        if w == "calls":
            bench_calls(max(a.rounds, 5))
        elif w == "train":
            bench_train(a.rounds, a.examples)
        elif w == "ranks":
            for batch in a.batch:
                bench_ranks(a.rounds, a.examples, batch)
        elif w == "prefetch":
            bench_prefetch(a.rounds, a.keys, a.budget)
        else:
            p.error(f"unknown part {w}")


if __name__ == "__main__":
    main()
