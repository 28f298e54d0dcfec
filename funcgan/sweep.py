"""Multi-seed sweeps: S training runs as one vmapped, compiled program.

    points = sweep.grid(seeds=range(256), gen_lr=[1e-3, 1e-4])   # 512 runs
    result = sweep.run(system, points, steps=1000)               # compile(vmap(step)), chunked
    table = sweep.per_seed_table(system, result)

How it works:

* :func:`init_sweep` builds the S states with ``vmap(init_state)`` over the
  seeds' keys, then writes each run's hyper-parameters (learning rates, betas,
  clipping norms, loss weights) into the states as tensors, so the same compiled
  program serves every point of the grid: no recompiles.
* :func:`make_sweep_step` wraps the pure step with a divergence guard (a run
  whose new state or metrics are non-finite keeps its last finite state and
  records the step at which it diverged; the others go on), vmaps it over the
  leading axis and compiles it once (``torch.compile(vmap(step), fullgraph=True)``).
* :func:`run` drives it chunk by chunk: each chunk of ``chunk_size`` runs trains
  for all steps before the next starts, so a chunk's working set stays in cache
  and more runs than fit in memory can be swept. The last chunk is padded (with
  copies of its first run, dropped afterwards) so every call has the same shape.

Every run is the run its seed gives alone: its randomness is ``fold_in(key(seed), t)``,
its arithmetic touches only its own slice, so neither the sweep's width, the
run's position in it, the chunk size nor compilation changes it (beyond
round-off; see ``tests/test_sweep.py``).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Sequence

import torch
from torch.func import vmap

from funcgan.compile import ChainCaller, compile as compile_step
from funcgan import random as fr
from funcgan.optim.base import InjectHyperparamsState
from funcgan.train import GAN, Metrics, TrainState, init_state, make_train_step
from funcgan.tree import tree_all_finite, tree_index, tree_map, tree_where

__all__ = [
    "HYPERPARAMETERS",
    "grid",
    "check_points",
    "init_sweep",
    "make_sweep_step",
    "run",
    "SweepResult",
    "seed_state",
]

#: Sweepable hyper-parameters: name -> (player or None for a loss weight, optimizer field).
HYPERPARAMETERS = {
    "gen_lr": ("gen", "lr"),
    "disc_lr": ("disc", "lr"),
    "gen_betas": ("gen", "betas"),
    "disc_betas": ("disc", "betas"),
    "gen_clip_norm": ("gen", "clip_norm"),
    "disc_clip_norm": ("disc", "clip_norm"),
    "gen_weight_decay": ("gen", "weight_decay"),
    "disc_weight_decay": ("disc", "weight_decay"),
}


def grid(seeds: Iterable[int], **hyper: Sequence[Any]) -> list[dict[str, Any]]:
    """The cross product of seeds and hyper-parameter values, as a list of points.

    ``grid(range(4), gen_lr=[1e-3, 1e-4])`` gives 8 points ``{"seed": s, "gen_lr": lr}``.
    Seeds vary fastest: the first ``len(seeds)`` points share the first value of
    every hyper-parameter. Sweepable names: :data:`HYPERPARAMETERS` and the GAN's
    ``hparams`` (e.g. ``l1_weight``).
    """
    seeds = list(seeds)
    names = list(hyper)
    points = []
    for values in itertools.product(*(list(hyper[n]) for n in names)):
        for s in seeds:
            points.append({"seed": s, **dict(zip(names, values))})
    return points


def check_points(gan: GAN, points: Sequence[dict[str, Any]]) -> None:
    """Raise ``ValueError`` naming the problem for an empty sweep, a duplicate run, a bad
    seed, an unknown or invalid hyper-parameter, or one the GAN's optimizer cannot sweep."""
    if len(points) == 0:
        raise ValueError("sweep: no seeds given (an empty sweep)")
    seen = set()
    for p in points:
        if "seed" not in p:
            raise ValueError(f"sweep: point {p} has no 'seed'")
        s = p["seed"]
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise ValueError(f"sweep: seeds must be non-negative ints, got {s!r}")
        ident = tuple(sorted((k, tuple(v) if isinstance(v, (list, tuple)) else v) for k, v in p.items()))
        if ident in seen:
            raise ValueError(f"sweep: duplicate run {dict(p)} (the same seed with the same hyper-parameters twice)")
        seen.add(ident)
        for k, v in p.items():
            if k == "seed":
                continue
            if k in HYPERPARAMETERS:
                player, fld = HYPERPARAMETERS[k]
                base = gan.gen_opt if player == "gen" else gan.disc_opt
                if fld == "clip_norm" and base.clip_norm is None:
                    raise ValueError(f"sweep: {k} needs the GAN's {player} optimizer to clip (clip_norm set)")
                if fld == "weight_decay" and base.weight_decay == 0:
                    raise ValueError(f"sweep: {k} needs a non-zero base weight_decay in the GAN's {player} optimizer")
                replace(base, **{fld: tuple(v) if fld == "betas" else v})  # validates the value
            elif k in gan.hparams:
                if not isinstance(v, (int, float)) or not math.isfinite(v):
                    raise ValueError(f"sweep: {k} must be a finite number, got {v!r}")
            else:
                raise ValueError(f"sweep: unknown hyper-parameter '{k}'; this GAN sweeps "
                                 f"{sorted(list(HYPERPARAMETERS) + list(gan.hparams))}")


def init_sweep(
    gan: GAN,
    points: Sequence[dict[str, Any]],
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> TrainState:
    """Stacked initial states, one per point (leaves ``(S, ...)``).

    Run ``i`` starts exactly as ``init_state(gan, key(points[i]["seed"]))`` with
    the point's hyper-parameters written into its optimizer states and
    ``hparams``. Every leaf is a fresh contiguous tensor.
    """
    check_points(gan, points)
    seeds = torch.tensor([p["seed"] for p in points], dtype=torch.int64, device=device)
    keys = fr.key(seeds)  # (S, 2)
    states = vmap(lambda k: init_state(gan, k, dtype, device), randomness="error")(keys)
    states = tree_map(lambda x: x.contiguous().clone(), states)
    states = states._replace(extra={**states.extra, "diverged_at": torch.full((len(points),), -1, dtype=torch.int64, device=device)})
    names = {k for p in points for k in p if k != "seed"}
    for name in sorted(names):
        values = [p.get(name) for p in points]
        if any(v is None for v in values):
            raise ValueError(f"sweep: '{name}' is set for some points and not others")
        states = _write_hyperparameter(states, name, values, device)
    return states


def _write_hyperparameter(states: TrainState, name: str, values: list[Any], device) -> TrainState:
    col = torch.tensor(values, dtype=torch.float64, device=device)  # (S,) or (S, 2) for betas
    if name in HYPERPARAMETERS:
        player, fld = HYPERPARAMETERS[name]
        attr = f"{player}_opt_state"
        opt_state: InjectHyperparamsState = getattr(states, attr)
        hp = dict(opt_state.hyperparams)
        hp[fld] = col
        return states._replace(**{attr: opt_state._replace(hyperparams=hp)})
    return states._replace(hparams={**states.hparams, name: col})


def _guarded(step: Callable[[TrainState, tuple], tuple[TrainState, Metrics]]):
    """Freeze a run at its last finite state when a step makes it non-finite."""

    def guarded(state: TrainState, data: tuple) -> tuple[TrainState, Metrics]:
        new, metrics = step(state, data)
        diverged_at = state.extra["diverged_at"]
        alive = diverged_at < 0
        ok = alive & tree_all_finite((new.gen_params, new.disc_params, new.gen_opt_state, new.disc_opt_state,
                                      new.gen_buffers, new.disc_buffers)) & tree_all_finite(metrics)
        kept = tree_where(ok, new, state)
        newly_dead = alive & ~ok
        kept = kept._replace(extra={**kept.extra, "diverged_at": torch.where(newly_dead, state.step, diverged_at)})
        nan = torch.tensor(float("nan"), dtype=torch.float64, device=state.step.device)
        metrics = {k: torch.where(ok, v.to(torch.float64), nan) for k, v in metrics.items()}
        return kept, metrics

    return guarded


def make_sweep_step(
    gan: GAN,
    compile: bool = True,
    backend: str = "inductor",
    mode: str | None = None,
    kernel_threads: int | None = None,
) -> Callable[[TrainState, tuple], tuple[TrainState, Metrics]]:
    """The divergence-guarded step vmapped over runs (axis 0 of the state), compiled once.

    Args:
        gan: the GAN.
        compile: wrap in ``torch.compile(..., fullgraph=True)`` (compile outermost).
        backend: ``"inductor"`` for speed; ``"aot_eager"`` traces the same graph in
            about a second (tests).
        mode: torch.compile mode (``"reduce-overhead"`` uses CUDA graphs).
        kernel_threads: threads of inductor's CPU kernels (default: torch's; see
            :func:`funcgan.compile.compile`).

    Compiled with :func:`funcgan.compile.compile` (inductor gets the thin-bmm pass).

    Returns:
        ``step(states, data) -> (states, metrics)`` with metrics ``(S,)`` float64
        (NaN for a run that has diverged).
    """
    vstep = vmap(_guarded(make_train_step(gan)), in_dims=(0, None), randomness="error")
    if compile:
        vstep = compile_step(vstep, backend=backend, mode=mode, kernel_threads=kernel_threads)
    return vstep


@dataclass
class SweepResult:
    """What a sweep returns.

    Attributes:
        points: the runs, in order.
        state: the final stacked state (leaves ``(S, ...)``).
        history: metric name -> ``(T, S)`` float64 CPU tensor, metrics at ``logged_steps``.
        logged_steps: the (1-based) step numbers in ``history``.
        diverged_at: ``(S,)`` int64, the step at which each run diverged, -1 if never.
        seconds: wall time of the training loop (compilation included).
        compile_seconds: time of the first chunk's first call (compilation + 1 step).
        chunk_size: runs per compiled call.
    """

    points: list[dict[str, Any]]
    state: TrainState
    history: dict[str, torch.Tensor]
    logged_steps: list[int]
    diverged_at: torch.Tensor
    seconds: float
    compile_seconds: float
    chunk_size: int
    extras: dict[str, Any] = field(default_factory=dict)


def seed_state(states: TrainState, index: int) -> TrainState:
    """Run ``index``'s state, sliced out of a sweep: continue it alone with the plain step."""
    s = tree_index(states, index)
    extra = {k: v for k, v in s.extra.items() if k != "diverged_at"}
    return s._replace(extra=extra)


def run(
    system,
    points: Sequence[dict[str, Any]],
    steps: int,
    chunk_size: int | None = None,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    compile: bool = True,
    backend: str = "inductor",
    mode: str | None = None,
    log_every: int = 10,
    progress: Callable[[int], None] | None = None,
    states: TrainState | None = None,
    offload: bool | None = None,
) -> SweepResult:
    """Train every point of a sweep for ``steps`` steps.

    Args:
        system: a :class:`~funcgan.systems.System` (its GAN and data).
        points: from :func:`grid` (dicts with ``seed`` and hyper-parameters).
        steps: steps per run.
        chunk_size: runs per compiled call (default: all, at most 1024).
        device, dtype: where and in what precision.
        compile, backend, mode: see :func:`make_sweep_step`.
        log_every: keep metrics every this many steps (no device sync in between).
        progress: called with the number of run-steps done after each call.
        states: start from these stacked states instead of fresh ones.
        offload: keep finished chunks' states on the CPU (default: when ``device``
            is not the CPU), so device memory holds one chunk at a time and a sweep
            larger than device memory still runs, with the same per-run results.

    Returns:
        A :class:`SweepResult`.
    """
    import time

    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"sweep.run: steps must be an int >= 1, got {steps!r}")
    if log_every < 1:
        raise ValueError(f"sweep.run: log_every must be >= 1, got {log_every}")
    gan = system.gan
    points = list(points)
    S = len(points)
    if states is None:
        check_points(gan, points)
    elif "diverged_at" not in states.extra:
        states = states._replace(extra={**states.extra, "diverged_at": torch.full((S,), -1, dtype=torch.int64, device=device)})
    C = min(S, chunk_size or 1024)
    if C < 1:
        raise ValueError(f"sweep.run: chunk_size must be >= 1, got {chunk_size}")
    # finished chunks wait on the CPU when training on an accelerator: device memory holds one chunk
    if offload is None:
        offload = not str(device).startswith("cpu")
    keep_on = "cpu" if offload else device
    data = tuple(x.to(device=device, dtype=dtype) for x in system.data)
    # one run's kernels are too small to share between threads (OpenMP barriers cost more)
    kernel_threads = 1 if C == 1 and str(device) == "cpu" else None
    vstep = make_sweep_step(gan, compile=compile, backend=backend, mode=mode, kernel_threads=kernel_threads)
    caller = ChainCaller(vstep) if compile else None  # guards exist only for a compiled step
    cudagraphs = compile and mode is not None and "reduce-overhead" in mode
    logged = [t for t in range(1, steps + 1) if t % log_every == 0 or t == steps]
    finals, histories = [], []
    t0 = time.perf_counter()
    compile_seconds = 0.0
    for c0 in range(0, S, C):
        n = min(C, S - c0)
        if states is None:  # built lazily, chunk by chunk: all S states never sit on the device at once
            chunk = init_sweep(gan, points[c0:c0 + n], dtype, device)
        else:
            chunk = tree_map(lambda x: x[c0:c0 + n].to(device), states)
        if n < C:  # pad to the compiled shape with copies of the chunk's first run (dropped below)
            pad = torch.cat([torch.arange(n, device=device), torch.zeros(C - n, dtype=torch.int64, device=device)])
            chunk = tree_map(lambda x: x[pad].clone(), chunk)
        rows: list[dict[str, torch.Tensor]] = []
        if caller is not None:
            caller.restart()  # a new chain of states (see ChainCaller)
        for t in range(1, steps + 1):
            if c0 == 0 and t == 1:
                tc = time.perf_counter()
            if cudagraphs:
                torch.compiler.cudagraph_mark_step_begin()
            chunk, metrics = (caller or vstep)(chunk, data)
            if cudagraphs:  # replays overwrite their outputs; the state must outlive the next one
                chunk = tree_map(torch.clone, chunk)
            if c0 == 0 and t == 1:
                if str(device).startswith("cuda"):
                    torch.cuda.synchronize()
                compile_seconds = time.perf_counter() - tc
            if t % log_every == 0 or t == steps:
                # a copy: CUDA-graph replays overwrite their outputs
                rows.append({k: v[:n].clone() for k, v in metrics.items()})
            if progress is not None:
                progress(n)
        finals.append(tree_map(lambda x: x[:n].to(keep_on, copy=True), chunk))
        histories.append({k: torch.stack([r[k] for r in rows]).cpu() for k in rows[0]})
        del chunk
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    final = tree_map(lambda *xs: torch.cat(xs), *finals) if len(finals) > 1 else finals[0]
    history = {k: torch.cat([h[k] for h in histories], dim=1) for k in histories[0]}
    return SweepResult(points, final, history, logged, final.extra["diverged_at"].cpu(), seconds,
                       compile_seconds, C)
