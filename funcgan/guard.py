"""The divergence guard: flag a run that explodes, freeze it at its last healthy state, keep the others going.

A run is flagged, per seed and inside the compiled step (no ``.item()``, no
branching), when its new state or losses are

* **non-finite** (NaN or infinity anywhere in the parameters, buffers, optimizer
  states or metrics);
* **parameter magnitude**: some parameter's absolute value exceeds ``max_param``;
* **generated-output magnitude**: G's samples (the ``gen/out_max`` metric every
  built-in loop reports) exceed ``max_output`` in absolute value;
* **loss pinned**: a loss has sat at the value its clamp pins it to (the objective's
  ``saturation``, e.g. 100 for ``nn.BCELoss``) for ``pinned_window`` consecutive
  steps: the run is finite but D (or G) has won completely and nothing is learnt.

A flagged run keeps the state it had before the step that flagged it
(``tree_where(ok, new, old)``), records that step in ``state.health["diverged_at"]``
and the reason's code in ``state.health["reason"]`` (:data:`REASONS`), and reports
NaN metrics from then on. It never affects another run: every check reads only its
own slice of the stacked state. The defaults are far from what healthy runs of the
built-in systems reach (a test runs 256 seeds of each at default settings).

Traced (compiled, vmapped) steps select with ``tree_where`` and never branch. A plainly
eager call on the CPU (:func:`funcgan._mode.plain_eager`) whose runs are all healthy returns
``new`` after one host-side test instead: the same values without a ``torch.where`` per leaf.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from funcgan._checks import check_positive
from funcgan._mode import plain_cpu_tensors
from funcgan.step import Data, Metrics, TrainState
from funcgan.tree import tree_all_finite, tree_leaves, tree_reduce, tree_where

__all__ = ["Guard", "REASONS", "guarded", "check", "reason_name"]

#: reason code -> description
REASONS = {
    0: "",
    1: "non-finite values",
    2: "parameter magnitude",
    3: "generated-output magnitude",
    4: "loss pinned at its clamp",
}


def reason_name(code: int) -> str:
    """The description of a reason code (``"non-finite values"``, ...)."""
    return REASONS.get(int(code), f"reason {int(code)}")


@dataclass(frozen=True)
class Guard:
    """Divergence criteria; ``None`` switches one off (non-finite values are always caught).

    Attributes:
        max_param: the largest absolute parameter value a healthy run keeps.
        max_output: the largest absolute value of G's samples (``gen/out_max``).
        pinned_window: consecutive steps a loss may sit at its clamp.
        pinned_fraction: a loss counts as pinned at ``saturation`` when it is at least
            this fraction of it.
    """

    max_param: float | None = 1e6
    max_output: float | None = 1e6
    pinned_window: int | None = 100
    pinned_fraction: float = 0.99

    def __post_init__(self) -> None:
        for name in ("max_param", "max_output"):
            value = getattr(self, name)
            if value is not None:
                check_positive("Guard", name, value)
        if self.pinned_window is not None and (
            isinstance(self.pinned_window, bool) or not isinstance(self.pinned_window, int) or self.pinned_window < 1
        ):
            raise ValueError(f"Guard: pinned_window must be an int >= 1 or None, got {self.pinned_window!r}")
        if not 0 < self.pinned_fraction <= 1:
            raise ValueError(f"Guard: pinned_fraction must be in (0, 1], got {self.pinned_fraction}")


def _pinned(metrics: Metrics, saturation: tuple[float | None, float | None], fraction: float) -> torch.Tensor | None:
    flags = []
    for key, sat in zip(("disc/loss", "gen/loss"), saturation):
        if sat is not None and key in metrics:
            flags.append(metrics[key].to(torch.float64) >= fraction * sat)
    if not flags:
        return None
    return torch.stack(flags).any()


def check(
    state: TrainState,
    new: TrainState,
    metrics: Metrics,
    guard: Guard,
    saturation: tuple[float | None, float | None] = (None, None),
) -> tuple[TrainState, Metrics]:
    """The guard's verdict on one step ``state -> new``: ``new`` if healthy, else ``state`` with the step
    and reason recorded; metrics as float64, NaN for a flagged run."""
    health = state.health
    alive = health["diverged_at"] < 0
    finite = tree_all_finite((new.gen, new.disc, new.gen_ema, new.extra, metrics))
    flags: list[tuple[int, torch.Tensor]] = []  # (reason code, whether that criterion flags the run), in order
    if guard.max_param is not None:
        big = tree_reduce(tree_leaves((new.gen.params, new.disc.params)), lambda x: x.abs().amax(), torch.amax)
        flags.append((2, big > guard.max_param))
    if guard.max_output is not None and "gen/out_max" in metrics:
        flags.append((3, metrics["gen/out_max"].to(torch.float64) > guard.max_output))
    pinned = health["pinned"]
    if guard.pinned_window is not None:
        at_clamp = _pinned(metrics, saturation, guard.pinned_fraction)
        if at_clamp is not None:
            pinned = torch.where(at_clamp, pinned + 1, torch.zeros_like(pinned))
            flags.append((4, pinned >= guard.pinned_window))
    if plain_cpu_tensors(finite):
        # eager on the CPU: if every run is healthy, ``tree_where(ok, new, state)`` is ``new``, so the host's one
        # test replaces a torch.where per state leaf (the same values; traced steps never branch; on a GPU the
        # test would be a sync every step); healthy is the reason chain below giving 0, without building it
        healthy = alive & finite
        for _, flag in flags:
            healthy = healthy & ~flag
        if bool(healthy.all()):
            return new._replace(health={**health, "pinned": pinned}), _as_float64(metrics)
    reason = torch.where(~finite, torch.ones_like(health["reason"]), torch.zeros_like(health["reason"]))
    for code, flag in flags:
        reason = torch.where((reason == 0) & flag, torch.full_like(reason, code), reason)
    ok = alive & (reason == 0)
    kept = tree_where(ok, new, state)
    newly = alive & ~ok
    kept = kept._replace(
        health={
            "diverged_at": torch.where(newly, state.step, health["diverged_at"]),
            "reason": torch.where(newly, reason, health["reason"]),
            "pinned": torch.where(ok, pinned, health["pinned"]),
        }
    )
    nan = torch.tensor(float("nan"), dtype=torch.float64, device=state.step.device)
    return kept, {k: torch.where(ok, v.to(torch.float64), nan) for k, v in metrics.items()}


def _as_float64(metrics: Metrics) -> Metrics:
    """The metrics in float64; 0-d metrics of one dtype (an eager step's) cast in one call (the same values)."""
    values = list(metrics.values())
    if values and all(v.dim() == 0 and v.dtype == values[0].dtype for v in values):
        return dict(zip(metrics, torch.stack(values).to(torch.float64).unbind()))
    return {k: v.to(torch.float64) for k, v in metrics.items()}


def guarded(
    step: Callable[[TrainState, Data], tuple[TrainState, Metrics]],
    guard: Guard,
    saturation: tuple[float | None, float | None] = (None, None),
):
    """``step`` wrapped by the guard: a flagged run keeps its previous state and reports NaN metrics.

    Args:
        step: the pure training step.
        guard: the criteria.
        saturation: the objective's ``(disc, gen)`` clamp values (``objective.saturation``).
    """

    def run(state: TrainState, data: Data) -> tuple[TrainState, Metrics]:
        new, metrics = step(state, data)
        return check(state, new, metrics, guard, saturation)

    return run
