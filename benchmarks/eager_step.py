"""The eager step in one process: funcgan's plain step against the imperative loop, and where it goes.

    python benchmarks/eager_step.py --steps 300 --rounds 5 --json benchmarks/results/cpu_eager_step.json

The README's main job (``funcgan train``: seed 000's 1-D GAN, one run, eager) spends its time in
this step. Both competitors run ``--steps`` steps per round, interleaved round by round (this
machine's speed drifts), and each keeps its median: the imperative loop is the one
``time_to_result.py`` times as a whole process (``nn.Module``, ``torch.optim.Adam``,
``.detach()``), funcgan is ``sweep.run(system, [{"seed": 0}], steps, compile=False)``, what the
CLI drives. Then one more funcgan round runs with timers around the step's parts
(``funcgan.bench.profile_eager``, what ``funcgan bench --profile`` prints: the keys and draws, the
networks' forward, the backward, the optimizer updates, the guard, each by its self time), so the
next gap is visible; the timers cost a little, so the parts add up to slightly more than the plain step.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import time
import warnings

from time_to_result import IMPERATIVE  # this folder: run as a script

from funcgan import bench, sweep
from funcgan.systems import seeds


def imperative(steps: int) -> None:
    argv, sys.argv = sys.argv, ["imperative", "1", str(steps)]
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():  # its closing line
            warnings.simplefilter("ignore")
            exec(IMPERATIVE, {"__name__": "imperative"})
    finally:
        sys.argv = argv


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    system = seeds.gaussian1d()
    imperative(20), sweep.run(system, [{"seed": 0}], 20, compile=False)  # warm both
    rounds: dict[str, list[float]] = {"imperative": [], "funcgan eager": []}
    for _ in range(args.rounds):
        for name, fn in (("imperative", imperative), ("funcgan eager", None)):
            t = time.perf_counter()
            if fn is None:
                sweep.run(system, [{"seed": 0}], args.steps, compile=False)
            else:
                fn(args.steps)
            rounds[name].append((time.perf_counter() - t) / args.steps * 1e3)
    med = {k: statistics.median(v) for k, v in rounds.items()}
    ratio = med["funcgan eager"] / med["imperative"]
    imp, fg = med["imperative"], med["funcgan eager"]
    print(f"imperative {imp:.2f} ms/step, funcgan eager {fg:.2f} ms/step ({ratio:.2f}x)")
    breakdown = bench.profile_eager(system, args.steps)  # what funcgan bench --profile prints
    for k, v in breakdown.items():
        print(f"  {k:40s} {v:6.3f} ms/step")
    if args.json:
        with open(args.json, "w") as f:
            payload = {"ms_per_step": rounds, "median_ms_per_step": med, "eager_over_imperative": ratio}
            json.dump({**payload, "parts_ms_per_step": breakdown, "steps": args.steps}, f, indent=1)


if __name__ == "__main__":
    main()
