"""pskv.torch: store-backed Embedding / EmbeddingBag against torch's own
modules and optimizers, step for step."""
import numpy as np
import pytest
import torch

import pskv
import pskv.torch as pt

N, DIM = 300, 8


def lockstep(optimizer, table_cfg, make_torch_opt, mode="sum", steps=200, every_row=False,
             per_sample=False, padding_idx=None):
    torch.manual_seed(0)
    rng = np.random.default_rng(3)
    with pskv.open() as s:
        t = s.table("emb", f"dim={DIM} optimizer={optimizer} {table_cfg} "
                           "init=normal:0:0.5 seed=11")
        bag = pt.EmbeddingBag(t, mode=mode, padding_idx=padding_idx)
        # (max mode has no sparse gradient in torch: dense SGD takes the
        # same steps, rows without gradient stay as they are)
        ref = torch.nn.EmbeddingBag(N, DIM, mode=mode, sparse=mode != "max",
                                    padding_idx=padding_idx)
        with torch.no_grad():
            ref.weight.copy_(torch.from_numpy(t.pull(np.arange(N))))
            if padding_idx is not None:
                ref.weight[padding_idx].zero_()
        opt = make_torch_opt(ref.parameters())
        target = torch.randn(16, DIM)
        for _ in range(steps):
            if every_row:
                ids = torch.from_numpy(rng.permutation(np.concatenate(
                    [np.arange(N), rng.integers(0, N, 100)])))
            else:
                ids = torch.from_numpy(rng.zipf(1.3, 200) % N)
            cuts = np.sort(rng.choice(np.arange(1, len(ids)), 15, replace=False))
            offsets = torch.from_numpy(np.concatenate([[0], cuts]))
            w = torch.rand(len(ids)) if per_sample else None
            out = bag(ids, offsets, per_sample_weights=w)
            want = ref(ids, offsets, per_sample_weights=w)
            assert torch.allclose(out, want, rtol=1e-4, atol=1e-5)
            loss = ((out - target) ** 2).mean()
            loss.backward()
            opt.zero_grad()
            ((want - target) ** 2).mean().backward()
            opt.step()
        rows = t.pull(np.arange(N))
        mine = torch.from_numpy(rows)
        if padding_idx is not None:
            mine[padding_idx] = 0  # never read from the table: it still has its initial row
        ref_w = ref.weight.detach()
        assert torch.allclose(mine, ref_w, rtol=1e-5, atol=1e-6), \
            (mine - ref_w).abs().max().item()
        return t.stats()


def test_sgd_matches_torch():
    st = lockstep("sgd", "lr=0.05", lambda p: torch.optim.SGD(p, lr=0.05))
    assert st.pushed > 0


def test_adagrad_matches_torch():
    lockstep("adagrad", "lr=0.1", lambda p: torch.optim.Adagrad(p, lr=0.1))


def test_adagrad_mean_and_padding():
    lockstep("adagrad", "lr=0.1", lambda p: torch.optim.Adagrad(p, lr=0.1), mode="mean",
             padding_idx=0)


def test_per_sample_weights():
    lockstep("sgd", "lr=0.05", lambda p: torch.optim.SGD(p, lr=0.05), per_sample=True)


def test_max_mode():
    lockstep("sgd", "lr=0.05", lambda p: torch.optim.SGD(p, lr=0.05), mode="max", steps=50)


def test_adam_matches_sparse_adam_when_every_row_steps():
    # SparseAdam counts steps per tensor, pskv per row: they agree when
    # every row takes part in every step (docs/PYTHON.md).
    lockstep("adam", "lr=0.01", lambda p: torch.optim.SparseAdam(list(p), lr=0.01),
             every_row=True, steps=100)


def test_embedding_matches_and_pads():
    with pskv.open() as s:
        t = s.table("e", "dim=4 optimizer=sgd lr=1 init=uniform:-1:1 seed=2")
        emb = pt.Embedding(t, padding_idx=7)
        ids = torch.tensor([[1, 7, 3], [3, 3, 1]])
        out = emb(ids)
        assert out.shape == (2, 3, 4)
        w = torch.from_numpy(t.pull([1, 3]))
        assert torch.equal(out[0, 0], w[0]) and torch.equal(out[1, 2], w[0])
        assert not out[0, 1].any()
        out.sum().backward()  # d/dw = number of uses
        after = torch.from_numpy(t.pull([1, 3]))
        assert torch.allclose(after, w - torch.tensor([[2.0], [3.0]]))
        assert t.get([7])[1].tolist() == [False]  # padding never touched the table
        assert emb.state_dict() == {} and list(emb.parameters()) == []


def test_eval_and_no_grad_only_read():
    with pskv.open() as s:
        t = s.table("e", "dim=4 optimizer=sgd lr=1")
        bag = pt.EmbeddingBag(t)
        ids, off = torch.tensor([1, 2]), torch.tensor([0])
        with torch.no_grad():
            bag(ids, off)
        bag.eval()
        y = bag(ids, off)
        assert not y.requires_grad
        assert t.stats().pushed == 0 and t.stats().pulled == 4


def test_2d_input_and_include_last_offset():
    with pskv.open() as s:
        t = s.table("e", "dim=4 init=normal:0:1 seed=5")
        a = pt.EmbeddingBag(t, mode="sum")
        b = pt.EmbeddingBag(t, mode="sum", include_last_offset=True)
        x = torch.tensor([[1, 2], [3, 4]])
        y1 = a(x)
        y2 = b(x.reshape(-1), torch.tensor([0, 2, 4]))
        assert torch.equal(y1, y2)
    with pytest.raises(TypeError):
        pt.EmbeddingBag(t)(torch.tensor([1.0]), torch.tensor([0]))


def test_prefetch_on_a_spilling_table(tmp_path):
    with pskv.open(tmp_path, "durability=none memory_budget=256K") as s:
        t = s.table("e", "dim=32 optimizer=adagrad")
        bag = pt.EmbeddingBag(t)
        t.pull(np.arange(20000))  # most rows now spilled
        nxt = torch.arange(100, 1100)
        bag.prefetch(nxt)
        y = bag(nxt, torch.tensor([0, 500]))
        y.sum().backward()
        assert t.stats().spill_reads > 0 and t.stats().pushed == 1000


def test_per_sample_weights_get_their_gradient():
    with pskv.open() as s:
        t = s.table("e", "dim=4 optimizer=sgd lr=1e-30 init=normal:0:1 seed=3")
        bag = pt.EmbeddingBag(t, mode="sum", padding_idx=9)
        ref = torch.nn.EmbeddingBag(10, 4, mode="sum", padding_idx=9)
        with torch.no_grad():
            ref.weight.copy_(torch.from_numpy(t.pull(np.arange(10))))
            ref.weight[9].zero_()
        ids, off = torch.tensor([1, 9, 2, 2, 5]), torch.tensor([0, 3])
        w1 = torch.rand(5, requires_grad=True)
        w2 = w1.detach().clone().requires_grad_(True)
        (bag(ids, off, per_sample_weights=w1) ** 2).sum().backward()
        (ref(ids, off, per_sample_weights=w2) ** 2).sum().backward()
        assert torch.allclose(w1.grad, w2.grad, rtol=1e-5, atol=1e-6), (w1.grad, w2.grad)


@pytest.mark.parametrize("mode", ["sum", "mean"])
@pytest.mark.parametrize("width", [1, 3])
def test_2d_input_gradients(mode, width):
    with pskv.open() as s:
        t = s.table("e", "dim=4 optimizer=sgd lr=0.5 init=normal:0:1 seed=8")
        bag = pt.EmbeddingBag(t, mode=mode)
        ref = torch.nn.EmbeddingBag(20, 4, mode=mode, sparse=True)
        with torch.no_grad():
            ref.weight.copy_(torch.from_numpy(t.pull(np.arange(20))))
        opt = torch.optim.SGD(ref.parameters(), lr=0.5)
        x = torch.tensor([[1, 4, 4], [7, 1, 19], [4, 4, 4], [2, 3, 1]])[:, :width]
        (bag(x) ** 2).sum().backward()
        (ref(x) ** 2).sum().backward()
        opt.step()
        assert torch.allclose(torch.from_numpy(t.pull(np.arange(20))), ref.weight, rtol=1e-5,
                              atol=1e-6)


def test_review_findings():
    with pskv.open() as s:
        t = s.table("e", "dim=4 optimizer=adam lr=0.1 init=normal:0:1 seed=3")
        bag = pt.EmbeddingBag(t, mode="sum")
        with pytest.raises(ValueError):
            pt.EmbeddingBag(t, include_last_offset=True)(torch.tensor([[1, 2]]))
        with pytest.raises(Exception):  # torch refuses weights in max mode
            pt.EmbeddingBag(t, mode="max")(torch.tensor([1, 2]), torch.tensor([0]),
                                           per_sample_weights=torch.ones(2))
        # eval: no push, but weights that want a gradient get it
        bag.eval()
        w = torch.ones(3, requires_grad=True)
        bag(torch.tensor([1, 2, 3]), torch.tensor([0]), per_sample_weights=w).sum().backward()
        assert w.grad is not None and t.stats().pushed == 0
        # max mode pushes only rows some feature's maximum came from
        t.put([10, 11], np.stack([np.full(4, 5, np.float32), np.full(4, -5, np.float32)]))
        mx = pt.EmbeddingBag(t, mode="max")
        mx(torch.tensor([10, 11]), torch.tensor([0])).sum().backward()
        assert t.stats().pushed == 1
        assert np.all(t.get([11])[0] == -5)  # never pushed: Adam did not move it


def test_include_last_offset_ignores_positions_past_the_end():
    with pskv.open() as s:
        t = s.table("e", "dim=3 optimizer=sgd lr=1 init=normal:0:1 seed=2")
        ref = torch.nn.EmbeddingBag(10, 3, mode="sum", include_last_offset=True, sparse=True)
        with torch.no_grad():
            ref.weight.copy_(torch.from_numpy(t.pull(np.arange(10))))
        bag = pt.EmbeddingBag(t, include_last_offset=True)
        off = torch.tensor([0, 2, 4])
        y = bag(torch.tensor([1, 2, 3, 4, 5]), off)   # 5 is past the last offset
        yr = ref(torch.tensor([1, 2, 3, 4]), off)      # (torch's backward fails with it)
        assert torch.allclose(y, yr)
        y.sum().backward()
        yr.sum().backward()
        torch.optim.SGD(ref.parameters(), lr=1).step()
        assert np.allclose(t.pull(np.arange(10)), ref.weight.detach().numpy())
