"""funcgan.random: purity, batch independence, eager == vmap == compile, statistics.

Statistical thresholds are set so that a correct generator fails with
probability about 1e-6 per check (|z| < 5 standard errors), and the checks
run on fixed keys, so they are deterministic.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from funcgan import random as fr
from tests import strategies as S


@given(seed=S.seeds, shape=S.shapes, dtype=st.sampled_from([torch.float32, torch.float64]))
def test_normal_same_key_same_numbers(seed, shape, dtype):
    k = fr.key(seed)
    assert torch.equal(fr.normal(k, shape, dtype), fr.normal(k, shape, dtype))
    assert fr.normal(k, shape, dtype).shape == shape


@given(seed=S.seeds, n=st.integers(1, 64), pos=st.integers(0, 63), width=st.sampled_from([1, 8, 64]))
def test_key_numbers_do_not_depend_on_other_keys_in_batch(seed, n, pos, width):
    pos = pos % width
    keys = fr.split(fr.key(seed), width)
    alone = fr.normal(keys[pos], (n,))
    batched = torch.func.vmap(lambda k: fr.normal(k, (n,)), randomness="error")(keys)
    stacked = fr.normal(keys, (n,))
    assert torch.equal(batched[pos], alone)
    assert torch.equal(stacked[pos], alone)


def test_vmap_is_vectorized_not_a_loop():
    # randomness="error" proves no global RNG is touched; with vmap's per-example
    # fallback switched off, any op lacking a batching rule (a hidden loop over keys) raises.
    keys = fr.split(fr.key(3), 16)
    f = torch._C._functorch
    f._set_vmap_fallback_enabled(False)
    try:
        out = torch.func.vmap(lambda k: (fr.normal(k, (7,)), fr.uniform(k, (3,)), fr.split(k, 3), fr.fold_in(k, 5)),
                              randomness="error")(keys)
    finally:
        f._set_vmap_fallback_enabled(True)
    assert torch.equal(out[0], fr.normal(keys, (7,))) and out[2].shape == (16, 3, 2)


def test_compiled_equals_eager():
    keys = fr.split(fr.key(11), 8)

    def draw(k):
        a, b = fr.split(k)
        return fr.normal(a, (33,)), fr.uniform(b, (5, 2)), fr.bits(fr.fold_in(k, 7), (4,))

    eager = torch.func.vmap(draw)(keys)
    compiled = torch.compile(torch.func.vmap(draw), fullgraph=True, backend="aot_eager")(keys)
    for e, c in zip(eager, compiled):
        assert torch.equal(e, c)


@pytest.mark.slow
def test_inductor_compiled_equals_eager_to_rounding():
    keys = fr.split(fr.key(11), 8)
    f = lambda k: fr.normal(k, (1000,))
    eager = torch.func.vmap(f)(keys)
    compiled = torch.compile(torch.func.vmap(f), fullgraph=True)(keys)
    # integer words are exact; log/cos/sin may differ by a few ulp under inductor
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-6)


def test_uniform_range_and_float64_resolution():
    k = fr.key(0)
    u32 = fr.uniform(k, (100_000,))
    u64 = fr.uniform(k, (100_000,), torch.float64)
    assert u32.min() >= 0 and u32.max() < 1 and u64.min() >= 0 and u64.max() < 1
    # float64 draws use 53 bits: far more distinct values than 24-bit float32 draws
    frac = (u64 * 2**24) - torch.floor(u64 * 2**24)
    assert (frac > 0).float().mean() > 0.99
    v = fr.uniform(k, (10,), minval=-2.0, maxval=3.0)
    assert v.min() >= -2 and v.max() < 3


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_normal_moments_and_ks(dtype):
    n = 200_000
    z = fr.normal(fr.key(1234), (n,), dtype).double().numpy()
    se = 1 / math.sqrt(n)
    assert abs(z.mean()) < 5 * se
    assert abs(z.var() - 1) < 5 * math.sqrt(2 / n)
    assert abs((z**3).mean()) < 5 * math.sqrt(15 / n)
    assert abs((z**4).mean() - 3) < 5 * math.sqrt(96 / n)
    # Kolmogorov-Smirnov against the normal CDF; critical value for p = 1e-6 is about 2.7/sqrt(n)
    zs = np.sort(z)
    cdf = 0.5 * (1 + np.vectorize(math.erf)(zs / math.sqrt(2)))
    ecdf_hi = np.arange(1, n + 1) / n
    d = max(np.max(ecdf_hi - cdf), np.max(cdf - (ecdf_hi - 1 / n)))
    assert d < 2.7 / math.sqrt(n)


def test_split_and_folded_streams_are_uncorrelated():
    n, m = 20_000, 32
    base = fr.key(99)
    streams = [fr.normal(fr.split(base, m), (n,)), fr.normal(fr.fold_in(base.expand(m, 2), torch.arange(m)), (n,)),
               fr.normal(fr.key(torch.arange(m)), (n,))]  # consecutive integer seeds
    for z in streams:
        c = torch.corrcoef(z.double())
        off = c[~torch.eye(m, dtype=torch.bool)]
        assert off.abs().max() < 5 / math.sqrt(n)
        # lag-1 autocorrelation within each stream
        lag = (z[:, 1:] * z[:, :-1]).mean(dim=1)
        assert lag.abs().max() < 5 / math.sqrt(n)


def test_uniform_bits_are_balanced():
    w = fr.bits(fr.key(5), (100_000,))
    assert w.min() >= 0 and w.max() < 2**32
    for b in range(32):
        p = ((w >> b) & 1).double().mean().item()
        assert abs(p - 0.5) < 5 * 0.5 / math.sqrt(100_000)


def test_split_keys_are_distinct_and_deterministic():
    ks = fr.split(fr.key(0), 1000)
    assert ks.shape == (1000, 2)
    assert len({tuple(k.tolist()) for k in ks}) == 1000
    assert torch.equal(ks, fr.split(fr.key(0), 1000))
    assert not torch.equal(fr.split(fr.key(0), 2), fr.split(fr.key(1), 2))


def test_randint_range():
    r = fr.randint(fr.key(0), (10_000,), 3, 10)
    assert r.dtype == torch.int64 and r.min() == 3 and r.max() == 9


@pytest.mark.parametrize(
    "call,exc,match",
    [
        (lambda: fr.key(-1), ValueError, r"seed must be in \[0, 2\*\*63\)"),
        (lambda: fr.key(1.5), TypeError, "seed must be an int"),
        (lambda: fr.normal(torch.zeros(2), (3,)), TypeError, "expected a key"),
        (lambda: fr.normal(fr.key(0), (3,), torch.int32), TypeError, "dtype must be floating point"),
        (lambda: fr.split(fr.key(0), 0), ValueError, "num must be an int >= 1"),
        (lambda: fr.randint(fr.key(0), (3,), 5, 5), ValueError, "need low < high"),
    ],
)
def test_bad_input_raises_clear_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


@pytest.mark.cuda
def test_cuda_equals_cpu():
    k = fr.key(7)
    cpu = fr.normal(k, (1000,))
    gpu = fr.normal(k.cuda(), (1000,))
    assert torch.equal(fr.bits(k.cuda(), (100,)).cpu(), fr.bits(k, (100,)))
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-5, atol=1e-6)


def test_fold_in_broadcasts_data_against_one_key_and_against_stacked_keys():
    """One key folded with a vector of data gives one key per datum; stacked keys fold element-wise."""
    k = fr.key(3)
    many = fr.fold_in(k, torch.arange(3))
    assert many.shape == (3, 2)
    for i in range(3):
        assert torch.equal(many[i], fr.fold_in(k, i))
    ks = fr.split(fr.key(4), 3)
    both = fr.fold_in(ks, torch.tensor([7, 8, 9]))
    for i in range(3):
        assert torch.equal(both[i], fr.fold_in(ks[i], 7 + i))
    assert fr.fold_in(k, torch.tensor([5])).shape == (1, 2)


def _draws(k, shape):
    """Every public draw of ``k``: keys (split, fold_in by an int and by a tensor), words, floats."""
    a, b = fr.split(k)[..., 0, :], fr.split(k, 3)[..., 2, :]
    return (
        fr.split(k, 5), fr.fold_in(k, 123), fr.fold_in(a, torch.tensor(2**32 - 1)), fr.bits(b, shape),
        fr.fold_in(k, torch.tensor(9, dtype=torch.int32)),  # a 0-d number that is not int64: every input 0-d
        fr.randint(k, shape, 3, 70_000), fr.uniform(a, shape), fr.uniform(b, shape, torch.float64),
        fr.normal(k, shape), fr.normal(a, shape, torch.float64), fr.normal(b, shape, torch.bfloat16),
    )


def _routes_agree(seed, shape, width):
    """Whether the host routes of the key hash (plainly eager, CPU) give the torch route's bits."""
    return _routes_agree_for(fr.key(seed) if width is None else fr.split(fr.key(seed), width), shape)


def _routes_agree_for(k, shape):
    fast = _draws(k, shape)
    with S.TracedForm():  # any active mode sends the hash through torch
        slow = _draws(k, shape)
    return all(f.dtype == s.dtype and torch.equal(f, s) for f, s in zip(fast, slow))


@given(seed=st.integers(0, 2**63 - 1), shape=S.shapes, width=st.sampled_from([None, 1, 3]))
def test_numpy_route_of_the_hash_gives_the_torch_route_bits(seed, shape, width):
    """Exact: the hash is integer arithmetic below 2**63 in both libraries (a single key's split and
    fold_in: in Python integers)."""
    assert _routes_agree(seed, shape, width)


_INT64 = st.integers(-(2**63), 2**63 - 1)


@given(words=st.tuples(_INT64, _INT64), shape=S.shapes)
def test_eager_routes_of_a_hand_made_key_give_the_torch_route_bits(words, shape):
    """A key whose words are not 32-bit (built by hand, negative or wide) wraps as int64 arithmetic
    does, in Python integers and numpy as in torch."""
    assert _routes_agree_for(torch.tensor(words, dtype=torch.int64), shape)


def test_numpy_routes_are_taken_eagerly_and_a_wrong_one_is_caught(monkeypatch):
    calls = []
    real, real_u32 = fr._block_numpy, fr._stream_u32
    k, keys = fr.key(1), fr.split(fr.key(1), 2)
    monkeypatch.setattr(fr, "_block_numpy", lambda *a: calls.append("int64") or real(*a))
    monkeypatch.setattr(fr, "_stream_u32", lambda *a: calls.append("uint32") or real_u32(*a))
    fr.normal(k, (4,)), fr.normal(keys, (4,)), fr.normal(torch.tensor([-1, 2**40]), (4,))
    assert calls == ["uint32", "int64", "int64"]  # plain eager: one key of 32-bit words in uint32, others in int64
    torch.func.vmap(lambda k: fr.normal(k, (4,)))(keys)
    assert len(calls) == 3  # under eager vmap: torch
    torch.compile(lambda k: fr.normal(k, (4,)), backend="eager", fullgraph=True)(k)
    assert len(calls) == 3  # compiled: torch (the hash inlined in the graph)
    with fr.host_hash():
        torch.compile(lambda k: fr.normal(k, (4,)), backend="eager", fullgraph=True)(k)
    assert calls == ["uint32", "int64", "int64", "int64"]  # compiled under host_hash: the host op (its impl)
    # negative controls: a numpy route whose counters differ in their lowest bit is caught
    monkeypatch.setattr(fr, "_block_numpy", lambda k0, k1, c: real(k0, k1, c ^ 1))
    assert not _routes_agree(5, (8,), 3)
    monkeypatch.setattr(fr, "_stream_u32", lambda k0, k1, m: real_u32(k0 ^ 1, k1, m))
    assert not _routes_agree(5, (8,), None)


def test_host_box_muller_is_taken_for_one_key_and_a_last_bit_off_is_caught(monkeypatch):
    """A single key's normal draw runs its Box-Muller transform partly in numpy (``_normal_host``);
    numpy's ``sqrt`` differs from torch's in the last bit for some inputs (why torch keeps it), so the
    property test must see one ulp: a route one ulp off in one sample is caught."""
    calls = []
    real = fr._normal_host
    monkeypatch.setattr(fr, "_normal_host", lambda *a: calls.append(1) or real(*a))
    fr.normal(fr.key(1), (4,)), fr.normal(fr.split(fr.key(1), 2), (4,)), torch.func.vmap(fr.normal)(fr.split(fr.key(1)))
    assert len(calls) == 1  # one plain key; stacked keys and vmap take the torch route
    assert _routes_agree(5, (9,), None)

    def one_ulp_off(*a):
        z = real(*a)
        z[3] = torch.nextafter(z[3], torch.tensor(float("inf"), dtype=z.dtype))
        return z

    monkeypatch.setattr(fr, "_normal_host", one_ulp_off)
    assert not _routes_agree(5, (9,), None)


@pytest.mark.parametrize("shape", [(0,), (2, 0), (1,), ()])
@pytest.mark.parametrize("width", [None, 2])
def test_host_routes_of_empty_and_one_element_draws_give_the_torch_route_bits(shape, width):
    assert _routes_agree(7, shape, width)


def test_integer_route_is_taken_for_one_key_and_a_wrong_one_is_caught(monkeypatch):
    calls = []
    real = fr._keys_from_ints
    k, keys = fr.key(1), fr.split(fr.key(1))
    monkeypatch.setattr(fr, "_keys_from_ints", lambda *a: calls.append(1) or real(*a))
    fr.split(k, 3), fr.fold_in(k, 7), fr.fold_in(k, torch.tensor(7))
    assert len(calls) == 3  # plain eager, one key: Python integers
    fr.split(keys, 3), fr.fold_in(k, torch.tensor([1, 2])), torch.func.vmap(fr.split)(keys)
    assert len(calls) == 3  # stacked keys, a vector of numbers, under vmap: torch (or numpy)
    # negative controls: a route that drops a word's high bit, or that counts from 1, is caught
    monkeypatch.setattr(fr, "_keys_from_ints", lambda k0, k1, cs: real(k0 & 0x7FFFFFFF, k1, cs))
    assert not _routes_agree(5, (8,), None)
    monkeypatch.setattr(fr, "_keys_from_ints", lambda k0, k1, cs: real(k0, k1, [c + 1 for c in cs]))
    assert not _routes_agree(5, (8,), None)


def test_a_jit_traced_draw_follows_its_key():
    """Under ``torch.jit.trace`` the hash stays in torch ops: a numpy route would bake the traced key's
    numbers into the graph as constants, and another key would give the same numbers."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's warnings about Python values
        traced = torch.jit.trace(lambda k: fr.normal(fr.fold_in(k, 1), (4,)), (fr.key(3),), check_trace=False)
    for seed in (3, 4):
        assert torch.equal(traced(fr.key(seed)), fr.normal(fr.fold_in(fr.key(seed), 1), (4,)))


def _compiled_draws(k, shape, vmapped):
    f = (lambda k: torch.func.vmap(lambda one: _draws(one, shape))(k)) if vmapped else (lambda k: _draws(k, shape))
    torch._dynamo.reset()  # a fresh trace: the monkeypatched impl of a negative control, not a cached graph
    with fr.host_hash():
        return torch.compile(f, backend="aot_eager", fullgraph=True)(k)


_KEYS = {
    "one key": lambda: fr.key(3),
    "stacked keys": lambda: fr.split(fr.key(3), 3),
    "with a wide key": lambda: torch.cat([fr.split(fr.key(3), 3), torch.tensor([[-1, 2**40]])]),  # not 32-bit words
}


@pytest.mark.parametrize(
    "keys, vmapped",
    [("one key", False), ("stacked keys", False), ("stacked keys", True), ("with a wide key", False),
     ("with a wide key", True)],
)
@pytest.mark.parametrize("shape", [(), (0,), (3, 5)])
def test_compiled_host_hash_op_gives_the_torch_route_bits(monkeypatch, keys, vmapped, shape):
    """Compiled on the CPU under ``host_hash`` the hash is one opaque op run on the host
    (``funcgan::hash_block``): the words, and every draw made from them, are the torch route's bits,
    for a single key (0-d key words and numbers), stacked keys (uint32 route), hand-made wide keys
    (int64 route), ``vmap`` (its batching rule), and empty and 0-d shapes. ``aot_eager`` runs the
    same traced graph as inductor (functionalised, the op's fake shapes) without inductor's minutes
    of C++."""
    k = _KEYS[keys]()
    calls = []
    real = fr._block_numpy
    monkeypatch.setattr(fr, "_block_numpy", lambda *a: calls.append(1) or real(*a))
    with S.TracedForm():
        want = _draws(k, shape) if not vmapped else torch.func.vmap(lambda one: _draws(one, shape))(k)
    assert not calls  # the torch route
    got = _compiled_draws(k, shape, vmapped)
    assert calls  # the host op
    assert all(g.dtype == w.dtype and g.shape == w.shape and torch.equal(g, w) for g, w in zip(got, want))
    if shape == (3, 5):  # negative control: an op whose counters differ in their lowest bit is caught
        monkeypatch.setattr(fr, "_block_numpy", lambda k0, k1, c: real(k0, k1, c ^ 1))
        got = _compiled_draws(k, shape, vmapped)
        assert not all(torch.equal(g, w) for g, w in zip(got, want))


_DIMS = st.sampled_from([(), (1,), (3,), (2, 3), (3, 1)])


@given(
    shapes=st.tuples(_DIMS, _DIMS, _DIMS),
    dims=st.tuples(*[st.sampled_from([None, 0, 1, -1])] * 3),
    wide=st.booleans(),
)
def test_batching_rule_of_the_host_hash_op_is_the_op_per_run(shapes, dims, wide):
    """``vmap`` of the op over any mix of batched and unbatched inputs (batch axis first, inside or
    last, different logical ranks; 32-bit words or wide and negative ones: both host routes) is the
    op applied run by run with torch's broadcasting."""
    B = 4
    dims = tuple(0 if d == 1 and not shape else d for d, shape in zip(dims, shapes))  # axis 1 needs a 1-d input
    if all(d is None for d in dims):
        dims = (0,) + dims[1:]
    try:
        torch.broadcast_shapes(*shapes)
    except RuntimeError:
        return  # shapes that do not broadcast are nobody's inputs
    g = torch.Generator().manual_seed(len(str(shapes)) + 7 * len(str(dims)))
    xs = []
    for shape, d in zip(shapes, dims):
        low, high = (-(2**40), 2**40) if wide else (0, 2**32)
        x = torch.randint(low, high, shape if d is None else (B, *shape), generator=g)
        xs.append(x if d is None else x.movedim(0, d))
    w0, w1 = torch.func.vmap(fr._host_block, in_dims=dims)(*xs)
    for b in range(B):
        one = [x if d is None else x.select(d, b) for x, d in zip(xs, dims)]
        t0, t1 = fr._two_words(*one)  # the hash's definition, in torch ops that broadcast
        assert torch.equal(w0[b], t0) and torch.equal(w1[b], t1)


@pytest.mark.parametrize("wide", [False, True])
def test_host_hash_op_returns_the_layout_its_fake_promises(wide):
    """A compiled graph trusts the op's fake outputs' sizes and strides (inductor asserts them): the
    real outputs are contiguous as the fake's are, transposed inputs on either host route included."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    g = torch.Generator().manual_seed(5)
    low, high = (-(2**40), 2**40) if wide else (0, 2**32)
    k0 = torch.randint(low, high, (3, 4), generator=g).t()  # (4, 3), transposed strides
    k1 = torch.randint(low, high, (4, 1), generator=g)
    c = torch.arange(3)
    real = fr._host_block(k0, k1, c)
    with FakeTensorMode() as mode:
        fake = fr._host_block(*(mode.from_tensor(x) for x in (k0, k1, c)))
    for r, f in zip(real, fake):
        assert r.shape == f.shape == (4, 3) and r.stride() == f.stride() and r.dtype == f.dtype
