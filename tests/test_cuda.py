"""CUDA: the same runs on the GPU (skipped without one; CI has none).

Tolerances: float64 CUDA and CPU kernels differ only in reduction order
(cuBLAS vs MKL), ~1e-16 per op; 10 steps stay within 1e-10.
"""

from __future__ import annotations

import pytest
import torch
import torch._dynamo

from funcgan import random as fr
from funcgan import sweep, systems, testing
from funcgan.step import init_state, make_train_step
from funcgan.tree import tree_leaves

pytestmark = pytest.mark.cuda


SMALL = {"dcgan": {"width": 8, "batch_size": 16}, "sngan": {"width": 8, "batch_size": 16},
         "cgan": {"width": 8, "batch_size": 16}}


@pytest.mark.parametrize("problem", list(systems.PROBLEMS))
def test_step_on_cuda_equals_cpu_float64(problem):
    system = systems.make_system(problem, **SMALL.get(problem, {}))
    gan = system.gan
    step = make_train_step(gan)
    cpu = init_state(gan, fr.key(0), dtype=torch.float64)
    gpu = init_state(gan, fr.key(0), dtype=torch.float64, device="cuda")
    d_cpu = tuple(x.double() if x.is_floating_point() else x for x in system.data)
    d_gpu = tuple(x.cuda() for x in d_cpu)
    for _ in range(10):
        cpu, _ = step(cpu, d_cpu)
        gpu, _ = step(gpu, d_gpu)
    for a, b in zip(tree_leaves((cpu.gen, cpu.disc)), tree_leaves((gpu.gen, gpu.disc))):
        if a.is_floating_point():
            assert float((a - b.cpu()).abs().max()) <= 1e-10


def test_compiled_cuda_sweep_equals_lone_cpu_runs():
    system = systems.make_system("gaussian1d")
    result = sweep.run(system, sweep.grid(range(64)), steps=10, device="cuda", compile=True)
    step = make_train_step(system.gan)
    for i in (0, 37, 63):
        s = init_state(system.gan, fr.key(i))
        for _ in range(10):
            s, _ = step(s, ())
        got = sweep.seed_state(result.state, i)
        for k in s.gen.params:
            torch.testing.assert_close(got.gen.params[k].cpu(), s.gen.params[k], rtol=1e-4, atol=1e-5)


def test_reference_equivalence_on_cuda():
    system = systems.make_system("mnist").to("cuda")
    report = testing.compare(system, seed=0, steps=10, dtype=torch.float64, state=init_state(
        system.gan, fr.key(0), dtype=torch.float64, device="cuda"))
    assert not report.exceeds(testing.DEFAULT_TOLERANCES[torch.float64])


def test_auto_chunk_fits_in_free_memory_and_runs():
    """The planner measures the step on the device: more bytes per run than the state holds, and a
    sweep at the chunk it picks runs without running out of memory."""
    from funcgan import memory

    system = systems.make_system("mnist")
    data = tuple(x.cuda() for x in system.data)
    step = sweep.make_sweep_step(system.gan, compile=False, phased=False)
    costs = memory.measure(step, lambda n: sweep.init_sweep(system.gan, sweep.grid(range(n)), device="cuda"), data)
    state = sweep.init_sweep(system.gan, sweep.grid(range(1)), device="cuda")
    state_bytes = sum(x.numel() * x.element_size() for x in tree_leaves(state))
    assert (costs[8] - costs[2]) / 6 > state_bytes
    plan = sweep.plan_chunk(system, 4096, "cuda")
    assert 1 <= plan.chunk_size <= 4096
    result = sweep.run(system, sweep.grid(range(plan.chunk_size)), steps=3, chunk_size="auto", device="cuda")
    assert bool((result.state.step == 3).all()) and "MiB per run" in result.extras["chunk_plan"]


def test_cuda_graph_replay_equals_the_plain_compiled_step():
    system = systems.make_system("gaussian1d")
    points = sweep.grid(range(64))
    torch._dynamo.reset()
    plain = sweep.run(system, points, steps=20, compile=True, device="cuda", steps_per_call=5)
    torch._dynamo.reset()
    graph = sweep.run(system, points, steps=20, compile=True, device="cuda", steps_per_call=5, mode="reduce-overhead")
    for a, b in zip(tree_leaves((plain.state.gen, plain.state.disc)), tree_leaves((graph.state.gen, graph.state.disc))):
        assert torch.equal(a, b)
