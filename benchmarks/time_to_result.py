"""Time to result: whole processes, funcgan's CLI against the imperative loop it replaces.

    python benchmarks/time_to_result.py --rounds 3 --json benchmarks/results/cpu_time_to_result.json

Two jobs, each timed as a whole process (interpreter start, imports, training, exit), the
competitors interleaved round by round and the median kept:

* **one run**: ``funcgan train`` (seed 000's 1-D GAN, 1000 steps, the CLI's own choice of eager or
  compiled; the README's main job, which prints a summary and writes nothing) against seed 000's
  tutorial loop (``nn.Module``, ``torch.optim.Adam``, ``.detach()``), 1000 steps; and
  ``funcgan train --out DIR``, which also writes the checkpoint, metrics and figures (matplotlib's
  import and two PNGs: ~2-3 s on 2 cores).
* **64 runs**: ``funcgan sweep --seeds 0:64 --out DIR`` (1000 steps each) against the tutorial loop run 64
  times in one process, as a user without funcgan would run 64 seeds.

The first round of ``funcgan sweep`` is a cold start only if inductor's caches are empty; the
script reports which rounds it ran and leaves the caches as they are (``--cold`` points
``TORCHINDUCTOR_CACHE_DIR`` at a fresh folder for every funcgan process, so every round pays the
full compile).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

OUT = "<out>"  # where a command takes ``--out`` and a fresh folder

IMPERATIVE = """
import sys, torch, torch.nn as nn
runs, steps = int(sys.argv[1]), int(sys.argv[2])
for seed in range(runs):
    torch.manual_seed(seed)
    G = nn.Sequential(nn.Linear(10, 50), nn.ReLU(), nn.Linear(50, 1))
    D = nn.Sequential(nn.Linear(1, 50), nn.ReLU(), nn.Linear(50, 1), nn.Sigmoid())
    opt_g = torch.optim.Adam(G.parameters(), lr=1e-3)
    opt_d = torch.optim.Adam(D.parameters(), lr=1e-3)
    bce = nn.BCELoss()
    ones, zeros = torch.ones(100, 1), torch.zeros(100, 1)
    for _ in range(steps):
        D.zero_grad()
        fake = G(torch.randn(100, 10)).detach()
        d_loss = bce(D(torch.randn(100, 1)), ones) + bce(D(fake), zeros)
        d_loss.backward()
        opt_d.step()
        G.zero_grad()
        g_loss = bce(D(G(torch.randn(100, 10))), ones)
        g_loss.backward()
        opt_g.step()
print("imperative", runs, "runs", float(d_loss), float(g_loss))
"""


def cold_cache(env: dict[str, str], folder: str, name: str) -> dict[str, str]:
    """``env`` with ``TORCHINDUCTOR_CACHE_DIR`` at a fresh folder ``name`` under ``folder``
    (no spaces in it: inductor, torch 2.13, passes the cache path to g++ unquoted)."""
    return {**env, "TORCHINDUCTOR_CACHE_DIR": os.path.join(folder, name.replace(" ", "_"))}


def _timed(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return wall, done.stdout


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=64)
    ap.add_argument("--cold", action="store_true", help="a fresh inductor cache for every funcgan process")
    ap.add_argument("--jobs", default="one,many", help="which jobs: one (a single run), many (--runs runs)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    wanted = set(args.jobs.split(","))
    py, funcgan = sys.executable, [sys.executable, "-m", "funcgan"]
    jobs = {
        "one run": {
            "imperative": [py, "-c", IMPERATIVE, "1", str(args.steps)],
            "funcgan": funcgan + ["train", "--steps", str(args.steps)],  # the README's main job
            "funcgan --out": funcgan + ["train", "--steps", str(args.steps), OUT],
        },
        f"{args.runs} runs": {
            "imperative": [py, "-c", IMPERATIVE, str(args.runs), str(args.steps)],
            "funcgan": funcgan + ["sweep", "--seeds", f"0:{args.runs}", "--steps", str(args.steps), OUT],
        },
    }
    jobs = {name: job for name, job, tag in zip(list(jobs), jobs.values(), ("one", "many")) if tag in wanted}
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for job, competitors in jobs.items():
            walls: dict[str, list[float]] = {name: [] for name in competitors}
            notes: list[str] = []
            for r in range(args.rounds):
                for name, cmd in competitors.items():
                    env = dict(os.environ)
                    if args.cold and name.startswith("funcgan"):
                        env = cold_cache(env, tmp, f"cache-{job}-{name}-{r}")
                    if OUT in cmd:
                        folder = os.path.join(tmp, f"{job}-{name}-{r}".replace(" ", "_"))
                        cmd = [x for c in cmd for x in (["--out", folder] if c == OUT else [c])]
                    wall, out = _timed(cmd, env)
                    walls[name].append(wall)
                    if name.startswith("funcgan"):
                        notes += [ln for ln in out.splitlines() if "eager (" in ln or "compiled (" in ln][:1]
                    print(f"{job:>8} round {r}: {name:>10} {wall:7.2f} s", flush=True)
            med = {name: statistics.median(w) for name, w in walls.items()}
            results[job] = {
                "walls_s": walls,
                "median_s": med,
                "funcgan_over_imperative_time": med["funcgan"] / med["imperative"],
                "cli_said": sorted(set(notes)),
            }
            if "funcgan --out" in med:
                results[job]["funcgan_out_over_imperative_time"] = med["funcgan --out"] / med["imperative"]
            for name in (n for n in med if n != "imperative"):
                print(
                    f"{job}: {name} {med[name]:.2f} s, imperative {med['imperative']:.2f} s "
                    f"({med[name] / med['imperative']:.2f}x the time)",
                    flush=True,
                )
    results["cold"] = {"every_round": args.cold}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
