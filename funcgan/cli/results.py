"""Results people read: per-seed tables, summaries grouped by hyper-parameter point, plots and sample grids.

Nothing here trains. Problem metrics are computed for each run from its final
state, vmapped over runs, with G in eval mode (BatchNorm's running statistics), and
for the EMA generator beside the raw one when the GAN keeps an average. A run the
guard flagged keeps its row (with its step and reason) but is excluded from the
summary's statistics; the summary says how many were excluded.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.func import vmap

from funcgan import random as fr
from funcgan.guard import reason_name
from funcgan.step import generate
from funcgan.sweep import SweepResult
from funcgan.systems import System
from funcgan.tree import tree_index

__all__ = [
    "metric_fn",
    "per_seed_rows",
    "summarize",
    "write_tables",
    "losses_figure",
    "samples_figure",
    "sample_grid",
    "hyper_names",
    "EVAL_KEY",
]

#: the evaluation noise of run ``seed`` draws from ``fold_in(key(seed), EVAL_KEY)``
EVAL_KEY = 0xE7A1


def metric_fn(system: System, n_samples: int, use_ema: bool = False):
    """A per-run metric function ``(state, key) -> dict[str, 0-d tensor]`` for vmapping over runs."""
    gan = system.gan

    def samples(state, key, n, cond=None):
        return generate(gan, state, key, n, cond=cond, use_ema=use_ema)

    if system.kind == "mixture":
        from funcgan.metrics import mixture_metrics

        assert system.mixture is not None
        means, std = system.mixture

        def metric(state, key):
            x = samples(state, key, min(n_samples, 2500))
            return mixture_metrics(x, means.to(x), std)

        return metric
    if system.kind == "dirac":

        def metric(state, key):
            del key
            theta = (state.gen_ema if use_ema else state.gen.params)["theta"][0]
            psi = state.disc.params["psi"][0]
            return {"theta": theta, "psi": psi, "radius": torch.sqrt(theta**2 + psi**2)}

        return metric
    if gan.conditional and system.n_classes == 0:  # image-to-image: distance to the target
        cond, target = system.data[0][:512], system.data[1][:512]

        def metric(state, key):
            dtype = next(iter(state.gen.params.values())).dtype
            fake = samples(state, key, len(cond), cond.to(dtype))
            return {"l1_to_target": (fake - target.to(fake.dtype)).abs().mean()}

        return metric
    if gan.conditional:  # class-conditional: every class in turn
        k = system.n_classes

        def metric(state, key):
            y = torch.arange(min(n_samples, 1024), device=key.device) % k
            x = samples(state, key, len(y), y)
            return {"gen_pixel_mean": x.mean(), "gen_pixel_std": x.std()}

        return metric
    if system.kind == "1d":

        def metric(state, key):
            x = samples(state, key, n_samples)
            return {"gen_mean": x.mean(), "gen_std": x.std()}

        return metric

    def pixels(state, key):
        x = samples(state, key, min(n_samples, 1024))
        return {"gen_pixel_mean": x.mean(), "gen_pixel_std": x.std()}

    return pixels


def hyper_names(points: list[dict[str, Any]]) -> list[str]:
    """The hyper-parameters a sweep varies (every point's names but ``seed``)."""
    return [k for k in points[0] if k != "seed"]


def _value(v: Any) -> Any:
    return ":".join(str(x) for x in v) if isinstance(v, (tuple, list)) else v


def per_seed_rows(
    system: System, result: SweepResult, n_samples: int = 10_000, chunk: int = 256
) -> list[dict[str, Any]]:
    """One row per run: seed, hyper-parameters, final losses, problem metrics (and ``ema_`` ones),
    the step and reason a flagged run was stopped at."""
    S = len(result.points)
    fns = {"": metric_fn(system, n_samples)}
    if system.gan.ema is not None:
        fns["ema_"] = metric_fn(system, n_samples, use_ema=True)
    keys = fr.fold_in(fr.key(torch.tensor([p["seed"] for p in result.points])), EVAL_KEY)
    keys = keys.to(result.state.step.device)
    vals: dict[str, list[float]] = {}
    for c0 in range(0, S, chunk):
        sl = slice(c0, min(S, c0 + chunk))
        st = tree_index(result.state, sl)
        for prefix, fn in fns.items():
            with torch.no_grad():
                out = vmap(fn, randomness="error")(st, keys[sl])
            for k, v in out.items():
                vals.setdefault(prefix + k, []).extend(v.double().cpu().tolist())
    T = result.history["gen/loss"].shape[0] if "gen/loss" in result.history else 0
    tail = max(1, T // 10)
    rows = []
    for i, p in enumerate(result.points):
        row: dict[str, Any] = {"seed": p["seed"]}
        row.update({k: _value(v) for k, v in p.items() if k != "seed"})
        for k in ("disc/loss", "gen/loss"):
            if k in result.history:
                h = result.history[k][-tail:, i]
                h = h[torch.isfinite(h)]
                row[k.replace("/", "_")] = float(h.mean()) if len(h) else float("nan")
        for k, v in vals.items():
            row[k] = v[i]
        d = int(result.diverged_at[i])
        row["diverged_at"] = "" if d < 0 else d
        row["diverged_reason"] = "" if d < 0 else reason_name(int(result.reasons[i]))
        row["steps"] = int(result.state.step[i])
        rows.append(row)
    return rows


def _stats(values: list[float]) -> dict[str, float]:
    v = torch.tensor(values, dtype=torch.float64)
    v = v[torch.isfinite(v)]
    if len(v) == 0:
        return {}
    q = torch.quantile(v, torch.tensor([0.05, 0.25, 0.5, 0.75, 0.95], dtype=torch.float64))
    return {
        "mean": float(v.mean()),
        "std": float(v.std()) if len(v) > 1 else 0.0,
        "q05": float(q[0]),
        "q25": float(q[1]),
        "median": float(q[2]),
        "q75": float(q[3]),
        "q95": float(q[4]),
    }


def summarize(rows: list[dict[str, Any]], hypers: list[str]) -> dict[str, Any]:
    """Statistics over healthy runs, one group per hyper-parameter point.

    Returns ``{"runs", "diverged", "groups": [{<hyper values>, "seeds", "diverged", "metrics": {col: stats}}]}``;
    flagged runs count in ``diverged`` and never in the statistics.
    """
    skip = {"seed", "diverged_at", "diverged_reason", "steps", *hypers}
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(tuple(r.get(h) for h in hypers), []).append(r)
    out: dict[str, Any] = {"runs": len(rows), "diverged": sum(1 for r in rows if r["diverged_at"] != ""), "groups": []}
    for values, members in groups.items():
        healthy = [r for r in members if r["diverged_at"] == ""]
        cols = [c for c in members[0] if c not in skip and isinstance(members[0][c], (int, float))]
        metrics = {c: s for c in cols if (s := _stats([float(r[c]) for r in healthy]))}
        out["groups"].append(
            {
                **dict(zip(hypers, values)),
                "seeds": len(members),
                "diverged": len(members) - len(healthy),
                "metrics": metrics,
            }
        )
    return out


def write_tables(
    out_dir: str | os.PathLike, rows: list[dict[str, Any]], summary: dict[str, Any], meta: dict[str, Any]
) -> list[str]:
    """``per_seed.csv``, ``per_seed.json`` and ``summary.json`` (atomically replaced)."""
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    written = []
    tmp = d / ".per_seed.csv.tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, d / "per_seed.csv")
    written.append(str(d / "per_seed.csv"))
    for name, payload in (("per_seed.json", rows), ("summary.json", {"meta": meta, "summary": summary})):
        tmp = d / f".{name}.tmp"
        tmp.write_text(json.dumps(payload, indent=1, default=float))
        os.replace(tmp, d / name)
        written.append(str(d / name))
    return written


# ----------------------------------------------------------------------------- figures


def sample_grid(samples: torch.Tensor, image_shape: tuple[int, ...], cols: int = 8) -> torch.Tensor:
    """Samples as one image ``(H', W', C)`` in [0, 1]: a grid of ``cols`` columns; 1- or 3-channel images
    (flat samples are reshaped to ``image_shape``; values in [-1, 1] are mapped to [0, 1])."""
    c, h, w = image_shape
    if c not in (1, 3):
        raise ValueError(f"sample_grid: images must have 1 or 3 channels, got {c}")
    x = samples.detach().float().cpu().reshape(-1, c, h, w)
    if float(x.min()) < -0.01:  # tanh outputs
        x = (x + 1) / 2
    x = x.clamp(0, 1)
    n = x.shape[0]
    rows = math.ceil(n / cols)
    grid = torch.ones(c, rows * (h + 1) + 1, cols * (w + 1) + 1)
    for i in range(n):
        r, col = divmod(i, cols)
        grid[:, 1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + col * (w + 1) : 1 + col * (w + 1) + w] = x[i]
    return grid.permute(1, 2, 0)


def losses_figure(path: str | os.PathLike, title: str, result: SweepResult) -> dict[str, Any]:
    """Loss curves (a :mod:`funcgan.cli.paint` figure): every run (up to 200), the median and the 10-90% band."""
    steps = np.asarray(result.logged_steps)
    panels = []
    for k in ("disc/loss", "gen/loss"):
        if k not in result.history:
            continue
        h = result.history[k]  # (T, S)
        band = None
        if h.shape[1] > 1:
            band = torch.nanquantile(h, torch.tensor([0.1, 0.5, 0.9], dtype=h.dtype), dim=1).numpy()
        panels.append(
            {"title": f"{title}: {k} over {h.shape[1]} run(s)", "x": steps, "runs": h[:, :200].numpy(), "band": band}
        )
    return {"kind": "curves", "path": str(path), "title": title, "panels": panels}


def samples_figure(path: str | os.PathLike, system: System, samples: torch.Tensor, title: str) -> dict[str, Any] | None:
    """Generated samples (a :mod:`funcgan.cli.paint` figure): a histogram against the data (1-D), a
    scatter against the modes (mixtures) or an image grid; None for a system with nothing to show."""
    base = {"path": str(path), "title": title}
    if system.kind == "dirac":
        return None
    if system.kind == "mixture" and system.mixture is not None:
        means, _ = system.mixture
        return {
            **base,
            "kind": "scatter",
            "series": [
                ("generated", samples[:2500, 0].numpy(), samples[:2500, 1].numpy(), {"s": 2, "alpha": 0.4}),
                ("modes", means[:, 0].numpy(), means[:, 1].numpy(), {"color": "red", "marker": "x"}),
            ],
        }
    if system.kind == "1d":
        real = system.gan.sample_real(fr.key(12345), system.data, (len(samples),), torch.float32).x
        return {
            **base,
            "kind": "hist",
            "series": [("real", real.flatten().numpy()), ("generated", samples.flatten().numpy())],
        }
    if system.image_shape is not None:
        grid = sample_grid(samples[:64], system.image_shape)
        return {**base, "kind": "image", "pixels": grid.squeeze(-1).numpy() if grid.shape[-1] == 1 else grid.numpy()}
    return None
