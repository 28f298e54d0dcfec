"""``funcgan bench``: the side-by-side benchmark (``benchmarks/sweep_bench.py``) as a command."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_parser", "cmd_bench"]


def add_parser(sub: Any) -> None:
    b = sub.add_parser(
        "bench", help="benchmark funcgan against the imperative loop (and JAX when installed)", add_help=False
    )
    b.add_argument("rest", nargs=argparse.REMAINDER)
    b.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    from funcgan.bench import main

    return main(args.rest)
