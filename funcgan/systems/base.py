"""A system is a GAN with its data, checked when it is built; samplers and loop options shared by all.

``System(gan, data)`` runs a dry forward on a small batch before anything trains
(:func:`validate`): the real batch, G's noise size, G's output against D's input,
D's output shape ``(B, 1)`` or ``(B,)``, dtypes, whether D's outputs fit the
objective (probabilities in [0, 1] for the probability objectives; no final
sigmoid for the logit objectives), and whether a network draws from torch's global
RNG (a seed would not be reproducible); each mismatch is a ``ValueError`` or
``TypeError`` that names it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, vmap

from funcgan import data as D
from funcgan import nets
from funcgan import random as fr
from funcgan.loops import Loop
from funcgan.step import GAN, Batch, Data

__all__ = ["System", "dataset_sampler", "gaussian_sampler", "resolve_loop", "validate"]


@dataclass(eq=False)
class System:
    """A GAN with its data and what the shell needs to report on it.

    Attributes:
        gan: the :class:`~funcgan.step.GAN`.
        data: the shared data tensors passed to every step (``()`` for generated data).
        kind: ``"1d"``, ``"image"``, ``"mixture"``, ``"dirac"`` or ``"custom"`` (summaries, plots).
        default_steps: what ``funcgan train`` runs by default.
        description: one line.
        data_source: where the data came from.
        image_shape: ``(C, H, W)`` of one image for image systems (flat data is reshaped to it).
        real_stats: the data's mean and std (1-D systems).
        mixture: ``(means, std)`` for 2-D mixture systems (their metrics).
        n_classes: classes of a class-conditional system (0 otherwise).
        check: run :func:`validate` now (default).
    """

    gan: GAN
    data: tuple[torch.Tensor, ...] = ()
    kind: str = "custom"
    default_steps: int = 1000
    description: str = ""
    data_source: str = "given"
    image_shape: tuple[int, ...] | None = None
    real_stats: dict[str, float] = field(default_factory=dict)
    mixture: tuple[torch.Tensor, float] | None = None
    n_classes: int = 0
    check: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.gan, GAN):
            raise TypeError(f"System: gan must be a funcgan GAN, got {type(self.gan).__name__}")
        self.data = tuple(self.data)
        if self.check:
            validate(self)

    @property
    def name(self) -> str:
        return self.gan.name

    def to(self, device: torch.device | str) -> System:
        """The same system with its data on ``device``."""
        return replace(self, data=tuple(x.to(device) for x in self.data), check=False)


# ----------------------------------------------------------------------------- samplers


def dataset_sampler(x_index: int = 0, cond_index: int | None = None) -> Callable:
    """A ``sample_real`` drawing a minibatch with replacement from the data tensors.

    Indices come from the key (``randint``), so each seed draws its own batches.
    ``data[x_index]`` gives the examples and ``data[cond_index]`` (if set) their
    conditions (pix2pix's input images, class labels).
    """

    def sample(key: torch.Tensor, data: Data, batch_shape: tuple[int, ...], dtype: torch.dtype = torch.float32):
        if not data[x_index].is_floating_point():
            raise TypeError(
                f"the examples (data[{x_index}]) must be floating point, got {data[x_index].dtype}; "
                "convert them first (for 8-bit images: x.float() / 255)"
            )
        idx = fr.randint(key, batch_shape, 0, data[x_index].shape[0])
        cond = None
        if cond_index is not None:
            c = data[cond_index][idx]
            cond = c.to(dtype) if c.is_floating_point() else c
        return Batch(data[x_index][idx].to(dtype), cond)

    return sample


def gaussian_sampler(mean: float, std: float, dim: int) -> Callable:
    """A ``sample_real`` of ``N(mean, std^2)`` vectors of size ``dim`` (no data tensors)."""

    def sample(key, data, batch_shape, dtype=torch.float32):
        del data
        x = fr.normal(key, (*batch_shape, dim), dtype)
        return Batch(x * std + mean if (mean, std) != (0.0, 1.0) else x)

    return sample


def resolve_loop(
    default: Loop,
    loop: Loop | None = None,
    objective: Any = None,
    penalties: Any = None,
    n_disc: int | None = None,
    loop_options: dict[str, Any] | None = None,
    scheme: type | None = None,
) -> Loop:
    """The loop a system trains with.

    ``loop`` as given; else a ``scheme`` (a loop class) built with the system's objective
    (or ``objective``); else the system's ``default``. Then the given objective,
    penalties, ``n_disc`` and other loop fields (``loop_options``) replace the loop's.

    Raises:
        ValueError: an option the loop does not have (``unroll`` for an alternating loop).
    """
    if loop is not None and scheme is not None:
        raise ValueError("give a loop or a scheme, not both")
    if scheme is not None:
        if not (isinstance(scheme, type) and issubclass(scheme, Loop)):
            raise TypeError(f"scheme must be a funcgan.loops loop class, got {scheme!r}")
        base = scheme(objective=objective or default.objective)
    else:
        base = loop if loop is not None else default
    changes: dict[str, Any] = {
        k: v for k, v in (("objective", objective), ("penalties", penalties), ("n_disc", n_disc)) if v is not None
    }
    for k, v in (loop_options or {}).items():
        if k not in {f for f in base.__dataclass_fields__}:
            raise ValueError(f"option '{k}' does not apply to the {base.name} loop")
        changes[k] = v
    return replace(base, **changes) if changes else base


# ----------------------------------------------------------------------------- validation


def _last_leaf(module: nn.Module, *inputs: Any) -> nn.Module | None:
    order: list[nn.Module] = []

    def record(mod, inputs, output):
        order.append(mod)

    hooks = [m.register_forward_hook(record) for m in module.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            module(*inputs)
    except Exception:  # noqa: BLE001 - reported by the caller's own forward
        return None
    finally:
        for h in hooks:
            h.remove()
    return order[-1] if order else None


def _global_rng_user(module: nn.Module, params, buffers, args) -> str | None:
    """The name of the module that draws from torch's global RNG during a forward, or None."""
    skel = nets.make_skeleton(module, True, "validate")
    stack: list[str] = []
    names = {m: n for n, m in skel.named_modules()}
    handles = []

    def enter(mod, inputs):
        stack.append(names[mod] or type(mod).__name__)

    def leave(mod, inputs, output):
        stack.pop()

    for m in skel.modules():
        handles.append(m.register_forward_pre_hook(enter))
        handles.append(m.register_forward_hook(leave))
    keys = {f"{n}.{nets.stochastic.KEY_BUFFER}": fr.key(0) for n in nets.stochastic.stochastic_modules(skel)}
    tensors = {**params, **buffers, **keys}
    batched = {k: v.unsqueeze(0) for k, v in tensors.items()}
    try:
        vmap(lambda t: functional_call(skel, t, args), randomness="error")(batched)
    except RuntimeError as e:
        if "random" in str(e).lower():
            return stack[-1] if stack else type(module).__name__
        raise
    finally:
        for h in handles:
            h.remove()
    return None


def validate(system: System) -> None:
    """Check a system before training (see the module docstring); raises naming the problem."""
    gan = system.gan
    who = gan.name
    for i, x in enumerate(system.data):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{who}: data[{i}] must be a tensor, got {type(x).__name__}")
        if x.is_floating_point():
            D.check_data(f"{who} data[{i}]", x)
        elif x.dim() < 1 or x.shape[0] == 0:
            raise ValueError(f"{who}: data[{i}] must have at least one example, got shape {tuple(x.shape)}")
    try:
        real = gan.sample_real(fr.key(0), system.data, (2,), torch.float32)
    except TypeError as e:
        raise TypeError(f"{who}: sample_real failed on the data: {e}") from e
    except Exception as e:
        raise ValueError(f"{who}: sample_real failed on the data: {e}") from e
    if not isinstance(real, Batch):
        raise TypeError(f"{who}: sample_real must return a funcgan.step.Batch, got {type(real).__name__}")
    if not isinstance(real.x, torch.Tensor) or not real.x.is_floating_point() or real.x.shape[:1] != (2,):
        raise TypeError(
            f"{who}: sample_real must give floating examples with leading batch shape (2,), got "
            f"{getattr(real.x, 'dtype', type(real.x).__name__)} {tuple(getattr(real.x, 'shape', ()))}"
        )
    if gan.conditional and real.cond is None:
        raise ValueError(f"{who}: a conditional GAN's sample_real must give conditions (Batch.cond)")
    if not gan.conditional and real.cond is not None:
        raise ValueError(f"{who}: sample_real gives conditions but the GAN is not conditional (conditional=True)")
    gp, gb = gan.gen_init(gan.gen, fr.key(1), torch.float32, "cpu")
    dp, db = gan.disc_init(gan.disc, fr.key(2), torch.float32, "cpu")
    z = gan.noise(fr.key(3), (2,), torch.float32)
    g_args = tuple(a for a in (z, real.cond if gan.conditional else None) if a is not None)
    k = fr.key(4)
    try:
        fake, _ = gan.G(gp, gb, z, real.cond, key=k)
    except Exception as e:
        raise ValueError(
            f"{who}: the generator does not accept its inputs "
            f"({', '.join(str(tuple(a.shape)) for a in g_args)}; latent_dim={gan.latent_dim}): {e}"
        ) from e
    if not isinstance(fake, torch.Tensor) or not fake.is_floating_point():
        raise TypeError(
            f"{who}: the generator must return a floating tensor, got {getattr(fake, 'dtype', type(fake).__name__)}"
        )
    if tuple(fake.shape) != tuple(real.x.shape):
        raise ValueError(
            f"{who}: generator output has shape {tuple(fake.shape[1:])} per example, but real data "
            f"(the discriminator's input) has {tuple(real.x.shape[1:])}"
        )
    for label, x in (("real", real.x), ("generated", fake)):
        try:
            out, _ = gan.D(dp, db, x, real.cond, key=k)
        except Exception as e:
            raise ValueError(
                f"{who}: the discriminator does not accept a {label} batch of shape {tuple(x.shape)}: {e}"
            ) from e
        if not isinstance(out, torch.Tensor) or not out.is_floating_point():
            raise TypeError(
                f"{who}: the discriminator must return a floating tensor, got "
                f"{getattr(out, 'dtype', type(out).__name__)}"
            )
        if tuple(out.shape) not in ((2, 1), (2,)):
            raise ValueError(
                f"{who}: the discriminator must return one score per example, (B, 1) or (B,), "
                f"got {tuple(out.shape)} for a batch of 2"
            )
    obj = gan.loop.objective
    d_args = (real.x, real.cond) if gan.conditional else (real.x,)
    if obj.output == "probs":  # probabilities stay in [0, 1] for any input; logits leave it for large ones
        probes = (real.x, fake.detach(), 1e3 * real.x, 1e3 * fr.normal(fr.key(5), tuple(real.x.shape)))
        outs = torch.cat([gan.D(dp, db, x, real.cond, key=k)[0].flatten() for x in probes])
        if not bool(((outs >= 0) & (outs <= 1)).all()):
            raise ValueError(
                f"{who}: objective '{obj.name}' works on probabilities, but the discriminator's "
                f"outputs lie in [{float(outs.min()):.3g}, {float(outs.max()):.3g}]; "
                "end D in a sigmoid, or use an objective on logits"
            )
    else:
        live = nets.load_into_module(copy.deepcopy(gan.disc).float(), dp, db)
        nets.stochastic.keyed(live)
        if isinstance(_last_leaf(live.eval(), *d_args), nn.Sigmoid):
            raise ValueError(
                f"{who}: objective '{obj.name}' works on logits, but the discriminator ends in a "
                "Sigmoid; remove it, or use a probability objective ('bce')"
            )
    for role, module, params, buffers, args in (
        ("generator", gan.gen, gp, gb, g_args),
        ("discriminator", gan.disc, dp, db, (fake.detach(),) + d_args[1:]),
    ):
        culprit = _global_rng_user(module, params, buffers, args)
        if culprit is not None:
            raise ValueError(
                f"{who}: the {role}'s module '{culprit}' draws from torch's global RNG, so a seed's "
                "run would not be reproducible (and a sweep cannot run it); use nn.Dropout "
                "(funcgan keys it) or draw the randomness from the step's key"
            )
