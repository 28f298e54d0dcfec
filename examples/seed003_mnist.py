"""Seed 003: MNIST MLP GAN with clamped logs, clipping and the adaptive G schedule.

    python examples/seed003_mnist.py [MNIST_DIR]

With a directory holding train-images-idx3-ubyte(.gz) it trains on MNIST; without,
scikit-learn's 8x8 digits stand in.
"""

import sys

import torch

import funcgan
from funcgan import random as fr
from funcgan import testing

system = funcgan.make_system("mnist", data_dir=sys.argv[1] if len(sys.argv) > 1 else None)
print(f"data: {system.data_source}, {tuple(system.data[0].shape)}")
gan = system.gan
step = funcgan.make_train_step(gan)
state = funcgan.init_state(gan, fr.key(3))
g_steps = 0
for t in range(2000):
    state, metrics = step(state, system.data)
    g_steps += int(metrics["gen/steps"])
    if (t + 1) % 500 == 0:
        print(f"step {t + 1}: D {float(metrics['disc/loss']):.3f}  G steps so far {g_steps}"
              f"  countdown {int(metrics['disc/rest_k'])}")
report = testing.assert_equivalent(system, seed=3, steps=20, dtype=torch.float64)
print(f"functional vs imperative (20 steps, float64): max param diff {report.params:.1e}")
