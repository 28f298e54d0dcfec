"""Seed 001: one G forward per step reused by the D fake step and the G step.

    python examples/seed001_reuse_fake.py
"""

import torch

import funcgan
from funcgan import random as fr
from funcgan import testing

system = funcgan.make_system("digits")
gan = system.gan
step = torch.compile(funcgan.make_train_step(gan), fullgraph=True, backend="aot_eager")
state = funcgan.init_state(gan, fr.key(1))
for t in range(1000):
    state, metrics = step(state, system.data)
    if (t + 1) % 250 == 0:
        print(f"step {t + 1}: D real {float(metrics['disc/loss_real']):.3f}  D fake {float(metrics['disc/loss_fake']):.3f}"
              f"  G {float(metrics['gen/loss']):.3f}")
report = testing.assert_equivalent(system, seed=1, steps=20, dtype=torch.float64)
print(f"functional vs imperative (20 steps, float64): max param diff {report.params:.1e}")
