"""The imperative shell around the pure step: drive it, collect metrics, summarise, plot.

Nothing here is traced or compiled. Metrics stay on the device as tensors and
are stacked once at the end (or at each ``log_every``), so the loop never syncs
per step except to refresh the progress bar's numbers.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import torch

from funcgan import random as fr
from funcgan.systems import System
from funcgan.train import TrainState, generate, init_state, make_train_step

__all__ = ["progress", "train", "summarize", "write_outputs", "History"]

History = dict[str, torch.Tensor]


def progress(total: int, desc: str, enabled: bool = True):
    """A tqdm progress bar when tqdm is installed (``funcgan[progress]``), else a no-op bar."""
    if enabled:
        try:
            from tqdm.auto import tqdm

            return tqdm(total=total, desc=desc, dynamic_ncols=True, leave=False)
        except ImportError:
            pass
    return _NullBar()


class _NullBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, *a: Any, **k: Any) -> None:
        pass

    def close(self) -> None:
        pass


def train(
    system: System,
    steps: int,
    seed: int = 0,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    compile: bool = False,
    show_progress: bool = True,
    log_every: int = 50,
    state: TrainState | None = None,
) -> tuple[TrainState, History, float]:
    """Train one run of ``system`` for ``steps`` steps (from ``state``, e.g. a loaded
    checkpoint, or a fresh state from ``seed``).

    Returns:
        ``(final_state, history, seconds)`` where ``history`` maps each metric name
        to a ``(steps,)`` tensor.
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"train: steps must be an int >= 1, got {steps!r}")
    gan = system.gan
    data = tuple(x.to(device=device, dtype=dtype) for x in system.data)
    if state is None:
        state = init_state(gan, fr.key(seed), dtype=dtype, device=device)
    step = make_train_step(gan)
    if compile:
        from funcgan.compile import ChainCaller, compile as compile_step

        # one run's kernels are too small to share between threads on a CPU
        step = ChainCaller(compile_step(step, kernel_threads=1 if str(device) == "cpu" else None))
    rows: list[dict[str, torch.Tensor]] = []
    bar = progress(steps, f"{gan.name} seed {seed}", show_progress)
    t0 = time.perf_counter()
    for i in range(steps):
        state, metrics = step(state, data)
        rows.append(metrics)
        bar.update(1)
        if (i + 1) % log_every == 0:
            bar.set_postfix({k.split("/")[0][0].upper() + "_loss": f"{float(metrics[k]):.3f}"
                             for k in ("disc/loss", "gen/loss")})
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    bar.close()
    history = {k: torch.stack([r[k] for r in rows]).detach().cpu() for k in rows[0]}
    return state, history, seconds


def summarize(system: System, state: TrainState, history: History, n_samples: int = 10_000,
              seed: int = 0) -> dict[str, Any]:
    """Final losses (last step and mean of the last 10%), and sample statistics.

    For 1-D systems: mean and std of ``n_samples`` generated samples next to the
    data's. For image systems: mean pixel value of generated vs real images.
    """
    steps = len(next(iter(history.values())))
    tail = max(1, steps // 10)
    out: dict[str, Any] = {"problem": system.name, "steps": steps, "data": system.data_source}
    for k in ("disc/loss", "gen/loss"):
        out[k] = float(history[k][-1])
        out[k + "_tail_mean"] = float(history[k][-tail:].float().mean())
    gan = system.gan
    with torch.no_grad():
        if gan.conditional:
            cond = system.data[0][: min(len(system.data[0]), 512)].to(next(iter(state.gen_params.values())))
            fake = generate(gan, state, fr.key(seed), len(cond), condition=cond)
            out["l1_to_target"] = float((fake.cpu() - system.data[1][: len(cond)]).abs().mean())
        else:
            fake = generate(gan, state, fr.fold_in(fr.key(seed), 1), n_samples)
        fake = fake.detach().float().cpu()
    if system.kind == "mixture":
        from funcgan.metrics import mixture_metrics

        means, std = system.mixture
        m = mixture_metrics(fake[:2500], means, std)
        out.update(modes=int(m["modes"]), hq_fraction=float(m["hq_fraction"]), reverse_kl=float(m["reverse_kl"]))
    elif system.kind == "dirac":
        theta, psi = float(state.gen_params["theta"]), float(state.disc_params["psi"])
        out.update(theta=theta, psi=psi, radius=math.hypot(theta, psi))
    elif system.kind == "1d":
        out["generated_mean"] = float(fake.mean())
        out["generated_std"] = float(fake.std())
        out["real_mean"] = system.real_stats.get("mean", float("nan"))
        out["real_std"] = system.real_stats.get("std", float("nan"))
    else:
        real = system.data[-1]
        out["generated_pixel_mean"] = float(fake.mean())
        out["real_pixel_mean"] = float(real.mean())
    out["finite"] = all(math.isfinite(v) for v in out.values() if isinstance(v, float) and not math.isnan(v))
    out["_samples"] = fake
    return out


def write_outputs(out_dir: str | os.PathLike, system: System, history: History, summary: dict[str, Any],
                  seed: int = 0) -> list[str]:
    """Write ``metrics.json`` and, with matplotlib installed (``funcgan[plots]``), PNG plots.

    Returns the written paths.
    """
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    written = []
    payload = {"summary": {k: v for k, v in summary.items() if not k.startswith("_")},
               "history": {k: v.tolist() for k, v in history.items()}}
    (d / "metrics.json").write_text(json.dumps(payload, indent=1))
    written.append(str(d / "metrics.json"))
    from funcgan._plot import pyplot
    from funcgan._plot import save as save_figure

    plt = pyplot()
    if plt is None:
        return written
    fig, ax = plt.subplots(figsize=(7, 4))
    for k in ("disc/loss", "gen/loss"):
        ax.plot(history[k].float().numpy(), label=k, lw=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(f"{system.name}: losses")
    ax.legend()
    written.append(save_figure(fig, d / "losses.png", 110))
    samples = summary["_samples"]
    if system.kind == "mixture":
        means, _ = system.mixture
        fig, ax = plt.subplots(figsize=(5, 5))
        ax.scatter(samples[:2500, 0].numpy(), samples[:2500, 1].numpy(), s=2, alpha=0.4, label="generated")
        ax.scatter(means[:, 0].numpy(), means[:, 1].numpy(), color="red", marker="x", label="modes")
        ax.set_title(f"{system.name}: {summary.get('modes')} modes, hq {summary.get('hq_fraction', 0):.2f}")
        ax.legend()
        save_figure(fig, d / "samples.png", 110)
    elif system.kind == "dirac":
        return written
    elif system.kind == "1d":
        real = fr.normal(fr.key(seed + 12345), (len(samples),)) * summary["real_std"] + summary["real_mean"]
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.hist(real.numpy(), bins=80, alpha=0.5, density=True, label="real")
        ax.hist(samples.flatten().numpy(), bins=80, alpha=0.5, density=True, label="generated")
        ax.set_title(f"{system.name}: generated vs real")
        ax.legend()
        save_figure(fig, d / "samples.png", 110)
    else:
        h, w = system.image_shape
        n = min(64, len(samples))
        cols = 8
        rows = math.ceil(n / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(cols, rows))
        for i, ax in enumerate(axes.flat):
            ax.axis("off")
            if i < n:
                ax.imshow(samples[i].reshape(h, w).clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1)
        fig.suptitle(f"{system.name}: generated samples")
        save_figure(fig, d / "samples.png", 110, tight=False)
    written.append(str(d / "samples.png"))
    return written
