"""funcgan.compile: the thin-bmm inductor pass, and guard skipping on a chain of steps."""

from __future__ import annotations

import uuid

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from funcgan import random as fr
from funcgan import sweep, systems
from funcgan.compile import ChainCaller, TransposeThinBmm
from funcgan.compile import compile as compile_step
from funcgan.step import init_state, make_train_step
from funcgan.tree import tree_index, tree_leaves


def _linear_chain(x, w1, w2):
    # (S, B, 10) @ (S, 10, 50): wide output, kept; (S, B, 50) @ (S, 50, 2): thin output, rewritten
    return torch.bmm(torch.relu(torch.bmm(x, w1)), w2)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_thin_bmm_pass_rewrites_only_thin_products_and_keeps_the_result(dtype):
    g = torch.Generator().manual_seed(0)
    x, w1, w2 = (torch.randn(*s, generator=g, dtype=dtype) for s in ((6, 30, 10), (6, 10, 50), (6, 50, 2)))
    shapes = []

    class Recording(TransposeThinBmm):
        def __call__(self, graph):
            super().__call__(graph)
            shapes.extend(tuple(n.meta["val"].shape) for n in graph.nodes if n.target is torch.ops.aten.bmm.default)

        def uuid(self):  # a fresh cache key: the pass must run, not a cached graph be loaded
            return f"test-{uuid.uuid4()}"

    f = torch.compile(_linear_chain, fullgraph=True, dynamic=False, options={"post_grad_custom_post_pass": Recording()})
    out = f(x, w1, w2)
    # the wide (6, 30, 50) product is kept; the thin (6, 30, 2) one is computed as (6, 2, 30)
    assert sorted(shapes) == [(6, 2, 30), (6, 30, 50)]
    # float64: the same products summed per output element by the GEMM (round-off ~1e-15);
    # float32: ~1e-6 relative for sums of 50 terms
    tol = 1e-12 if dtype == torch.float64 else 1e-4
    torch.testing.assert_close(out, _linear_chain(x, w1, w2), rtol=tol, atol=tol)


def test_thin_bmm_pass_on_an_fx_graph():
    def f(a, b, c, d):
        return torch.bmm(a, b), torch.bmm(c, d)

    from torch.fx.experimental.proxy_tensor import make_fx

    args = (torch.randn(3, 40, 20), torch.randn(3, 20, 2), torch.randn(3, 4, 20), torch.randn(3, 20, 30))
    gm = make_fx(f, tracing_mode="fake")(*args)
    TransposeThinBmm()(gm.graph)
    gm.graph.lint()
    gm.recompile()
    bmms = [n for n in gm.graph.nodes if n.target is torch.ops.aten.bmm.default]
    # the thin (3, 40, 2) product now multiplies (3, 2, 20) @ (3, 20, 40); the wide one is untouched
    assert [tuple(n.meta["val"].shape) for n in bmms] == [(3, 2, 40), (3, 4, 30)]
    for got, want in zip(gm(*args), f(*args)):
        torch.testing.assert_close(got, want)


def test_chain_caller_skips_guards_only_once_the_chain_repeats():
    def step(x):
        return (x * 2).t()  # alternates between two layouts: (3, 4) and (4, 3)

    f = ChainCaller(torch.compile(step, fullgraph=True, backend="aot_eager", dynamic=False))
    x = torch.randn(3, 4)
    ref = x.clone()
    safe = []
    for _ in range(6):
        x = f(x)
        ref = (ref * 2).t()
        safe.append(f.safe)
        torch.testing.assert_close(x, ref, rtol=0, atol=0)
    # call 1 compiles (3, 4), call 2 compiles (4, 3), call 3 compiles nothing: safe from then on
    assert safe == [False, False, True, True, True, True]
    f.restart()
    assert not f.safe


def _assert_runs_are_lone_runs(system, res, steps, atol):
    """Each run of a sweep result ends with the parameters its lone eager run ends with."""
    step = make_train_step(system.gan)
    for i, point in enumerate(res.points):
        state = init_state(system.gan, fr.key(point["seed"]), dtype=torch.float64)
        for _ in range(steps):
            state, _ = step(state, ())
        swept = tree_index(res.state, i)
        for player in ("gen", "disc"):
            for a, b in zip(tree_leaves(getattr(state, player).params), tree_leaves(getattr(swept, player).params)):
                torch.testing.assert_close(a, b, rtol=0, atol=atol)


def test_chain_caller_sweep_equals_lone_runs():
    """A sweep driven with guard skipping (sweep.run) gives each run its lone run."""
    system = systems.make_system("gaussian1d")
    res = sweep.run(
        system, sweep.grid(range(3)), steps=5, chunk_size=2, compile=True, backend="aot_eager", dtype=torch.float64
    )
    _assert_runs_are_lone_runs(system, res, 5, atol=1e-12)  # float64: same formulas, ~1e-16


@pytest.mark.slow
def test_inductor_sweep_with_the_pass_equals_lone_runs():
    system = systems.make_system("gaussian1d")
    res = sweep.run(system, sweep.grid(range(2)), steps=5, compile=True, dtype=torch.float64)
    _assert_runs_are_lone_runs(system, res, 5, atol=1e-10)  # float64 through inductor: ~1e-15


def test_compile_gives_other_backends_no_options():
    f = compile_step(lambda x: x + 1, backend="aot_eager")
    assert torch.equal(f(torch.zeros(2)), torch.ones(2))


def _rules_of(handler) -> dict:
    """The per-op rules a dtype handler holds: each a partial, compared by function and keywords."""
    return {name: (f.func, f.keywords) for name, f in vars(handler).items() if hasattr(f, "keywords")}


def test_dtype_handler_built_once_answers_as_a_fresh_build_and_rebuilds_on_a_new_rule():
    """The workaround for inductor's rebuilt-per-op dtype handler (funcgan.compile._dtype_rules_once)
    skips a rebuild only while the rule registry is unchanged: the handler's rules are those a fresh
    build gives, and a rule registered later is picked up."""
    import torch._inductor.lowering  # noqa: F401  (registers inductor's rules, as a compile does)
    from torch._inductor import utils
    from torch._inductor.dtype_propagation import DtypePropagationOpsHandler as Handler
    from torch._prims_common import ELEMENTWISE_TYPE_PROMOTION_KIND
    from funcgan.compile import inductor_options

    inductor_options()
    if not getattr(Handler.__init__, "_funcgan_once", False):
        pytest.skip("this torch has no rebuilt-per-op dtype handler to work around")
    fresh = object.__new__(Handler)  # outside the singleton, built by inductor's own __init__
    Handler.__init__.__wrapped__(fresh)
    handler = Handler()
    assert len(_rules_of(fresh)) > 100 and _rules_of(handler) == _rules_of(fresh)

    name = f"funcgan_test_op_{uuid.uuid4().hex}"
    utils.register_op_dtype_propagation_rules(name, ELEMENTWISE_TYPE_PROMOTION_KIND.DEFAULT, torch.bool)
    try:
        assert getattr(Handler(), name)(torch.float32) is torch.bool
    finally:
        del utils.op_dtype_propagation_rules[name]
        delattr(Handler._instance, name)


def _value_ranges():
    """Inductor's value ranges: integer ones (up to 2**64, the int infinities) and others that the fast
    intersection hands back to inductor (float, infinite float, boolean)."""
    import sympy
    from torch.utils._sympy.numbers import int_oo
    from torch.utils._sympy.value_ranges import ValueRanges

    ints = st.one_of(st.integers(-(2**64), 2**64).map(sympy.Integer), st.sampled_from([-int_oo, int_oo]))
    int_ranges = st.tuples(ints, ints).filter(lambda b: bool(b[0] <= b[1])).map(lambda b: ValueRanges(*b))
    floats = st.floats(-1e6, 1e6).map(sympy.Float)
    float_ranges = st.tuples(st.one_of(floats, st.just(-sympy.oo)), st.one_of(floats, st.just(sympy.oo))).filter(
        lambda b: bool(b[0] <= b[1])
    ).map(lambda b: ValueRanges(*b))
    bools = st.sampled_from([ValueRanges(sympy.false, sympy.true), ValueRanges(sympy.true, sympy.true)])
    return st.one_of(int_ranges, int_ranges, float_ranges, bools)  # integer ranges drawn twice as often


def _meets_agree(fast, slow, a, b) -> bool:
    """``fast(a, b)`` is ``slow(a, b)``: the same range, or the same error (disjoint ranges, mixed kinds)."""
    try:
        want = slow(a, b)
    except Exception as e:  # noqa: BLE001 - the error is the answer to compare
        want = type(e)
    try:
        got = fast(a, b)
    except Exception as e:  # noqa: BLE001
        got = type(e)
    return got == want


@settings(max_examples=400, deadline=None)
@given(a=_value_ranges(), b=_value_ranges())
def test_fast_integer_range_intersection_is_inductors(a, b):
    """The fast intersection of integer value ranges (funcgan.compile._integer_range_intersections)
    gives the range inductor's own ``&`` (sympy Max/Min) gives, or the same error, for every pair."""
    from torch.utils._sympy.value_ranges import ValueRanges

    from funcgan.compile import inductor_options

    inductor_options()
    fast = ValueRanges.__and__
    if not getattr(fast, "_funcgan_fast", False):
        pytest.skip("this torch lays out value ranges otherwise")
    assert _meets_agree(fast, fast.__wrapped__, a, b)


def test_a_wrong_range_intersection_is_caught():
    """Negative control: the comparison above tells a wrong intersection (the union, or the left range
    kept whole) from inductor's."""
    from torch.utils._sympy.value_ranges import ValueRanges

    slow = getattr(ValueRanges.__and__, "__wrapped__", ValueRanges.__and__)
    a, b = ValueRanges(0, 10), ValueRanges(5, 2**40)
    assert _meets_agree(slow, slow, a, b) and slow(a, b) == ValueRanges(5, 10)
    assert not _meets_agree(lambda x, y: x | y, slow, a, b)
    assert not _meets_agree(lambda x, y: x, slow, a, b)
    # and the fast route is the one taken: it hands back the contained range itself, inductor's builds a new one
    from funcgan.compile import inductor_options

    inductor_options()
    inner = ValueRanges(6, 7)
    assert slow(inner, a) is not inner
    if getattr(ValueRanges.__and__, "_funcgan_fast", False):
        assert (inner & a) is inner and (a & inner) is inner


@pytest.mark.parametrize("kwargs,needle", [
    ({"backend": "nope"}, "unknown torch.compile backend 'nope'"),
    ({"mode": "eager"}, "unknown torch.compile mode 'eager'"),
    ({"backend": "aot_eager", "mode": "reduce-overhead"}, "applies to the inductor backend only"),
])
def test_compile_refuses_a_backend_or_mode_torch_would_reject_late_or_drop(kwargs, needle):
    """torch.compile checks a backend name only at the first call and drops the mode of a backend other
    than inductor; funcgan refuses both when the step is made, before anything runs."""
    with pytest.raises(ValueError, match=needle):
        compile_step(lambda x: x + 1, **kwargs)
    gan = systems.make_system("gaussian1d").gan
    with pytest.raises(ValueError, match=needle):
        sweep.make_sweep_step(gan, compile=True, **kwargs)
    assert compile_step(lambda x: x + 1, backend="aot_eager")(torch.ones(2)).tolist() == [2.0, 2.0]
    assert compile_step(lambda x: x + 1, mode="default") is not None


def test_sweep_refuses_a_compile_mode_without_compile():
    system = systems.make_system("gaussian1d")
    with pytest.raises(ValueError, match="needs compile=True"):
        sweep.run(system, sweep.grid([0]), steps=1, compile=False, mode="reduce-overhead")
