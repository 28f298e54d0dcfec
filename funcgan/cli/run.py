"""``funcgan train`` (one seed) and ``funcgan sweep`` (seeds x hyper-parameters): the same driver.

A train run is a sweep of one point; both write ``OUT/state.safetensors`` (every run's
state and metrics history, checkpointed as they train), and tables, summaries and
plots next to it. ``--resume OUT`` continues a killed run.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path
from typing import Any

import torch

from funcgan import sweep
from funcgan.cli import options as O
from funcgan.cli import results as R
from funcgan.cli.driver import CHECKPOINT, RunSpec, check_resume_options, drive, dump_json, load_resume, prepare_out
from funcgan.cli.options import CLIError
from funcgan.cli.paint import Painter

__all__ = ["add_parsers", "cmd_train", "cmd_sweep", "choose_compile"]

#: below this many run-steps a CPU run is eager by default. The break-even of the 1-D GAN on 2 cores
#: (benchmarks/time_to_result.py): eager runs ~250-450 run-steps/s (sweeps run run by run), a short
#: sweep's cold compile takes ~20-30 s (its keys hashed on the host; ~50-60 s inlined) and the
#: compiled sweep then runs ~10,000-30,000 run-steps/s, so compiling pays from ~5,000-15,000
#: run-steps (a 64-seed sweep of 1,000 steps: 64,000); the bound stays above that, since an eager run
#: is cheap to start and the same bits as a lone run, and a larger network's eager step grows faster
#: than its compile time, so the count is on the safe side for it.
COMPILE_PAYOFF_RUN_STEPS = 20_000


def add_parsers(sub: Any) -> None:
    t = sub.add_parser("train", help="train one seed of a system and print a summary")
    O.add_problem_options(t)
    t.add_argument("--seed", default=None, help="the run's seed (default 0)")
    O.add_run_options(t)
    O.add_guard_options(t)
    t.set_defaults(func=cmd_train)

    s = sub.add_parser("sweep", help="train many seeds (x hyper-parameters) as one vmapped, compiled program")
    O.add_problem_options(s)
    s.add_argument("--seeds", default=None, help="START:STOP or a comma list (default 0:256)")
    O.add_run_options(s)
    O.add_guard_options(s)
    s.set_defaults(func=cmd_sweep)


def choose_compile(args: argparse.Namespace, run_steps: int, device: str) -> tuple[bool, str]:
    """Compile or not, and why (printed): the user's choice, else by the expected payoff. A compiled
    CPU run short enough for it hashes its keys on the host (``sweep.run``'s own choice, said here)."""
    compiled, why = _choose_compile(args, run_steps, device)
    if compiled and sweep.host_hash_pays(run_steps, device, args.backend or "inductor"):
        why += f", keys hashed on the host (a shorter cold compile up to {sweep.HOST_HASH_RUN_STEPS:,} run-steps)"
    return compiled, why


def _choose_compile(args: argparse.Namespace, run_steps: int, device: str) -> tuple[bool, str]:
    if args.compile and args.no_compile:
        raise CLIError("--compile and --no-compile contradict each other")
    if args.compile:
        return True, "compiled (--compile)"
    if args.no_compile:
        return False, "eager (--no-compile)"
    if device.startswith("cuda") or run_steps >= COMPILE_PAYOFF_RUN_STEPS:
        return True, f"compiled ({run_steps:,} run-steps earn back the compile; --no-compile for eager)"
    return False, f"eager ({run_steps:,} run-steps do not earn back a compile; --compile to compile)"


def _log_every(args: argparse.Namespace) -> int:
    """``--log-every``, 10 when not given."""
    return O.parse_int("log-every", args.log_every) if args.log_every is not None else 10


def _common_spec(
    args: argparse.Namespace, kind: str, cfg: dict[str, Any], points: list[dict[str, Any]], steps: int
) -> RunSpec:
    dev = O.device(args.device)
    compiled, why = choose_compile(args, len(points) * steps, dev)
    log_every = _log_every(args)
    every = O.parse_int("checkpoint-every", args.checkpoint_every) if args.checkpoint_every is not None else 500
    if args.chunk_size == "auto" or (args.chunk_size is None and dev.startswith("cuda") and compiled):
        chunk: int | str | None = "auto"  # the widest chunk that fits in free device memory
    else:
        chunk = O.parse_int("chunk-size", args.chunk_size) if args.chunk_size is not None else None
    for flag in ("mode", "backend"):
        if getattr(args, flag) is not None and not compiled:
            raise CLIError(f"--{flag} needs a compiled run (--compile)")
    if compiled:
        O.compile_settings(args.backend, args.mode, dev)
    guard = O.guard_from(args)
    spec = RunSpec(
        kind,
        cfg,
        points,
        steps,
        args.dtype or "float32",
        dev,
        compiled,
        args.backend or "inductor",
        args.mode,
        chunk,
        log_every,
        every,
        {k: getattr(guard, k) for k in ("max_param", "max_output", "pinned_window", "pinned_fraction")},
        O.parse_int("steps-per-call", args.steps_per_call) if args.steps_per_call is not None else 1,
    )
    spec.why = why
    return spec


def _resume(args: argparse.Namespace, kind: str) -> tuple[RunSpec, Path, Path]:
    spec, file, out = load_resume(args.resume)
    if spec.kind != kind:
        raise CLIError(f"--resume {args.resume}: that is a {spec.kind} run; use funcgan {spec.kind} --resume")
    given = O.system_config(args, sweep=kind == "sweep") if args.problem is not None or _any_system_option(args) else {}
    if args.problem is None:
        given.pop("problem", None)
    check_resume_options(spec, given, kind)
    for flag in ("dtype", "backend", "mode", "device"):
        v = getattr(args, flag)
        if v is not None and v != getattr(spec, flag):
            raise CLIError(
                f"--{flag}: a resumed {kind} keeps its settings (the checkpoint has {getattr(spec, flag)!r})"
            )
    if kind == "sweep" and args.seeds is not None:
        seeds = O.parse_seeds(args.seeds)
        had = {p["seed"] for p in spec.points}
        if O.seed_count(seeds) != len(had) or set(seeds) != had:
            raise CLIError("--seeds: a resumed sweep keeps its seeds (the checkpoint has a different set)")
    if (
        kind == "train"
        and args.seed is not None
        and O.parse_int("seed", args.seed, 0, O.MAX_SEED) != spec.points[0]["seed"]
    ):
        raise CLIError(f"--seed: the resumed run is seed {spec.points[0]['seed']}")
    if args.steps is not None:
        steps = O.parse_steps(args.steps)
        spec.steps = steps
    if args.log_every is not None and O.parse_int("log-every", args.log_every) != spec.log_every:
        raise CLIError(f"--log-every: a resumed {kind} keeps its settings (the checkpoint has {spec.log_every})")
    if args.checkpoint_every is not None:
        spec.checkpoint_every = O.parse_int("checkpoint-every", args.checkpoint_every)
    spec.why = "compiled" if spec.compile else "eager"
    if args.out is not None and Path(args.out).resolve() != out.resolve():
        raise CLIError("--out: a resumed run writes to its own directory; leave --out out")
    return spec, file, out


def _any_system_option(args: argparse.Namespace) -> bool:
    names = (
        "data_dir",
        "batch_size",
        "width",
        "hidden",
        "lr",
        "gen_lr",
        "disc_lr",
        "gen_betas",
        "disc_betas",
        "gen_clip_norm",
        "disc_clip_norm",
        "scheme",
        "loss",
        "n_disc",
        "n_gen",
        "gp",
        "r1",
        "r2",
        "dragan",
        "clip",
        "penalty_every",
        "unroll",
        "unroll_stop_opt_grad",
        "consensus",
        "split",
        "max_gen_steps",
        "l1_weight",
        "ema",
    )
    return any(getattr(args, n, None) is not None for n in names)


def _samples(args: argparse.Namespace) -> int:
    return O.parse_int("samples", args.samples) if args.samples is not None else 10_000


def cmd_train(args: argparse.Namespace) -> int:
    samples = _samples(args)
    out: Path | None
    if args.resume:
        spec, file, out = _resume(args, "train")
        system = O.build_system(spec.config)
        _check_host_memory(system, 1, spec.steps, spec.dtype, spec.log_every)
        resume_file: Path | None = file
    else:
        cfg = O.system_config(args)
        system = O.build_system(cfg)
        seed = O.parse_int("seed", args.seed, 0, O.MAX_SEED) if args.seed is not None else 0
        steps = O.parse_steps(args.steps) if args.steps is not None else system.default_steps
        spec = _common_spec(args, "train", cfg, [{"seed": seed}], steps)
        _check_host_memory(system, 1, steps, spec.dtype, spec.log_every)
        out = prepare_out(args.out)
        resume_file = None
    seed = spec.points[0]["seed"]
    print(
        f"funcgan train: {system.description}; data: {system.data_source}; seed {seed}, {spec.steps} steps on "
        f"{spec.device}, {spec.why}"
    )
    with Painter(helper=None if out is not None else False) as painter:  # matplotlib loads while it trains
        result = drive(spec, system, out, resume_file, show_progress=not args.no_progress)
        rows = R.per_seed_rows(system, result, samples)
        row = rows[0]
        _print_run(system, result, row)
        if out is not None:
            written: list[str | None] = [R.write_tables(out, rows, R.summarize(rows, []), spec.meta())[-1]]
            payload = {
                "summary": row,
                "logged_steps": result.logged_steps,
                "history": {k: v[:, 0].tolist() for k, v in result.history.items()},
            }
            written.append(dump_json(out / "metrics.json", payload))
            written += painter.draw(_figures(out, system, result))
            written.append(str(out / "state.safetensors"))
            for p in written:
                if p:
                    print(f"wrote {p}")
    return 1 if row["diverged_at"] != "" else 0


def _print_run(system, result: sweep.SweepResult, row: dict[str, Any]) -> None:
    rate = sum(int(s) for s in result.state.step.tolist()) / max(result.seconds, 1e-9)
    print(f"done in {result.seconds:.2f} s ({rate:,.0f} steps/s; first step {result.compile_seconds:.2f} s)")
    for k in ("disc_loss", "gen_loss"):
        if k in row:
            print(
                f"final {'D' if k.startswith('disc') else 'G'} loss (mean of the last 10% of logged steps): "
                f"{row[k]:.4f}"
            )
    metrics = [
        (k, v)
        for k, v in row.items()
        if k not in ("seed", "disc_loss", "gen_loss", "diverged_at", "diverged_reason", "steps")
        and isinstance(v, float)
    ]
    if system.kind == "1d" and "gen_mean" in row:
        print(f"generated: mean {row['gen_mean']:+.4f}  std {row['gen_std']:.4f}")
        print(
            f"data:      mean {system.real_stats.get('mean', float('nan')):+.4f}  "
            f"std {system.real_stats.get('std', float('nan')):.4f}"
        )
        metrics = [(k, v) for k, v in metrics if not k.startswith("gen_")]
    for k, v in metrics:
        print(f"{k}: {v:.4g}")
    if row["diverged_at"] != "":
        print(
            f"WARNING: the run was flagged at step {row['diverged_at']} ({row['diverged_reason']}) and frozen "
            "there; see --max-param, --max-output, --pinned-window"
        )


def _figures(out: Path, system, result: sweep.SweepResult) -> list[dict[str, Any]]:
    """The figures of one run (loss curves, samples, the EMA generator's samples) to draw."""
    from funcgan import random as fr
    from funcgan.step import generate

    figures: list[dict[str, Any] | None] = [R.losses_figure(out / "losses.png", system.name, result)]
    first = sweep.seed_state(result.state, 0)
    cond = None
    if system.gan.conditional:
        cond = system.data[0][:64] if system.n_classes == 0 else torch.arange(64) % system.n_classes
        if cond.is_floating_point():
            cond = cond.to(next(iter(first.gen.params.values())).dtype)
    n = 2500 if system.kind != "image" else 64
    with torch.no_grad():
        x = generate(system.gan, first, fr.key(7), n, cond=cond)
        figures.append(R.samples_figure(out / "samples.png", system, x.float().cpu(), f"{system.name}: samples"))
        if system.gan.ema is not None:
            x = generate(system.gan, first, fr.key(7), n, cond=cond, use_ema=True)
            figures.append(
                R.samples_figure(out / "samples_ema.png", system, x.float().cpu(), f"{system.name}: EMA generator")
            )
    return [f for f in figures if f is not None]


def _restarted_checkpoint(args: argparse.Namespace, rank: int, world: int) -> Path | None:
    """This rank's own checkpoint when an elastic launcher (torchrun ``--max-restarts``) restarted
    the job after a worker died, so every rank continues from its last checkpoint; else ``None``."""
    if args.resume or args.out is None or int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) == 0:
        return None
    own = Path(args.out) if world == 1 else Path(args.out) / f"rank{rank}"
    return own if (own / CHECKPOINT).exists() else None


#: host bytes a run takes besides its state (its point, result row, summaries): a generous guess
RUN_OVERHEAD_BYTES = 16 * 1024


def host_available_bytes() -> int | None:
    """Memory a new allocation can use on this host (``MemAvailable``), or None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


def _check_host_memory(system, n_runs: int, steps: int, dtype: str, log_every: int) -> None:
    """Refuse a sweep whose runs cannot all be held in this host's memory, before any is made.

    Every run's state lives on the host for the whole sweep (chunks are copied out to the
    device and back), twice while a chunk's new state replaces the old, with its float64
    metrics history (8 rows of ``steps / log_every``) and its bookkeeping beside it."""
    from funcgan import random as fr
    from funcgan.step import init_state
    from funcgan.tree import tree_leaves

    one = init_state(system.gan, fr.key(0), O.DTYPES[dtype])
    state_bytes = sum(x.numel() * x.element_size() for x in tree_leaves(one))
    per_run = 2 * state_bytes + 8 * 8 * -(-steps // log_every) + RUN_OVERHEAD_BYTES
    free = host_available_bytes()
    if free is not None and n_runs * per_run > 0.8 * free:
        raise CLIError(
            f"{n_runs:,} run(s) of {steps:,} steps need about {n_runs * per_run / 2**30:,.1f} GiB of host memory "
            f"({per_run / 2**10:,.0f} KiB a run); {free / 2**30:,.1f} GiB is available. Train fewer runs at a "
            f"time (several --seeds ranges), fewer steps, or a larger --log-every"
        )


def cmd_sweep(args: argparse.Namespace) -> int:
    from funcgan.cli import shard

    samples = _samples(args)
    rank, world = shard.dist_info()
    store = shard.rendezvous() if world > 1 else None
    out: Path | None
    if world > 1 and (args.device or "cpu").startswith("cuda"):
        args.device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(args.device)
    restarted = _restarted_checkpoint(args, rank, world)
    if args.resume or restarted is not None:
        if restarted is not None:  # the launcher reran this very command: its checkpoint holds the settings
            spec, file, out = load_resume(str(restarted))
            spec.why = ("compiled" if spec.compile else "eager") + ", restarted by the launcher"
            print(f"funcgan sweep: rank {rank} restarted; resuming from {restarted}", flush=True)
        else:
            args.resume = args.resume if world == 1 else str(Path(args.resume) / f"rank{rank}")
            spec, file, out = _resume(args, "sweep")
        system = O.build_system(spec.config)
        _check_host_memory(system, len(spec.points), spec.steps, spec.dtype, spec.log_every)
        resume_file: Path | None = file
        all_points = spec.meta().get("all_points") or spec.points
    else:
        cfg = O.system_config(args, sweep=True)
        system = O.build_system(cfg)
        axes = O.grid_values(args, system.gan)
        seeds = O.parse_seeds(args.seeds) if args.seeds is not None else range(256)
        steps = O.parse_steps(args.steps) if args.steps is not None else system.default_steps
        n_runs = O.seed_count(seeds) * math.prod(len(v) for v in axes.values())
        _check_host_memory(system, n_runs, steps, args.dtype or "float32", _log_every(args))
        all_points = sweep.grid(seeds, **axes)
        try:
            sweep.check_points(system.gan, all_points)
        except ValueError as e:
            raise CLIError(str(e))
        lo, hi = shard.shard(len(all_points), rank, world)
        spec = _common_spec(args, "sweep", cfg, all_points[lo:hi], steps)
        out_dir = args.out if world == 1 or args.out is None else str(Path(args.out) / f"rank{rank}")
        out = prepare_out(out_dir)
        resume_file = None
    hypers = R.hyper_names(all_points)
    if rank == 0:
        print(
            f"funcgan sweep: {system.description}; {len(all_points)} runs x {spec.steps} steps on {spec.device}, "
            f"{spec.why}" + (f" ({world} processes)" if world > 1 else "")
        )
    # matplotlib loads in a helper process while the sweep trains (one process, an output folder)
    painter = Painter(helper=None if world == 1 and (args.out is not None or out is not None) else False)
    try:
        rows: list[dict[str, Any]] = []
        result = None
        if spec.points:
            result = drive(
                spec, system, out, resume_file, show_progress=not args.no_progress and rank == 0, quiet=rank != 0
            )
            rows = R.per_seed_rows(system, result, samples)
        if world > 1:
            rows = shard.gather_rows(store, rows, rank, world)
            if rank != 0:
                return 0
        summary = R.summarize(rows, hypers)
        if result is not None:
            rate = sum(int(s) for s in result.state.step.tolist()) / max(result.seconds, 1e-9)
            plan = result.extras.get("chunk_plan", f"{result.chunk_size} run(s) per call")
            print(
                f"trained in {result.seconds:.1f} s (first call {result.compile_seconds:.1f} s): "
                f"{rate:,.0f} run-steps/s"
                f"{' on rank 0' if world > 1 else ''}; {plan}"
            )
        print(f"runs: {summary['runs']}, flagged as diverged: {summary['diverged']}")
        for g in summary["groups"]:
            label = ", ".join(f"{h}={g[h]}" for h in hypers) or "all runs"
            print(f"  {label}: {g['seeds']} seeds, {g['diverged']} diverged (excluded)")
            for col, st in g["metrics"].items():
                print(
                    f"    {col:<18} mean {st['mean']:+.4f}  std {st['std']:.4f}  q05 {st['q05']:+.4f}  "
                    f"median {st['median']:+.4f}  q95 {st['q95']:+.4f}"
                )
        flagged = [r for r in rows if r["diverged_at"] != ""]
        for r in flagged[:20]:
            print(
                f"  diverged: seed {r['seed']} at step {r['diverged_at']} ({r['diverged_reason']})"
                + "".join(f", {h}={r[h]}" for h in hypers)
            )
        if len(flagged) > 20:
            print(f"  ... and {len(flagged) - 20} more (see per_seed.csv)")
        top = None if args.out is None and out is None else (Path(args.out) if args.out else out)
        if world > 1 and top is not None and top.name == f"rank{rank}":
            top = top.parent
        if top is not None:
            meta = {**spec.meta(), "points": all_points, "world_size": world}
            written: list[str | None] = list(R.write_tables(top, rows, summary, meta))
            if result is not None and world == 1:
                figures = [R.losses_figure(top / "losses.png", system.name, result)]
                if system.kind == "1d" and "gen_mean" in rows[0]:
                    figures.append(_distribution_figure(top, system, rows))
                written += painter.draw(figures)
                written.append(str(top / "state.safetensors"))
            for p in written:
                if p:
                    print(f"wrote {p}")
    finally:
        painter.close()
    return 0


def _distribution_figure(out: Path, system, rows) -> dict[str, Any]:
    """Each run's generated mean and std against the data's (1-D systems)."""
    ok = [r for r in rows if r["diverged_at"] == "" and math.isfinite(r["gen_mean"])]
    return {
        "kind": "scatter",
        "path": str(out / "distributions.png"),
        "title": f"{system.name}: generated mean and std of {len(ok)} run(s)",
        "size": (6, 5),
        "xlabel": "generated mean",
        "ylabel": "generated std",
        "series": [
            ("runs", [r["gen_mean"] for r in ok], [r["gen_std"] for r in ok], {"s": 6, "alpha": 0.6}),
            ("data", [system.real_stats["mean"]], [system.real_stats["std"]], {"color": "red", "marker": "x", "s": 80}),
        ],
    }
