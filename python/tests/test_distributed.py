"""pskv.torch.distributed over gloo on 127.0.0.1: sharded lookups equal a
single process's, gradients reach the owners, compressed gradients shrink,
and checkpoints survive a rank killed mid-job (open_consistent)."""
import datetime
import multiprocessing as mp
import os
import pickle
import signal

import numpy as np
import pytest
import torch
import torch.distributed as dist

import pskv
import pskv.torch as pt
import pskv.torch.distributed as pdist

CFG = "dim=8 optimizer=sgd lr=0.1 init=normal:0:1 seed=4"


def init(rank, world, rendezvous):
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank,
                            world_size=world, timeout=datetime.timedelta(seconds=20))


def batch(rank, step, n=120):
    rng = np.random.default_rng(1000 * step + rank)
    ids = torch.from_numpy(rng.zipf(1.2, n).astype(np.int64) % 5000)
    cuts = np.sort(rng.choice(np.arange(1, n), 9, replace=False))
    return ids, torch.from_numpy(np.concatenate([[0], cuts]))


def lookup_worker(rank, world, rendezvous, codec, topk, mode, out, prefetch=False):
    init(rank, world, rendezvous)
    torch.set_num_threads(1)
    with pskv.open() as s, pskv.open() as ref_store:
        bag = pdist.ShardedEmbeddingBag(s, "emb", CFG, mode=mode, codec=codec, topk=topk,
                                        max_message_bytes=256)  # forces rounds
        ref = pt.EmbeddingBag(ref_store.table("emb", CFG), mode=mode)
        for step in range(3):
            ids, off = batch(rank, step)
            y = bag(ids, off)
            if prefetch and step < 2:  # backward brings the next batch's rows
                bag.prefetch(batch(rank, step + 1)[0])
                assert bag._ready is None
            # Forward equals one process holding every row (rows come from
            # the same key-seeded initializer and the same pushes).
            want = ref(ids, off)
            if step == 0 or (codec == "fp32" and topk == 1.0):  # (lossy: the first only)
                assert torch.allclose(y, want, rtol=1e-5, atol=1e-6), (y - want).abs().max()
            y.pow(2).mean().backward()
            # The reference takes every rank's gradients, computed from the
            # rows before the step, in rank order (as owners apply them).
            outs = [want if r == rank else ref(*batch(r, step)) for r in range(world)]
            for o in outs:
                o.pow(2).mean().backward()
            if prefetch and step < 2:
                assert bag._ready is not None  # the next forward makes no lookup
            dist.barrier()
        # Owners hold exactly their keys.
        mine = np.array([k for k, _ in bag.table], dtype=np.uint64)
        assert np.all(bag.ring.route(mine) == rank)
        if codec == "fp32" and topk == 1.0:
            w, _ = ref.table.get(mine)
            assert np.allclose(bag.table.get(mine)[0], w, rtol=1e-5, atol=1e-6)
        with open(f"{out}.{rank}", "wb") as f:
            pickle.dump((bag.grad_bytes, bag.grad_bytes_fp32, len(mine)), f)
    dist.destroy_process_group()


def run(world, target, *args, timeout=120):
    ctx = mp.get_context("spawn")
    ps = [ctx.Process(target=target, args=(r, world) + args) for r in range(world)]
    for p in ps:
        p.start()
    for p in ps:
        p.join(timeout)
    codes = [p.exitcode for p in ps]
    for p in ps:
        if p.is_alive():
            p.kill()
    return codes


@pytest.mark.parametrize("world", [2, 3])
def test_sharded_lookup_and_gradients(tmp_path, world):
    out = str(tmp_path / "res")
    assert run(world, lookup_worker, str(tmp_path / "rdv"), "fp32", 1.0, "sum", out) == \
        [0] * world
    rows = [pickle.load(open(f"{out}.{r}", "rb")) for r in range(world)]
    assert all(n > 0 for _, _, n in rows)  # every rank owns some keys


def test_sharded_max_mode(tmp_path):
    out = str(tmp_path / "res")
    assert run(2, lookup_worker, str(tmp_path / "rdv"), "fp32", 1.0, "max", out) == [0, 0]


@pytest.mark.parametrize("world", [2, 3])
def test_sharded_prefetch_equals_lookup(tmp_path, world):
    # Rows a prefetch brought equal what one process holding every row
    # reads after every gradient of the step: nothing stale.
    out = str(tmp_path / "res")
    assert run(world, lookup_worker, str(tmp_path / "rdv"), "fp32", 1.0, "sum", out, True) == \
        [0] * world


def test_sharded_prefetch_compressed(tmp_path):
    out = str(tmp_path / "res")
    assert run(2, lookup_worker, str(tmp_path / "rdv"), "int8", 0.5, "mean", out, True) == \
        [0, 0]


def test_compressed_gradients(tmp_path):
    out = str(tmp_path / "res")
    assert run(2, lookup_worker, str(tmp_path / "rdv"), "int8", 0.5, "mean", out) == [0, 0]
    sent = [pickle.load(open(f"{out}.{r}", "rb")) for r in range(2)]
    for grad_bytes, fp32_bytes, _ in sent:
        assert 0 < grad_bytes < fp32_bytes / 4


def prefetch_twin_worker(rank, world, rendezvous, codec, topk):
    """A module run twice per step (two micro-batches, one loss) with
    prefetch gives, step for step, the same outputs as one without."""
    init(rank, world, rendezvous)
    torch.set_num_threads(1)
    with pskv.open() as s, pskv.open() as s2:
        bag = pdist.ShardedEmbeddingBag(s, "emb", CFG, codec=codec, topk=topk)
        plain = pdist.ShardedEmbeddingBag(s2, "emb", CFG, codec=codec, topk=topk)
        for step in range(4):
            a, b = batch(rank, 2 * step), batch(rank, 2 * step + 1)
            ya, yb = bag(*a), bag(*b)
            pa, pb = plain(*a), plain(*b)
            assert torch.equal(ya, pa) and torch.equal(yb, pb), step
            if step < 3:
                bag.prefetch(batch(rank, 2 * step + 2)[0])
            (ya.pow(2).sum() + yb.sum()).backward()
            (pa.pow(2).sum() + pb.sum()).backward()
            assert (bag._ready is not None) == (step < 3)
        # An evaluation after a step that prefetched: drop it first.
        y = bag(*batch(rank, 10))
        bag.prefetch(batch(rank, 11)[0])
        y.sum().backward()
        bag.drop_prefetch()
        with torch.no_grad():  # no ValueError: the prefetch is gone on every rank
            assert bag(*batch(rank, 12)).shape == (10, 8)
    dist.destroy_process_group()


@pytest.mark.parametrize("codec,topk", [("fp32", 1.0), ("int8", 0.5)])
def test_sharded_prefetch_twice_per_step(tmp_path, codec, topk):
    assert run(2, prefetch_twin_worker, str(tmp_path / "rdv"), codec, topk) == [0, 0]


def prefetch_misuse_worker(rank, world, rendezvous):
    init(rank, world, rendezvous)
    torch.set_num_threads(1)
    with pskv.open() as s:
        bag = pdist.ShardedEmbeddingBag(s, "emb", CFG)
        y = bag(*batch(rank, 1))
        bag.prefetch(batch(rank, 2)[0])
        with pytest.raises(RuntimeError):  # named already
            bag.prefetch(batch(rank, 3)[0])
        y.sum().backward()
        with pytest.raises(ValueError):  # other ids than prefetched (every rank alike)
            bag(*batch(rank, 4))
        # Only rank 0 names its next batch: no rank answers with rows, and
        # the next forward looks them up as usual on every rank.
        y = bag(*batch(rank, 5))
        if rank == 0:
            bag.prefetch(batch(rank, 6)[0])
        y.sum().backward()
        y = bag(*batch(rank, 6))
        # Without backward (evaluation) a prefetch is dropped by the forward
        # of its batch.
        with torch.no_grad():
            bag.prefetch(batch(rank, 7)[0])
            bag(*batch(rank, 7))
            bag.prefetch(batch(rank, 8)[0])
        with pskv.open() as s2:
            sync = pdist.ShardedEmbeddingBag(s2, "sync", CFG + " update=sync")
            with pytest.raises(ValueError):
                sync.prefetch(batch(rank, 9)[0])
        dist.barrier()
    dist.destroy_process_group()


def test_sharded_prefetch_misuse(tmp_path):
    assert run(2, prefetch_misuse_worker, str(tmp_path / "rdv")) == [0, 0]


# ---------------------------------------------------------------- failures

def failing_worker(rank, world, rendezvous, out):
    """Rank 0's gradients do not fit fp16; then an owner's push fails: every
    rank must raise at the same exchange, none may wait for a timeout."""
    init(rank, world, rendezvous)
    results = []
    with pskv.open() as s:
        bag = pdist.ShardedEmbeddingBag(s, "emb", "dim=4 optimizer=sgd lr=1", codec="fp16")
        ids, off = torch.arange(40), torch.tensor([0, 20])
        y = bag(ids, off)
        try:
            (y.sum() * (1e6 if rank == 0 else 1.0)).backward()  # fp16 overflows on rank 0
            results.append("no error")
        except pskv.CodecRange:
            results.append("codec")
        except RuntimeError as e:
            results.append("peer" if "failed to send" in str(e) else repr(e))
        # An owner whose push fails tells everyone at the next exchange.
        bag = pdist.ShardedEmbeddingBag(s, "emb2", "dim=4 optimizer=sgd lr=1")
        bag.table.put(np.arange(40), np.full((40, 4), 3e38, np.float32))
        y = bag(ids, off)
        (-y.sum() * 3e38).backward()   # steps past FLT_MAX on every owner: ERANGE there
        try:
            bag(ids, off)
            results.append("no error")
        except pskv.OutOfRange:
            results.append("own")
        except RuntimeError as e:
            results.append("peer" if "apply" in str(e) else repr(e))
        bag(ids, off).sum().backward()  # the ranks still agree on the collectives after it
        results.append("went on")
    with open(f"{out}.{rank}", "wb") as f:
        pickle.dump(results, f)
    dist.destroy_process_group()


def test_failures_reach_every_rank(tmp_path):
    out = str(tmp_path / "res")
    assert run(2, failing_worker, str(tmp_path / "rdv"), out, timeout=60) == [0, 0]
    r0, r1 = (pickle.load(open(f"{out}.{r}", "rb")) for r in range(2))
    assert r0 == ["codec", "own", "went on"] and r1 == ["peer", "own", "went on"], (r0, r1)


# ---------------------------------------------------------------- checkpoints

def train_worker(rank, world, rendezvous, root, victim, kill_at=6):
    init(rank, world, rendezvous)
    torch.set_num_threads(1)
    s = pskv.open(os.path.join(root, f"rank{rank}"))
    bag = pdist.ShardedEmbeddingBag(s, "emb", "dim=4 optimizer=adagrad lr=0.1 seed=2")
    dense = torch.zeros(4)
    try:
        for step in range(1, 7):
            ids, off = batch(rank, step, n=60)
            bag(ids, off).sum().backward()
            dense += step
            if step % 2 == 0:
                if step == kill_at and rank == victim:
                    os.kill(os.getpid(), signal.SIGKILL)
                pdist.checkpoint(s, step, pickle.dumps(dense.clone()))
                if step == 4:  # what a restart at step 4 must find
                    keys = np.array(sorted(k for k, _ in bag.table), dtype=np.uint64)
                    np.save(os.path.join(root, f"rows{rank}.npy"), bag.table.get(keys)[0])
                    np.save(os.path.join(root, f"keys{rank}.npy"), keys)
    except RuntimeError:  # a peer died: leave the store at its last checkpoint
        s.close(discard=True)
        os._exit(3)
    s.close()


def resume_worker(rank, world, rendezvous, root, expect):
    init(rank, world, rendezvous)
    s, step, extra = pdist.open_consistent(os.path.join(root, f"rank{rank}"))
    assert step == expect, step
    if expect is None:  # back before the first checkpoint: no rows anywhere
        assert extra == b"" and s.table("emb").rows == 0
        s.close()
        dist.destroy_process_group()
        return
    assert torch.equal(pickle.loads(extra), torch.full((4,), 1.0 + 2 + 3 + 4))
    t = s.table("emb")
    keys = np.load(os.path.join(root, f"keys{rank}.npy"))
    assert sorted(k for k, _ in t) == keys.tolist()
    assert np.array_equal(t.get(keys)[0], np.load(os.path.join(root, f"rows{rank}.npy")))
    s.close()
    dist.destroy_process_group()


@pytest.mark.parametrize("kill_at,expect", [(6, 4), (2, None)])
def test_checkpoint_kill_one_rank_resume(tmp_path, kill_at, expect):
    root = str(tmp_path)
    codes = run(3, train_worker, str(tmp_path / "rdv1"), root, 2, kill_at)
    assert codes[2] == -signal.SIGKILL and all(c in (0, 3) for c in codes[:2]), codes
    assert run(3, resume_worker, str(tmp_path / "rdv2"), root, expect) == [0, 0, 0]
