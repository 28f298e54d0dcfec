"""Compiling funcgan's steps: ``torch.compile`` with the settings that make small batched nets fast.

A vmapped GAN step is made of many small batched matrix products: for ``S`` runs
and a layer of ``n_in -> n_out`` on a batch of ``B`` samples, the forward pass is a
``(S, B, n_in) @ (S, n_in, n_out)`` product, and the backward pass adds the weight
gradient ``(S, n_out, B) @ (S, B, n_in)``. When the last dimension of such a
product is small (a layer with 1 or 2 outputs, a weight gradient of a layer with
10 inputs), the CPU's batched GEMM is 3 to 9 times slower than the same product
computed transposed, ``(B^T @ A^T)^T``, whose last dimension is the large one
(measured with torch 2.13 / MKL on a 2-core CPU; see ``benchmarks/``).
:class:`TransposeThinBmm` is an inductor graph pass that makes that rewrite; the
result is the same product, summed in the same order per output element up to
the GEMM's blocking (round-off level).

:func:`compile` is ``torch.compile(fn, fullgraph=True, dynamic=False)`` with the
pass installed for the inductor backend (other backends get no options). The first
inductor compile also applies two workarounds of inductor's (torch 2.13) compile time, each
giving the same generated code faster (``benchmarks/cold_compile.py`` times a cold compile
with and without each): inductor no longer rebuilds its dtype-rule table once per op of every
kernel it writes (:func:`_dtype_rules_once`, ~18% off a cold compile of a vmapped GAN step on
2 cores), and intersects integer value ranges by comparing integers instead of through sympy
(:func:`_integer_range_intersections`).
"""

from __future__ import annotations

import functools
import itertools
import math
import threading
import types
from collections.abc import Callable
from typing import Any

import torch

from funcgan import random as fr

__all__ = ["compile", "check_settings", "inductor_options", "TransposeThinBmm", "ChainCaller", "prefetch_cpu_isa"]


@functools.cache
def _register_pass() -> None:
    """Make :class:`TransposeThinBmm` an inductor ``CustomGraphPass`` (a virtual subclass of the ABC,
    so FX-graph caching keys on its ``uuid``). Done when a compile first asks for the options, not at
    import: importing inductor costs ~1 s, which an eager run never needs."""
    try:  # torch >= 2.5
        from torch._inductor.custom_graph_pass import CustomGraphPass
    except ImportError:  # pragma: no cover - older torch: a plain callable (no FX-graph caching)
        return
    CustomGraphPass.register(TransposeThinBmm)


@functools.cache
def prefetch_cpu_isa() -> threading.Thread:
    """Start inductor's detection of the CPU's vector instruction sets in a background thread (once a
    process), so that it overlaps the trace of the first CPU compile instead of following it.

    Inductor learns which of AVX-512 VNNI, AVX-512 and AVX2 it may emit by compiling a small C++
    program against ATen's vector headers for each and loading it in a subprocess, the first time
    its C++ code generation asks (``cpu_vec_isa.valid_vec_isa_list``, cached for the process, the
    libraries for the cache folder): ~8 s on 2 cores from an empty inductor cache, ~1 s from a warm
    one, serially, after dynamo's trace and AOT's functionalisation (~5-10 s of Python). The
    thread spends its time waiting on the compiler and the loader, not holding the GIL, so the two
    overlap on a second core. The checks are cached per process without a lock, so a trace that
    asks before the thread is done repeats the cheap parts (the CPU-flag read, a load probe per
    ISA) but not a build: inductor takes a file lock around each build and reuses a built library.
    The answer is the same either way (it is the machine's, read under inductor's default
    ``cpp.vec_isa_ok``, which funcgan does not set). Like every inductor compile, it runs the C++
    compiler and writes to inductor's cache folder: I/O that belongs to ``torch.compile``.
    """
    from torch._inductor import cpu_vec_isa  # imported here: an import inside the thread could race the main one

    thread = threading.Thread(target=cpu_vec_isa.valid_vec_isa_list, name="funcgan-isa-check", daemon=True)
    thread.start()
    return thread


@functools.cache
def _dtype_rules_once() -> None:
    """Make inductor's ``DtypePropagationOpsHandler()`` cheap to construct again (torch 2.13).

    The handler is a singleton whose ``__init__`` reruns on every construction: it rebuilds
    hundreds of per-op rules and checks them against every op name, and inductor's C++ code
    generation constructs it once per op of every kernel it writes. On a 64-run vmapped 1-D GAN
    step that is ~140,000 rebuilds, ~10 s of a ~70 s cold compile on 2 cores (timed around the
    constructor; fixed upstream in pytorch/pytorch#192820). The rules it builds depend only on
    inductor's rule registry, so a rebuild is skipped while that registry is unchanged (a rule
    registered later is picked up); the handler's answers are the ones a rebuild gives. This
    patches the class for the whole process, once, the first time funcgan compiles with inductor;
    a torch whose handler is laid out otherwise is left alone.
    """
    try:
        import torch._inductor.codegen.common  # noqa: F401  (the first build reads its tables)
        from torch._inductor import utils
        from torch._inductor.dtype_propagation import DtypePropagationOpsHandler as cls
    except ImportError:  # pragma: no cover - torch without the handler
        return
    rules = getattr(utils, "op_dtype_propagation_rules", None)
    init = cls.__dict__.get("__init__")
    if not isinstance(rules, dict) or init is None or getattr(init, "_funcgan_once", False):
        return  # pragma: no cover - another torch layout, or already wrapped

    @functools.wraps(init)
    def once(self: Any) -> None:
        if getattr(self, "_funcgan_rules", None) == rules:
            return
        init(self)
        self._funcgan_rules = dict(rules)

    once._funcgan_once = True  # type: ignore[attr-defined]
    cls.__init__ = once  # type: ignore[method-assign]


@functools.cache
def _integer_range_intersections() -> None:
    """Make inductor's intersection of two integer value ranges cheap (torch 2.13).

    Inductor's code generation tightens the value range of every variable it writes
    (``ValueRanges.tighten``, ``a & b``), and ``&`` builds ``sympy.Max`` and ``sympy.Min`` of the
    bounds and validates the new range through sympy. On integer bounds that is a comparison of
    two integers at the price of ~0.4 ms; the counter-based key hash (tens of int64 ops per word)
    makes ~55,000 of them in the cold compile of a 64-run 1-D GAN step (~15% of its code
    generation under a profiler). Here two ranges whose four bounds are all integers or the int
    infinities are intersected by comparing their values: the result is the range ``sympy.Max`` and
    ``sympy.Min`` give (one of the two inputs when it is contained in the other); every other range
    (float, symbolic, boolean) goes to inductor's own ``&``. Patched for the whole process, once, the
    first time funcgan compiles with inductor; a torch laid out otherwise is left alone.
    """
    try:
        import sympy
        from torch.utils._sympy.numbers import IntInfinity, NegativeIntInfinity
        from torch.utils._sympy.value_ranges import ValueRanges
    except ImportError:  # pragma: no cover - torch without value ranges
        return
    meet = ValueRanges.__dict__.get("__and__")
    if meet is None or getattr(meet, "_funcgan_fast", False):
        return  # pragma: no cover - another torch layout, or already wrapped

    def key(x: Any) -> int | float | None:
        """An integer bound's value for ordering (the int infinities as float ones); None for any other."""
        if isinstance(x, sympy.Integer):
            return int(x)
        if isinstance(x, IntInfinity):
            return math.inf
        if isinstance(x, NegativeIntInfinity):
            return -math.inf
        return None

    @functools.wraps(meet)
    def fast(self: Any, other: Any) -> Any:
        a, b, c, d = (key(x) for x in (self.lower, other.lower, self.upper, other.upper))
        if a is None or b is None or c is None or d is None:
            return meet(self, other)
        lo_self, hi_self = a >= b, c <= d
        if lo_self and hi_self:
            return self
        if not lo_self and not hi_self:
            return other
        return ValueRanges(self.lower if lo_self else other.lower, self.upper if hi_self else other.upper)

    fast._funcgan_fast = True  # type: ignore[attr-defined]
    ValueRanges.__and__ = fast  # type: ignore[method-assign]


class TransposeThinBmm:
    """Inductor post-grad pass: on the CPU, ``bmm(A, B)`` with a thin output ``(S, M, N)``,
    ``N < M`` and ``N <= max_n``, becomes ``bmm(B^T, A^T)^T`` (CUDA graphs are left as they are).

    Args:
        max_n: the widest output (last dimension) that is rewritten.
    """

    def __init__(self, max_n: int = 16):
        self.max_n = max_n

    def __call__(self, graph: torch.fx.Graph) -> None:
        aten = torch.ops.aten
        for node in list(graph.nodes):
            if node.op != "call_function" or node.target is not aten.bmm.default:
                continue
            val = node.meta.get("val")
            a, b = node.args
            if (
                val is None
                or val.device.type != "cpu"
                or not isinstance(a, torch.fx.Node)
                or not isinstance(b, torch.fx.Node)
            ):
                continue
            _, m, n = val.shape
            if not (isinstance(m, int) and isinstance(n, int) and n < m and n <= self.max_n):
                continue
            with graph.inserting_before(node):
                bt = graph.call_function(aten.permute.default, (b, [0, 2, 1]))
                at = graph.call_function(aten.permute.default, (a, [0, 2, 1]))
                prod = graph.call_function(aten.bmm.default, (bt, at))
                out = graph.call_function(aten.permute.default, (prod, [0, 2, 1]))
            bt.meta["val"] = b.meta["val"].permute(0, 2, 1)
            at.meta["val"] = a.meta["val"].permute(0, 2, 1)
            prod.meta["val"] = torch.bmm(bt.meta["val"], at.meta["val"])
            out.meta["val"] = prod.meta["val"].permute(0, 2, 1)
            node.replace_all_uses_with(out)
            graph.erase_node(node)

    def uuid(self) -> Any:
        return f"funcgan.TransposeThinBmm/1/{self.max_n}"


def inductor_options(kernel_threads: int | None = None) -> dict[str, Any]:
    """The inductor options funcgan compiles with: the thin-bmm pass, and optionally the
    number of threads of inductor's C++ kernels (1 pays for a single run's tiny kernels,
    whose OpenMP barriers cost more than they share; the process's torch threads are untouched).
    """
    _register_pass()
    _dtype_rules_once()
    _integer_range_intersections()
    opts: dict[str, Any] = {"post_grad_custom_post_pass": TransposeThinBmm()}
    if kernel_threads is not None:
        opts["cpp.threads"] = int(kernel_threads)
    return opts


def check_settings(backend: str | Callable = "inductor", mode: str | None = None) -> None:
    """Refuse a backend or mode ``torch.compile`` would reject late (at the first call) or ignore.

    A string backend must be one of ``torch._dynamo.list_backends(exclude_tags=())`` (a callable
    backend is the caller's own); a mode must be one of inductor's (``list_mode_options()``), and
    only inductor takes one (``torch.compile`` drops the mode of any other backend silently).

    Raises:
        ValueError: naming the setting and the choices.
    """
    if isinstance(backend, str):
        from torch._dynamo import list_backends

        known = list_backends(exclude_tags=())
        if backend not in known:
            raise ValueError(
                f"unknown torch.compile backend {backend!r}; e.g. inductor, aot_eager, eager "
                "(all: torch._dynamo.list_backends(exclude_tags=()))"
            )
    if mode is None:
        return
    if backend != "inductor":
        raise ValueError(f"a torch.compile mode applies to the inductor backend only (got backend {backend!r})")
    from torch._inductor import list_mode_options

    modes = list(list_mode_options())
    if mode not in modes:
        raise ValueError(f"unknown torch.compile mode {mode!r}; choose one of {', '.join(modes)}")


def compile(
    fn: Callable,
    backend: str = "inductor",
    mode: str | None = None,
    kernel_threads: int | None = None,
    host_hash: bool = False,
    **kwargs: Any,
) -> Callable:
    """``torch.compile(fn, fullgraph=True, dynamic=False)`` with funcgan's inductor options.

    Args:
        fn: the function (a step, vmapped or not).
        backend: a ``torch.compile`` backend; only ``"inductor"`` gets options.
        mode: a ``torch.compile`` mode (``"reduce-overhead"``: CUDA graphs). With
            inductor, the mode's options are merged into funcgan's (``torch.compile``
            takes a mode or options, not both), so a mode changes only what it names:
            the kernels are those of plain compilation.
        kernel_threads: threads of inductor's CPU kernels (default: torch's).
        host_hash: trace and call ``fn`` under :func:`funcgan.random.host_hash`: on the CPU the key
            hash is one opaque host op, a shorter cold compile at a small cost per step (the same
            numbers); for short runs.
        **kwargs: more ``torch.compile`` arguments (override the defaults).

    Raises:
        ValueError: an unknown backend or mode, or a mode for a backend other than inductor
            (:func:`check_settings`), before anything compiles.
    """
    check_settings(backend, mode)
    kw: dict[str, Any] = {"fullgraph": True, "dynamic": False, "backend": backend, **kwargs}
    if backend == "inductor" and "options" not in kw:
        kw["options"] = inductor_options(kernel_threads)
        if mode is not None:
            from torch._inductor import list_mode_options

            kw["options"].update(list_mode_options(mode))
    elif mode is not None:
        kw["mode"] = mode
    compiled = torch.compile(_own_code(fn), **kw)
    if not host_hash:
        return compiled

    def hashed_on_host(*args: Any, **kw: Any) -> Any:  # traced and called in the block: dynamo guards on it
        with fr.host_hash(True):
            return compiled(*args, **kw)

    return hashed_on_host


_counter = itertools.count()


def _own_code(fn: Callable) -> Callable:
    """``fn`` behind a trampoline with a code object of its own.

    Dynamo keeps its compiled graphs per code object, and every ``vmap(step)`` shares the code of
    torch's vmap wrapper: two different steps (two systems, a lazy penalty's on- and off-steps, the
    phases of a phased step) would count as recompiles of one function, and past dynamo's recompile
    limit (8) run eagerly. A fresh code object per compiled function keeps their caches apart.
    """

    def trampoline(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    code = trampoline.__code__.replace(co_name=f"funcgan_compiled_{next(_counter)}")
    fresh = types.FunctionType(
        code, trampoline.__globals__, code.co_name, trampoline.__defaults__, trampoline.__closure__
    )
    return functools.wraps(fn)(fresh) if hasattr(fn, "__name__") else fresh


def _graphs_compiled() -> int | None:
    try:
        from torch._dynamo.utils import counters

        return int(counters["stats"]["unique_graphs"])
    except Exception:  # pragma: no cover - an internal counter; without it guards always run
        return None


def _skip_guards_context():
    try:
        return torch.compiler.set_stance("default", skip_guard_eval_unsafe=True)
    except (AttributeError, TypeError):  # pragma: no cover - torch without the stance
        return None


class ChainCaller:
    """Calls a compiled step on a chain ``state = step(state, ...)``, skipping dynamo's guard
    evaluation once that is provably safe.

    A compiled step checks ~1,700 guards (every tensor of the state, every module it
    touches) on each call: 70 to 450 microseconds, a fifth of a small step. On a chain
    whose next input is the step's own output, the input's configuration (shapes,
    strides, dtypes) is a function of the previous input's. So once one call after the
    first compiles nothing (its input matched an earlier one), every later input of
    the chain matches an input already compiled for, and dynamo may run only the
    guards that tell its compiled graphs apart (``skip_guard_eval_unsafe``, a
    ``torch.compiler.set_stance`` option). Until then, and after :meth:`restart`
    (a new chain: a fresh state), every call runs all guards.
    """

    def __init__(self, fn: Callable):
        self.fn = fn
        self.restart()

    def restart(self) -> None:
        """A new chain starts: run all guards until it is safe again."""
        self.calls = 0
        self.safe = False

    def __call__(self, *args: Any) -> Any:
        if self.safe:
            ctx = _skip_guards_context()
            if ctx is not None:
                with ctx:
                    return self.fn(*args)
            return self.fn(*args)
        before = _graphs_compiled()
        out = self.fn(*args)
        self.calls += 1
        if self.calls >= 2 and before is not None and _graphs_compiled() == before:
            self.safe = True
        return out
