"""Side-by-side sweep benchmark: imperative loop vs funcgan (eager vmap, compiled vmap) vs JAX.

Run from the repository root:

    python benchmarks/sweep_bench.py                       # CPU, both problems, S in 1..4096
    python benchmarks/sweep_bench.py --problems gaussian1d --sizes 1,256,1024 --json out.json
    python benchmarks/sweep_bench.py --device cuda --sizes 1,1024,16384

All competitors run in this one process on the same problem; the table reports
seed-steps per second (runs x steps / wall time, after warm-up), compile time,
memory, and ratios. This machine is noisy: for every S the competitors are timed
in ``--repeats`` interleaved rounds and each keeps its best round; compare ratios,
not absolute times.

* imperative: funcgan.reference's loop for the problem (nn.Module + torch.optim +
  .backward() + .detach(), noise from torch.randn as the seeds draw it), seed
  after seed. Its per-seed-step time does not depend on S; it is timed on
  ``--imperative-steps`` steps in every round, next to the others.
* funcgan eager: ``vmap(step)`` with no compilation.
* funcgan compiled: ``torch.compile(vmap(step), fullgraph=True)`` (inductor),
  chunked (``--chunk``) so S > chunk reuses one compiled shape, each chunk making
  ``--steps-per-chunk`` steps in turn as ``sweep.run`` does.
* jax: the same GAN in JAX (``jit(vmap(step))``, threefry keys, hand-written Adam),
  when jax is installed (never a dependency). Only the 1-D GAN has a JAX port.

Also measured: seed 002's point that the functional G step computes no gradient
for D's parameters, as matmul FLOPs and time of one G step, functional vs imperative.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from typing import Any, Callable

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from funcgan import random as fr  # noqa: E402
from funcgan import reference, sweep, systems, testing  # noqa: E402
from funcgan.compile import ChainCaller  # noqa: E402
from funcgan.train import init_state, step_key  # noqa: E402
from funcgan.tree import tree_leaves, tree_map  # noqa: E402


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed(fn, min_seconds: float, device: str) -> tuple[float, int]:
    """Call fn repeatedly for at least min_seconds; return (seconds per call, calls)."""
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        if n >= 2:
            _sync(device)
            el = time.perf_counter() - t0
            if el >= min_seconds:
                return el / n, n


# ----------------------------------------------------------------------------- imperative


def imperative_runner(system, device: str, steps: int) -> Callable[[], float]:
    """``measure() -> seed-steps/s`` of the imperative reference loop, noise from torch.randn."""
    gan = system.gan
    state = init_state(gan, fr.key(0), device=device)
    run = reference.ReferenceRun(gan, state)
    step = reference.reference_step_for(gan)
    data = tuple(x.to(device) for x in system.data)
    B, Z = gan.batch_size, gan.latent_dim
    torch.manual_seed(0)

    def inputs():
        # the seeds' own way of drawing: the global RNG
        if gan.conditional:
            idx = torch.randint(0, data[0].shape[0], (B,), device=device)
            return {"real": (data[0][idx], data[1][idx])}
        if data:
            real = (data[0][torch.randint(0, data[0].shape[0], (B,), device=device)],)
        else:
            real = (torch.randn(B, 1, device=device),)
        loop = gan.loop
        if loop.name == "alternating":
            return {"real": tuple(r[None] for r in real), "z_disc": torch.randn(1, B, Z, device=device),
                    "z_gen": torch.randn(B, Z, device=device)}
        if loop.name == "reuse_fake":
            return {"real": real, "z": torch.randn(B, Z, device=device)}
        return {"real": real, "z_disc": torch.randn(B, Z, device=device),
                "z_gen": torch.randn(loop.max_gen_steps, B, Z, device=device)}

    for _ in range(10):
        step(run, inputs())

    def measure() -> float:
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            step(run, inputs())
        _sync(device)
        return steps / (time.perf_counter() - t0)

    return measure


# ----------------------------------------------------------------------------- funcgan


def state_bytes_per_seed(states, S: int) -> float:
    return sum(x.numel() * x.element_size() for x in tree_leaves(states)) / S


def funcgan_runner(system, S: int, device: str, compile: bool, chunk: int, min_seconds: float,
                   mode: str | None = None, steps_per_chunk: int = 10) -> tuple[Callable[[], float], dict[str, Any]]:
    """``(measure, info)``: ``measure() -> seed-steps/s`` of the vmapped (optionally compiled)
    sweep step on S runs; ``info`` has the compile time, chunk and memory.

    The S runs are split into chunks of ``chunk``; one timed iteration advances
    each chunk in turn by ``steps_per_chunk`` steps, as :func:`funcgan.sweep.run`
    drives a sweep (a chunk's steps, then the next chunk's), so the rate covers
    all S runs and the cost of moving between chunks' working sets.
    """
    gan = system.gan
    C = min(S, chunk)
    torch._dynamo.reset()  # a fresh compile per configuration (and no cache-limit build-up)
    n_chunks = -(-S // C)
    all_states = sweep.init_sweep(gan, sweep.grid(range(n_chunks * C)), device=device)
    chunks = [tree_map(lambda x: x[i * C:(i + 1) * C].clone(), all_states) for i in range(n_chunks)]
    del all_states
    data = tuple(x.to(device) for x in system.data)
    # as sweep.run drives it: one-thread kernels for a single run on a CPU, and guard
    # evaluation skipped once each chunk's chain of states repeats (funcgan.compile.ChainCaller)
    kernel_threads = 1 if C == 1 and device == "cpu" and compile else None
    step = sweep.make_sweep_step(gan, compile=compile, mode=mode, kernel_threads=kernel_threads)
    callers = [ChainCaller(step) for _ in range(n_chunks)]
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    cudagraphs = compile and mode is not None and "reduce-overhead" in mode

    def advance(i):
        if cudagraphs:
            torch.compiler.cudagraph_mark_step_begin()
        chunks[i], _ = callers[i](chunks[i], data)
        if cudagraphs:  # replays overwrite their outputs
            chunks[i] = tree_map(torch.clone, chunks[i])

    t0 = time.perf_counter()
    advance(0)
    _sync(device)
    compile_s = time.perf_counter() - t0

    def all_chunks():
        # as sweep.run drives a sweep: a chunk makes its steps while its working set is in
        # cache, then the next chunk (run() makes all of a chunk's steps before moving on)
        for i in range(n_chunks):
            for _ in range(steps_per_chunk):
                advance(i)

    all_chunks()
    all_chunks()

    def measure() -> float:
        per_iter, _ = _timed(all_chunks, min_seconds, device)
        return n_chunks * C * steps_per_chunk / per_iter

    info = {"compile_s": compile_s, "chunk": C, "state_bytes_per_seed": state_bytes_per_seed(chunks[0], C)}
    if device.startswith("cuda"):
        info["peak_mem_bytes_per_seed"] = torch.cuda.max_memory_allocated() / (n_chunks * C)
    return measure, info


# ----------------------------------------------------------------------------- JAX


def jax_runner_gaussian1d(S: int, min_seconds: float, batch: int = 100) -> tuple[Callable[[], float], dict[str, Any]] | None:
    """The seed-000 GAN in JAX: jit(vmap(step)) over per-seed threefry keys, hand-written Adam."""
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None

    def init_linear(key, n_in, n_out):
        kw, kb = jax.random.split(key)
        bound = 1.0 / jnp.sqrt(n_in)
        return {"w": jax.random.uniform(kw, (n_in, n_out), minval=-bound, maxval=bound),
                "b": jax.random.uniform(kb, (n_out,), minval=-bound, maxval=bound)}

    def init(key):
        k = jax.random.split(key, 5)
        g = [init_linear(k[0], 10, 50), init_linear(k[1], 50, 1)]
        d = [init_linear(k[2], 1, 50), init_linear(k[3], 50, 1)]
        zeros = lambda t: jax.tree_util.tree_map(jnp.zeros_like, t)
        return {"g": g, "d": d, "gm": zeros(g), "gv": zeros(g), "dm": zeros(d), "dv": zeros(d),
                "t": jnp.zeros((), jnp.int32), "key": k[4]}

    def mlp(p, x, out_sigmoid):
        h = jax.nn.relu(x @ p[0]["w"] + p[0]["b"])
        y = h @ p[1]["w"] + p[1]["b"]
        return jax.nn.sigmoid(y) if out_sigmoid else y

    def bce(p, y):
        p = jnp.clip(p, 1e-12, 1 - 1e-12)
        return -jnp.mean(y * jnp.log(p) + (1 - y) * jnp.log(1 - p))

    def adam(params, grads, m, v, t, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8):
        m = jax.tree_util.tree_map(lambda m, g: b1 * m + (1 - b1) * g, m, grads)
        v = jax.tree_util.tree_map(lambda v, g: b2 * v + (1 - b2) * g * g, v, grads)
        bc1, bc2 = 1 - b1 ** t, 1 - b2 ** t
        params = jax.tree_util.tree_map(lambda p, m, v: p - lr / bc1 * m / (jnp.sqrt(v / bc2) + eps), params, m, v)
        return params, m, v

    def step(s):
        key, kr, kz1, kz2 = jax.random.split(s["key"], 4)
        real = jax.random.normal(kr, (batch, 1))
        fake = jax.lax.stop_gradient(mlp(s["g"], jax.random.normal(kz1, (batch, 10)), False))
        t = s["t"] + 1

        def d_loss(d):
            return bce(mlp(d, real, True), 1.0) + bce(mlp(d, fake, True), 0.0)

        dl, dg = jax.value_and_grad(d_loss)(s["d"])
        d, dm, dv = adam(s["d"], dg, s["dm"], s["dv"], t)
        z = jax.random.normal(kz2, (batch, 10))

        def g_loss(g):
            return bce(mlp(d, mlp(g, z, False), True), 1.0)

        gl, gg = jax.value_and_grad(g_loss)(s["g"])
        g, gm, gv = adam(s["g"], gg, s["gm"], s["gv"], t)
        return {"g": g, "d": d, "gm": gm, "gv": gv, "dm": dm, "dv": dv, "t": t, "key": key}, (dl, gl)

    vstep = jax.jit(jax.vmap(step))
    states = jax.vmap(init)(jax.random.split(jax.random.PRNGKey(0), S))
    t0 = time.perf_counter()
    states, out = vstep(states)
    jax.block_until_ready(out)
    compile_s = time.perf_counter() - t0
    holder = [states]

    def one():
        holder[0], o = vstep(holder[0])
        jax.block_until_ready(o)

    one()

    def measure() -> float:
        per_call, _ = _timed(one, min_seconds, "cpu")
        return S / per_call

    return measure, {"compile_s": compile_s, "backend": jax.default_backend()}


# ----------------------------------------------------------------------------- seed 002's G step


def gen_step_cost(device: str, repeats: int = 200) -> dict[str, Any]:
    """Functional G step (no D parameter gradients) vs imperative G step (loss.backward()),
    on the pix2pix system: matmul FLOPs and time per G step."""
    system = systems.make_system("pix2pix", batch_size=64)
    gan = system.gan
    state = init_state(gan, fr.key(0), device=device)
    data = tuple(x.to(device) for x in system.data)
    cond, target = gan.loop.draw(gan, step_key(state), data, torch.float32)["real"]

    def functional():
        fake, gen_vjp, _ = torch.func.vjp(lambda p: gan.G(p, {}, cond), state.gen_params, has_aux=True)

        def g_of_fake(f):
            return torch.nn.functional.binary_cross_entropy(
                gan.D(state.disc_params, {}, (cond, f))[0], torch.ones(len(f), 1, device=device))

        d_fake, _ = torch.func.grad_and_value(g_of_fake)(fake)
        return gen_vjp(d_fake)

    run = reference.ReferenceRun(gan, state)

    def imperative():
        run.opt_g.zero_grad()
        fake = run.G(cond)
        loss = torch.nn.functional.binary_cross_entropy(run.D(cond, fake), torch.ones(len(fake), 1, device=device))
        loss.backward()

    with testing.MatmulFlops() as f_func:
        functional()
    with testing.MatmulFlops() as f_imp:
        imperative()
    t_func, _ = _timed(functional, 1.0, device)
    t_imp, _ = _timed(imperative, 1.0, device)
    return {"functional_flops": f_func.flops, "imperative_flops": f_imp.flops,
            "functional_ms": t_func * 1e3, "imperative_ms": t_imp * 1e3}


# ----------------------------------------------------------------------------- main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problems", default="gaussian1d,mnist")
    ap.add_argument("--sizes", default="1,16,256,1024,4096")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--chunk", type=int, default=256, help="runs per compiled call")
    ap.add_argument("--min-seconds", type=float, default=2.0)
    ap.add_argument("--imperative-steps", type=int, default=1000)
    ap.add_argument("--steps-per-chunk", type=int, default=10,
                    help="steps a chunk makes before the next chunk's turn (sweep.run makes all of them)")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved timing rounds per S (best kept)")
    ap.add_argument("--eager-max", type=int, default=1024, help="skip eager vmap above this S")
    ap.add_argument("--mode", default=None, help="torch.compile mode (reduce-overhead: CUDA graphs)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",")]
    results: dict[str, Any] = {"device": args.device, "torch": torch.__version__, "threads": torch.get_num_threads(),
                               "machine": platform.processor() or platform.machine(), "problems": {}}
    if args.device.startswith("cuda"):
        results["gpu"] = torch.cuda.get_device_name()
    for problem in args.problems.split(","):
        system = systems.make_system(problem, batch_size=100 if problem == "gaussian1d" else 64)
        imperative = imperative_runner(system, args.device, args.imperative_steps)
        rows = []
        print(f"\n{problem}: best of {args.repeats} interleaved rounds per S (seed-steps/s)", flush=True)
        print(f"{'S':>6} {'imperative':>11} {'eager':>11} {'compiled':>11} {'compile s':>9} {'jax':>11} "
              f"{'comp/imp':>9} {'comp/jax':>9} {'state B/seed':>12}")
        for S in sizes:
            row: dict[str, Any] = {"S": S}
            if S <= args.eager_max:  # slow and far behind: one round
                eager, _ = funcgan_runner(system, S, args.device, False, args.chunk, args.min_seconds)
                row["eager"] = eager()
            compiled, info = funcgan_runner(system, S, args.device, True, args.chunk, args.min_seconds, args.mode,
                                            args.steps_per_chunk)
            row.update(info)
            jax_run = jax_runner_gaussian1d(S, args.min_seconds) if problem == "gaussian1d" else None
            if jax_run is not None:
                row["jax_compile_s"] = jax_run[1]["compile_s"]
            # interleaved rounds, best of each: this machine's speed drifts between
            # rounds, and the best round is the one least disturbed
            best: dict[str, float] = {}
            for _ in range(args.repeats):
                rounds = {"imperative": imperative, "compiled": compiled}
                if jax_run is not None:
                    rounds["jax"] = jax_run[0]
                for name, measure in rounds.items():
                    best[name] = max(best.get(name, 0.0), measure())
            row.update(best)
            row["compiled_over_imperative"] = row["compiled"] / row["imperative"]
            if "jax" in row:
                row["compiled_over_jax"] = row["compiled"] / row["jax"]
            rows.append(row)
            fmt = lambda k: f"{row[k]:>11,.0f}" if k in row else f"{'-':>11}"
            print(f"{S:>6} {fmt('imperative')} {fmt('eager')} {fmt('compiled')} {row['compile_s']:>9.1f} {fmt('jax')} "
                  f"{row['compiled_over_imperative']:>8.1f}x "
                  + (f"{row['compiled_over_jax']:>8.2f}x" if "jax" in row else f"{'-':>9}")
                  + f" {row['state_bytes_per_seed']:>12,.0f}", flush=True)
        results["problems"][problem] = rows
    g = gen_step_cost(args.device)
    results["gen_step"] = g
    print(f"\nseed 002 G step (pix2pix, batch 64): matmul FLOPs functional {g['functional_flops']:,} vs "
          f"imperative {g['imperative_flops']:,} ({g['imperative_flops'] / g['functional_flops']:.2f}x); "
          f"time {g['functional_ms']:.3f} ms vs {g['imperative_ms']:.3f} ms")
    results["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
