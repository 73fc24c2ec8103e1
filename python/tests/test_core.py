"""pskv's Python binding over the C library: rows, errors, durability,
transfer. Run by `meson test` (python-core) with /usr/bin/python3."""
import subprocess
import sys
import threading

import numpy as np
import pytest

import pskv
from pskv import errors

CFG = "dim=8 optimizer=adagrad lr=0.1 init=uniform:-0.1:0.1 seed=7"


@pytest.fixture
def store():
    with pskv.open() as s:
        yield s


@pytest.fixture
def table(store):
    return store.table("t", CFG)


def snapshot(t):
    keys = []
    rows = []
    for k, w in t:
        keys.append(k)
        rows.append(w)
    order = np.argsort(np.array(keys, dtype=np.uint64))
    return np.array(keys, dtype=np.uint64)[order], np.array(rows)[order] if rows else np.array(rows)


# ---------------------------------------------------------------- rows

def test_pull_is_deterministic_and_creates(store, table):
    a = table.pull(np.arange(1, 101, dtype=np.uint64))
    assert a.shape == (100, 8) and a.dtype == np.float32
    assert len(table) == 100
    assert np.all(np.abs(a) <= 0.1) and np.any(a != 0)
    other = store.table("u", CFG)  # same seed and init: the same first rows
    assert np.array_equal(other.pull(np.arange(1, 101)), a)


def test_key_types_share_bits(table):
    neg = np.array([-1, -2, 5], dtype=np.int64)
    a = table.pull(neg)
    b = table.pull(neg.view(np.uint64))
    c = table.pull([2**64 - 1, 2**64 - 2, 5])
    assert np.array_equal(a, b) and np.array_equal(a, c)
    assert np.array_equal(table.pull(np.array([5], dtype=np.int32)), a[2:])
    assert np.array_equal(table.pull(5), a[2:])
    assert np.array_equal(table.pull(neg[::-1][::-1]), a)  # a strided view
    with pytest.raises(pskv.InvalidArgument):
        table.pull(np.array([1.0, 2.0]))


def test_push_applies_adagrad(table):
    keys = np.array([3, 4], dtype=np.uint64)
    w0 = table.pull(keys)
    g = np.full((2, 8), 0.5, dtype=np.float32)
    table.push(keys, g)
    # adagrad: acc = g^2, w -= lr * g / (sqrt(acc) + eps)
    expect = w0 - 0.1 * g / (np.sqrt(g * g) + 1e-10)
    assert np.allclose(table.pull(keys), expect, rtol=1e-6, atol=1e-7)
    assert table.stats().pushed == 2


def test_get_put_erase(table):
    v = np.arange(24, dtype=np.float32).reshape(3, 8)
    table.put([10, 11, 12], v)
    got, found = table.get([10, 99, 12])
    assert found.tolist() == [True, False, True]
    assert np.array_equal(got[0], v[0]) and np.array_equal(got[2], v[2])
    assert not got[1].any()
    table.erase([10, 12, 1234])
    assert table.get([10, 11, 12])[1].tolist() == [False, True, False]
    assert len(table) == 1


def test_out_buffer_and_views(table):
    out = np.empty((4, 8), dtype=np.float32)
    r = table.pull([1, 2, 3, 4], out=out)
    assert r is out
    with pytest.raises(pskv.InvalidArgument):
        table.pull([1, 2, 3, 4], out=np.empty((4, 8), dtype=np.float64))
    with pytest.raises(pskv.InvalidArgument):
        table.pull([1, 2], out=np.empty((4, 8), dtype=np.float32))


def test_wrong_values_change_nothing(table):
    table.put([1, 2], np.ones((2, 8), dtype=np.float32))
    before = snapshot(table)
    for bad in (np.ones((2, 8)),                                   # float64
                np.ones((8, 2), dtype=np.float32),                 # wrong shape
                np.ones((2, 16), dtype=np.float32)[:, ::2],        # not contiguous
                np.ones((3, 8), dtype=np.float32),                 # wrong count
                "rows"):
        with pytest.raises(pskv.InvalidArgument):
            table.push([1, 2], bad)
        with pytest.raises(pskv.InvalidArgument):
            table.put([1, 2], bad)
    nan = np.ones((2, 8), dtype=np.float32)
    nan[1, 3] = np.nan
    with pytest.raises(pskv.InvalidArgument) as e:
        table.push([1, 2], nan)
    assert e.value.code == -1 and e.value.name == "PSKV_EINVAL" and "key 2" in e.value.detail
    after = snapshot(table)
    assert np.array_equal(before[0], after[0]) and np.array_equal(before[1], after[1])


def test_threads_push_in_parallel(table):
    keys = np.arange(1000, dtype=np.uint64)
    g = np.full((1000, 8), 0.01, dtype=np.float32)

    def work():
        for _ in range(20):
            table.push(keys, g)

    ts = [threading.Thread(target=work) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert table.stats().pushed == 4 * 20 * 1000


def test_info_stats_tables(store, table):
    info = table.info()
    assert info.dim == 8 and info.state_floats == 8 and info.row_bytes == 64
    assert "optimizer=adagrad" in info.schema and "dim=8" in info.config
    assert pskv.open().table("x", info.config).info().schema == info.schema
    table.pull([1])
    assert table.stats().pulled == 1 and table.stats().rows_created == 1
    names = [d.name for d in store.tables()]
    assert names == ["t"]
    assert store.stats().tables == 1 and store.stats().rows == 1
    assert table.version > 0


# ---------------------------------------------------------------- errors

def test_every_code_has_its_class():
    for code in range(-1, -15, -1):
        e = errors.error(code, "why")
        assert isinstance(e, pskv.Error) and type(e) is not pskv.Error
        assert e.code == code and e.name.startswith("PSKV_E") and e.detail == "why"
        assert type(e).code == code
    assert isinstance(errors.error(-1, ""), ValueError)
    assert isinstance(errors.error(-3, ""), LookupError)
    import pickle
    e = pickle.loads(pickle.dumps(errors.error(-7, "pid 1")))
    assert isinstance(e, pskv.Busy) and e.detail == "pid 1"


def test_errors_from_the_library(tmp_path, store, table):
    with pytest.raises(pskv.InvalidArgument) as e:
        store.table("bad", "dim=8 optimiser=sgd")
    assert "optimizer" in e.value.detail
    with pytest.raises(pskv.SchemaMismatch):
        store.table("t", "dim=9")
    with pytest.raises(pskv.NotFound):
        store.find_table("nope")
    with pytest.raises(pskv.NotSupported):
        store.checkpoint()
    d = tmp_path / "s"
    with pskv.open(d) as s:
        with pytest.raises(pskv.Busy):
            pskv.open(d)
        s.table("t", "dim=4").pull([1])
        s.checkpoint()
        s.backup(tmp_path / "b")
        with pytest.raises(pskv.AlreadyExists):
            s.backup(tmp_path / "b")
    with pytest.raises(pskv.Corrupt):
        table.apply(b"\0" * 64)
    with pytest.raises(pskv.CodecRange):
        pskv.chunk_encode([1], np.full((1, 8), 1e6, dtype=np.float32), codec="fp16")
    with pytest.raises(pskv.Stale):
        table.export(since=12345).next()
    with pytest.raises(pskv.InvalidArgument):
        table.apply(pskv.chunk_encode([1], np.ones((1, 8), dtype=np.float32)), mode="merge")
    # A push whose step would not be finite: that row stays, the others apply.
    sgd = store.table("sgd", "dim=8 optimizer=sgd lr=1")
    sgd.put([1, 2], np.full((2, 8), 3e38, dtype=np.float32))
    with pytest.raises(pskv.OutOfRange):
        sgd.push([1, 2], np.stack([np.full(8, -3e38, np.float32), np.ones(8, np.float32)]))
    assert np.all(sgd.get([1])[0] == np.float32(3e38))
    assert np.all(sgd.get([2])[0] == np.float32(3e38) - 1)
    assert sgd.stats().push_nonfinite == 1
    with pskv.open(tmp_path / "sp", "durability=none memory_budget=16K spill_max=64K") as s:
        sp = s.table("t", "dim=64 optimizer=none")
        done = 0
        with pytest.raises(pskv.NoSpace):
            for b in range(100):
                sp.put(np.arange(b * 100, b * 100 + 100), np.full((100, 64), b, np.float32))
                done = b + 1
        assert done > 0
        for b in range(done):  # what was acknowledged is intact
            assert np.all(sp.get(np.arange(b * 100, b * 100 + 100))[0] == b)


def test_closed_store_raises_never_crashes(tmp_path):
    s = pskv.open(tmp_path / "c")
    t = s.table("t", "dim=4")
    t.pull([1, 2, 3])
    s.checkpoint()
    it = t.iterate()
    ex = t.export()
    s.close()
    s.close()  # twice: a no-op
    assert s.closed
    for call in (lambda: t.pull([1]), lambda: t.push([1], np.ones((1, 4), np.float32)),
                 lambda: len(t), lambda: t.stats(), lambda: s.table("t"),
                 lambda: s.checkpoint(), lambda: next(it), lambda: ex.next()):
        with pytest.raises(pskv.InvalidArgument):
            call()
    it.close()
    ex.close()


# ---------------------------------------------------------------- durability

def test_checkpoint_meta_reopen(tmp_path):
    d = tmp_path / "d"
    with pskv.open(d) as s:
        t = s.table("emb", "dim=4 optimizer=adam")
        t.push(np.arange(100), np.ones((100, 4), dtype=np.float32))
        seq = s.checkpoint(meta=b"step=7")
        assert seq == s.stats().checkpoint_seq and seq > 0
        w = t.pull(np.arange(100))
        ck = s.checkpoint_start(meta=b"step=8")
        t.push(np.arange(100), np.ones((100, 4), dtype=np.float32))  # after the instant
        assert ck.wait() == seq + 1 and ck.done() and ck.wait() == seq + 1
        assert s.checkpoint_meta() == (b"step=8", seq + 1)
        s.close(discard=True)  # the last push is dropped, as after a crash
    descs = pskv.dir_tables(d)
    assert [(x.name, x.rows, x.dim) for x in descs] == [("emb", 100, 4)]
    with pskv.open(d) as s:
        t = s.table("emb")
        assert np.array_equal(t.pull(np.arange(100)), w)
        assert s.checkpoint_meta() == (b"step=8", seq + 1)
    with pskv.open(d, f"at_seq={seq}") as s:  # one undo generation back
        assert s.checkpoint_meta()[1] == seq
    before, after = pskv.compact(d)
    assert after <= before


def test_sync_and_staleness(store):
    t = store.table("sync", "dim=4 optimizer=sgd lr=1 update=sync")
    t.pull([1])
    t.push([1], np.ones((1, 4), np.float32))
    t.push([1], np.ones((1, 4), np.float32))
    assert not t.pull([1]).any()  # pushes wait for the step
    t.step()
    assert np.all(t.pull([1]) == -2) and t.stats().stepped == 1
    s = store.table("stale", "dim=4 optimizer=sgd lr=1 staleness=2")
    s.push_at([1], np.ones((1, 4), np.float32), 10)
    s.push_at([1], np.ones((1, 4), np.float32), 7)  # 3 behind: dropped
    assert np.all(s.pull([1]) == -1) and s.stats().stale_dropped == 1


# ---------------------------------------------------------------- transfer

def test_export_apply_replica(store, table):
    table.push(np.arange(500), np.full((500, 8), 0.1, np.float32))
    with pskv.open() as r:
        replica = r.table("t", CFG)
        with table.export(0, "payload=rows codec=fp32") as ex:
            for chunk in ex:
                assert pskv.chunk_info(chunk).kind == "rows"
                replica.apply(chunk, since=0)
            cursor = ex.version
        assert np.array_equal(replica.pull(np.arange(500)), table.pull(np.arange(500)))
        table.erase([1, 2])
        table.push([3], np.ones((1, 8), np.float32))
        with table.export(cursor) as ex:
            for chunk in ex:
                replica.apply(chunk, since=cursor)
        assert replica.get([1, 2])[1].tolist() == [False, False]
        assert np.array_equal(replica.pull([3]), table.pull([3]))


def test_chunks_and_grad_messages():
    keys = np.array([5, 3, 5, 9], dtype=np.uint64)
    vals = np.arange(32, dtype=np.float32).reshape(4, 8)
    c = pskv.chunk_encode(keys, np.zeros((4, 8), np.float32), codec="bf16", lz4=True)
    assert pskv.chunk_info(c).lz4 and not pskv.chunk_decode(c).values.any()
    c = pskv.chunk_encode(keys, vals, codec="bf16", lz4=False)
    info = pskv.chunk_info(bytes(c))
    assert (info.kind, info.codec, info.rows, info.dim, info.lz4) == ("values", "bf16", 4, 8, False)
    d = pskv.chunk_decode(c)
    assert d.keys.tolist() == [3, 5, 5, 9] and d.state is None
    assert np.allclose(d.values[0], vals[1], rtol=1e-2)
    # Error feedback: decoded messages plus the residual sum to every gradient.
    rng = np.random.default_rng(1)
    with pskv.open() as s:
        res = s.table("res", "dim=8 optimizer=none")
        total = {}
        sent = {}
        for _ in range(20):
            k = rng.integers(0, 50, 64).astype(np.uint64)
            g = rng.standard_normal((64, 8)).astype(np.float32)
            for ki, gi in zip(k, g):
                total[int(ki)] = total.get(int(ki), 0) + gi.astype(np.float64)
            m = pskv.grad_encode(k, g, codec="int8", topk=0.1, residual=res)
            dm = pskv.chunk_decode(m)
            assert len(dm.keys) == int(np.ceil(0.1 * len(np.unique(k))))
            for ki, vi in zip(dm.keys, dm.values):
                sent[int(ki)] = sent.get(int(ki), 0) + vi.astype(np.float64)
        keys = np.array(sorted(total), dtype=np.uint64)
        r, _ = res.get(keys)
        for i, k in enumerate(keys):
            assert np.allclose(sent.get(int(k), 0) + r[i], total[int(k)], atol=1e-4)
    with pytest.raises(pskv.InvalidArgument):
        pskv.grad_encode([1], np.ones(8, np.float32))  # no dim, no residual, 1-D grads


def test_ring_and_feature_ids():
    a, b = pskv.Ring(seed=3, nodes=[0, 1, 2]), pskv.Ring(seed=3)
    for n in (2, 0, 1):
        b.add(n)
    keys = np.arange(10000, dtype=np.uint64)
    ra = a.route(keys)
    assert np.array_equal(ra, b.route(keys)) and set(ra.tolist()) == {0, 1, 2}
    a.remove(1)
    moved = ra != a.route(keys)
    assert np.all(ra[moved] == 1) and len(a) == 2
    with pytest.raises(pskv.NotFound):
        pskv.Ring().route([1])
    ids = pskv.feature_ids(["ab", b"", "c"], ns="user")
    assert ids.tolist() == [pskv.feature_id(x, ns="user") for x in ("ab", "", "c")]
    assert pskv.feature_id("ab") != pskv.feature_id("ab", ns="user")


def test_module_main_runs():
    out = subprocess.run([sys.executable, "-m", "pskv"], capture_output=True, text=True,
                         check=True).stdout
    assert out.startswith(f"pskv {pskv.__version__}") and "library:" in out


# ---------------------------------------------------------------- review findings

def test_handles_are_not_copied_or_pickled(store, table):
    import copy
    import pickle
    assert copy.deepcopy(table) is table and copy.copy(table) is table
    for obj in (store, table.iterate(), table.export()):
        with pytest.raises(TypeError):
            pickle.dumps(obj)
    for obj in (store, table.iterate(), table.export()):
        with pytest.raises(TypeError):
            copy.deepcopy(obj)
    r = pskv.Ring(seed=5, nodes=[0, 1, 2])
    r2 = copy.deepcopy(r)
    keys = np.arange(1000)
    assert np.array_equal(r.route(keys), r2.route(keys))
    del r2
    assert len(r.route(keys)) == 1000  # the copy had its own C ring


def test_keys_out_of_range_and_bools_refused(table):
    for bad in ([2**64 + 5], [-(2**63) - 1], [True], True, np.array([True])):
        with pytest.raises(pskv.InvalidArgument):
            table.pull(bad)
    assert np.array_equal(table.pull([-1]), table.pull([2**64 - 1]))
    for bad in (5, 2.5, None):
        with pytest.raises(pskv.InvalidArgument):
            pskv.feature_id(bad)
    with pytest.raises(pskv.InvalidArgument):
        pskv.feature_ids([1, 2])
    assert pskv.feature_id(memoryview(b"ab")) == pskv.feature_id("ab")


def test_integer_arguments_are_checked(store):
    t = store.table("st", "dim=4 optimizer=sgd lr=1 staleness=2")
    for call in (lambda: t.push_at([1], np.ones((1, 4), np.float32), -1),
                 lambda: t.reshard(2**32 + 4), lambda: t.reshard(True),
                 lambda: t.export(since=-1), lambda: pskv.Ring().add(-1),
                 lambda: pskv.Ring(vnodes=-5)):
        with pytest.raises(pskv.InvalidArgument):
            call()
    assert t.stats().stale_dropped == 0 and t.info().shards == 64


def test_conversions_that_would_hide_copies_are_refused():
    with pytest.raises(pskv.InvalidArgument):
        pskv.chunk_encode([1], np.ones((1, 4)))  # float64
    c = pskv.chunk_encode([1], [[1.0, 2.0, 3.0, 4.0]])  # a list: converted
    assert pskv.chunk_info(c).dim == 4
    m = pskv.grad_encode([1, 2], [[1.0, 2.0], [3.0, 4.0]])
    assert pskv.chunk_info(m).rows == 2
    with pytest.raises(pskv.InvalidArgument):
        pskv.open().checkpoint(meta="text")
    misaligned = np.frombuffer(bytes(4 * 4 + 1), dtype=np.uint8)[1:].view(np.float32)
    assert not misaligned.flags.aligned
    with pytest.raises(pskv.InvalidArgument):
        pskv.open().table("t", "dim=4").put([1], misaligned)


def test_store_dropped_without_close_releases_its_directory(tmp_path):
    s = pskv.open(tmp_path / "d")
    s.table("t", "dim=4").pull([1])
    del s  # no cycle between a store and its tables: closed at once
    pskv.open(tmp_path / "d").close()


def test_iterator_keeps_its_store_open():
    it = pskv.open().table("x", "dim=4").iterate()
    import gc
    gc.collect()
    assert list(it) == []
