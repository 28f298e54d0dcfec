"""Check a functional GAN step against an imperative loop, as funcgan's own proofs do.

:func:`compare` runs a funcgan step and an imperative step (funcgan's reference for
the GAN's loop, or your own) side by side for a number of steps, feeding both the
same random inputs (drawn from the same keys), and reports the largest differences
of parameters, buffers (BatchNorm statistics, spectral norm's vectors), Adam
moments, G's EMA and per-step losses. :func:`assert_equivalent` raises when they
exceed a tolerance.

Your own imperative step has the signature ``step(run, inputs) -> dict[str, float]``,
where ``run`` is a :class:`~funcgan.testing.reference.ReferenceRun` (``run.G``,
``run.D``, ``run.opt_g``, ``run.opt_d``, and ``run.g``/``run.d`` for keyed forwards)
and ``inputs`` is what ``gan.loop.draw`` returns. Call ``run.end()`` at its end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from funcgan import random as fr
from funcgan.optim.transforms import ScaleByAdamState
from funcgan.step import TrainState, init_state, make_train_step, player_dtype, step_key
from funcgan.testing.reference import ImperativeStep, ReferenceRun, reference_step_for

__all__ = ["Report", "compare", "assert_equivalent", "adam_moments", "DEFAULT_TOLERANCES"]

#: Tolerances (max difference, absolute up to scale 1, relative above) used by ``funcgan verify`` and the tests.
#: float64: both sides compute the same formulas; differences are float64 round-off
#: in reduction order, ~1e-15, amplified by at most a few orders over 20 steps.
#: float32: per-step round-off of ~1e-7 relative, amplified by Adam for coordinates
#: whose gradients are near zero (its first step is ~lr * sign(g)), so the
#: parameter tolerance is of the order of the learning rate (up to 0.1 in the
#: hypothesis draws) times the chance of a flipped tiny-gradient sign.
DEFAULT_TOLERANCES = {
    torch.float64: {"params": 1e-10, "buffers": 1e-10, "losses": 1e-10, "moments": 1e-10},
    torch.float32: {"params": 1e-3, "buffers": 1e-3, "losses": 1e-3, "moments": 1e-3},
}


@dataclass
class Report:
    """Largest differences between the functional and the imperative run: absolute, or relative to a
    tensor's scale where its values exceed 1 (see ``_maxdiff``); losses absolute up to 1, relative above."""

    steps: int
    dtype: torch.dtype
    params: float = 0.0
    buffers: float = 0.0
    moments: float = 0.0
    losses: float = 0.0
    per_step_losses: list[float] = field(default_factory=list)
    worst_param: str = ""
    #: the largest |loss| the imperative run reported: a run that blows up (losses of 1e6 and more from
    #: O(1)) amplifies round-off by as much, so its differences say nothing at a round-off tolerance
    reference_peak_loss: float = 0.0

    def exceeds(self, tol: dict[str, float]) -> list[str]:
        """Names of the quantities whose difference is above ``tol``."""
        return [k for k in ("params", "buffers", "moments", "losses") if getattr(self, k) > tol.get(k, tol["params"])]


def adam_moments(opt_state: Any) -> tuple[dict, dict] | None:
    """Adam's ``(mu, nu)`` from a functional optimizer state, or None if not Adam."""
    for leaf in _walk(opt_state):
        if isinstance(leaf, ScaleByAdamState):
            return leaf.mu, leaf.nu
    return None


def _walk(x: Any):
    yield x
    if isinstance(x, tuple):
        for y in x:
            yield from _walk(y)


def _torch_moments(opt: torch.optim.Optimizer | None, module: torch.nn.Module) -> tuple[dict, dict] | None:
    if opt is None:
        return None
    mu, nu = {}, {}
    for name, p in module.named_parameters():
        st = opt.state.get(p, {})
        if "exp_avg" not in st:
            return None
        mu[name], nu[name] = st["exp_avg"], st["exp_avg_sq"]
    return mu, nu


def _maxdiff(a: dict, b: dict) -> tuple[float, str]:
    """The largest ``max|a - b| / max(1, max|b|)`` over the tensors (differences relative to the
    tensor's scale when it exceeds 1: Adam's second moments of a steep loss reach 1e4 and more)."""
    worst, name = 0.0, ""
    for k in a:
        if not a[k].is_floating_point():
            d = float((a[k] != b[k]).any())
        elif a[k].numel():
            ref = b[k].to(a[k].dtype)
            d = float((a[k] - ref).abs().max()) / max(1.0, float(ref.abs().max()))
        else:
            d = 0.0
        if d > worst or not name:
            worst, name = d, k
    return worst, name


def compare(
    system,
    seed: int = 0,
    steps: int = 10,
    dtype: torch.dtype = torch.float64,
    imperative_step: ImperativeStep | None = None,
    state: TrainState | None = None,
) -> Report:
    """Run functional and imperative training side by side; report the differences.

    Args:
        system: a :class:`~funcgan.systems.System` (or anything with ``.gan`` and ``.data``).
        seed: the run's seed (both runs start from ``init_state(gan, key(seed))``).
        steps: how many training steps.
        dtype: float64 for tight checks, float32 for what training uses.
        imperative_step: your imperative step; default: funcgan's reference for the loop.
        state: start from this state instead of a fresh one.

    Returns:
        A :class:`Report` of max abs differences (both players' parameters and buffers
        after every step, Adam moments, G's EMA, per-step losses).
    """
    gan = system.gan
    if state is None:
        state = init_state(gan, fr.key(seed), dtype=dtype)
    dtype = player_dtype(state)
    device = state.step.device
    data = tuple((x.to(device=device, dtype=dtype) if x.is_floating_point() else x.to(device)) for x in system.data)
    run = ReferenceRun(gan, state)
    imperative_step = imperative_step or reference_step_for(gan)
    step = make_train_step(gan)
    report = Report(steps=steps, dtype=dtype)
    for _ in range(steps):
        inputs = gan.loop.draw(gan, step_key(state), data, dtype)
        ref_losses = imperative_step(run, inputs)
        report.reference_peak_loss = max([report.reference_peak_loss, *(abs(v) for v in ref_losses.values())])
        state, metrics = step(state, data)
        shared = [k for k in ref_losses if k in metrics]
        if not shared:
            raise ValueError(
                "compare: the imperative step returned no metric the functional step has "
                f"(functional: {sorted(metrics)}; imperative: {sorted(ref_losses)})"
            )
        loss_diff = max(abs(float(metrics[k]) - v) / max(1.0, abs(v)) for k, v in ref_losses.items() if k in metrics)
        report.per_step_losses.append(loss_diff)
        report.losses = max(report.losses, loss_diff)
        pairs = [(state.gen.params, run.gen_params()), (state.disc.params, run.disc_params())]
        if gan.ema is not None:
            pairs.append((state.gen_ema, run.ema))
        for ours, theirs in pairs:
            d, name = _maxdiff(ours, theirs)
            if d >= report.params:
                report.params, report.worst_param = d, name
        for ours, module in ((state.gen.buffers, run.G), (state.disc.buffers, run.D)):
            if ours:
                report.buffers = max(report.buffers, _maxdiff(ours, run.buffers(module))[0])
        for opt_state, opt, module in (
            (state.gen.opt_state, run.opt_g, run.G),
            (state.disc.opt_state, run.opt_d, run.D),
        ):
            ours_m, theirs_m = adam_moments(opt_state), _torch_moments(opt, module)
            if ours_m is not None and theirs_m is not None:
                for a, b in zip(ours_m, theirs_m):
                    report.moments = max(report.moments, _maxdiff(a, b)[0])
    return report


def assert_equivalent(
    system,
    seed: int = 0,
    steps: int = 10,
    dtype: torch.dtype = torch.float64,
    imperative_step: ImperativeStep | None = None,
    tolerances: dict[str, float] | None = None,
    state: TrainState | None = None,
) -> Report:
    """:func:`compare`, raising ``AssertionError`` when a difference exceeds its tolerance."""
    tol = tolerances or DEFAULT_TOLERANCES[dtype]
    report = compare(system, seed, steps, dtype, imperative_step, state)
    bad = report.exceeds(tol)
    if bad:
        raise AssertionError(
            f"functional and imperative runs differ ({system.gan.name}, {dtype}, {steps} steps): "
            + ", ".join(f"{k} {getattr(report, k):.3e} > {tol.get(k, tol['params']):.1e}" for k in bad)
            + (f" (worst parameter '{report.worst_param}')" if "params" in bad else "")
        )
    return report
