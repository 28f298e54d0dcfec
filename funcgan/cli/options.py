"""The one place where command-line strings become values: systems, loops, objectives, penalties, grids.

Every option defaults to ``None`` (not given), so a resumed run can tell an option
the user set from a default, and refuse one that contradicts the checkpoint.
"""

from __future__ import annotations

import argparse
import inspect
import math
from typing import Any

import torch

from funcgan import losses, systems
from funcgan import penalties as P
from funcgan.guard import Guard
from funcgan.loops import LOOPS
from funcgan.step import MAX_STEPS

__all__ = [
    "CLIError",
    "Parser",
    "add_problem_options",
    "add_run_options",
    "add_guard_options",
    "system_config",
    "build_system",
    "grid_values",
    "parse_seeds",
    "seed_count",
    "parse_steps",
    "parse_floats",
    "DTYPES",
    "device",
    "guard_from",
    "compile_settings",
    "SWEEPABLE_FLAGS",
    "MAX_SEED",
]

DTYPES = {"float32": torch.float32, "float64": torch.float64}
MAX_SEED = 2**63


class CLIError(Exception):
    """Bad input: printed as one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``CLIError``, exit code 2)."""

    def error(self, message: str):  # type: ignore[override]
        raise CLIError(f"{self.prog}: {message}")


# ----------------------------------------------------------------------------- parsing helpers


def parse_floats(name: str, spec: str | None) -> list[float] | None:
    """``"1e-3,1e-4"`` -> ``[0.001, 0.0001]`` (finite numbers), or None when not given."""
    if spec is None:
        return None
    try:
        values = [float(v) for v in str(spec).split(",") if v.strip()]
    except ValueError:
        raise CLIError(f"--{name}: '{spec}' is not a comma-separated list of numbers")
    if not values:
        raise CLIError(f"--{name}: no value given")
    bad = [v for v in values if not math.isfinite(v)]
    if bad:
        raise CLIError(f"--{name}: values must be finite, got {bad[0]}")
    if len(set(values)) != len(values):
        raise CLIError(f"--{name}: '{spec}' repeats a value")
    return values


def parse_pairs(name: str, spec: str | None) -> list[tuple[float, float]] | None:
    """``"0.5:0.999,0:0.9"`` -> ``[(0.5, 0.999), (0.0, 0.9)]``."""
    if spec is None:
        return None
    out = []
    for item in str(spec).split(","):
        try:
            a, b = item.split(":")
            out.append((float(a), float(b)))
        except ValueError:
            raise CLIError(f"--{name}: '{spec}' is not B1:B2[,B1:B2...]")
    return out


def parse_int(name: str, value: Any, low: int = 1, high: int | None = None) -> int:
    """An int in ``[low, high)``; ``CLIError`` naming the option otherwise."""
    try:
        v = int(str(value), 0) if isinstance(value, str) else int(value)
    except (TypeError, ValueError):
        raise CLIError(f"--{name}: '{value}' is not an integer")
    if v < low or (high is not None and v >= high):
        rng = f">= {low}" if high is None else f"in [{low}, {high})"
        raise CLIError(f"--{name} must be {rng}, got {v}")
    return v


def parse_steps(value: Any) -> int:
    """``--steps``: an int in ``[1, 2**32]``; beyond it a run's step keys would repeat (``step.MAX_STEPS``)."""
    v = parse_int("steps", value)
    if v > MAX_STEPS:
        raise CLIError(f"--steps must be at most 2**32 = {MAX_STEPS:,} (a run's step keys repeat beyond it), got {v:,}")
    return v


def parse_seeds(spec: str) -> range | list[int]:
    """``"0:256"`` (a range), ``"3"`` (one seed) or ``"1,5,9"`` (a list) -> seeds in [0, 2**63).

    A range stays a ``range`` (``0:1000000000`` is not a list of a billion ints in memory): count it
    with :func:`seed_count`, which does not overflow as ``len`` does beyond 2**63 - 1."""
    spec = str(spec).strip()
    try:
        if ":" in spec:
            a, b = spec.split(":")
            lo, hi = int(a), int(b)
            if lo < 0 or hi > MAX_SEED:
                raise CLIError(f"--seeds: seeds must be in [0, 2**63), got '{spec}'")
            seeds: range | list[int] = range(lo, hi)
        else:
            seeds = [int(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        raise CLIError(f"--seeds: bad value '{spec}'; use START:STOP or a comma list of integers")
    if seed_count(seeds) == 0:
        raise CLIError(f"--seeds '{spec}' gives no seeds")
    if isinstance(seeds, list):
        if len(set(seeds)) != len(seeds):
            raise CLIError(f"--seeds '{spec}' repeats a seed")
        bad = [s for s in seeds if not 0 <= s < MAX_SEED]
        if bad:
            raise CLIError(f"--seeds: seeds must be in [0, 2**63), got {bad[0]}")
    return seeds


def seed_count(seeds: range | list[int]) -> int:
    """How many seeds :func:`parse_seeds` gave."""
    return max(0, seeds.stop - seeds.start) if isinstance(seeds, range) else len(seeds)


def device(name: str | None) -> str:
    """A usable torch device name, or ``CLIError``."""
    name = name or "cpu"
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise CLIError(f"--device: bad device '{name}': {e}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CLIError(f"--device {name} requested but CUDA is not available on this machine")
    if dev.type not in ("cpu", "cuda"):
        raise CLIError(f"--device: funcgan runs on cpu or cuda, got '{name}'")
    return name


def compile_settings(backend: str | None, mode: str | None, device_name: str) -> None:
    """Check a compiled run's backend and mode; ``CLIError`` for an unknown backend or mode, a mode for a
    backend other than inductor (torch.compile would drop it), or CUDA graphs off a GPU."""
    from funcgan.compile import check_settings

    backend = backend or "inductor"
    for flag, args in (("backend", (backend,)), ("mode", (backend, mode))):
        try:
            check_settings(*args)
        except ValueError as e:
            raise CLIError(f"--{flag}: {e}")
    if mode == "reduce-overhead" and not device_name.startswith("cuda"):
        raise CLIError(f"--mode reduce-overhead makes CUDA graphs; the device is {device_name} (use --device cuda)")


# ----------------------------------------------------------------------------- argument groups

#: flags whose value may be a comma list in a sweep: flag dest -> sweep name (None: the optimizer's)
SWEEPABLE_FLAGS = {
    "gen_lr": "gen_lr",
    "disc_lr": "disc_lr",
    "gen_betas": "gen_betas",
    "disc_betas": "disc_betas",
    "gen_clip_norm": "gen_clip_norm",
    "disc_clip_norm": "disc_clip_norm",
    "gen_weight_decay": "gen_weight_decay",
    "disc_weight_decay": "disc_weight_decay",
    "gp": "gp",
    "r1": "r1",
    "r2": "r2",
    "dragan": "dragan",
    "clip": "clip",
    "ema": "ema_decay",
    "l1_weight": "l1_weight",
    "consensus": "consensus",
}


def add_problem_options(p: argparse.ArgumentParser) -> None:
    """The system and its training: problem, data, sizes, optimizers, loop, objective, penalties, EMA."""
    g = p.add_argument_group("system")
    g.add_argument(
        "--problem", default=None, help=f"built-in system: {', '.join(systems.PROBLEMS)} (default gaussian1d)"
    )
    g.add_argument("--data-dir", default=None, help="directory with MNIST IDX files (problem mnist)")
    g.add_argument("--batch-size", default=None, help="examples per batch")
    g.add_argument("--width", default=None, help="base width of the conv nets (dcgan, sngan, cgan)")
    g.add_argument("--hidden", default=None, help="hidden width of the MLPs")
    g.add_argument("--lr", default=None, help="learning rate of both players")
    g.add_argument("--gen-lr", default=None, help="G's learning rate (a comma list in a sweep)")
    g.add_argument("--disc-lr", default=None, help="D's learning rate (a comma list in a sweep)")
    g.add_argument("--gen-betas", default=None, help="G's Adam betas B1:B2 (a comma list in a sweep)")
    g.add_argument("--disc-betas", default=None, help="D's Adam betas B1:B2 (a comma list in a sweep)")
    g.add_argument("--gen-clip-norm", default=None, help="G's gradient clipping norm (problems that clip: mnist)")
    g.add_argument("--disc-clip-norm", default=None, help="D's gradient clipping norm (problems that clip: mnist)")
    lp = p.add_argument_group("loop, objective, penalties")
    lp.add_argument("--scheme", default=None, help=f"update order: {', '.join(LOOPS)} (default: the problem's own)")
    lp.add_argument("--loss", default=None, help=f"objective: {', '.join(losses.OBJECTIVES)} (default: the problem's)")
    lp.add_argument("--n-disc", default=None, help="D updates per step (WGAN's n_critic)")
    lp.add_argument("--n-gen", default=None, help="G updates per step (scheme alternating)")
    lp.add_argument("--gp", default=None, help="WGAN-GP weight lambda (a comma list in a sweep)")
    lp.add_argument("--r1", default=None, help="R1 gamma on real data (a comma list in a sweep)")
    lp.add_argument("--r2", default=None, help="R2 gamma on generated data (a comma list in a sweep)")
    lp.add_argument("--dragan", default=None, help="DRAGAN weight (a comma list in a sweep)")
    lp.add_argument("--clip", default=None, help="WGAN weight clipping bound c (a comma list in a sweep)")
    lp.add_argument("--penalty-every", default=None, help="apply the penalties every k steps, scaled by k (lazy R1)")
    lp.add_argument("--unroll", default=None, help="look-ahead D steps (scheme unrolled)")
    lp.add_argument(
        "--unroll-stop-opt-grad",
        action="store_const",
        const=True,
        default=None,
        help="stop gradients through D's optimizer state while unrolling",
    )
    lp.add_argument("--consensus", default=None, help="gamma of consensus optimization (a comma list in a sweep)")
    lp.add_argument(
        "--split",
        action="store_const",
        const=True,
        default=None,
        help="D steps on real and generated data separately (scheme reuse_fake)",
    )
    lp.add_argument("--max-gen-steps", default=None, help="bound on seed 003's inner G loop (scheme adaptive)")
    lp.add_argument("--l1-weight", default=None, help="L1 weight (pix2pix; a comma list in a sweep)")
    lp.add_argument("--ema", default=None, help="generator EMA decay, e.g. 0.999 (a comma list in a sweep)")


def add_guard_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("divergence guard")
    g.add_argument("--max-param", default=None, help="flag a run whose |parameter| exceeds this (default 1e6; 0: off)")
    g.add_argument("--max-output", default=None, help="flag a run whose |sample| exceeds this (default 1e6; 0: off)")
    g.add_argument(
        "--pinned-window",
        default=None,
        help="flag a run whose loss sits at its clamp this many steps (default 100; 0: off)",
    )


def add_run_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("running")
    g.add_argument("--steps", default=None, help="training steps (default: the problem's)")
    g.add_argument("--device", default=None, help="cpu or cuda[:i]")
    g.add_argument("--dtype", default=None, choices=list(DTYPES))
    g.add_argument("--compile", action="store_const", const=True, default=None, help="torch.compile the step")
    g.add_argument("--no-compile", action="store_const", const=True, default=None, help="run eagerly")
    g.add_argument("--backend", default=None, help="torch.compile backend (default inductor)")
    g.add_argument("--mode", default=None, help="torch.compile mode, e.g. reduce-overhead (CUDA graphs)")
    g.add_argument(
        "--chunk-size",
        default=None,
        help="runs per compiled call, or 'auto': on CUDA the widest that fits in free GPU memory, on the "
        "CPU the widest whose step writes at most 1 GiB (default: auto)",
    )
    g.add_argument("--steps-per-call", default=None, help="training steps inside one compiled call (default 1)")
    g.add_argument("--log-every", default=None, help="keep metrics every n steps (default 10)")
    g.add_argument("--checkpoint-every", default=None, help="write the checkpoint every n steps (default 500)")
    g.add_argument("--samples", default=None, help="samples per run for the problem's metrics (default 10000)")
    g.add_argument("--out", default=None, help="write tables, summaries, plots and checkpoints here")
    g.add_argument("--resume", default=None, help="continue the run in this --out directory (or checkpoint file)")
    g.add_argument("--no-progress", action="store_true")


# ----------------------------------------------------------------------------- values


def _one(name: str, spec: Any, sweep: bool) -> float | None:
    values = parse_floats(name, spec)
    if values is None:
        return None
    if len(values) > 1 and not sweep:
        raise CLIError(f"--{name}: one value expected here (lists of values belong to funcgan sweep)")
    return values[0]


def _positive(name: str, v: float | None, allow_zero: bool = False) -> float | None:
    if v is not None and (v < 0 or (v == 0 and not allow_zero)):
        raise CLIError(f"--{name} must be {'>= 0' if allow_zero else '> 0'}, got {v}")
    return v


def system_config(args: argparse.Namespace, sweep: bool = False) -> dict[str, Any]:
    """The JSON-able description of the system the options ask for (what a checkpoint stores).

    Values given as comma lists (sweeps) enter with their first value; the grid varies them.
    """
    problem = args.problem or "gaussian1d"
    if problem not in systems.PROBLEMS:
        raise CLIError(f"unknown problem '{problem}'; choose one of {', '.join(systems.PROBLEMS)}")
    cfg: dict[str, Any] = {"problem": problem}
    accepted = inspect.signature(systems.PROBLEMS[problem]).parameters
    ints = {"batch_size": 1, "width": 1, "hidden": 1}
    for name, low in ints.items():
        v = getattr(args, name, None)
        if v is not None:
            cfg[name] = parse_int(name.replace("_", "-"), v, low)
    for name in ("lr", "gen_lr", "disc_lr"):
        v = _positive(name.replace("_", "-"), _one(name.replace("_", "-"), getattr(args, name, None), sweep))
        if v is not None:
            cfg[name] = v
    for name in ("gen_betas", "disc_betas"):
        pairs = parse_pairs(name.replace("_", "-"), getattr(args, name, None))
        if pairs is not None:
            if len(pairs) > 1 and not sweep:
                raise CLIError(f"--{name.replace('_', '-')}: one pair expected here")
            if "betas" not in accepted:
                raise CLIError(f"--{name.replace('_', '-')} does not apply to problem '{problem}'")
            cfg["betas"] = list(pairs[0])
    clip = {}
    for name in ("gen_clip_norm", "disc_clip_norm"):
        v = _positive(name.replace("_", "-"), _one(name.replace("_", "-"), getattr(args, name, None), sweep))
        if v is not None:
            clip[name] = v
    if clip:
        if "clip_norm" not in accepted:
            raise CLIError(
                f"--{next(iter(clip)).replace('_', '-')} does not apply to problem '{problem}' "
                "(its optimizers do not clip)"
            )
        cfg["clip_norm"] = next(iter(clip.values()))
    if getattr(args, "data_dir", None) is not None:
        cfg["data_dir"] = args.data_dir
    if getattr(args, "max_gen_steps", None) is not None:
        cfg.setdefault("loop_options", {})["max_gen_steps"] = parse_int("max-gen-steps", args.max_gen_steps)
    for name in list(cfg):
        if name not in ("problem", "loop_options") and name not in accepted:
            raise CLIError(f"--{name.replace('_', '-')} does not apply to problem '{problem}'")
    # loop, objective, penalties
    if args.scheme is not None:
        if args.scheme not in LOOPS:
            raise CLIError(f"unknown scheme '{args.scheme}'; choose one of {', '.join(LOOPS)}")
        cfg["scheme"] = args.scheme
    if args.loss is not None:
        if args.loss not in losses.OBJECTIVES:
            raise CLIError(f"unknown objective '{args.loss}'; choose one of {', '.join(losses.OBJECTIVES)}")
        cfg["loss"] = args.loss
    if args.n_disc is not None:
        cfg["n_disc"] = parse_int("n-disc", args.n_disc)
    opts = cfg.setdefault("loop_options", {})
    if args.n_gen is not None:
        opts["n_gen"] = parse_int("n-gen", args.n_gen)
    if args.unroll is not None:
        opts["unroll"] = parse_int("unroll", args.unroll, 0)
    if args.unroll_stop_opt_grad:
        opts["stop_opt_grad"] = True
    if args.split:
        opts["split"] = True
    for name, field_name in (("consensus", "gamma"), ("l1_weight", "l1_weight")):
        v = _positive(name.replace("_", "-"), _one(name.replace("_", "-"), getattr(args, name, None), sweep), True)
        if v is not None:
            opts[field_name] = v
    if not opts:
        cfg.pop("loop_options")
    pens = {}
    for name in ("gp", "r1", "r2", "dragan", "clip"):
        v = _positive(name, _one(name, getattr(args, name, None), sweep), allow_zero=name != "clip")
        if v is not None:
            pens[name] = v
    if pens:
        cfg["penalties"] = pens
    if args.penalty_every is not None:
        if not pens:
            raise CLIError("--penalty-every needs a penalty (--gp, --r1, --r2, --dragan)")
        cfg["penalty_every"] = parse_int("penalty-every", args.penalty_every)
    ema = _one("ema", getattr(args, "ema", None), sweep)
    if ema is not None:
        if not 0 <= ema < 1:
            raise CLIError(f"--ema must be in [0, 1), got {ema}")
        cfg["ema"] = ema
    return cfg


def _penalty_values(cfg: dict[str, Any]) -> tuple:
    every = cfg.get("penalty_every", 1)
    made: list = []
    for name, v in cfg.get("penalties", {}).items():
        if name == "gp":
            made.append(P.gradient_penalty(v, every=every))
        elif name == "r1":
            made.append(P.r1(v, every=every))
        elif name == "r2":
            made.append(P.r2(v, every=every))
        elif name == "dragan":
            made.append(P.dragan(v, every=every))
        elif name == "clip":
            made.append(P.weight_clipping(v))
    return tuple(made)


def build_system(cfg: dict[str, Any]) -> systems.System:
    """The system a :func:`system_config` describes (``CLIError`` for a combination that cannot work)."""
    cfg = dict(cfg)
    problem = cfg.pop("problem")
    kwargs: dict[str, Any] = {}
    for name in ("batch_size", "width", "hidden", "lr", "gen_lr", "disc_lr", "clip_norm", "data_dir", "ema"):
        if name in cfg:
            kwargs[name] = cfg[name]
    if "betas" in cfg:
        kwargs["betas"] = tuple(cfg["betas"])
    objective = losses.objective(cfg["loss"]) if "loss" in cfg else None
    pens = _penalty_values(cfg) if "penalties" in cfg else None
    options = dict(cfg.get("loop_options", {}))
    kwargs.update(
        objective=objective,
        penalties=pens,
        n_disc=cfg.get("n_disc"),
        loop_options=options or None,
        scheme=LOOPS[cfg["scheme"]] if "scheme" in cfg else None,
    )
    try:
        return systems.make_system(problem, **kwargs)
    except (ValueError, TypeError, FileNotFoundError) as e:
        raise CLIError(str(e))


def grid_values(args: argparse.Namespace, gan) -> dict[str, list[Any]]:
    """The sweep's axes from comma lists: sweep name -> values (only those given)."""
    from funcgan.sweep import sweepable

    names = sweepable(gan)
    axes: dict[str, Any] = {}
    for flag, sweep_name in SWEEPABLE_FLAGS.items():
        spec = getattr(args, flag, None)
        if spec is None:
            continue
        values = (
            parse_pairs(flag.replace("_", "-"), spec)
            if flag.endswith("betas")
            else parse_floats(flag.replace("_", "-"), spec)
        )
        if sweep_name not in names:
            raise CLIError(
                f"--{flag.replace('_', '-')} cannot be swept for this system (it sweeps {', '.join(sorted(names))})"
            )
        axes[sweep_name] = values
    return axes


def guard_from(args: argparse.Namespace) -> Guard:
    """The divergence guard the options ask for (0 switches a criterion off)."""
    kw: dict[str, Any] = {}
    for name in ("max_param", "max_output"):
        v = _one(name.replace("_", "-"), getattr(args, name, None), False)
        if v is not None:
            kw[name] = None if v == 0 else _positive(name.replace("_", "-"), v)
    if getattr(args, "pinned_window", None) is not None:
        w = parse_int("pinned-window", args.pinned_window, 0)
        kw["pinned_window"] = None if w == 0 else w
    return Guard(**kw)
