"""``funcgan export RUN --seed s``: a seed's trained G (and D) as safetensors state dicts.

The files load into the user's own ``nn.Module`` with ``load_state_dict`` (keys as
``module.state_dict()``: parametrized weights as ``parametrizations.weight.original``,
BatchNorm's running statistics and spectral norm's vectors included), to be used in
eval mode.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from funcgan import checkpoint as ckpt
from funcgan import nets, sweep
from funcgan.cli.driver import load_resume
from funcgan.cli.options import DTYPES, CLIError, build_system, parse_int

__all__ = ["add_parser", "cmd_export", "export_run"]


def add_parser(sub: Any) -> None:
    e = sub.add_parser("export", help="write a seed's trained G (and D) as safetensors state dicts")
    e.add_argument("run", help="a run directory written by funcgan train/sweep --out (or its checkpoint)")
    e.add_argument("--seed", default=None, help="which seed (default: the run's only / first seed)")
    e.add_argument("--point", default=None, help="which run of the sweep, by index, when a seed repeats")
    e.add_argument("--ema", action="store_true", help="export G's EMA parameters")
    e.add_argument("--out", default=None, help="output prefix (default RUN/seed<s>): <prefix>_gen/_disc.safetensors")
    e.set_defaults(func=cmd_export)


def export_run(
    run: str, seed: int | None = None, point: int | None = None, ema: bool = False, out: str | None = None
) -> list[str]:
    """Write ``<prefix>_gen.safetensors`` and ``<prefix>_disc.safetensors``; returns their paths."""
    import safetensors.torch as st

    spec, file, run_dir = load_resume(run)
    system = build_system(spec.config)
    template = sweep.init_sweep(system.gan, spec.points, DTYPES[spec.dtype], "cpu")
    try:
        state = ckpt.load(file, template).state
    except ckpt.CheckpointError as e:
        raise CLIError(str(e))
    seeds = [p["seed"] for p in spec.points]
    if point is None:
        if seed is None:
            point = 0
        elif seed not in seeds:
            raise CLIError(f"--seed {seed}: the run has seeds {seeds[:10]}{' ...' if len(seeds) > 10 else ''}")
        else:
            matches = [i for i, s in enumerate(seeds) if s == seed]
            if len(matches) > 1:
                raise CLIError(
                    f"--seed {seed} appears in {len(matches)} runs of the sweep; pick one with --point "
                    f"({', '.join(map(str, matches))})"
                )
            point = matches[0]
    elif not 0 <= point < len(seeds):
        raise CLIError(f"--point must be in [0, {len(seeds)}), got {point}")
    one = sweep.seed_state(state, point)
    gan = system.gan
    if ema and not one.gen_ema:
        raise CLIError("--ema: this run keeps no generator EMA (train with --ema DECAY)")
    prefix = Path(out) if out is not None else run_dir / f"seed{seeds[point]}"
    try:
        prefix.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CLIError(f"--out {out}: cannot write there ({e.strerror or e})")
    written = []
    for role, module, params, buffers in (
        ("gen", gan.gen, one.gen_ema if ema else one.gen.params, one.gen.buffers),
        ("disc", gan.disc, one.disc.params, one.disc.buffers),
    ):
        sd = nets.to_state_dict(module, params, buffers)
        path = f"{prefix}_{role}.safetensors"
        st.save_file(
            {k: v.contiguous().cpu() for k, v in sd.items()},
            path,
            metadata={
                "problem": spec.config["problem"],
                "seed": str(seeds[point]),
                "role": role,
                "step": str(int(one.step)),
                "ema": str(bool(ema and role == "gen")),
            },
        )
        written.append(path)
    return written


def cmd_export(args: argparse.Namespace) -> int:
    seed = parse_int("seed", args.seed, 0) if args.seed is not None else None
    point = parse_int("point", args.point, 0) if args.point is not None else None
    for p in export_run(args.run, seed, point, args.ema, args.out):
        print(f"wrote {p}")
    return 0
