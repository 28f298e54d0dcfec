"""Built-in systems and the checks every system passes when it is built."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import funcgan
from funcgan import loops, losses, nets, systems
from funcgan import random as fr
from funcgan.step import Batch, generate, init_state, make_train_step

SMALL = {"dcgan": {"width": 4, "batch_size": 8}, "sngan": {"width": 4, "batch_size": 8, "n_disc": 2},
         "cgan": {"width": 4, "batch_size": 8}}


@pytest.mark.parametrize("problem", list(systems.PROBLEMS))
def test_every_system_builds_steps_and_samples(problem):
    system = systems.make_system(problem, **SMALL.get(problem, {}))
    gan = system.gan
    state = init_state(gan, fr.key(0))
    state, metrics = make_train_step(gan)(state, system.data)
    assert {"disc/loss", "gen/loss"} <= set(metrics) and all(torch.isfinite(v) for v in metrics.values())
    cond = None
    if gan.conditional:
        cond = system.data[0][:4] if system.n_classes == 0 else torch.arange(4)
    x = generate(gan, state, fr.key(1), 4, cond=cond)
    assert x.shape[0] == 4 and torch.isfinite(x).all()


def test_image_systems_are_conv_nets_at_32x32():
    for problem in ("dcgan", "sngan", "cgan"):
        system = systems.make_system(problem, **SMALL[problem])
        assert system.data[0].shape[1:] == (1, 32, 32) and system.image_shape == (1, 32, 32)
        assert -1.0 <= float(system.data[0].min()) and float(system.data[0].max()) <= 1.0
    sn = systems.make_system("sngan", **SMALL["sngan"])
    assert sum(isinstance(m, torch.nn.utils.parametrize.ParametrizationList) for m in sn.gan.disc.modules()) == 8
    assert sn.gan.loop.objective.name == "hinge" and sn.gan.disc_opt.betas == (0.0, 0.9)
    dc = systems.make_system("dcgan")
    assert dc.gan.gen_opt.lr == 2e-4 and dc.gan.gen_opt.betas == (0.5, 0.999)
    assert isinstance(dc.gan.loop, loops.ReuseFake) and dc.gan.loop.objective.name == "bce"


def test_class_conditional_sampling_follows_the_labels():
    """A cGAN's sample for label y differs from its sample for label y' with the same noise."""
    system = systems.make_system("cgan", **SMALL["cgan"])
    assert system.n_classes == 10 and system.data[1].dtype == torch.int64
    state = init_state(system.gan, fr.key(0))
    a = generate(system.gan, state, fr.key(1), 0, cond=torch.zeros(3, dtype=torch.int64))
    b = generate(system.gan, state, fr.key(1), 0, cond=torch.ones(3, dtype=torch.int64))
    assert not torch.allclose(a, b)


def test_users_can_start_from_their_own_weights():
    system = systems.make_system("gaussian1d")
    mine = nets.Seed000Generator()
    state = init_state(system.gan, fr.key(0), gen_weights=mine)
    assert all(torch.equal(state.gen.params[n], p.detach()) for n, p in mine.named_parameters())
    state2 = init_state(system.gan, fr.key(0), gen_weights=mine.state_dict())
    assert all(torch.equal(state.gen.params[n], state2.gen.params[n]) for n in state.gen.params)
    with pytest.raises(ValueError, match="missing"):
        init_state(system.gan, fr.key(0), gen_weights={"model.0.weight": torch.zeros(50, 10)})


@pytest.mark.parametrize("mutate,exc,match", [
    (lambda g: g.with_options(gen=nets.Seed000Generator(latent_dim=7)), ValueError,
     r"the generator does not accept its inputs \(\(2, 10\); latent_dim=10\)"),
    (lambda g: g.with_options(gen=nets.Seed000Generator(out_features=2)), ValueError,
     r"generator output has shape \(2,\) per example, but real data .* has \(1,\)"),
    (lambda g: g.with_options(disc=nn.Sequential(nn.Linear(1, 3), nn.Sigmoid())), ValueError,
     r"one score per example, \(B, 1\) or \(B,\), got \(2, 3\)"),
    (lambda g: g.with_options(disc=_Scalar()), ValueError, r"got \(\)"),
])
def test_mismatched_networks_are_refused_when_built(mutate, exc, match):
    gan = systems.make_system("gaussian1d").gan
    with pytest.raises(exc, match=match):
        systems.System(mutate(gan), (), "1d")


class _Scalar(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(1, 1)

    def forward(self, x):
        return torch.sigmoid(self.lin(x)).mean()


def test_bad_data_is_refused():
    s = systems.make_system("digits")
    x = s.data[0].clone()
    x[3, 5] = float("nan")
    with pytest.raises(ValueError, match="non-finite values in 1 example"):
        systems.System(s.gan, (x,), "image")
    with pytest.raises(TypeError, match=r"examples \(data\[0\]\) must be floating point, got torch.uint8"):
        systems.System(s.gan, ((s.data[0] * 255).to(torch.uint8),), "image")
    with pytest.raises(ValueError, match="sample_real failed"):
        systems.System(s.gan, (), "image")


def test_conditioning_must_match_the_gan():
    s = systems.make_system("pix2pix")
    with pytest.raises(ValueError, match="needs a condition"):
        funcgan.GAN(gen=s.gan.gen, disc=s.gan.disc, loop=loops.Pix2Pix(), sample_real=s.gan.sample_real,
                    latent_dim=0)
    plain = systems.make_system("digits").gan
    with pytest.raises(ValueError, match="gives conditions but the GAN is not conditional"):
        systems.System(plain.with_options(sample_real=lambda k, d, b, t=torch.float32: Batch(
            d[0][fr.randint(k, b, 0, len(d[0]))], torch.zeros(b, dtype=torch.int64))),
            systems.make_system("digits").data, "image")


def test_unknown_problem_and_missing_mnist_dir():
    with pytest.raises(ValueError, match="unknown problem 'cifar'; choose one of gaussian1d"):
        systems.make_system("cifar")
    with pytest.raises(FileNotFoundError, match="data directory '/nonexistent/mnist' does not exist"):
        systems.make_system("mnist", data_dir="/nonexistent/mnist")


def test_options_a_loop_lacks_are_refused():
    with pytest.raises(ValueError, match="option 'unroll' does not apply to the alternating loop"):
        systems.make_system("gaussian1d", loop_options={"unroll": 3})
    with pytest.raises(ValueError, match="give a loop or a scheme, not both"):
        systems.make_system("gaussian1d", loop=loops.Alternating(), scheme=loops.Simultaneous)


def test_a_scheme_keeps_the_systems_objective():
    s = systems.make_system("mnist", scheme=loops.Simultaneous)
    assert isinstance(s.gan.loop, loops.Simultaneous) and s.gan.loop.objective.name == "clamped_log"
    s = systems.make_system("mnist", scheme=loops.Simultaneous, objective=losses.hinge())
    assert not isinstance(list(s.gan.disc.modules())[-1], nn.Sigmoid)  # logits: no final sigmoid
