"""The sweep's imperative shell: ``funcgan sweep``, per-seed tables, summaries, plots, torchrun.

    funcgan sweep                                   # 1-D GAN, seeds 0:256
    funcgan sweep --seeds 0:1024 --gen-lr 1e-3,1e-4 --out runs/lr
    torchrun --nproc-per-node 2 -m funcgan sweep --seeds 0:4096 --out runs/big

Under ``torchrun`` (``WORLD_SIZE`` > 1) each rank trains a contiguous slice of
the runs on its own device (``cuda:LOCAL_RANK`` with ``--device cuda``); rank 0
gathers the per-seed rows through torch.distributed's rendezvous store (seeds
are independent: no process group, no collective) and writes the table and
summary, identical to what one process writes.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from torch.func import vmap

from funcgan import random as fr
from funcgan import sweep as SW
from funcgan import systems
from funcgan.train import generate
from funcgan.tree import tree_index

__all__ = ["add_parser", "run", "parse_seeds", "per_seed_rows", "summarize_rows", "write_table", "plot_sweep"]


def parse_seeds(spec: str) -> list[int]:
    """``"0:256"`` (a range), ``"3"`` (one seed) or ``"1,5,9"`` (a list) -> seeds."""
    spec = spec.strip()
    try:
        if ":" in spec:
            a, b = spec.split(":")
            seeds = list(range(int(a), int(b)))
        else:
            seeds = [int(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        raise SystemExit(f"funcgan sweep: bad --seeds '{spec}'; use START:STOP or a comma list")
    if not seeds:
        raise SystemExit(f"funcgan sweep: --seeds '{spec}' gives no seeds")
    if len(set(seeds)) != len(seeds):
        raise SystemExit(f"funcgan sweep: --seeds '{spec}' repeats a seed")
    if min(seeds) < 0:
        raise SystemExit("funcgan sweep: seeds must be >= 0")
    return seeds


def _floats(name: str, spec: str | None) -> list[float] | None:
    if spec is None:
        return None
    try:
        return [float(v) for v in spec.split(",") if v.strip()]
    except ValueError:
        raise SystemExit(f"funcgan sweep: bad --{name} '{spec}'; use comma-separated numbers")


def _pairs(name: str, spec: str | None) -> list[tuple[float, float]] | None:
    if spec is None:
        return None
    out = []
    for item in spec.split(","):
        try:
            a, b = item.split(":")
            out.append((float(a), float(b)))
        except ValueError:
            raise SystemExit(f"funcgan sweep: bad --{name} '{spec}'; use B1:B2[,B1:B2...]")
    return out


def add_parser(sub: Any) -> None:
    p = sub.add_parser("sweep", help="train many seeds (x hyper-parameters) as one vmapped, compiled program")
    p.add_argument("--problem", default="gaussian1d", help=f"seed system: {', '.join(systems.PROBLEMS)}")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--seeds", default="0:256", help="START:STOP or a comma list (default 0:256)")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--gen-lr", default=None, help="comma list of G learning rates")
    p.add_argument("--disc-lr", default=None, help="comma list of D learning rates")
    p.add_argument("--gen-betas", default=None, help="B1:B2[,B1:B2...] for G's Adam")
    p.add_argument("--disc-betas", default=None, help="B1:B2[,B1:B2...] for D's Adam")
    p.add_argument("--gen-clip-norm", default=None, help="comma list (problems that clip: mnist)")
    p.add_argument("--disc-clip-norm", default=None, help="comma list (problems that clip: mnist)")
    p.add_argument("--l1-weight", default=None, help="comma list (pix2pix)")
    p.add_argument("--chunk-size", type=int, default=None, help="runs per compiled call (memory/cache)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--no-compile", action="store_true", help="eager vmap")
    p.add_argument("--backend", default="inductor")
    p.add_argument("--mode", default=None, help="torch.compile mode, e.g. reduce-overhead (CUDA graphs)")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--samples", type=int, default=10_000, help="samples per seed for the problem metrics")
    p.add_argument("--out", default=None, help="write per-seed CSV/JSON, summary and plots here")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None, help="base learning rate of both players")
    p.add_argument("--n-disc", type=int, default=None, help="D steps per G step")
    from funcgan.cli import add_game_options

    add_game_options(p)


def build_points(args: argparse.Namespace) -> list[dict[str, Any]]:
    hyper: dict[str, list[Any]] = {}
    for name, parse in (("gen_lr", _floats), ("disc_lr", _floats), ("gen_betas", _pairs), ("disc_betas", _pairs),
                        ("gen_clip_norm", _floats), ("disc_clip_norm", _floats), ("l1_weight", _floats)):
        values = parse(name.replace("_", "-"), getattr(args, name))
        if values is not None:
            hyper[name] = values
    return SW.grid(parse_seeds(args.seeds), **hyper)


def _problem_metric_fn(system: systems.System, n_samples: int):
    """A per-run metric function ``(state, key) -> dict`` for vmapping over runs."""
    gan = system.gan
    if system.kind == "mixture":
        from funcgan.metrics import mixture_metrics

        means, std = system.mixture

        def metric(state, key):
            x = generate(gan, state, key, min(n_samples, 2500), use_ema=bool(state.gen_ema))
            return mixture_metrics(x, means.to(x), std)

        return metric
    if system.kind == "dirac":
        def metric(state, key):
            del key
            theta, psi = state.gen_params["theta"][0], state.disc_params["psi"][0]
            return {"theta": theta, "psi": psi, "radius": torch.sqrt(theta**2 + psi**2)}

        return metric
    if gan.conditional:
        cond, target = system.data[0][:512], system.data[1][:512]

        def metric(state, key):
            fake = generate(gan, state, key, len(cond), condition=cond.to(next(iter(state.gen_params.values())).dtype))
            return {"l1_to_target": (fake - target.to(fake.dtype)).abs().mean()}

        return metric
    if system.kind == "1d":
        def metric(state, key):
            x = generate(gan, state, key, n_samples)
            return {"gen_mean": x.mean(), "gen_std": x.std()}

        return metric

    def metric(state, key):
        x = generate(gan, state, key, min(n_samples, 1024))
        return {"gen_pixel_mean": x.mean(), "gen_pixel_std": x.std()}

    return metric


def per_seed_rows(system: systems.System, result: SW.SweepResult, n_samples: int = 10_000,
                  chunk: int = 256) -> list[dict[str, Any]]:
    """One row per run: seed, hyper-parameters, final losses, problem metrics, diverged step."""
    S = len(result.points)
    metric = _problem_metric_fn(system, n_samples)
    keys = fr.fold_in(fr.key(torch.tensor([p["seed"] for p in result.points])), 0xE7A1)  # evaluation keys
    keys = keys.to(result.state.step.device)
    vals: dict[str, list[float]] = {}
    for c0 in range(0, S, chunk):
        sl = slice(c0, min(S, c0 + chunk))
        st = tree_index(result.state, sl)
        with torch.no_grad():
            out = vmap(metric, randomness="error")(st, keys[sl])
        for k, v in out.items():
            vals.setdefault(k, []).extend(v.double().cpu().tolist())
    T = result.history["gen/loss"].shape[0]
    tail = max(1, T // 10)
    rows = []
    for i, p in enumerate(result.points):
        row: dict[str, Any] = {"seed": p["seed"]}
        for k, v in p.items():
            if k != "seed":
                row[k] = ":".join(str(x) for x in v) if isinstance(v, (tuple, list)) else v
        for k in ("disc/loss", "gen/loss"):
            h = result.history[k][-tail:, i]
            h = h[torch.isfinite(h)]
            row[k.replace("/", "_")] = float(h.mean()) if len(h) else float("nan")
        for k, v in vals.items():
            row[k] = v[i]
        d = int(result.diverged_at[i])
        row["diverged_at"] = "" if d < 0 else d
        rows.append(row)
    return rows


def summarize_rows(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Across seeds: mean, std, and 5/25/50/75/95% quantiles of each numeric column; runs diverged."""
    summary: dict[str, Any] = {"runs": len(rows), "diverged": sum(1 for r in rows if r["diverged_at"] != "")}
    skip = {"seed", "diverged_at"}
    for col in rows[0]:
        if col in skip or not isinstance(rows[0][col], (int, float)):
            continue
        v = torch.tensor([float(r[col]) for r in rows], dtype=torch.float64)
        v = v[torch.isfinite(v)]
        if len(v) == 0:
            continue
        q = torch.quantile(v, torch.tensor([0.05, 0.25, 0.5, 0.75, 0.95], dtype=torch.float64))
        summary[col] = {"mean": float(v.mean()), "std": float(v.std()) if len(v) > 1 else 0.0,
                        "q05": float(q[0]), "q25": float(q[1]), "median": float(q[2]), "q75": float(q[3]),
                        "q95": float(q[4])}
    return summary


def write_table(out_dir: str | os.PathLike, rows: list[dict[str, Any]], summary: dict[str, Any],
                meta: dict[str, Any]) -> list[str]:
    """``per_seed.csv``, ``per_seed.json`` and ``summary.json``."""
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    with open(d / "per_seed.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (d / "per_seed.json").write_text(json.dumps(rows, indent=1))
    (d / "summary.json").write_text(json.dumps({"meta": meta, "summary": summary}, indent=1))
    return [str(d / "per_seed.csv"), str(d / "per_seed.json"), str(d / "summary.json")]


def plot_sweep(out_dir: str | os.PathLike, system: systems.System, result: SW.SweepResult,
               rows: list[dict[str, Any]]) -> list[str]:
    """Loss curves (all runs, median and 10-90% band); for 1-D problems the generated
    (mean, std) of every run against the data's. Needs matplotlib."""
    from funcgan._plot import pyplot
    from funcgan._plot import save as save_figure

    plt = pyplot()
    if plt is None:
        return []
    d = Path(out_dir)
    written = []
    steps = result.logged_steps
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, k in zip(axes, ("disc/loss", "gen/loss")):
        h = result.history[k].numpy()  # (T, S)
        for i in range(min(h.shape[1], 200)):
            ax.plot(steps, h[:, i], color="0.7", lw=0.3)
        ht = torch.from_numpy(h)
        q = torch.nanquantile(ht, torch.tensor([0.1, 0.5, 0.9], dtype=ht.dtype), dim=1).numpy()
        ax.fill_between(steps, q[0], q[2], alpha=0.3, label="10-90%")
        ax.plot(steps, q[1], color="k", lw=1.2, label="median")
        ax.set_title(f"{system.name}: {k} over {h.shape[1]} runs")
        ax.set_xlabel("step")
        ax.legend()
    written.append(save_figure(fig, d / "losses.png", 110))
    if system.kind == "1d" and "gen_mean" in rows[0]:
        fig, ax = plt.subplots(figsize=(6, 5))
        m = [r["gen_mean"] for r in rows]
        s = [r["gen_std"] for r in rows]
        ax.scatter(m, s, s=6, alpha=0.6, label="runs")
        ax.scatter([system.real_stats["mean"]], [system.real_stats["std"]], color="red", marker="x", s=80, label="data")
        ax.set_xlabel("generated mean")
        ax.set_ylabel("generated std")
        ax.set_title(f"{system.name}: generated distribution per run")
        ax.legend()
        written.append(save_figure(fig, d / "distributions.png", 110))
    return written


def _dist_info() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return rank, world


def _rendezvous():
    """The job's key-value store (``torch.distributed`` env:// rendezvous, torchrun's own store).

    Seeds are independent, so the ranks never exchange tensors: no process
    group, no collective; each rank trains its slice on its own device and puts
    its per-seed rows in the store, where rank 0 collects them.
    """
    import torch.distributed as dist

    store, _, _ = next(dist.rendezvous("env://"))
    prefix = f"funcgan-sweep/{os.environ.get('TORCHELASTIC_RUN_ID', '')}/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"
    return dist.PrefixStore(prefix, store)


def _gather_rows(store, rows: list[dict[str, Any]], rank: int, world: int) -> list[dict[str, Any]]:
    """Rank 0 gets every rank's rows in rank order (the order one process writes); others get ``[]``.

    Rank 0 waits as long as the slowest rank trains (a sweep's ranks can finish
    hours apart); if a rank dies, torchrun stops the job.
    """
    from datetime import timedelta

    store.set(f"rows/{rank}", json.dumps(rows))
    if rank != 0:
        return []
    store.set_timeout(timedelta(days=365))
    return [r for i in range(world) for r in json.loads(store.get(f"rows/{i}"))]


def shard(points: list[dict[str, Any]], rank: int, world: int) -> tuple[int, int]:
    """The contiguous slice ``[lo, hi)`` of runs that ``rank`` of ``world`` trains."""
    n = len(points)
    per = math.ceil(n / world)
    return min(n, rank * per), min(n, (rank + 1) * per)


def run(args: argparse.Namespace) -> int:
    from funcgan.cli import _device, _make_system
    from funcgan.runner import progress as make_bar

    rank, world = _dist_info()
    device = args.device
    store = None
    if world > 1:
        store = _rendezvous()
        if device.startswith("cuda"):
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
            torch.cuda.set_device(device)
    device = _device(device)
    from funcgan.cli import GAME_OPTIONS

    ns = argparse.Namespace(data_dir=args.data_dir, batch_size=args.batch_size, lr=args.lr, n_disc=args.n_disc,
                            **{k: getattr(args, k) for k in GAME_OPTIONS})
    system = _make_system(args.problem, ns)
    try:
        points = build_points(args)
        SW.check_points(system.gan, points)
    except ValueError as e:
        raise SystemExit(f"funcgan sweep: {e}")
    steps = args.steps if args.steps is not None else system.default_steps
    dtype = torch.float64 if args.dtype == "float64" else torch.float32
    lo, hi = shard(points, rank, world)
    mine = points[lo:hi]
    if rank == 0:
        print(f"funcgan sweep: {system.description}; {len(points)} runs x {steps} steps on {device}"
              + (f" ({world} processes)" if world > 1 else "")
              + ("" if args.no_compile else f", compiled ({args.backend})"))
    rows: list[dict[str, Any]] = []
    result = None
    if mine:
        bar = make_bar(len(mine) * steps, "run-steps", not args.no_progress and rank == 0)
        result = SW.run(system, mine, steps, chunk_size=args.chunk_size, device=device, dtype=dtype,
                        compile=not args.no_compile, backend=args.backend, mode=args.mode,
                        log_every=args.log_every, progress=bar.update)
        bar.close()
        rows = per_seed_rows(system, result, args.samples)
    if world > 1:
        rows = _gather_rows(store, rows, rank, world)
        if rank != 0:
            return 0
    summary = summarize_rows(rows)
    if result is not None:
        rate = len(mine) * steps / result.seconds
        print(f"trained in {result.seconds:.1f} s (compile+first step {result.compile_seconds:.1f} s): "
              f"{rate:,.0f} run-steps/s on rank 0, chunk size {result.chunk_size}")
    print(f"runs: {summary['runs']}, diverged: {summary['diverged']}")
    for col, st in summary.items():
        if isinstance(st, dict):
            print(f"  {col:<16} mean {st['mean']:+.4f}  std {st['std']:.4f}  "
                  f"q05 {st['q05']:+.4f}  median {st['median']:+.4f}  q95 {st['q95']:+.4f}")
    diverged = [r for r in rows if r["diverged_at"] != ""]
    for r in diverged[:20]:
        print(f"  diverged: seed {r['seed']} at step {r['diverged_at']}"
              + "".join(f", {k}={v}" for k, v in r.items() if k in SW.HYPERPARAMETERS or k in system.gan.hparams))
    if len(diverged) > 20:
        print(f"  ... and {len(diverged) - 20} more (see per_seed.csv)")
    if args.out:
        meta = {"problem": system.name, "steps": steps, "runs": len(points), "device": device,
                "dtype": args.dtype, "compiled": not args.no_compile, "world_size": world}
        for path in write_table(args.out, rows, summary, meta):
            print(f"wrote {path}")
        if result is not None and world == 1:
            for path in plot_sweep(args.out, system, result, rows):
                print(f"wrote {path}")
    return 0
