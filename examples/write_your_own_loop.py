"""Write your own loop: instance noise (Sønderby et al. 2017) in ~30 lines of public API, proven.

    python examples/write_your_own_loop.py

D sees real and generated samples through Gaussian noise of a standard deviation that decays with
the step; the noise is drawn from the step's key in ``draw``, so the imperative reference below
uses exactly the same numbers.
"""

from dataclasses import dataclass

import torch

import funcgan
from funcgan import loops, systems, testing
from funcgan import random as fr
from funcgan.step import update_player


@dataclass(frozen=True)
class InstanceNoise(loops.Loop):
    sigma: float = 0.5      # the noise's std at step 0; it decays as sigma / (1 + step / 100)
    name = "instance_noise"

    def draw(self, gan, key, data, dtype):
        k_d, k_g, k_n, k_net = fr.split(key, 4)
        d = loops.draw_disc_inputs(self, gan, k_d, data, dtype, 1)
        d["noise_real"], d["noise_fake"] = fr.normal(k_n, (2, gan.batch_size, *d["real"].x.shape[2:]), dtype)
        return {"disc": d, "gen": loops.draw_gen_inputs(self, gan, k_g, data, dtype, 1), "net_key": k_net}

    def update(self, gan, state, inputs, lazy=None):
        ctx = loops.Context(gan, self, state, inputs, lazy)
        d, g = inputs["disc"], inputs["gen"]
        real = loops.batch_at(d["real"], 0)
        sigma = self.sigma / (1 + state.step.to(real.x.dtype) / 100)
        fake, gen_buffers = ctx.G(state.gen.params, state.gen.buffers, d["z"][0], real.cond)  # a constant for D
        k1, k2 = ctx.key(), ctx.key()

        def disc_loss(params, buffers):
            r, buffers = ctx.D(params, buffers, real.x + sigma * d["noise_real"], real.cond, k1)
            f, buffers = ctx.D(params, buffers, fake + sigma * d["noise_fake"], real.cond, k2)
            return self.objective.disc(r, f), buffers, {}

        disc, d_loss, _ = update_player(disc_loss, state.disc, gan.disc_tx)  # grad w.r.t. D's parameters only
        gen, disc, g_loss, m = ctx.update_gen(state.gen._replace(buffers=gen_buffers), disc, g["z"][0], None)
        return state._replace(gen=gen, disc=disc), {**m, "disc/loss": d_loss, "gen/loss": g_loss}


def imperative_instance_noise(run, inputs):
    """The same loop as a PyTorch user writes it: modules, torch.optim, .detach(), zero_grad()."""
    run.begin(inputs)
    d, g = inputs["disc"], inputs["gen"]
    real = d["real"].x[0]
    sigma = run.gan.loop.sigma / (1 + run.step / 100)
    fake = run.g(d["z"][0], None, run.key())
    run.opt_d.zero_grad()
    k1, k2 = run.key(), run.key()
    d_loss = run.gan.loop.objective.disc(run.d(real + sigma * d["noise_real"], None, k1),
                                         run.d(fake.detach() + sigma * d["noise_fake"], None, k2))
    d_loss.backward()
    run.optimizer_step("disc")
    g_loss = testing.reference.gen_update(run, g["z"][0], None)
    run.end()
    return {"disc/loss": float(d_loss.detach()), "gen/loss": float(g_loss)}


system = systems.make_system("ring8", loop=InstanceNoise(objective=funcgan.losses.nonsaturating()))
report = testing.assert_equivalent(system, seed=0, steps=20, dtype=torch.float64,
                                   imperative_step=imperative_instance_noise)
print(f"instance noise: functional == imperative over 20 steps, max parameter difference {report.params:.1e}")
result = funcgan.sweep.run(system, funcgan.sweep.grid(range(16)), steps=200, compile=False)
print(f"16 seeds x 200 steps: final D loss {result.history['disc/loss'][-1].mean():.3f}")
