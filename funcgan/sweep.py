"""One engine for every run: S training runs stacked on axis 0, vmapped, guarded, compiled, chunked.

    points = sweep.grid(seeds=range(256), gen_lr=[1e-3, 1e-4], gp=[1.0, 10.0])   # 1024 runs
    result = sweep.run(system, points, steps=1000)                               # a single run is S = 1

How it works:

* :func:`init_sweep` builds the S states with ``vmap(init_state)`` over the seeds'
  keys, then writes each run's hyper-parameters into the states as tensors: the
  optimizers' (``gen_lr``, ``disc_betas``, ``gen_clip_norm``, ...) and the state's
  own (penalty weights such as ``gp`` and ``r1``, ``ema_decay``, ``l1_weight``,
  ``consensus``), so one compiled program serves every point of the grid.
* :func:`make_sweep_step` wraps the pure step with the divergence guard
  (:mod:`funcgan.guard`), vmaps it over the leading axis and compiles it once.
* :func:`run` drives it chunk by chunk: a chunk of ``chunk_size`` runs makes all its
  steps, then the next chunk starts (its working set stays in cache; more runs than
  fit in memory can be swept). Every call has the same shape: a short chunk is padded
  with copies of its first run, dropped afterwards.

**Every run is the run its seed gives alone**, bitwise, in float32 too. Its
randomness is ``fold_in(key(seed), t)`` and its arithmetic touches only its own
slice of the state; what remains is that the same arithmetic must run through the
same kernels:

* compiled (inductor), every run is a row of ``compile(vmap(step))``: measured
  bitwise equal at chunk sizes 1 and 16 and at every position, so a run alone
  (``funcgan train --compile``, a one-point sweep) is its row of any compiled sweep,
  in a process with one torch thread (with more, the CPU's batched GEMM may split a
  chunk otherwise than a lone run: round-off apart, measured at 2 threads);
* eager, a run is the plain (unbatched) step, one run after the other: eager ATen
  kernels vectorise over the run axis of a ``vmap``, and a run in the vector tail of
  a chunk would be rounded by scalar code (measured 3e-8 apart after 30 steps), so
  eager sweeps do not batch: every eager run is bitwise the run ``funcgan train``
  gives. Compiled and eager runs of a seed differ by round-off (different kernels).

Resuming from a checkpoint continues a run exactly (its step count is in its state).
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.func import vmap

from funcgan import random as fr
from funcgan.compile import ChainCaller, check_settings, prefetch_cpu_isa
from funcgan.compile import compile as compile_step
from funcgan.guard import Guard, guarded
from funcgan.memory import CPU_CHUNK, Plan, cpu_chunk, fit_chunk, free_bytes, measure, written_bytes
from funcgan.optim.base import InjectHyperparamsState
from funcgan.optim.spec import OptimizerSpec
from funcgan.step import GAN, MAX_STEPS, Metrics, TrainState, check_state, init_state, make_train_step
from funcgan.tree import tree_index, tree_leaves, tree_map

__all__ = [
    "PhasedStep",
    "grid",
    "sweepable",
    "check_points",
    "init_sweep",
    "make_sweep_step",
    "run",
    "SweepResult",
    "seed_state",
    "chunk_shape",
    "choose_chunk",
    "lone_run_threads",
    "plan_chunk",
    "caller",
    "logged_steps",
    "host_hash_pays",
    "HOST_HASH_RUN_STEPS",
]

#: a compiled CPU sweep of at most this many run-steps hashes its keys on the host
#: (:func:`funcgan.random.host_hash`). Measured on the 1-D GAN, 2 cores: the host hash cuts ~20 s of
#: the ~50 s cold compile and costs ~0.015 ms per run-step (~1 ms of a ~6 ms step at 64 runs, 3.5 ms
#: of a ~26 ms call of 256), so it pays up to ~1.5 million run-steps; a warm inductor cache saves
#: the compile anyway, so the bound is kept well below break-even.
HOST_HASH_RUN_STEPS = 500_000

_MAX_SEED = 2**63


def grid(seeds: Iterable[int], **hyper: Sequence[Any]) -> list[dict[str, Any]]:
    """The cross product of seeds and hyper-parameter values, as a list of points.

    ``grid(range(4), gen_lr=[1e-3, 1e-4])`` gives 8 points ``{"seed": s, "gen_lr": lr}``.
    Seeds vary fastest: the first ``len(seeds)`` points share the first value of
    every hyper-parameter. Names: see :func:`sweepable`.
    """
    seeds = list(seeds)
    names = list(hyper)
    for n in names:
        if isinstance(hyper[n], (str, bytes)) or not isinstance(hyper[n], Iterable):
            raise TypeError(f"grid: {n} must be a list of values, got {hyper[n]!r}")
    points = []
    for values in itertools.product(*(list(hyper[n]) for n in names)):
        for s in seeds:
            points.append({"seed": s, **dict(zip(names, values))})
    return points


def sweepable(gan: GAN) -> dict[str, tuple[str, str]]:
    """Names a sweep can vary for ``gan``: ``name -> (where, field)``, where is ``"gen"``/``"disc"``
    (an optimizer hyper-parameter) or ``"hparams"`` (penalty weights, ``ema_decay``, loss weights)."""
    out: dict[str, tuple[str, str]] = {}
    for player, spec in (("gen", gan.gen_opt), ("disc", gan.disc_opt)):
        if isinstance(spec, OptimizerSpec):
            for f in spec.sweepable():
                out[f"{player}_{f}"] = (player, f)
    for k in gan.default_hparams():
        out[k] = ("hparams", k)
    return out


def _check_hparam(gan: GAN, name: str, v: Any) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValueError(f"sweep: {name} must be a finite number, got {v!r}")
    penalties = {p.name for p in gan.loop.penalties}
    if name in penalties and v < 0:
        raise ValueError(f"sweep: {name} is a penalty weight and must be >= 0, got {v}")
    if name == "ema_decay" and not 0 <= v < 1:
        raise ValueError(f"sweep: ema_decay must be in [0, 1), got {v}")


def check_points(gan: GAN, points: Sequence[dict[str, Any]]) -> None:
    """Raise ``ValueError`` naming the problem: an empty sweep, a duplicate run, a bad seed, an unknown
    or invalid hyper-parameter, one the GAN cannot sweep, or a name set for some points only."""
    if not isinstance(points, Sequence) or isinstance(points, (str, bytes)):
        raise TypeError(f"sweep: points must be a list of dicts (see sweep.grid), got {type(points).__name__}")
    if len(points) == 0:
        raise ValueError("sweep: no seeds given (an empty sweep)")
    names = sweepable(gan)
    seen = set()
    keys = None
    for p in points:
        if not isinstance(p, dict) or "seed" not in p:
            raise ValueError(f"sweep: every point must be a dict with a 'seed', got {p!r}")
        s = p["seed"]
        if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < _MAX_SEED:
            raise ValueError(f"sweep: seeds must be ints in [0, 2**63), got {s!r}")
        if keys is None:
            keys = set(p)
        elif set(p) != keys:
            raise ValueError(
                f"sweep: every point must set the same names; {sorted(set(p) ^ keys)} are set for some points only"
            )
        ident = tuple(sorted((k, tuple(v) if isinstance(v, (list, tuple)) else v) for k, v in p.items()))
        if ident in seen:
            raise ValueError(f"sweep: duplicate run {dict(p)} (the same seed with the same hyper-parameters twice)")
        seen.add(ident)
        for k, v in p.items():
            if k == "seed":
                continue
            if k not in names:
                raise ValueError(f"sweep: unknown hyper-parameter '{k}'; this GAN sweeps {sorted(names)}")
            where, fld = names[k]
            if where == "hparams":
                _check_hparam(gan, k, v)
            else:
                spec = gan.gen_opt if where == "gen" else gan.disc_opt
                assert isinstance(spec, OptimizerSpec)  # sweepable() lists OptimizerSpec fields only
                try:
                    spec.with_values(**{fld: tuple(v) if fld == "betas" else v})
                except (TypeError, ValueError) as e:
                    raise ValueError(f"sweep: {k}={v!r}: {e}") from e


def init_sweep(
    gan: GAN, points: Sequence[dict[str, Any]], dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
) -> TrainState:
    """Stacked initial states, one per point (leaves ``(S, ...)``).

    Run ``i`` starts exactly as ``init_state(gan, key(points[i]["seed"]))`` with the
    point's hyper-parameters written into its optimizer states and ``hparams``. Every
    leaf is a fresh contiguous tensor.
    """
    check_points(gan, points)
    seeds = torch.tensor([p["seed"] for p in points], dtype=torch.int64, device=device)
    keys = fr.key(seeds)  # (S, 2)
    states = vmap(lambda k: init_state(gan, k, dtype, device), randomness="error")(keys)
    # contiguous strides, not just contiguous memory: a size-1 axis made by vmap's expand has stride 0, which
    # ``.contiguous().clone()`` keeps, and the step returns stride 1 there; dynamo guards on strides, so a
    # one-run compiled sweep recompiled at its second step (hyper-parameters of shape (1,))
    states = tree_map(lambda x: x.clone(memory_format=torch.contiguous_format), states)
    names = sweepable(gan)
    for name in sorted({k for p in points for k in p if k != "seed"}):
        col = torch.tensor([p[name] for p in points], dtype=torch.float64, device=device)  # (S,) or (S, 2)
        where, fld = names[name]
        if where == "hparams":
            states = states._replace(hparams={**states.hparams, name: col})
        else:
            player = getattr(states, where)
            opt: InjectHyperparamsState = player.opt_state
            player = player._replace(opt_state=opt._replace(hyperparams={**opt.hyperparams, fld: col}))
            states = states._replace(**{where: player})
    return states


def _check_compile(who: str, compile: bool, backend: str, mode: str | None) -> None:
    """Refuse, before anything runs, a compile setting that would fail late or be ignored."""
    if not compile and mode is not None:
        raise ValueError(f"{who}: mode={mode!r} is a torch.compile mode; it needs compile=True")
    if compile:
        try:
            check_settings(backend, mode)
        except ValueError as e:
            raise ValueError(f"{who}: {e}") from None


def make_sweep_step(
    gan: GAN,
    compile: bool = True,
    backend: str = "inductor",
    mode: str | None = None,
    guard: Guard | None = None,
    lazy: Any = None,
    kernel_threads: int | None = None,
    vectorize: bool = True,
    steps_per_call: int = 1,
    phased: bool = True,
    host_hash: bool = False,
) -> Callable[[TrainState, tuple], tuple[TrainState, Metrics]]:
    """The guarded step vmapped over runs (axis 0 of the state), compiled once.

    Args:
        gan: the GAN.
        compile: wrap in ``torch.compile(..., fullgraph=True)`` (compile outermost).
        backend: ``"inductor"`` for speed; ``"aot_eager"`` traces the same graph without inductor.
        mode: torch.compile mode (``"reduce-overhead"`` uses CUDA graphs); an unknown backend or
            mode, or a mode without ``compile`` or with a backend other than inductor, is a
            ``ValueError`` here, before anything compiles (:func:`funcgan.compile.check_settings`).
        guard: divergence criteria (default :class:`~funcgan.guard.Guard()`).
        lazy: which lazy penalties are on (see :func:`funcgan.step.make_train_step`); with
            ``steps_per_call > 1``, a list of one pattern per step.
        kernel_threads: threads of inductor's CPU kernels (see :func:`funcgan.compile.compile`).
        vectorize: vmap over the runs of a stacked state (``False``: the guarded step of one run).
        steps_per_call: K steps inside one call (unrolled in the compiled graph: one graph, no
            per-step call overhead, a CUDA graph can replay all K).
        phased: for a loop with phases (:class:`~funcgan.loops.Adaptive`) and one step per call,
            drive them from the host (:class:`PhasedStep`): the G updates no run makes are skipped.
        host_hash: compiled on the CPU, hash the keys on the host (:func:`funcgan.random.host_hash`):
            the same numbers, a shorter cold compile, a little more per step.

    Returns:
        ``step(states, data) -> (states, metrics)`` with metrics ``(S,)`` float64 (NaN for a run that
        has diverged); with ``steps_per_call = K``, metrics ``(K, S)`` (``(K,)`` unvectorised).
    """
    if isinstance(steps_per_call, bool) or not isinstance(steps_per_call, int) or steps_per_call < 1:
        raise ValueError(f"sweep: steps_per_call must be an int >= 1, got {steps_per_call!r}")
    _check_compile("sweep", compile, backend, mode)
    guard = guard or Guard()
    if phased and steps_per_call == 1 and _is_phased(gan.loop):
        return PhasedStep(gan, guard, lazy, compile, backend, mode, kernel_threads, vectorize, host_hash)
    patterns = lazy if isinstance(lazy, list) else [lazy] * steps_per_call
    if len(patterns) != steps_per_call:
        raise ValueError(f"sweep: {len(patterns)} lazy patterns for {steps_per_call} steps per call")
    steps = [guarded(make_train_step(gan, p), guard, gan.loop.objective.saturation) for p in patterns]
    if steps_per_call == 1:
        one = steps[0]
    else:

        def one(state: TrainState, data: tuple) -> tuple[TrainState, Metrics]:
            ms = []
            for fn in steps:
                state, m = fn(state, data)
                ms.append(m)
            return state, {k: torch.stack([m[k] for m in ms]) for k in ms[0]}  # (K,) per run

    vstep = vmap(one, in_dims=(0, None), randomness="error") if vectorize else one
    if vectorize and steps_per_call > 1:
        inner = vstep

        def vstep(state, data):  # type: ignore[no-redef]
            state, ms = inner(state, data)
            return state, {k: v.transpose(0, 1) for k, v in ms.items()}  # (K, S)

    if compile:
        vstep = compile_step(vstep, backend=backend, mode=mode, kernel_threads=kernel_threads, host_hash=host_hash)
    return vstep


def _is_phased(loop: Any) -> bool:
    return all(hasattr(loop, m) for m in ("begin", "gen_phase", "finish", "active"))


def _unaliased(carry: Any, state: TrainState) -> Any:
    """``carry`` with copies of the tensors it shares with ``state`` (a compiled phase hands back an
    unchanged input as its output; two arguments sharing a tensor on some calls and not on others
    would make dynamo recompile)."""
    seen = {id(x) for x in tree_leaves(state) if isinstance(x, torch.Tensor)}
    return tree_map(lambda x: x.clone() if isinstance(x, torch.Tensor) and id(x) in seen else x, carry)


class PhasedStep:
    """A loop's step in phases, driven from the host: ``begin`` (the D phase), then G steps while any
    run is active (one host sync each, so a G update no run makes is never computed), then ``finish``
    (the countdown, EMA, step count and the guard). Each phase is vmapped and compiled on its own.

    Compiled, ``begin`` also returns which runs are active and, speculatively, the step ``finish``
    would make without a G update: a step in which no run trains G is one call. Eager, the phases
    run one by one (a speculative finish would cost its kernels twice).

    The same numbers as the masked step (:func:`funcgan.step.make_train_step`) for every run that is
    active, and inactive runs keep their state exactly (``tree_where``); compiled, the phases are
    separate graphs, so they may round differently from the one-graph masked step.
    """

    def __init__(
        self,
        gan: GAN,
        guard: Guard,
        lazy: Any,
        compile: bool,
        backend: str,
        mode: str | None,
        kernel_threads: int | None,
        vectorize: bool,
        host_hash: bool = False,
    ):
        from funcgan.guard import check
        from funcgan.loops.adaptive import gen_inputs, pack
        from funcgan.step import finish_step, player_dtype, step_key

        loop = self.loop = gan.loop
        saturation = loop.objective.saturation
        self.fused = compile

        def finish_one(state, carry):
            new, metrics = loop.finish(gan, state, carry)
            return check(state, finish_step(gan, state, new), metrics, guard, saturation)

        def begin(state, data):
            inputs = loop.draw(gan, step_key(state), data, player_dtype(state))
            carry = loop.begin(gan, state, inputs, lazy)
            if not compile:
                return carry, pack(inputs), loop.active(carry)
            return carry, pack(inputs), loop.active(carry), finish_one(state, carry)

        def gen(state, inputs, carry, i):
            carry = loop.gen_phase(gan, state, gen_inputs(inputs, i), carry, i, lazy)
            return carry, loop.active(carry)

        if vectorize:
            begin = vmap(begin, in_dims=(0, None), randomness="error")
            gen = vmap(gen, in_dims=(0, 0, 0, None), randomness="error")
            finish = vmap(finish_one, randomness="error")
        else:
            finish = finish_one
        if compile:  # no ChainCaller: a phase's inputs come from different phases, not one chain,
            # so skipping dynamo's guards would not be provably safe
            begin, gen, finish = (
                compile_step(f, backend=backend, mode=mode, kernel_threads=kernel_threads, host_hash=host_hash)
                for f in (begin, gen, finish)
            )
        self.begin, self.gen, self.finish = begin, gen, finish
        self.indices = [torch.tensor(i) for i in range(loop.max_gen_steps)]
        self.gen_calls = 0  # G phases run so far (a count for tests and benchmarks)

    def __call__(self, state: TrainState, data: tuple) -> tuple[TrainState, Metrics]:
        carry, inputs, active, *speculative = self.begin(state, data)
        for i in range(self.loop.max_gen_steps):
            if not bool(active.any()):  # the host decides: no run is active, none computes
                if i == 0 and speculative:
                    return speculative[0]
                break
            carry, active = self.gen(state, inputs, _unaliased(carry, state), self.indices[i].to(state.step.device))
            self.gen_calls += 1
        return self.finish(state, _unaliased(carry, state))


@dataclass
class SweepResult:
    """What a sweep returns.

    Attributes:
        points: the runs, in order.
        state: the final stacked state (leaves ``(S, ...)``).
        history: metric name -> ``(T, S)`` float64 CPU tensor at ``logged_steps`` (NaN where a run
            had diverged, or had not reached that step).
        logged_steps: the (1-based, absolute) step numbers of ``history``'s rows.
        diverged_at: ``(S,)`` int64, the step at which each run was flagged, -1 if never.
        reasons: ``(S,)`` int64 reason codes (:data:`funcgan.guard.REASONS`).
        seconds: wall time of the training loop (compilation included).
        compile_seconds: time of the first call (compilation + 1 step).
        chunk_size: runs per call (after padding).
        compiled: whether the step was compiled.
    """

    points: list[dict[str, Any]]
    state: TrainState
    history: dict[str, torch.Tensor]
    logged_steps: list[int]
    diverged_at: torch.Tensor
    reasons: torch.Tensor
    seconds: float
    compile_seconds: float
    chunk_size: int
    compiled: bool = True
    extras: dict[str, Any] = field(default_factory=dict)


def caller(step: Callable) -> Callable:
    """A compiled sweep step as :func:`run` calls it along a chain of states: a one-graph step
    behind a :class:`~funcgan.compile.ChainCaller` (guards skipped once the chain is known; call
    ``restart()`` at a new chain), a :class:`PhasedStep` as it is (its phases' inputs come from
    different phases, so their guards are always evaluated)."""
    return step if isinstance(step, PhasedStep) else ChainCaller(step)


def seed_state(states: TrainState, index: int) -> TrainState:
    """Run ``index``'s state, sliced out of a sweep: continue it alone with the plain step."""
    check_state(states, stacked=True, who="seed_state")
    return tree_index(states, index)


def chunk_shape(n_runs: int, chunk_size: int | str | None, compiled: bool) -> int:
    """Runs per call: ``chunk_size`` (``None``: ``min(S, 256)``) compiled; 1 (the plain step) eager.
    (``"auto"``, and ``None`` on the CPU, are resolved by :func:`run` with :func:`plan_chunk`.)"""
    if chunk_size == "auto":
        return min(n_runs, CPU_CHUNK) if compiled else 1
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"sweep: chunk_size must be an int >= 1 or 'auto', got {chunk_size!r}")
    return min(n_runs, chunk_size or CPU_CHUNK) if compiled else 1


def plan_chunk(
    system,
    n_runs: int,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    fraction: float = 0.8,
    steps_per_call: int = 1,
) -> Plan:
    """The chunk for ``n_runs`` runs of ``system`` on ``device`` (see :mod:`funcgan.memory`): on CUDA
    the eager guarded vmapped step is measured on chunks of 2 and 8 runs and the widest chunk
    that fits in ``fraction`` of the free memory is chosen; on the CPU one run's plain step is
    run once and the chunk is the widest whose step writes at most 1 GiB, 256 runs at most
    (:func:`funcgan.memory.cpu_chunk`; per step, so ``steps_per_call`` does not change it);
    elsewhere ``min(n_runs, 256)``.

    Returns:
        ``(chunk_size, why)``. Raises ``ValueError`` when not even one run fits.
    """
    gan = system.gan
    kind = torch.device(device).type
    if kind == "cpu" and n_runs == 1:
        return Plan(1, "1 run per call (a lone run)")
    if kind not in ("cpu", "cuda"):
        chunk = min(n_runs, CPU_CHUNK)
        return Plan(chunk, f"{chunk} run(s) per call (min(S, {CPU_CHUNK}) on {kind})")
    data = tuple(x.to(device=device, dtype=dtype) if x.is_floating_point() else x.to(device) for x in system.data)
    if kind == "cpu":  # by what one run's step writes (funcgan.memory.cpu_chunk)
        one = seed_state(init_sweep(gan, grid(range(1)), dtype, "cpu"), 0)
        return cpu_chunk(written_bytes(make_train_step(gan), one, data), n_runs)
    step = make_sweep_step(gan, compile=False, steps_per_call=steps_per_call, phased=False)
    costs = measure(step, lambda n: init_sweep(gan, grid(range(n)), dtype, device), data, (2, 8), device)
    return fit_chunk(costs, free_bytes(device), n_runs, fraction)


def choose_chunk(
    system,
    n_runs: int,
    chunk_size: int | str | None,
    compile: bool,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    steps_per_call: int = 1,
) -> Plan:
    """The chunk :func:`run` uses for ``n_runs`` runs: :func:`plan_chunk` for ``"auto"`` and, on the
    CPU, for ``None`` (compiled); otherwise :func:`chunk_shape` (the chunk asked for; eager, one run)."""
    if compile and (chunk_size == "auto" or (chunk_size is None and torch.device(device).type == "cpu")):
        return plan_chunk(system, n_runs, device, dtype, steps_per_call=steps_per_call)
    C = chunk_shape(n_runs, chunk_size, compile)
    return Plan(C, f"{C} run(s) per call" + ("" if compile else " (eager: each run alone)"))


def lone_run_threads(n_runs: int, device: torch.device | str) -> int | None:
    """Inductor kernel threads for a compiled sweep of ``n_runs``: one for a lone run on the CPU (its
    tiny kernels' OpenMP barriers cost more than they share), torch's otherwise (``None``); a chunk of
    one run in a wider sweep, because each run is large, keeps them all."""
    return 1 if n_runs == 1 and str(device) == "cpu" else None


def _cpu_inductor(device: torch.device | str, backend: str | Callable) -> bool:
    """Whether a compile of this backend on this device is inductor's C++ one (what the cold-compile
    workarounds of :func:`host_hash_pays` and :func:`funcgan.compile.prefetch_cpu_isa` are for)."""
    return torch.device(device).type == "cpu" and backend == "inductor"


def host_hash_pays(run_steps: int, device: torch.device | str = "cpu", backend: str = "inductor") -> bool:
    """Whether a compiled sweep of ``run_steps`` run-steps is faster with its keys hashed on the host
    (:func:`funcgan.random.host_hash`): on the CPU under inductor, up to :data:`HOST_HASH_RUN_STEPS`."""
    return _cpu_inductor(device, backend) and run_steps <= HOST_HASH_RUN_STEPS


def logged_steps(steps: int, log_every: int) -> list[int]:
    """The steps ``1..steps`` whose metrics a run keeps: every ``log_every``-th and the last."""
    return list(range(log_every, steps + 1, log_every)) + ([steps] if steps % log_every else [])


def _check_data(system) -> tuple[torch.Tensor, ...]:
    from funcgan.data import check_data

    for i, x in enumerate(system.data):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"sweep: data[{i}] must be a tensor, got {type(x).__name__}")
        if x.is_floating_point():
            check_data(f"sweep: data[{i}]", x)
    return system.data


def run(
    system,
    points: Sequence[dict[str, Any]],
    steps: int,
    chunk_size: int | str | None = None,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    compile: bool = True,
    backend: str = "inductor",
    mode: str | None = None,
    log_every: int = 10,
    progress: Callable[[int], None] | None = None,
    states: TrainState | None = None,
    history: tuple[dict[str, torch.Tensor], list[int]] | None = None,
    guard: Guard | None = None,
    offload: bool | None = None,
    checkpoint: Callable[[SweepResult], None] | None = None,
    checkpoint_every: int | None = None,
    steps_per_call: int = 1,
    host_hash: bool | None = None,
) -> SweepResult:
    """Train every point of a sweep to step ``steps``.

    Args:
        system: a :class:`~funcgan.systems.System` (its GAN and data).
        points: from :func:`grid` (dicts with ``seed`` and hyper-parameters).
        steps: the step every run trains to.
        chunk_size: runs per call; ``"auto"``: :func:`plan_chunk` (on CUDA the widest chunk that
            fits in free device memory, on the CPU the widest whose step writes at most 1 GiB).
            Default: compiled, ``"auto"`` on the CPU and ``min(S, 256)`` elsewhere; eager, one run a call.
        device, dtype: where and in what precision.
        compile, backend, mode: see :func:`make_sweep_step`.
        log_every: keep metrics every this many steps (no device sync in between).
        progress: called with the number of run-steps done after each call.
        states: continue these stacked states (a checkpoint) instead of fresh ones; each run
            continues from its own step count.
        history: the ``(history, logged_steps)`` recorded so far, continued.
        guard: divergence criteria (default :class:`~funcgan.guard.Guard()`).
        offload: keep finished chunks' states on the CPU (default: when ``device`` is not the CPU).
        checkpoint: called with the sweep so far (a :class:`SweepResult` whose ``state`` holds
            every run: finished, in progress, not started) every ``checkpoint_every`` steps of a
            chunk, and at a chunk's end once ``checkpoint_every`` chunk-steps have passed since
            the last one (at every chunk's end when ``checkpoint_every`` is None). The caller saves
            the final result itself.
        checkpoint_every: steps between checkpoints (default: only at chunk ends).
        steps_per_call: K steps per call (see :func:`make_sweep_step`); a run's result does not depend
            on K beyond round-off (compiled: K steps fuse into one graph).
        host_hash: compiled on the CPU, hash the keys on the host (see :func:`make_sweep_step`; the
            same numbers). Default: when the run-steps still to train are few enough to pay
            (:func:`host_hash_pays`).

    Returns:
        A :class:`SweepResult`.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS:
        raise ValueError(f"sweep.run: steps must be an int in [1, 2**32] (step keys repeat beyond it), got {steps!r}")
    if isinstance(log_every, bool) or not isinstance(log_every, int) or log_every < 1:
        raise ValueError(f"sweep.run: log_every must be an int >= 1, got {log_every!r}")
    if checkpoint_every is not None and (not isinstance(checkpoint_every, int) or checkpoint_every < 1):
        raise ValueError(f"sweep.run: checkpoint_every must be an int >= 1, got {checkpoint_every!r}")
    _check_compile("sweep.run", compile, backend, mode)
    gan = system.gan
    points = list(points)
    check_points(gan, points)
    S = len(points)
    data = tuple(
        (x.to(device=device, dtype=dtype) if x.is_floating_point() else x.to(device)) for x in _check_data(system)
    )
    if states is not None:
        if check_state(states, gan, stacked=True, who="sweep.run") != S:
            raise ValueError(f"sweep.run: the given states hold {states.step.shape[0]} runs, the points {S}")
    C, chunk_why = choose_chunk(system, S, chunk_size, compile, device, dtype, steps_per_call)
    if offload is None:
        offload = not str(device).startswith("cpu")
    keep_on = "cpu" if offload else device
    guard = guard or Guard()
    kernel_threads = lone_run_threads(S, device)
    steps_cache: dict[Any, Callable] = {}

    def step_for(t: int, k: int) -> Callable:
        """The call that makes steps ``t .. t + k - 1`` (one compiled function per lazy pattern sequence)."""
        patterns = [gan.loop.lazy_pattern(t + i) for i in range(k)]
        key = (k, tuple(None if p is None else tuple(sorted(p.items())) for p in patterns))
        if key not in steps_cache:
            fn = make_sweep_step(
                gan,
                compile=compile,
                backend=backend,
                mode=mode,
                guard=guard,
                lazy=patterns if k > 1 else patterns[0],
                kernel_threads=kernel_threads,
                vectorize=compile,
                steps_per_call=k,
                host_hash=on_host,
            )
            steps_cache[key] = caller(fn) if compile else fn
        return steps_cache[key]

    cudagraphs = compile and mode is not None and "reduce-overhead" in mode
    logged = logged_steps(steps, log_every)
    row_of = {t: i for i, t in enumerate(logged)}
    hist: dict[str, torch.Tensor] = {}
    if history is not None:
        prev, prev_logged = history
        for k, v in prev.items():
            hist[k] = torch.full((len(logged), S), float("nan"), dtype=torch.float64)
            for i, t in enumerate(prev_logged):
                if t in row_of:
                    hist[k][row_of[t]] = v[i].to(torch.float64)
    # finished (or resumed) runs wait here between chunks, as stacked states: (indices, state) pairs
    start = states.step.to("cpu").tolist() if states is not None else [0] * S
    pending = [i for i in range(S) if start[i] < steps]
    # by the run-steps still to train (a resumed sweep has fewer); step_for reads it at its first call
    if host_hash is None:
        on_host = compile and host_hash_pays(sum(steps - start[i] for i in pending), device, backend)
    else:
        on_host = bool(host_hash)
    if compile and pending and _cpu_inductor(device, backend):
        prefetch_cpu_isa()  # inductor's ISA check in the background, during the first trace
    parts: list[tuple[list[int], TrainState]] = []
    if states is not None:
        done = [i for i in range(S) if start[i] >= steps]
        if done:
            parts.append((done, tree_map(lambda x: x[torch.tensor(done)].to(keep_on), states)))
    groups: list[list[int]] = []
    for s0 in sorted({start[i] for i in pending}, reverse=True):  # the runs furthest on first
        members = [i for i in pending if start[i] == s0]
        groups += [members[j : j + C] for j in range(0, len(members), C)]

    def materialise(idx: list[int]) -> TrainState:
        if states is not None:
            return tree_map(lambda x: x[torch.tensor(idx)].to(device), states)
        return init_sweep(gan, [points[i] for i in idx], dtype, device)

    def assemble(current: tuple[list[int], TrainState] | None) -> TrainState:
        """Every run's state, in the points' order (runs not started yet as they start)."""
        pieces = list(parts) + ([current] if current is not None else [])
        have = {i for idx, _ in pieces for i in idx}
        missing = [i for i in range(S) if i not in have]
        if missing:
            pieces.append((missing, materialise(missing)))
        order = torch.tensor([i for idx, _ in pieces for i in idx])
        inverse = torch.argsort(order)
        return tree_map(lambda *xs: torch.cat([x.to(keep_on) for x in xs])[inverse], *(st for _, st in pieces))

    def result(state: TrainState, seconds: float, compile_seconds: float) -> SweepResult:
        return SweepResult(
            points,
            state,
            {k: v.clone() for k, v in hist.items()},
            logged,
            state.health["diverged_at"].cpu(),
            state.health["reason"].cpu(),
            seconds,
            compile_seconds,
            C,
            compile,
            {"chunk_plan": chunk_why},
        )

    t0 = time.perf_counter()
    compile_seconds = 0.0
    first_call = True
    since_checkpoint = 0  # chunk-steps since the last checkpoint
    for idx in groups:
        n = len(idx)
        chunk = materialise(idx)
        if not compile:  # one run, the plain step
            chunk = tree_index(chunk, 0)
        elif n < C:  # pad to the call shape with copies of the chunk's first run (dropped below)
            pad = torch.cat([torch.arange(n, device=device), torch.zeros(C - n, dtype=torch.int64, device=device)])
            chunk = tree_map(lambda x, pad=pad: x[pad].clone(), chunk)
        for fn in steps_cache.values():
            if isinstance(fn, ChainCaller):
                fn.restart()  # a new chain of states
        t_start = start[idx[0]]
        t = t_start
        while t < steps:
            n_call = min(steps_per_call, steps - t)
            fn = step_for(t, n_call)
            if first_call:
                tc = time.perf_counter()
            if cudagraphs:
                torch.compiler.cudagraph_mark_step_begin()
            chunk, metrics = fn(chunk, data)
            if cudagraphs:  # replays overwrite their outputs; the state must outlive the next one
                chunk = tree_map(torch.clone, chunk)
            if first_call:
                if str(device).startswith("cuda"):
                    torch.cuda.synchronize()
                compile_seconds = time.perf_counter() - tc
                first_call = False
            for i in range(n_call):  # metrics of steps t + 1 .. t + n_call
                step_no = t + i + 1
                if step_no in row_of:
                    for name, v in metrics.items():
                        v = v[i] if n_call > 1 else v
                        if name not in hist:
                            hist[name] = torch.full((len(logged), S), float("nan"), dtype=torch.float64)
                        hist[name][row_of[step_no], torch.tensor(idx)] = (
                            (v[:n] if compile else v[None]).detach().to("cpu", torch.float64)
                        )
            t += n_call
            if progress is not None:
                progress(n * n_call)
            since_checkpoint += n_call
            if checkpoint is not None and checkpoint_every is not None and t % checkpoint_every < n_call and t < steps:
                current = tree_map(lambda x, n=n: x[:n], chunk) if compile else tree_map(lambda x: x[None], chunk)
                checkpoint(result(assemble((idx, current)), time.perf_counter() - t0, compile_seconds))
                since_checkpoint = 0
        if not compile:
            chunk = tree_map(lambda x: x[None], chunk)
        parts.append((idx, tree_map(lambda x, n=n: x[:n].to(keep_on, copy=True), chunk)))
        del chunk
        # at a chunk's end, unless the last checkpoint is recent (many short eager runs)
        if checkpoint is not None and (checkpoint_every is None or since_checkpoint >= checkpoint_every):
            checkpoint(result(assemble(None), time.perf_counter() - t0, compile_seconds))
            since_checkpoint = 0
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    return result(assemble(None), seconds, compile_seconds)
