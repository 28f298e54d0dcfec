"""``funcgan verify``: each built-in system's functional step against its imperative reference."""

from __future__ import annotations

import argparse
from typing import Any

from funcgan import systems, testing
from funcgan.cli.options import DTYPES, MAX_SEED, CLIError, parse_int, parse_steps

__all__ = ["add_parser", "cmd_verify"]


def add_parser(sub: Any) -> None:
    v = sub.add_parser("verify", help="check functional == imperative for every built-in system")
    v.add_argument("--problems", default=",".join(systems.PROBLEMS))
    v.add_argument("--steps", default="20")
    v.add_argument("--seed", default="0")
    v.add_argument("--dtypes", default="float64,float32")
    v.set_defaults(func=cmd_verify)


#: small widths for the conv systems, so that a CPU verifies them in seconds
SMALL = {
    "dcgan": {"width": 8, "batch_size": 16},
    "sngan": {"width": 8, "batch_size": 16, "n_disc": 2},
    "cgan": {"width": 8, "batch_size": 16},
}


def cmd_verify(args: argparse.Namespace) -> int:
    problems = [p for p in args.problems.split(",") if p]
    if not problems:
        raise CLIError(f"--problems: no problem given; choose from {', '.join(systems.PROBLEMS)}")
    for p in problems:
        if p not in systems.PROBLEMS:
            raise CLIError(f"unknown problem '{p}'; choose one of {', '.join(systems.PROBLEMS)}")
    dtypes = []
    for name in args.dtypes.split(","):
        if name not in DTYPES:
            raise CLIError(f"--dtypes: unknown dtype '{name}'; choose from {', '.join(DTYPES)}")
        dtypes.append(DTYPES[name])
    steps, seed = parse_steps(args.steps), parse_int("seed", args.seed, 0, MAX_SEED)
    print(f"functional step vs imperative reference, {steps} steps, same keys (max abs differences)")
    print(f"{'problem':<12}{'dtype':<9}{'params':>11}{'buffers':>11}{'moments':>11}{'losses':>11}  result")
    failed = False
    for problem in problems:
        system = systems.make_system(problem, **SMALL.get(problem, {}))
        for dtype in dtypes:
            report = testing.compare(system, seed=seed, steps=steps, dtype=dtype)
            tol = testing.DEFAULT_TOLERANCES[dtype]
            bad = report.exceeds(tol)
            failed |= bool(bad)
            print(
                f"{problem:<12}{str(dtype).replace('torch.', ''):<9}{report.params:>11.2e}{report.buffers:>11.2e}"
                f"{report.moments:>11.2e}{report.losses:>11.2e}  {'FAIL ' + ','.join(bad) if bad else 'ok'} "
                f"(tol {tol['params']:.0e})",
                flush=True,
            )
    return 1 if failed else 0
