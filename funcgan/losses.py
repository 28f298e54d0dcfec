r"""GAN objectives as values: pairs of pure functions of D's outputs on real *and* generated data.

An :class:`Objective` holds ``disc(real_out, fake_out) -> loss`` (minimised by D)
and ``gen(real_out, fake_out) -> loss`` (minimised by G). Both see D's outputs on
the real and on the generated batch, so relativistic losses fit; an objective whose
G loss ignores the real batch says so (``gen_needs_real=False``) and the loops skip
that D forward. A user's objective is two functions::

    my = losses.Objective(disc=lambda r, f: F.softplus(f - r).mean(),
                          gen=lambda r, f: F.softplus(r - f).mean(), name="rsgan-mine")

Built in (:data:`OBJECTIVES`; all on logits unless noted):

==================  =====================================================================
``minimax``         Goodfellow et al. 2014: D :math:`\mathrm{BCE}(D(x),1)+\mathrm{BCE}(D(\tilde x),0)`,
                    G :math:`\mathbb{E}\log(1-\sigma(D(\tilde x)))` (saturating).
``nonsaturating``   the same D; G :math:`\mathrm{BCE}(D(\tilde x), 1)` (the paper's heuristic).
``lsgan``           Mao et al. 2017 (a=0, b=c=1, with the 1/2 factors).
``hinge``           Lim & Ye 2017; Miyato et al. 2018 (SN-GAN): D ``relu(1-D(x)) + relu(1+D(x~))``, G ``-D(x~)``.
``wasserstein``     Arjovsky et al. 2017: D ``D(x~) - D(x)``, G ``-D(x~)`` (add a GP or clipping).
``rsgan``           Jolicoeur-Martineau 2019: D ``BCE(D(x)-D(x~), 1)``, G ``BCE(D(x~)-D(x), 1)``.
``rasgan``          relativistic average: ``BCE(D(x)-E D(x~), 1)`` and ``BCE(D(x~)-E D(x), 0)``, halved.
``ralsgan``         relativistic average least squares.
``rahinge``         relativistic average hinge.
``bce``             on probabilities: seed 000/001/002's ``nn.BCELoss`` (D ends in a sigmoid),
                    non-saturating G.
``clamped_log``     on probabilities: seed 003's clamped logs, saturating G.
==================  =====================================================================

The probability forms take their logs clamped at -100 as ``nn.BCELoss`` does; they
compute ``nn.BCELoss``'s numbers from inputs sanitised to [0, 1], so a diverged run
(a NaN probability) gives a NaN-free loss instead of torch's eager range-check error,
which would take down every other run of an eager sweep (the divergence guard flags
the run from its parameters).

Reductions are batch means; D outputs may be ``(B, 1)`` or ``(B,)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

__all__ = [
    "Objective",
    "OBJECTIVES",
    "objective",
    "minimax",
    "nonsaturating",
    "lsgan",
    "hinge",
    "wasserstein",
    "rsgan",
    "rasgan",
    "ralsgan",
    "rahinge",
    "bce_probs",
    "clamped_log",
    "bce",
    "bce_logits",
    "l1",
]

#: ``(real_out, fake_out) -> loss``; ``real_out`` is ``None`` for a G loss that needs no real batch
Loss = Callable[[Any, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Objective:
    """A GAN objective: D's and G's losses as functions of D's outputs on real and generated data.

    Attributes:
        disc: ``(real_out, fake_out) -> loss`` that D minimises.
        gen: ``(real_out, fake_out) -> loss`` that G minimises; ``real_out`` is ``None``
            when ``gen_needs_real`` is False.
        name: a label.
        gen_needs_real: G's loss uses D's output on a real batch (relativistic losses).
        output: ``"logits"`` or ``"probs"``: what D must output (checked when a system
            is built: a probability objective needs outputs in [0, 1], a logit objective
            refuses a D that ends in a sigmoid).
        disc_real, disc_fake: D's loss split into its real and generated parts
            (``disc = disc_real + disc_fake``), for loops that step D on each part
            separately (seeds 001 and 003); ``None`` for an objective that does not
            separate (relativistic).
        saturation: ``(disc, gen)`` values at which the losses are pinned by their
            clamps (the probability forms), or ``None``; the divergence guard can flag
            a run whose loss sits there.
    """

    disc: Loss
    gen: Loss
    name: str = "custom"
    gen_needs_real: bool = False
    output: str = "logits"
    disc_real: Callable[[torch.Tensor], torch.Tensor] | None = None
    disc_fake: Callable[[torch.Tensor], torch.Tensor] | None = None
    saturation: tuple[float | None, float | None] = (None, None)

    def __post_init__(self) -> None:
        if not callable(self.disc) or not callable(self.gen):
            raise TypeError(f"Objective '{self.name}': disc and gen must be functions (real_out, fake_out) -> loss")
        if self.output not in ("logits", "probs"):
            raise ValueError(f"Objective '{self.name}': output must be 'logits' or 'probs', got {self.output!r}")
        if (self.disc_real is None) != (self.disc_fake is None):
            raise ValueError(f"Objective '{self.name}': give both disc_real and disc_fake, or neither")

    @property
    def separable(self) -> bool:
        """D's loss is a real part plus a generated part."""
        return self.disc_real is not None


# ----------------------------------------------------------------------------- elementwise pieces


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1) if x.dim() > 1 else x


def bce(probs: torch.Tensor, target: float) -> torch.Tensor:
    r"""``nn.BCELoss()(probs, full_like(probs, target))``: :math:`-[y\log p + (1-y)\log(1-p)]`,
    logs clamped at -100 as torch does. Inputs outside [0, 1] (NaN included) are clamped
    first: identical values and gradients inside the range, and no eager range-check error
    for a diverged run."""
    safe = torch.nan_to_num(probs, nan=0.5).clamp(0.0, 1.0)
    return F.binary_cross_entropy(safe, torch.full_like(safe, target))


def bce_logits(logits: torch.Tensor, target: float) -> torch.Tensor:
    r"""``nn.BCEWithLogitsLoss()(logits, full_like(logits, target))``."""
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    r"""``nn.L1Loss()``: :math:`\mathbb{E}|\hat y - y|` (pix2pix's reconstruction term)."""
    return (pred - target).abs().mean()


def _mean(x: torch.Tensor) -> torch.Tensor:
    return x.mean()


# ----------------------------------------------------------------------------- objectives on logits


def minimax() -> Objective:
    r"""The original minimax game on logits: G minimises :math:`\mathbb{E}\log(1-\sigma(D(G(z))))`
    (``-BCE(D(G(z)), 0)``), which saturates when D is confident."""
    return Objective(
        disc=lambda r, f: bce_logits(r, 1.0) + bce_logits(f, 0.0),
        gen=lambda r, f: -bce_logits(f, 0.0),
        name="minimax",
        disc_real=lambda r: bce_logits(r, 1.0),
        disc_fake=lambda f: bce_logits(f, 0.0),
    )


def nonsaturating() -> Objective:
    r"""The non-saturating GAN on logits: G minimises :math:`-\mathbb{E}\log\sigma(D(G(z)))`."""
    return Objective(
        disc=lambda r, f: bce_logits(r, 1.0) + bce_logits(f, 0.0),
        gen=lambda r, f: bce_logits(f, 1.0),
        name="nonsaturating",
        disc_real=lambda r: bce_logits(r, 1.0),
        disc_fake=lambda f: bce_logits(f, 0.0),
    )


def lsgan() -> Objective:
    r"""Least squares GAN (Mao et al. 2017): D :math:`\tfrac12\mathbb{E}(D(x)-1)^2 + \tfrac12\mathbb{E}D(\tilde x)^2`,
    G :math:`\tfrac12\mathbb{E}(D(\tilde x)-1)^2`."""
    return Objective(
        disc=lambda r, f: 0.5 * ((r - 1) ** 2).mean() + 0.5 * (f**2).mean(),
        gen=lambda r, f: 0.5 * ((f - 1) ** 2).mean(),
        name="lsgan",
        disc_real=lambda r: 0.5 * ((r - 1) ** 2).mean(),
        disc_fake=lambda f: 0.5 * (f**2).mean(),
    )


def hinge() -> Objective:
    r"""Hinge loss (Lim & Ye 2017; SN-GAN): D :math:`\mathbb{E}\,\mathrm{relu}(1-D(x)) + \mathbb{E}\,\mathrm{relu}(1+D(\tilde x))`,
    G :math:`-\mathbb{E}D(\tilde x)`."""
    return Objective(
        disc=lambda r, f: F.relu(1 - r).mean() + F.relu(1 + f).mean(),
        gen=lambda r, f: -f.mean(),
        name="hinge",
        disc_real=lambda r: F.relu(1 - r).mean(),
        disc_fake=lambda f: F.relu(1 + f).mean(),
    )


def wasserstein() -> Objective:
    r"""Wasserstein GAN (Arjovsky et al. 2017): critic :math:`\mathbb{E}D(\tilde x) - \mathbb{E}D(x)`,
    G :math:`-\mathbb{E}D(\tilde x)`. Needs a Lipschitz constraint: weight clipping or a gradient penalty."""
    return Objective(
        disc=lambda r, f: f.mean() - r.mean(),
        gen=lambda r, f: -f.mean(),
        name="wasserstein",
        disc_real=lambda r: -r.mean(),
        disc_fake=lambda f: f.mean(),
    )


def _pairs(r: torch.Tensor, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if r.shape != f.shape:
        raise ValueError(
            f"relativistic objective: D's outputs on real {tuple(r.shape)} and generated "
            f"{tuple(f.shape)} batches must have the same shape (the same batch size)"
        )
    return r, f


def rsgan() -> Objective:
    r"""Relativistic standard GAN (Jolicoeur-Martineau 2019): D :math:`\mathrm{BCE}(C(x)-C(\tilde x), 1)`,
    G :math:`\mathrm{BCE}(C(\tilde x)-C(x), 1)`, pairing the i-th real and generated examples."""

    def disc(r, f):
        r, f = _pairs(r, f)
        return bce_logits(r - f, 1.0)

    def gen(r, f):
        r, f = _pairs(r, f)
        return bce_logits(f - r, 1.0)

    return Objective(disc=disc, gen=gen, name="rsgan", gen_needs_real=True)


def rasgan() -> Objective:
    r"""Relativistic average standard GAN: D :math:`\tfrac12[\mathrm{BCE}(C(x)-\bar C(\tilde x), 1) + \mathrm{BCE}(C(\tilde x)-\bar C(x), 0)]`,
    G the same with the labels swapped (:math:`\bar C` is the batch mean)."""
    return Objective(
        disc=lambda r, f: (bce_logits(r - f.mean(), 1.0) + bce_logits(f - r.mean(), 0.0)) / 2,
        gen=lambda r, f: (bce_logits(r - f.mean(), 0.0) + bce_logits(f - r.mean(), 1.0)) / 2,
        name="rasgan",
        gen_needs_real=True,
    )


def ralsgan() -> Objective:
    r"""Relativistic average LSGAN: D :math:`\tfrac12[\mathbb{E}(C(x)-\bar C(\tilde x)-1)^2 + \mathbb{E}(C(\tilde x)-\bar C(x)+1)^2]`,
    G the same with the signs of the targets swapped."""
    return Objective(
        disc=lambda r, f: (((r - f.mean() - 1) ** 2).mean() + ((f - r.mean() + 1) ** 2).mean()) / 2,
        gen=lambda r, f: (((r - f.mean() + 1) ** 2).mean() + ((f - r.mean() - 1) ** 2).mean()) / 2,
        name="ralsgan",
        gen_needs_real=True,
    )


def rahinge() -> Objective:
    r"""Relativistic average hinge: D :math:`\tfrac12[\mathbb{E}\,\mathrm{relu}(1-(C(x)-\bar C(\tilde x))) + \mathbb{E}\,\mathrm{relu}(1+(C(\tilde x)-\bar C(x)))]`,
    G the same with real and generated swapped."""
    return Objective(
        disc=lambda r, f: (F.relu(1 - (r - f.mean())).mean() + F.relu(1 + (f - r.mean())).mean()) / 2,
        gen=lambda r, f: (F.relu(1 + (r - f.mean())).mean() + F.relu(1 - (f - r.mean())).mean()) / 2,
        name="rahinge",
        gen_needs_real=True,
    )


# ----------------------------------------------------------------------------- objectives on probabilities


def bce_probs() -> Objective:
    r"""The seeds' ``nn.BCELoss`` on probabilities (D ends in a sigmoid): D ``BCE(D(x), 1) + BCE(D(x~), 0)``,
    G ``BCE(D(x~), 1)`` (non-saturating). Each BCE term is pinned at 100 by torch's log clamp."""
    return Objective(
        disc=lambda r, f: bce(r, 1.0) + bce(f, 0.0),
        gen=lambda r, f: bce(f, 1.0),
        name="bce",
        output="probs",
        disc_real=lambda r: bce(r, 1.0),
        disc_fake=lambda f: bce(f, 0.0),
        saturation=(100.0, 100.0),
    )


def _clamped_real(r: torch.Tensor, low: float = 1e-3) -> torch.Tensor:
    return -torch.log(torch.clamp(r, low, 1.0)).mean()


def _clamped_fake(f: torch.Tensor, high: float = 1 - 1e-3) -> torch.Tensor:
    return -torch.log(1 - torch.clamp(f, 0.0, high)).mean()


def clamped_log() -> Objective:
    r"""Seed 003's clamped logs on probabilities: D :math:`-\mathbb{E}\log\mathrm{clamp}(D(x), 10^{-3}, 1)
    - \mathbb{E}\log(1-\mathrm{clamp}(D(\tilde x), 0, 1-10^{-3}))`, G (saturating)
    :math:`\mathbb{E}\log(1-\mathrm{clamp}(D(\tilde x), 0, 1-10^{-3}))`. D's loss is pinned at
    :math:`-2\log 10^{-3} \approx 13.8` when it misjudges every example."""
    return Objective(
        disc=lambda r, f: _clamped_real(r) + _clamped_fake(f),
        gen=lambda r, f: -_clamped_fake(f),
        name="clamped_log",
        output="probs",
        disc_real=_clamped_real,
        disc_fake=_clamped_fake,
        saturation=(-2 * torch.log(torch.tensor(1e-3, dtype=torch.float64)).item(), None),
    )


#: name -> factory
OBJECTIVES: dict[str, Callable[[], Objective]] = {
    "minimax": minimax,
    "nonsaturating": nonsaturating,
    "lsgan": lsgan,
    "hinge": hinge,
    "wasserstein": wasserstein,
    "rsgan": rsgan,
    "rasgan": rasgan,
    "ralsgan": ralsgan,
    "rahinge": rahinge,
    "bce": bce_probs,
    "clamped_log": clamped_log,
}


def objective(name: str) -> Objective:
    """A built-in objective by name (:data:`OBJECTIVES`), with a clear error for an unknown one."""
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective '{name}'; choose one of {', '.join(OBJECTIVES)}")
    return OBJECTIVES[name]()
