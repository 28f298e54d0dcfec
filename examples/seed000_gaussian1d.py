"""Seed 000: the 1-D GAN on N(0, 1), functional, with the imperative loop checked beside it.

    python examples/seed000_gaussian1d.py
"""

import torch

import funcgan
from funcgan import random as fr
from funcgan import testing

system = funcgan.make_system("gaussian1d")
gan = system.gan
step = funcgan.make_train_step(gan)
state = funcgan.init_state(gan, fr.key(0))
for t in range(1000):
    state, metrics = step(state, system.data)  # D on real + detached fake, then G on fresh noise
    if (t + 1) % 200 == 0:
        print(f"step {t + 1}: D loss {float(metrics['disc/loss']):.4f}  G loss {float(metrics['gen/loss']):.4f}")

samples = funcgan.generate(gan, state, fr.key(123), 10_000)
print(f"generated mean {float(samples.mean()):+.3f} std {float(samples.std()):.3f} (data: 0, 1)")

report = testing.assert_equivalent(system, seed=0, steps=20, dtype=torch.float64)
print(f"functional vs imperative (20 steps, float64): max param diff {report.params:.1e}")
