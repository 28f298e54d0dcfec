r"""The training step: the GAN, its state, and the primitives every loop is built from.

One step is one pure function::

    state, metrics = step(state, data)

``state`` is a :class:`TrainState`: each player's :class:`PlayerState` (parameters,
buffers, optimizer state), the run's key and step count, its hyper-parameters as
per-seed tensors (penalty weights, EMA decay, loss weights), loop-carried values,
the generator EMA and the divergence guard's record. ``data`` is the shared,
read-only data set. The step draws its randomness from ``fold_in(state.key,
state.step)``, so step ``t`` of a run depends only on the run's key and ``t``: the
same run alone, in a sweep, or resumed from a checkpoint.

**The functional detach.** The D update is ``grad`` with respect to D's parameters
only; G's samples enter it as plain tensors, which is what ``fake.detach()`` means
in the imperative loop. The G update is ``grad`` with respect to G's parameters
only: it differentiates *through* D, but D's parameters are closed-over constants,
so their gradient is never computed.

**Primitives** (public, for writing a loop funcgan does not ship; see
:mod:`funcgan.loops`): :func:`update_player` (``grad_and_value``, optimizer,
``apply_updates``), :func:`apply_gradients`, :func:`step_key`, :func:`init_state`,
:func:`make_train_step`, :func:`generate`, :func:`update_ema`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.func import grad_and_value

from funcgan import nets
from funcgan import random as fr
from funcgan._checks import check_interval
from funcgan.optim.base import GradientTransformation, apply_updates
from funcgan.optim.spec import OptimizerSpec
from funcgan.tree import tree_leaves, tree_map

__all__ = [
    "Batch",
    "PlayerState",
    "TrainState",
    "GAN",
    "Data",
    "Metrics",
    "Sampler",
    "Initializer",
    "init_state",
    "make_train_step",
    "update_player",
    "apply_gradients",
    "step_key",
    "generate",
    "update_ema",
    "check_state",
    "player_dtype",
    "HEALTH_KEYS",
    "MAX_STEPS",
    "finish_step",
]

Metrics = dict[str, torch.Tensor]
Data = tuple[torch.Tensor, ...]
#: ``init(module, key, dtype, device) -> (params, buffers)``
Initializer = Callable[..., tuple[nets.Params, nets.Buffers]]
#: what the divergence guard keeps per run (see funcgan.guard)
HEALTH_KEYS = ("diverged_at", "reason", "pinned")
#: the most steps a run can take: step ``t``'s key is ``fold_in(key, t)`` with ``t`` taken mod 2**32,
#: so a longer run would repeat its noise and its batches (see :func:`step_key`)
MAX_STEPS = 2**32


class Batch(NamedTuple):
    """A real batch: the examples D judges and, for a conditional GAN, their conditions.

    Attributes:
        x: ``(..., B, *X)`` examples (floating).
        cond: ``(..., B, *C)`` conditions given to G and D (class labels, or pix2pix's
            input images), or ``None``.
    """

    x: torch.Tensor
    cond: torch.Tensor | None = None


#: ``sample(key, data, batch_shape, dtype) -> Batch`` with leading ``batch_shape``
Sampler = Callable[[torch.Tensor, Data, tuple[int, ...], torch.dtype], Batch]


class PlayerState(NamedTuple):
    """One player's state: parameters, buffers (BatchNorm statistics, spectral norm's
    vectors) and optimizer state."""

    params: nets.Params
    buffers: nets.Buffers
    opt_state: Any


class TrainState(NamedTuple):
    """Everything that changes during training, as tensors (stackable over seeds).

    Attributes:
        gen, disc: the players' states.
        key: this run's key ``(2,)``; step ``t`` draws from ``fold_in(key, t)``.
        step: int64 0-d, the number of steps taken.
        hparams: the run's hyper-parameters outside the optimizers (penalty weights,
            ``ema_decay``, loss weights such as ``l1_weight``), float64 0-d tensors.
        extra: loop-carried values (seed 003's countdown, optimistic updates).
        gen_ema: an exponential moving average of G's parameters when the GAN has
            ``ema`` set, else ``{}``.
        health: the divergence guard's record (``diverged_at``: step at which the run
            was frozen, -1 if never; ``reason``: a code of :mod:`funcgan.guard`;
            ``pinned``: consecutive steps with a loss at its clamp).
    """

    gen: PlayerState
    disc: PlayerState
    key: torch.Tensor
    step: torch.Tensor
    hparams: dict[str, torch.Tensor]
    extra: dict[str, Any]
    gen_ema: nets.Params
    health: dict[str, torch.Tensor]


def player_dtype(state: TrainState) -> torch.dtype:
    """The floating dtype of G's parameters."""
    return next(iter(state.gen.params.values())).dtype


# ----------------------------------------------------------------------------- the GAN


def _as_shape(latent: int | tuple[int, ...]) -> tuple[int, ...]:
    if isinstance(latent, bool):
        raise TypeError("GAN: latent_dim must be an int or a tuple of ints")
    if isinstance(latent, int):
        if latent < 0:
            raise ValueError(f"GAN: latent_dim must be >= 0, got {latent}")
        return (latent,) if latent else ()
    shape = tuple(latent)
    if not shape or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in shape):
        raise ValueError(f"GAN: latent_dim must be an int >= 0 or a tuple of ints >= 1, got {latent!r}")
    return shape


@dataclass(frozen=True, eq=False)
class GAN:
    """A GAN problem: the two networks, their optimizers, the loop and the data sampler.

    Attributes:
        gen, disc: the networks (never trained in place; skeletons are copied).
        loop: the update order with its objective and penalties (:mod:`funcgan.loops`).
        sample_real: ``sample_real(key, data, batch_shape, dtype) -> Batch``.
        latent_dim: G's noise shape per example: an int (``(B, Z)`` noise), a tuple such
            as ``(100, 1, 1)``, or 0 for a G without noise (pix2pix).
        batch_size: examples per D and G batch.
        gen_opt, disc_opt: an :class:`~funcgan.optim.OptimizerSpec` (sweepable, with a
            ``torch.optim`` twin for references) or any ``GradientTransformation``.
        hparams: loss weights the loop reads from ``state.hparams`` (``l1_weight``).
        conditional: G and D take the batch's condition: ``G(z, cond)`` (``G(cond)``
            without noise) and ``D(x, cond)``.
        name: a label.
        ema: generator EMA decay (Polyak averaging; Karras et al. 2018, Yazici et al.
            2019), or None; a per-seed tensor ``hparams["ema_decay"]`` in the state.
        ema_start: the first step that averages (before it the average tracks G).
        gen_init, disc_init: initializers ``(module, key, dtype, device) -> (params,
            buffers)`` (default :func:`funcgan.nets.init_params`, PyTorch's defaults).
    """

    gen: nn.Module
    disc: nn.Module
    loop: Any
    sample_real: Sampler
    latent_dim: int | tuple[int, ...] = 0
    batch_size: int = 64
    gen_opt: OptimizerSpec | GradientTransformation = field(default_factory=OptimizerSpec)
    disc_opt: OptimizerSpec | GradientTransformation = field(default_factory=OptimizerSpec)
    hparams: dict[str, float] = field(default_factory=dict)
    conditional: bool = False
    name: str = "gan"
    ema: float | None = None
    ema_start: int = 0
    gen_init: Initializer = nets.init_params
    disc_init: Initializer = nets.init_params
    # derived in __post_init__
    latent_shape: tuple[int, ...] = field(init=False, repr=False)
    gen_apply: nets.Apply = field(init=False, repr=False)
    disc_apply: nets.Apply = field(init=False, repr=False)
    gen_tx: GradientTransformation = field(init=False, repr=False)
    disc_tx: GradientTransformation = field(init=False, repr=False)

    def __post_init__(self) -> None:
        missing = [m for m in ("draw", "update", "check", "hparams", "init_extra") if not hasattr(self.loop, m)]
        if missing:
            raise TypeError(
                f"GAN: loop must be a funcgan.loops.Loop (it lacks {', '.join(missing)}), "
                f"got {type(self.loop).__name__}"
            )
        object.__setattr__(self, "latent_shape", _as_shape(self.latent_dim))
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"GAN: batch_size must be an int >= 1, got {self.batch_size!r}")
        if not self.latent_shape and not self.conditional:
            raise ValueError("GAN: a generator with no noise (latent_dim=0) needs a condition (conditional=True)")
        if self.ema is not None:
            check_interval("GAN", "ema", self.ema, 0.0, 1.0)
        if isinstance(self.ema_start, bool) or not isinstance(self.ema_start, int) or self.ema_start < 0:
            raise ValueError(f"GAN: ema_start must be an int >= 0, got {self.ema_start!r}")
        for role, opt in (("gen_opt", self.gen_opt), ("disc_opt", self.disc_opt)):
            if not isinstance(opt, (OptimizerSpec, GradientTransformation)):
                raise TypeError(
                    f"GAN: {role} must be an OptimizerSpec or a GradientTransformation, got {type(opt).__name__}"
                )
        for k, v in self.hparams.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"GAN: hparams['{k}'] must be a finite number, got {v!r}")
        object.__setattr__(self, "gen_apply", nets.make_apply(self.gen, f"{self.name} generator"))
        object.__setattr__(self, "disc_apply", nets.make_apply(self.disc, f"{self.name} discriminator"))
        object.__setattr__(
            self, "gen_tx", self.gen_opt.make() if isinstance(self.gen_opt, OptimizerSpec) else self.gen_opt
        )
        object.__setattr__(
            self, "disc_tx", self.disc_opt.make() if isinstance(self.disc_opt, OptimizerSpec) else self.disc_opt
        )
        clash = set(self.hparams) & set(self.loop.hparams())
        if clash:
            raise ValueError(f"GAN: hyper-parameter names {sorted(clash)} are used by both the GAN and its loop")
        self.loop.check(self)

    def with_options(self, **changes: Any) -> GAN:
        """A copy with some fields replaced (e.g. ``loop=loops.Alternating(n_disc=5)``)."""
        return replace(self, **changes)

    # -- the network calls every loop uses ---------------------------------------------
    def G(
        self,
        params: nets.Params,
        buffers: nets.Buffers,
        z: torch.Tensor | None,
        cond: torch.Tensor | None,
        key: torch.Tensor | None = None,
        train: bool = True,
    ) -> tuple[torch.Tensor, nets.Buffers]:
        """G's forward: ``G(z)``, ``G(z, cond)`` or ``G(cond)``; returns ``(samples, buffers)``."""
        args = tuple(
            a for a in ((z if self.latent_shape else None), (cond if self.conditional else None)) if a is not None
        )
        return self.gen_apply(params, buffers, *args, key=key, train=train)

    def D(
        self,
        params: nets.Params,
        buffers: nets.Buffers,
        x: torch.Tensor,
        cond: torch.Tensor | None,
        key: torch.Tensor | None = None,
        train: bool = True,
    ) -> tuple[torch.Tensor, nets.Buffers]:
        """D's forward: ``D(x)`` or ``D(x, cond)``; returns ``(outputs, buffers)``."""
        args = (x, cond) if self.conditional else (x,)
        return self.disc_apply(params, buffers, *args, key=key, train=train)

    def noise(self, key: torch.Tensor, batch_shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor | None:
        """G's noise ``(*batch_shape, *latent_shape)`` from ``key`` (None without noise)."""
        if not self.latent_shape:
            return None
        return fr.normal(key, (*batch_shape, *self.latent_shape), dtype)

    def default_hparams(self) -> dict[str, float]:
        """The hyper-parameters a fresh state carries: the GAN's, the loop's and ``ema_decay``."""
        hp = {**self.hparams, **self.loop.hparams()}
        if self.ema is not None:
            hp["ema_decay"] = float(self.ema)
        return hp


# ----------------------------------------------------------------------------- primitives


def update_player(
    loss_fn: Callable[[nets.Params, nets.Buffers], tuple[torch.Tensor, nets.Buffers, Any]],
    player: PlayerState,
    tx: GradientTransformation,
) -> tuple[PlayerState, torch.Tensor, Any]:
    """One optimizer step of one player: ``grad`` with respect to its parameters only.

    The gradient is ``torch.func.grad_and_value``'s; an eager call that is not under a functorch
    transform and not nested inside another ``update_player`` takes it by plain autograd, the same
    computation at less cost (see :func:`_grad_and_value`). A call nested inside a loss that an
    outer ``update_player`` differentiates (a look-ahead step) stays differentiable.

    Args:
        loss_fn: ``(params, buffers) -> (loss, new_buffers, aux)``; everything else it
            uses (the other player, the batch) is a constant.
        player: the player's state.
        tx: its optimizer.

    Returns:
        ``(new_player, loss, aux)``: the updated parameters and optimizer state with the
        buffers the forward returned; ``loss`` is the value at the *old* parameters (as
        ``loss.backward(); opt.step()`` reports it).
    """

    def f(params: nets.Params):
        loss, buffers, aux = loss_fn(params, player.buffers)
        return loss, (buffers, () if aux is None else aux)

    grads, (loss, (buffers, aux)) = _grad_and_value(f, player.params)
    return apply_gradients(player._replace(buffers=buffers), grads, tx), loss, (None if aux == () else aux)


#: Take an eager, outermost gradient by plain autograd (see :func:`_grad_and_value`); a constant
#: the library never changes (tests switch it off to compare the two paths).
PLAIN_AUTOGRAD = True


def _grad_and_value(f: Callable[[nets.Params], tuple[torch.Tensor, Any]], params: nets.Params):
    """``torch.func.grad_and_value(f, has_aux=True)(params)``, by plain autograd where that is the same.

    Eager, with no functorch transform active, the gradient is ``torch.autograd.grad`` on detached
    copies of ``params``: the same backward graph (``tests/test_step.py``: within 1e-12 of
    ``torch.func`` in float64 for every loop and network family), without functorch's per-call
    wrapping or the ``torch._dynamo`` import its first call pays (1.5 s of a short run's start).
    If the params themselves require grad, or the graph of the loss (or of an aux output) reaches any
    other tensor that requires grad (an outer computation differentiates through this update: a
    look-ahead step inside another player's loss, a user's own ``torch.autograd`` around the step),
    plain autograd would cut that path, so the call is (re)done by ``torch.func``, as it is under
    ``vmap``, an enclosing ``grad`` and ``torch.compile``; so is a non-scalar loss (torch.func words
    the error).
    """
    # is_compiling first: a traced step always takes torch.func
    if (
        not PLAIN_AUTOGRAD
        or not params
        or torch.compiler.is_compiling()
        or torch._C._functorch.maybe_current_level() is not None
        or any(v.requires_grad for v in params.values())  # params that carry an outer graph
    ):
        return grad_and_value(f, has_aux=True)(params)
    leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()}
    with torch.enable_grad():
        loss, aux = f(leaves)
        outs = [loss, *(x for x in tree_leaves(aux) if isinstance(x, torch.Tensor) and x.requires_grad)]
        if not isinstance(loss, torch.Tensor) or loss.dim() != 0 or not _graph_reaches_only(outs, leaves.values()):
            return grad_and_value(f, has_aux=True)(params)
        raw = (
            torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
            if loss.requires_grad
            else [None] * len(leaves)
        )
    grads = {k: torch.zeros_like(v) if g is None else g for (k, v), g in zip(params.items(), raw)}
    return grads, (loss.detach(), tree_map(lambda x: x.detach() if isinstance(x, torch.Tensor) else x, aux))


def _graph_reaches_only(outs: list[torch.Tensor], leaves: Any) -> bool:
    """Whether every leaf of the ``outs``' autograd graph that requires grad is one of ``leaves``."""
    ids = {id(x) for x in leaves}
    stack, seen = [x.grad_fn for x in outs], set()
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        variable = getattr(fn, "variable", None)  # an AccumulateGrad node: a leaf that requires grad
        if variable is not None:
            if id(variable) not in ids:
                return False
            continue
        stack.extend(nxt for nxt, _ in fn.next_functions)
    return True


def apply_gradients(player: PlayerState, grads: nets.Params, tx: GradientTransformation) -> PlayerState:
    """``tx.update`` then ``apply_updates``: the player after one optimizer step on ``grads``."""
    updates, opt_state = tx.update(grads, player.opt_state, player.params)
    return player._replace(params=apply_updates(player.params, updates), opt_state=opt_state)


def step_key(state: TrainState) -> torch.Tensor:
    """The key of the step about to be taken: ``fold_in(state.key, state.step)``.

    ``fold_in`` takes the step mod 2**32, so the keys of a run are distinct for its first
    :data:`MAX_STEPS` steps; ``sweep.run`` and the CLI refuse to train further."""
    return fr.fold_in(state.key, state.step)


def update_ema(
    ema: nets.Params, params: nets.Params, step: torch.Tensor, decay: torch.Tensor, start: int
) -> nets.Params:
    r"""Polyak averaging, :math:`\bar\theta \leftarrow \beta\bar\theta + (1-\beta)\theta`, from step
    ``start`` on (computed as ``lerp(theta, ema, beta)``); before it the average tracks the parameters."""
    on = step >= start
    return {k: torch.where(on, torch.lerp(params[k], ema[k], decay.to(params[k].dtype)), params[k]) for k in params}


# ----------------------------------------------------------------------------- state


def _weights(init: Initializer, module: nn.Module, given: Any, key: torch.Tensor, dtype, device, who: str):
    if given is None:
        return init(module, key, dtype, device)
    if isinstance(given, nn.Module):
        params, buffers = nets.params_from_module(given)
    elif isinstance(given, dict):
        names_p = {n for n, _ in module.named_parameters()}
        params = {k: v for k, v in given.items() if k in names_p}
        buffers = {k: v for k, v in given.items() if k not in names_p}
    elif isinstance(given, tuple) and len(given) == 2:
        params, buffers = given
    else:
        raise TypeError(
            f"init_state: {who} must be an nn.Module, a state dict or (params, buffers), got {type(given).__name__}"
        )
    nets.check_params(module, params, buffers, who=f"init_state {who}")
    cast = lambda t: t.detach().to(device=device, dtype=dtype if t.is_floating_point() else t.dtype).clone()  # noqa: E731
    return {k: cast(v) for k, v in params.items()}, {k: cast(v) for k, v in buffers.items()}


def init_state(
    gan: GAN,
    key: torch.Tensor,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    gen_opt: OptimizerSpec | None = None,
    disc_opt: OptimizerSpec | None = None,
    hparams: dict[str, float] | None = None,
    gen_weights: Any = None,
    disc_weights: Any = None,
) -> TrainState:
    """A fresh run's state from its key.

    G's parameters draw from ``split(key, 3)[0]``, D's from ``[1]``, and the run's
    step key is ``[2]``. ``gen_opt``/``disc_opt``/``hparams`` override the GAN's
    values for this run only (a sweep point); an optimizer override must have the
    GAN's structure (same optimizer, the same options on or off).

    Args:
        gan: the GAN.
        key: a single funcgan key.
        dtype, device: of the parameters and optimizer states.
        gen_opt, disc_opt, hparams: per-run overrides.
        gen_weights, disc_weights: start from your own weights instead of drawing them:
            a module (its current parameters and buffers), a ``state_dict()``, or
            ``(params, buffers)``.
    """
    if not isinstance(gan, GAN):
        raise TypeError(f"init_state: expected a GAN, got {type(gan).__name__}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"init_state: dtype must be a floating torch.dtype, got {dtype}")
    if not (isinstance(key, torch.Tensor) and fr.is_key(key) and key.shape == (2,)):
        raise TypeError(
            "init_state: key must be a single funcgan key (int64 tensor of shape (2,)); "
            "for many seeds use funcgan.sweep.init_sweep"
        )
    txs = []
    for label, spec, base, tx in (
        ("gen_opt", gen_opt, gan.gen_opt, gan.gen_tx),
        ("disc_opt", disc_opt, gan.disc_opt, gan.disc_tx),
    ):
        if spec is None:
            txs.append(tx)
            continue
        if not isinstance(base, OptimizerSpec) or spec.sweepable() != base.sweepable() or spec.name != base.name:
            raise ValueError(
                f"init_state: {label} must have the GAN's optimizer structure "
                f"({getattr(base, 'name', 'a custom transformation')}, sweepable "
                f"{base.sweepable() if isinstance(base, OptimizerSpec) else '()'})"
            )
        txs.append(spec.make())
    kg, kd, krun = fr.split(key.to(device), 3)
    gp, gb = _weights(gan.gen_init, gan.gen, gen_weights, kg, dtype, device, "gen_weights")
    dp, db = _weights(gan.disc_init, gan.disc, disc_weights, kd, dtype, device, "disc_weights")
    hp = gan.default_hparams()
    for k, v in (hparams or {}).items():
        if k not in hp:
            raise ValueError(f"init_state: unknown hyper-parameter '{k}'; this GAN has {sorted(hp) or 'none'}")
        hp[k] = v
    zeros = lambda dt: torch.zeros((), dtype=dt, device=device)  # noqa: E731
    gen = PlayerState(gp, gb, txs[0].init(gp))
    disc = PlayerState(dp, db, txs[1].init(dp))
    return TrainState(
        gen=gen,
        disc=disc,
        key=krun,
        step=zeros(torch.int64),
        hparams={k: torch.tensor(float(v), dtype=torch.float64, device=device) for k, v in hp.items()},
        extra=gan.loop.init_extra(gen, disc),
        gen_ema={k: v.clone() for k, v in gp.items()} if gan.ema is not None else {},
        health={
            "diverged_at": torch.full((), -1, dtype=torch.int64, device=device),
            "reason": zeros(torch.int64),
            "pinned": zeros(torch.int64),
        },
    )


def check_state(state: Any, gan: GAN | None = None, stacked: bool = False, who: str = "funcgan") -> int | None:
    """Raise a clear error unless ``state`` is a (single or stacked) :class:`TrainState`;
    returns the number of runs for a stacked one."""
    if not isinstance(state, TrainState):
        raise TypeError(f"{who}: expected a TrainState, got {type(state).__name__}")
    dim = state.step.dim()
    if stacked and dim != 1:
        raise ValueError(f"{who}: expected a stacked sweep state (step of shape (S,)), got a single run's state")
    if not stacked and dim != 0:
        raise ValueError(
            f"{who}: got a stacked sweep state of {state.step.shape[0]} runs where one run's state is "
            "expected; take one out with funcgan.sweep.seed_state(states, i)"
        )
    if gan is not None:
        nets.check_params(gan.gen, {k: v[0] if stacked else v for k, v in state.gen.params.items()}, who=f"{who} G")
    return int(state.step.shape[0]) if stacked else None


def make_train_step(
    gan: Any, lazy: dict[str, bool] | None = None
) -> Callable[[TrainState, Data], tuple[TrainState, Metrics]]:
    """Build the pure training step ``step(state, data) -> (state, metrics)``.

    The step draws its random inputs from ``fold_in(state.key, state.step)``
    (``gan.loop.draw``), applies ``gan.loop``'s update, the generator EMA, and
    increments ``state.step``. It has no Python branching on tensor values, no
    ``.item()`` and no I/O, so ``torch.compile(vmap(step, in_dims=(0, None)),
    fullgraph=True)`` runs S seeds at once (see :mod:`funcgan.sweep`).

    Args:
        gan: a :class:`GAN` (or a system holding one as ``.gan``).
        lazy: which lazy penalties (``every > 1``) are on, by name, fixed in the
            built step: the drivers build one step per pattern and call the one
            the step number asks for, so an off penalty computes nothing. ``None``
            (default): decided from ``state.step`` inside the step, by masking.

    Metrics are 0-d tensors keyed ``"disc/loss"``, ``"gen/loss"``, ...
    """
    gan = getattr(gan, "gan", gan)
    if not isinstance(gan, GAN):
        raise TypeError(f"make_train_step: expected a GAN or a System, got {type(gan).__name__}")
    loop = gan.loop

    def step(state: TrainState, data: Data = ()) -> tuple[TrainState, Metrics]:
        inputs = loop.draw(gan, step_key(state), data, player_dtype(state))
        new, metrics = loop.update(gan, state, inputs, lazy)
        return finish_step(gan, state, new), metrics

    return step


def finish_step(gan: GAN, old: TrainState, new: TrainState) -> TrainState:
    """What every step ends with: G's EMA (from the step's own count) and the step count + 1."""
    if gan.ema is not None:
        new = new._replace(
            gen_ema=update_ema(old.gen_ema, new.gen.params, old.step, old.hparams["ema_decay"], gan.ema_start)
        )
    return new._replace(step=old.step + 1)


def generate(
    gan: Any,
    state: TrainState,
    key: torch.Tensor,
    n: int,
    cond: torch.Tensor | None = None,
    use_ema: bool = False,
    train: bool = False,
) -> torch.Tensor:
    """``n`` samples from G.

    Args:
        gan: the GAN (or a system).
        state: one run's state.
        key: the noise's key.
        n: how many samples (ignored when ``cond`` fixes the batch).
        cond: the conditions (class labels, pix2pix inputs) for a conditional G.
        use_ema: sample from the averaged parameters ``state.gen_ema``.
        train: use batch statistics (train mode) instead of BatchNorm's running
            statistics; eval mode (default) is what sampling and evaluation use.
    """
    gan = getattr(gan, "gan", gan)
    if gan.conditional and cond is None:
        raise ValueError("generate: a conditional GAN needs cond (labels or input images)")
    if use_ema and not state.gen_ema:
        raise ValueError("generate: use_ema needs a GAN with ema set")
    batch = cond.shape[0] if cond is not None else n
    z = gan.noise(key, (batch,), player_dtype(state))
    params = state.gen_ema if use_ema else state.gen.params
    out, _ = gan.G(params, state.gen.buffers, z, cond, key=fr.fold_in(key, 1) if train else None, train=train)
    return out
