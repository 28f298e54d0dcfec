"""Cold compile: a compiled ``funcgan sweep`` from an empty inductor cache, with and without one of
funcgan's workarounds of inductor's compile time: ``--workaround ranges`` (the default) turns off the
fast intersection of integer value ranges (``funcgan.compile._integer_range_intersections``),
``--workaround dtype-rules`` the once-built dtype handler (``funcgan.compile._dtype_rules_once``),
``--workaround host-hash`` the key hash on the host (``funcgan.sweep.HOST_HASH_RUN_STEPS`` set below
every sweep), ``--workaround isa-prefetch`` the background ISA check (``funcgan.sweep.prefetch_cpu_isa``).

    python benchmarks/cold_compile.py --pairs 2 --json benchmarks/results/cpu_cold_compile_ranges.json
    python benchmarks/cold_compile.py --pairs 3 --workaround dtype-rules --json benchmarks/results/cpu_cold_compile.json
    python benchmarks/cold_compile.py --pairs 2 --workaround host-hash --json benchmarks/results/cpu_cold_compile_host_hash.json
    python benchmarks/cold_compile.py --pairs 2 --workaround isa-prefetch --json benchmarks/results/cpu_cold_compile_isa.json

Each process runs ``funcgan sweep --seeds 0:64 --steps 200 --compile`` (the 1-D GAN) with
``TORCHINDUCTOR_CACHE_DIR`` pointed at a fresh folder, so every one pays the full compile; the two
variants alternate pair by pair (this machine's speed drifts) and the medians are compared. The
time is the whole process, interpreter start to exit; 200 steps keep the training itself to a few
seconds of it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile

from time_to_result import _timed, cold_cache  # this folder: run as a script

CHILD = """
import sys
import funcgan.compile, funcgan.sweep
if sys.argv[1] == "without":
    owner, name = sys.argv[5].rsplit(".", 1)
    setattr(sys.modules[owner], name, -1 if name.isupper() else lambda: None)
from funcgan.cli import main
sys.exit(main(["sweep", "--seeds", sys.argv[2], "--steps", sys.argv[3], "--out", sys.argv[4],
               "--compile", "--no-progress"]))
"""


#: funcgan's workarounds of inductor's compile time (what a "without" process turns off), by --workaround name
WORKAROUNDS = {
    "dtype-rules": "funcgan.compile._dtype_rules_once",
    "ranges": "funcgan.compile._integer_range_intersections",
    "host-hash": "funcgan.sweep.HOST_HASH_RUN_STEPS",  # a bound below every sweep: the hash inlined
    "isa-prefetch": "funcgan.sweep.prefetch_cpu_isa",
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--seeds", default="0:64")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument(
        "--workaround",
        default="ranges",
        choices=sorted(WORKAROUNDS),
        help="which workaround the 'without' processes turn off",
    )
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    name = WORKAROUNDS[args.workaround]
    walls: dict[str, list[float]] = {"with": [], "without": []}
    with tempfile.TemporaryDirectory() as tmp:
        for p in range(args.pairs):
            for variant in ("with", "without"):
                env = cold_cache(dict(os.environ), tmp, f"cache_{variant}_{p}")
                out = os.path.join(tmp, f"out_{variant}_{p}")
                wall, _ = _timed([sys.executable, "-c", CHILD, variant, args.seeds, str(args.steps), out, name], env)
                walls[variant].append(wall)
                print(f"pair {p}: {variant:>7} the workaround {wall:7.1f} s", flush=True)
    med = {k: statistics.median(v) for k, v in walls.items()}
    ratio = med["with"] / med["without"]
    print(f"cold sweep: {med['with']:.1f} s with the workaround, {med['without']:.1f} s without ({ratio:.2f}x)")
    if args.json:
        import torch

        payload = {
            "workaround": name,
            "job": f"funcgan sweep --seeds {args.seeds} --steps {args.steps} --compile, empty inductor cache",
            "torch": torch.__version__,
            "cpus": os.cpu_count(),
            "walls_s": walls,
            "median_s": med,
            "with_over_without_time": ratio,
        }
        with open(args.json, "w") as f:
            json.dump(payload, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
