"""Bring your own GAN: a BatchNorm generator and a spectral-norm discriminator, your data, any loop.

    python examples/bring_your_own_gan.py

The networks are plain nn.Modules; funcgan runs them as pure functions (spectral norm's power
iteration and BatchNorm's statistics become per-run state). The same GAN then trains with another
loss, a gradient penalty and another update order by changing values, sweeps over seeds and penalty
weights in one program, and is proven equal to the imperative loop a PyTorch user would write.
"""

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

import funcgan
from funcgan import loops, losses, penalties, sweep, testing
from funcgan import random as fr


class Generator(nn.Module):  # z (B, 16) -> (B, 2), BatchNorm in the hidden layer
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(16, 64, bias=False), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 2))

    def forward(self, z):
        return self.net(z)


class Discriminator(nn.Module):  # (B, 2) -> (B, 1) logits, every layer spectral-normed (SN-GAN)
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(spectral_norm(nn.Linear(2, 64)), nn.LeakyReLU(0.2), spectral_norm(nn.Linear(64, 1)))

    def forward(self, x):
        return self.net(x)


# your data: a ring of 8 Gaussians, 4096 points; sample_real draws minibatches from it with keys
angles = torch.arange(4096) % 8 * (2 * torch.pi / 8)
data = torch.stack([2 * angles.cos(), 2 * angles.sin()], 1) + 0.05 * fr.normal(fr.key(0), (4096, 2))

gan = funcgan.GAN(
    gen=Generator(), disc=Discriminator(), latent_dim=16, batch_size=128,
    loop=loops.Alternating(objective=losses.hinge(), n_disc=2),        # SN-GAN's hinge loss, 2 D steps
    sample_real=funcgan.systems.dataset_sampler(0),
    gen_opt=funcgan.OptimizerSpec("adam", 2e-4, (0.0, 0.9)), disc_opt=funcgan.OptimizerSpec("adam", 2e-4, (0.0, 0.9)),
    ema=0.999, name="ring-sn",
)
system = funcgan.System(gan, (data,))  # checked now: shapes, D's output, objective vs D, in-module randomness

# one run, the plain step
step = funcgan.make_train_step(system)
state = funcgan.init_state(gan, fr.key(1))
for t in range(300):
    state, metrics = step(state, system.data)
x = funcgan.generate(gan, state, fr.key(2), 1000, use_ema=True)  # eval mode: BatchNorm's running statistics
print(f"after 300 steps: D loss {float(metrics['disc/loss']):.3f}, samples at radius {float(x.norm(dim=1).mean()):.2f}")

# the same networks with a relativistic loss, WGAN-GP's penalty and simultaneous updates: values, not subclasses
variant = gan.with_options(loop=loops.Simultaneous(objective=losses.rahinge(),
                                                   penalties=(penalties.gradient_penalty(1.0),)))
variant_system = funcgan.System(variant, (data,))

# 8 seeds x 2 penalty weights in one vmapped program (compile=True for speed on long runs)
result = sweep.run(variant_system, sweep.grid(range(8), gp=[0.1, 1.0]), steps=50, compile=False)
print(f"sweep: {len(result.points)} runs, {int((result.diverged_at >= 0).sum())} diverged")

# proven equal to the imperative loop (modules, torch.optim, .detach(), autograd.grad for the penalty)
for s in (system, variant_system):
    report = testing.assert_equivalent(s, seed=0, steps=10, dtype=torch.float64)
    print(f"{s.gan.loop.name}: functional == imperative, max parameter difference {report.params:.1e}, "
          f"buffers (BatchNorm, spectral norm's u, v) {report.buffers:.1e}")
