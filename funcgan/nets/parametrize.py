"""Parametrizations made functional: spectral norm and weight norm under ``grad``, ``vmap`` and compile.

``torch.nn.utils.parametrizations.spectral_norm`` runs its power iteration with
``F.normalize(..., out=self._u)``: an in-place write that ``vmap`` over stacked
parameters cannot batch ("Batching rule not implemented for aten::div.out"), and
``weight_norm`` calls ``torch._weight_norm``, which has no batching rule either
(a slow per-seed loop). :func:`functional_parametrization` gives, for each of
torch's parametrization modules, a twin with the same attributes and buffer names
that computes the same numbers in plain tensor ops:

* :class:`FunctionalSpectralNorm`: in train mode one power iteration per forward
  on the detached weight matrix, ``u = normalize(W v)``, ``v = normalize(W^H u)``,
  written back into the call's own copy of the ``_u``/``_v`` buffers (which
  :func:`funcgan.nets.make_apply` returns as the new buffers), then
  ``W / (u^T W v)``; in eval mode no iteration. Exactly torch's
  ``_SpectralNorm.forward`` (Miyato et al. 2018), op for op.
* :class:`FunctionalWeightNorm`: ``v * (g / ||v||)`` with the norm over every
  dimension but ``dim`` (Salimans & Kingma 2016), ``torch._weight_norm``'s formula.

The skeletons that :func:`~funcgan.nets.make_apply` runs hold these twins; the
user's module is never changed. :func:`spectral_norm_buffers` draws the
power-iteration vectors from a key (normal, normalised, then 15 iterations on the
initial weight, as torch's constructor does with its global RNG).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrizations as _P

from funcgan import random as fr

__all__ = [
    "FunctionalSpectralNorm",
    "FunctionalWeightNorm",
    "functional_parametrization",
    "spectral_norm_buffers",
    "check_no_legacy_hooks",
]


def _reshape_to_matrix(weight: torch.Tensor, dim: int) -> torch.Tensor:
    if dim != 0:
        weight = weight.permute(dim, *(d for d in range(weight.dim()) if d != dim))
    return weight.flatten(1)


def _power_iteration(weight_mat: torch.Tensor, u: torch.Tensor, v: torch.Tensor, n: int, eps: float):
    for _ in range(n):
        u = F.normalize(torch.mv(weight_mat, v), dim=0, eps=eps)
        v = F.normalize(torch.mv(weight_mat.H, u), dim=0, eps=eps)
    return u, v


class FunctionalSpectralNorm(nn.Module):
    """``torch.nn.utils.parametrizations``' ``_SpectralNorm`` with a functional power iteration.

    Attributes:
        dim, eps, n_power_iterations: as in torch (``dim`` already made non-negative).
    """

    dim: int
    eps: float
    n_power_iterations: int
    _u: torch.Tensor
    _v: torch.Tensor

    def __init__(self, dim: int, eps: float, n_power_iterations: int, u: torch.Tensor | None, v: torch.Tensor | None):
        super().__init__()
        self.dim, self.eps, self.n_power_iterations = dim, eps, n_power_iterations
        if u is not None:
            self.register_buffer("_u", u)
            self.register_buffer("_v", v)

    @classmethod
    def from_torch(cls, m: nn.Module) -> FunctionalSpectralNorm:
        return cls(
            int(m.dim),  # type: ignore[arg-type]
            float(m.eps),  # type: ignore[arg-type]
            int(m.n_power_iterations),  # type: ignore[arg-type]
            getattr(m, "_u", None),
            getattr(m, "_v", None),
        )

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if weight.ndim == 1:
            return F.normalize(weight, dim=0, eps=self.eps)
        weight_mat = _reshape_to_matrix(weight, self.dim)
        if self.training:
            u, v = _power_iteration(weight_mat.detach(), self._u, self._v, self.n_power_iterations, self.eps)
            # into this call's copy of the buffers (make_apply clones them): returned as the new state
            self._u.copy_(u)
            self._v.copy_(v)
        u = self._u.clone(memory_format=torch.contiguous_format)
        v = self._v.clone(memory_format=torch.contiguous_format)
        sigma = torch.vdot(u, torch.mv(weight_mat, v))
        return weight / sigma

    def right_inverse(self, value: torch.Tensor) -> torch.Tensor:
        return value


def _norm_except_dim(v: torch.Tensor, dim: int) -> torch.Tensor:
    """``torch.norm_except_dim(v, 2, dim)`` in batchable ops (the 2-norm over every dim but ``dim``).
    As in torch, ``dim=-1`` is the norm of the whole tensor (what ``weight_norm(dim=None)`` means) and
    any other negative ``dim`` counts from the end."""
    if dim == -1:
        return torch.linalg.vector_norm(v)
    dim = dim % v.dim()
    dims = [d for d in range(v.dim()) if d != dim]
    return torch.linalg.vector_norm(v, dim=dims, keepdim=True)


class FunctionalWeightNorm(nn.Module):
    """``_WeightNorm`` as ``v * (g / ||v||)``, the norm over every dim but ``dim`` (batchable, unlike
    ``torch._weight_norm`` and ``torch.norm_except_dim``, which fall back to a per-seed loop)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim  # torch's _WeightNorm.dim: -1 (the whole tensor) stands for weight_norm(dim=None)

    def forward(self, weight_g: torch.Tensor, weight_v: torch.Tensor) -> torch.Tensor:
        return weight_v * (weight_g / _norm_except_dim(weight_v, self.dim))

    def right_inverse(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return _norm_except_dim(weight, self.dim), weight


def functional_parametrization(m: nn.Module, where: str) -> nn.Module:
    """The functional twin of a parametrization module, or ``m`` itself when it holds no
    state (a user's stateless parametrization runs as written).

    Raises:
        TypeError: a parametrization with buffers funcgan does not know (their in-place
            updates could not be made per-seed); the message names it.
    """
    if isinstance(m, _P._SpectralNorm):
        return FunctionalSpectralNorm.from_torch(m)
    if isinstance(m, _P._WeightNorm):
        return FunctionalWeightNorm(m.dim)
    if isinstance(m, (FunctionalSpectralNorm, FunctionalWeightNorm)):
        return m
    if any(True for _ in m.buffers()):
        raise TypeError(
            f"funcgan cannot make the parametrization {type(m).__name__} at '{where}' functional: "
            "it keeps buffers whose updates funcgan does not know; use a stateless parametrization, "
            "or spectral_norm / weight_norm from torch.nn.utils.parametrizations"
        )
    return m


def check_no_legacy_hooks(module: nn.Module, who: str) -> None:
    """Refuse the hook-based ``torch.nn.utils.spectral_norm`` / ``weight_norm``: their forward
    pre-hooks assign ``module.weight`` in place, which ``functional_call`` cannot route."""
    for name, mod in module.named_modules():
        for hook in mod._forward_pre_hooks.values():
            kind = type(hook).__name__
            if kind in ("SpectralNorm", "WeightNorm"):
                modern = "spectral_norm" if kind == "SpectralNorm" else "weight_norm"
                raise TypeError(
                    f"{who}: module '{name or type(module).__name__}' uses the hook-based torch.nn.utils.{modern}, "
                    f"which funcgan cannot run functionally; use torch.nn.utils.parametrizations.{modern} instead"
                )


def spectral_norm_buffers(
    weight: torch.Tensor, sn: FunctionalSpectralNorm, key: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Initial ``(_u, _v)`` for a spectral-norm parametrization of ``weight``, drawn from ``key``:
    normal vectors, normalised, then 15 power iterations (torch's constructor, with keys)."""
    mat = _reshape_to_matrix(weight.detach(), sn.dim)
    h, w = mat.shape
    ku, kv = fr.split(key)
    u = F.normalize(fr.normal(ku, (h,), weight.dtype).to(weight.device), dim=0, eps=sn.eps)
    v = F.normalize(fr.normal(kv, (w,), weight.dtype).to(weight.device), dim=0, eps=sn.eps)
    return _power_iteration(mat, u, v, 15, sn.eps)
