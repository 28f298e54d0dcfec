"""The small gradient transformations that the optimizers are chained from.

Each is written op for op like the single-tensor path of the matching
``torch.optim`` code, so that float64 runs agree with ``torch.optim`` to round-off
and float32 runs to a few units in the last place per step. Scalars that depend
on the step count (bias corrections, schedules) are computed in float64, as
``torch.optim`` computes them in Python floats, and cast to the parameter dtype
once.

Every hyper-parameter may be a Python number or a 0-d tensor (batched under
``vmap`` in a sweep).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from funcgan._checks import check_interval, check_positive
from funcgan._mode import flat_keys, needs_no_grad, plain_eager
from funcgan.optim.base import EmptyState, GradientTransformation, Scalar
from funcgan.tree import PyTree, tree_leaves, tree_map

__all__ = [
    "ScaleByAdamState",
    "TraceState",
    "ScaleByRmsState",
    "ScaleByScheduleState",
    "scale_by_adam",
    "trace",
    "scale_by_rms",
    "add_decayed_weights",
    "scale_by_learning_rate",
    "clip_by_global_norm",
]

Schedule = Callable[[torch.Tensor], torch.Tensor]
LearningRate = Scalar | Schedule


def _cast(x: Scalar, like: torch.Tensor) -> Scalar:
    """A hyper-parameter in ``like``'s dtype: numbers stay numbers (graph constants)."""
    return x.to(dtype=like.dtype) if isinstance(x, torch.Tensor) else x


class _PerDtype:
    """Hyper-parameters in each leaf's dtype, cast once per update and dtype rather than once per
    leaf (in an eager step every cast is a kernel call; the values are the same)."""

    def __init__(self, **values: Any):
        self.values = values
        self.cache: dict[tuple[str, torch.dtype], Any] = {}

    def __call__(self, name: str, like: torch.Tensor) -> Any:
        key = (name, like.dtype)
        if key not in self.cache:
            if not any(k[1] == like.dtype for k in self.cache):
                self._cast_together(like.dtype)
            if key not in self.cache:
                self.cache[key] = _cast(self.values[name], like)
        return self.cache[key]

    def _cast_together(self, dtype: torch.dtype) -> None:
        """Plainly eager, the 0-d tensor values of one dtype and device (Adam's six) cast in one call, not one
        each (the same values: a cast is elementwise), when none needs grad. Traced, one cast each."""
        if not plain_eager():
            return
        tensors = {k: v for k, v in self.values.items() if isinstance(v, torch.Tensor) and v.dim() == 0}
        kinds = {(v.dtype, v.device) for v in tensors.values()}
        if len(tensors) < 2 or len(kinds) != 1 or not needs_no_grad(*tensors.values()):
            return  # a stack would make every cast need the grad one value needs
        cast = torch.stack(list(tensors.values())).to(dtype).unbind()
        self.cache.update({(k, dtype): c for k, c in zip(tensors, cast)})


def _f64(x: Scalar, device: torch.device) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x if x.dtype == torch.float64 else x.to(torch.float64)
    return torch.tensor(x, dtype=torch.float64, device=device)


def _safe_sqrt(v: torch.Tensor) -> torch.Tensor:
    """``sqrt(v + tiny)``, tiny the dtype's smallest normal number.

    Keeps the update differentiable at ``v = 0`` (unrolled optimization
    differentiates through it; plain ``sqrt`` has an infinite derivative there, and
    a zero gradient times it is NaN). Every ``v`` above about 1e-31 (float32) or
    1e-292 (float64) is left bit-for-bit unchanged, so ``torch.optim`` agreement holds.
    """
    return torch.sqrt(v + torch.finfo(v.dtype).tiny)


def _zeros_like(params: PyTree) -> PyTree:
    # A fresh allocation per slot: aliased slots make torch.compile recompile.
    return tree_map(lambda p: torch.zeros_like(p), params)


def _count(params: PyTree) -> torch.Tensor:
    leaves = tree_leaves(params)
    device = leaves[0].device if leaves else None
    return torch.zeros((), dtype=torch.int64, device=device)


def _lr_at(learning_rate: LearningRate, count: torch.Tensor) -> torch.Tensor | float:
    """The learning rate for the update after ``count`` previous updates."""
    if callable(learning_rate):
        return learning_rate(count)
    return learning_rate


def _check_lr(fn: str, learning_rate: LearningRate) -> None:
    if not callable(learning_rate):
        check_positive(fn, "lr", learning_rate)


class ScaleByAdamState(NamedTuple):
    """Adam's moments. ``count`` is the number of updates taken so far."""

    count: torch.Tensor  # type: ignore[assignment]
    mu: PyTree
    nu: PyTree
    nu_max: PyTree  # running max of nu for AMSGrad; an empty dict otherwise


def scale_by_adam(
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-8,
    amsgrad: bool = False,
    learning_rate: LearningRate | None = None,
    decoupled_weight_decay: Scalar = 0.0,
) -> GradientTransformation:
    r"""Adam's update direction (Kingma & Ba 2015), as ``torch.optim.Adam`` computes it.

    .. math::
        m_t = m_{t-1} + (1 - \beta_1)(g_t - m_{t-1}), \quad
        v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2, \\
        u_t = -\frac{\eta_t}{1 - \beta_1^t}\,
              \frac{m_t}{\sqrt{v_t} / \sqrt{1 - \beta_2^t} + \epsilon}
              \; - \; \eta_t \lambda\, \theta_{t-1}

    With ``learning_rate=None`` the output is the direction with :math:`\eta_t = -1`
    (chain a learning-rate scale after it); with a learning rate the scale is folded
    in exactly where ``torch.optim`` folds it, which keeps float32 runs closest.
    ``decoupled_weight_decay`` (:math:`\lambda`) is AdamW's decay (Loshchilov &
    Hutter 2019) and needs a learning rate. With ``amsgrad`` the maximum of all
    :math:`v_t` so far replaces :math:`v_t` in the denominator (Reddi et al. 2018).
    """
    fn = "scale_by_adam"
    check_interval(fn, "betas[0]", b1, 0.0, 1.0)
    check_interval(fn, "betas[1]", b2, 0.0, 1.0)
    check_positive(fn, "eps", eps, allow_zero=True)
    check_positive(fn, "weight_decay", decoupled_weight_decay, allow_zero=True)
    if learning_rate is not None:
        _check_lr(fn, learning_rate)
    decay = not (isinstance(decoupled_weight_decay, (int, float)) and decoupled_weight_decay == 0)
    if decay and learning_rate is None:
        raise ValueError(f"{fn}: decoupled_weight_decay needs learning_rate")

    def init(params: PyTree) -> ScaleByAdamState:
        nu_max = _zeros_like(params) if amsgrad else {}
        return ScaleByAdamState(_count(params), _zeros_like(params), _zeros_like(params), nu_max)

    def update(grads: PyTree, state: ScaleByAdamState, params: PyTree | None = None):
        count = state.count + 1
        device = count.device
        t = count.to(torch.float64)
        bc1 = 1.0 - _f64(b1, device) ** t
        bc2_sqrt = torch.sqrt(1.0 - _f64(b2, device) ** t)
        lr: Any
        if learning_rate is None:
            step_size = -1.0 / bc1
            lr = None
        else:
            lr = _f64(_lr_at(learning_rate, state.count), device)
            step_size = lr / bc1
        if decay and params is None:
            raise ValueError(f"{fn}: decoupled_weight_decay needs params in update()")

        c = _PerDtype(one_b1=1.0 - b1, b2=b2, one_b2=1.0 - b2, eps=eps, bc2_sqrt=bc2_sqrt, step=-step_size)
        wd = lr * _f64(decoupled_weight_decay, device) if decay else None
        names = flat_keys(
            grads, state.mu, state.nu, *((state.nu_max,) if amsgrad else ()), *((params,) if decay else ())
        )
        if names is not None and needs_no_grad(wd, *c.values.values()):  # hyper-parameters as constants
            return _adam_foreach(names, grads, state, params, c, amsgrad, wd, count)

        mu = tree_map(lambda m, g: torch.lerp(m, g, c("one_b1", g)), state.mu, grads)
        nu = tree_map(lambda v, g: v * c("b2", g) + (c("one_b2", g) * g) * g, state.nu, grads)
        if amsgrad:
            nu_max = tree_map(torch.maximum, state.nu_max, nu)
            denom_src = nu_max
        else:
            nu_max = state.nu_max
            denom_src = nu

        def direction(m: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            denom = _safe_sqrt(v) / c("bc2_sqrt", v) + c("eps", v)
            return (c("step", m) * m) / denom

        updates = tree_map(direction, mu, denom_src)
        if wd is not None:
            updates = tree_map(lambda u, p: u - wd.to(p.dtype) * p, updates, params)
        return updates, ScaleByAdamState(count, mu, nu, nu_max)

    return GradientTransformation(init, update)


def _adam_foreach(
    names: list[str],
    grads: PyTree,
    state: ScaleByAdamState,
    params: PyTree | None,
    c: _PerDtype,
    amsgrad: bool,
    wd: torch.Tensor | None,
    count: torch.Tensor,
) -> tuple[PyTree, ScaleByAdamState]:
    """:func:`scale_by_adam`'s update, op for op, as ``torch._foreach_*`` ops over flat dicts of one
    dtype whose keys are ``names`` (:func:`funcgan._mode.flat_keys`)."""
    g, mu_old, nu_old = ([tree[k] for k in names] for tree in (grads, state.mu, state.nu))
    like = g[0]
    mu = torch._foreach_lerp(mu_old, g, c("one_b1", like))
    sq = torch._foreach_mul(g, c("one_b2", like))
    torch._foreach_mul_(sq, g)
    nu = torch._foreach_mul(nu_old, c("b2", like))
    torch._foreach_add_(nu, sq)
    src = torch._foreach_maximum([state.nu_max[k] for k in names], nu) if amsgrad else nu
    denom = torch._foreach_add(src, torch.finfo(like.dtype).tiny)  # _safe_sqrt
    torch._foreach_sqrt_(denom)
    torch._foreach_div_(denom, c("bc2_sqrt", like))
    torch._foreach_add_(denom, c("eps", like))
    updates = torch._foreach_mul(mu, c("step", like))
    torch._foreach_div_(updates, denom)
    if wd is not None:
        assert params is not None  # checked by the caller: decay needs params
        torch._foreach_sub_(updates, torch._foreach_mul([params[k] for k in names], wd.to(like.dtype)))
    nu_max = dict(zip(names, src)) if amsgrad else state.nu_max
    return dict(zip(names, updates)), ScaleByAdamState(count, dict(zip(names, mu)), dict(zip(names, nu)), nu_max)


class TraceState(NamedTuple):
    """SGD momentum buffer; ``count`` marks the first step (buffer = gradient)."""

    count: torch.Tensor  # type: ignore[assignment]
    trace: PyTree


def trace(momentum: Scalar, dampening: Scalar = 0.0, nesterov: bool = False) -> GradientTransformation:
    r"""Heavy-ball momentum as ``torch.optim.SGD`` computes it.

    .. math::
        b_1 = g_1, \quad b_t = \mu b_{t-1} + (1 - \tau) g_t, \quad
        u_t = g_t + \mu b_t \text{ (Nesterov) or } b_t.
    """
    fn = "trace"
    check_positive(fn, "momentum", momentum, allow_zero=True)
    check_positive(fn, "dampening", dampening, allow_zero=True)

    def init(params: PyTree) -> TraceState:
        return TraceState(_count(params), _zeros_like(params))

    def update(grads: PyTree, state: TraceState, params: PyTree | None = None):
        del params
        first = state.count == 0

        def new_buf(b: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
            return torch.where(first, g, b * _cast(momentum, g) + _cast(1.0 - dampening, g) * g)

        buf = tree_map(new_buf, state.trace, grads)
        if nesterov:
            out = tree_map(lambda g, b: g + _cast(momentum, g) * b, grads, buf)
        else:
            out = buf
        return out, TraceState(state.count + 1, buf)

    return GradientTransformation(init, update)


class ScaleByRmsState(NamedTuple):
    """RMSprop's running averages (``grad_avg`` is an empty dict unless centered)."""

    square_avg: PyTree
    grad_avg: PyTree


def scale_by_rms(alpha: Scalar = 0.99, eps: Scalar = 1e-8, centered: bool = False) -> GradientTransformation:
    r"""Divide by the root of a running mean of squared gradients (RMSprop, Hinton 2012).

    .. math::
        s_t = \alpha s_{t-1} + (1 - \alpha) g_t^2, \quad
        u_t = g_t / (\sqrt{s_t - [\bar g_t^2]} + \epsilon)

    where the bracketed term (the running mean of gradients, squared) enters only
    when ``centered``; as in ``torch.optim.RMSprop``, :math:`\epsilon` is added
    after the square root.
    """
    fn = "scale_by_rms"
    check_interval(fn, "alpha", alpha, 0.0, 1.0, hi_closed=True)
    check_positive(fn, "eps", eps, allow_zero=True)

    def init(params: PyTree) -> ScaleByRmsState:
        return ScaleByRmsState(_zeros_like(params), _zeros_like(params) if centered else {})

    def update(grads: PyTree, state: ScaleByRmsState, params: PyTree | None = None):
        del params
        sq = tree_map(lambda s, g: s * _cast(alpha, g) + (_cast(1.0 - alpha, g) * g) * g, state.square_avg, grads)
        if centered:
            ga = tree_map(lambda a, g: torch.lerp(a, g, _cast(1.0 - alpha, g)), state.grad_avg, grads)
            avg = tree_map(lambda s, a: _safe_sqrt(s + (-1.0 * a) * a) + _cast(eps, s), sq, ga)
        else:
            ga = state.grad_avg
            avg = tree_map(lambda s: _safe_sqrt(s) + _cast(eps, s), sq)
        out = tree_map(lambda g, a: g / a, grads, avg)
        return out, ScaleByRmsState(sq, ga)

    return GradientTransformation(init, update)


def add_decayed_weights(weight_decay: Scalar) -> GradientTransformation:
    r"""L2 weight decay folded into the gradient: :math:`g + \lambda \theta`."""
    check_positive("add_decayed_weights", "weight_decay", weight_decay, allow_zero=True)

    def init(params: PyTree) -> EmptyState:
        del params
        return EmptyState()

    def update(grads: PyTree, state: EmptyState, params: PyTree | None = None):
        if params is None:
            raise ValueError("add_decayed_weights: update() needs params")
        return tree_map(lambda g, p: g + _cast(weight_decay, g) * p, grads, params), state

    return GradientTransformation(init, update)


class ScaleByScheduleState(NamedTuple):
    """Number of updates taken, for a learning-rate schedule."""

    count: torch.Tensor  # type: ignore[assignment]


def scale_by_learning_rate(learning_rate: LearningRate) -> GradientTransformation:
    r"""Scale by :math:`-\eta_t` (descent). ``learning_rate`` is a number, a 0-d
    tensor, or a schedule ``count -> lr`` (see :mod:`funcgan.optim.schedules`)."""
    _check_lr("scale_by_learning_rate", learning_rate)

    def init(params: PyTree) -> ScaleByScheduleState:
        return ScaleByScheduleState(_count(params))

    def update(grads: PyTree, state: ScaleByScheduleState, params: PyTree | None = None):
        del params
        lr = _lr_at(learning_rate, state.count)
        out = tree_map(lambda g: -_cast(lr, g) * g, grads)
        return out, ScaleByScheduleState(state.count + 1)

    return GradientTransformation(init, update)


def clip_by_global_norm(max_norm: Scalar, eps: float = 1e-6) -> GradientTransformation:
    r"""Rescale all gradients together so that their joint 2-norm is at most ``max_norm``.

    The semantics of ``torch.nn.utils.clip_grad_norm_(params, max_norm)``:

    .. math::
        g \leftarrow g \cdot \min\!\left(1, \frac{c}{\lVert g \rVert_2 + \epsilon}\right)

    with :math:`\epsilon = 10^{-6}`. ``eps=0`` gives the d2l ``grad_clipping``
    helper (scale by ``c / norm`` when ``norm > c``). A non-finite norm makes the
    gradients non-finite, as in torch; a sweep then reports the seed as diverged.
    """
    check_positive("clip_by_global_norm", "max_norm", max_norm)

    def init(params: PyTree) -> EmptyState:
        del params
        return EmptyState()

    def update(grads: PyTree, state: EmptyState, params: PyTree | None = None):
        del params
        leaves = tree_leaves(grads)
        if not leaves:
            return grads, state
        norms = torch.stack([torch.linalg.vector_norm(g) for g in leaves])
        total = torch.linalg.vector_norm(norms)
        coef = torch.clamp(_cast(max_norm, total) / (total + eps), max=1.0)
        return tree_map(lambda g: g * coef.to(g.dtype), grads), state

    return GradientTransformation(init, update)
