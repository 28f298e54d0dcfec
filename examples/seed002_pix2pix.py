"""Seed 002: pix2pix-style conditional GAN (digit -> digit rotated 90 degrees), BCE + 100 L1.

    python examples/seed002_pix2pix.py
"""

import torch

import funcgan
from funcgan import random as fr
from funcgan import testing

system = funcgan.make_system("pix2pix")
gan = system.gan
step = funcgan.make_train_step(gan)
state = funcgan.init_state(gan, fr.key(2))
for t in range(1500):
    state, metrics = step(state, system.data)
    if (t + 1) % 300 == 0:
        print(f"step {t + 1}: D {float(metrics['disc/loss']):.3f}  G {float(metrics['gen/loss']):.3f}"
              f"  L1 {float(metrics['gen/loss_l1']):.4f}")
a, b = system.data
fake = funcgan.generate(gan, state, fr.key(0), 256, cond=a[:256])
print(f"mean |G(a) - b| on 256 pairs: {float((fake - b[:256]).abs().mean()):.4f}")
report = testing.assert_equivalent(system, seed=2, steps=20, dtype=torch.float64)
print(f"functional vs imperative (20 steps, float64): max param diff {report.params:.1e}")
