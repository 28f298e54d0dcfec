"""``funcgan bench``: funcgan against the imperative loop (and JAX) side by side, in one process.

    funcgan bench                                             # CPU, gaussian1d and mnist, S in 1..4096
    funcgan bench --problems gaussian1d --sizes 1,256,1024 --json out.json
    funcgan bench --problems dcgan,sngan --sizes 1,16 --profile
    funcgan bench --device cuda --sizes 1,1024,16384,65536

For every problem and S, one table row: seed-steps per second of

* **imperative**: :mod:`funcgan.testing.reference`'s loop for the system (``nn.Module`` +
  ``torch.optim`` + ``.backward()`` + ``.detach()``), its random inputs from ``torch.randn`` as the
  seeds draw them, seed after seed (its rate per seed does not depend on S);
* **eager**: funcgan's plain step, one run after the other (what ``--no-compile`` runs);
* **compiled**: ``torch.compile(vmap(step))`` (inductor) in chunks of ``--chunk`` runs (default: the
  chunk ``sweep.run`` picks, :func:`funcgan.memory.cpu_chunk` on the CPU), each chunk
  making ``--steps-per-chunk`` steps in turn as ``sweep.run`` drives a sweep; with
  ``--steps-per-call K`` K steps per compiled call;
* **jax**: the same 1-D GAN in JAX (``jit(vmap(step))``, threefry keys, hand-written Adam) when jax is
  installed (never a dependency); only ``gaussian1d`` has a JAX port.

This machine's speed drifts: the competitors are timed in ``--repeats`` interleaved rounds and
each keeps its best round; compare ratios within a row. ``--profile`` prints where a step's time
goes (eager: by funcgan module; compiled: by kernel kind, and the per-call overhead).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

from funcgan import random as fr
from funcgan import sweep, systems
from funcgan.cli import options as O
from funcgan.cli.options import CLIError
from funcgan.step import init_state, make_train_step, step_key
from funcgan.testing.reference import ReferenceRun, reference_step_for
from funcgan.tree import tree_leaves, tree_map

__all__ = ["main", "imperative_runner", "eager_runner", "compiled_runner", "jax_runner_gaussian1d", "SMALL"]

#: the conv systems at the width the CPU rows use (the README says which)
SMALL = {"dcgan": {"width": 16}, "sngan": {"width": 16}, "cgan": {"width": 16}}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed(fn: Callable[[], Any], min_seconds: float, device: str) -> float:
    """Seconds per call of ``fn``, called repeatedly for at least ``min_seconds``."""
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        if n >= 2:
            _sync(device)
            el = time.perf_counter() - t0
            if el >= min_seconds:
                return el / n


def imperative_runner(system, device: str, steps: int) -> Callable[[], float]:
    """``measure() -> steps/s`` of the imperative reference loop, inputs from ``torch.randn``."""
    gan = system.gan
    state = init_state(gan, fr.key(0), device=device)
    run = ReferenceRun(gan, state)
    step = reference_step_for(gan)
    data = tuple(x.to(device) for x in system.data)
    template = gan.loop.draw(gan, step_key(state), data, torch.float32)

    def fresh(x):  # the seeds draw their noise and batches with torch's global RNG
        if isinstance(x, torch.Tensor) and x.is_floating_point():
            return torch.randn_like(x)
        if isinstance(x, torch.Tensor) and x.dtype == torch.int64 and x.dim() > 0 and x.shape[-1] != 2:
            return torch.randint_like(x, 0, 10)
        return x

    def inputs():
        return tree_map(fresh, template)

    for _ in range(5):
        step(run, inputs())

    def measure() -> float:
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            step(run, inputs())
        _sync(device)
        return steps / (time.perf_counter() - t0)

    return measure


def eager_runner(system, device: str, steps: int) -> Callable[[], float]:
    """``measure() -> steps/s`` of funcgan's plain eager step (one run; eager sweeps run runs in turn)."""
    gan = system.gan
    state = [init_state(gan, fr.key(0), device=device)]
    step = make_train_step(gan)
    data = tuple(x.to(device) for x in system.data)
    for _ in range(3):
        state[0], _ = step(state[0], data)

    def measure() -> float:
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            state[0], _ = step(state[0], data)
        _sync(device)
        return steps / (time.perf_counter() - t0)

    return measure


def state_bytes_per_seed(states, S: int) -> float:
    return sum(x.numel() * x.element_size() for x in tree_leaves(states)) / S


def compiled_runner(
    system,
    S: int,
    device: str,
    chunk: int | None,
    min_seconds: float,
    mode: str | None = None,
    steps_per_chunk: int = 10,
    steps_per_call: int = 1,
) -> tuple[Callable[[], float], dict[str, Any]]:
    """``(measure, info)``: ``measure() -> seed-steps/s`` of the compiled sweep step on S runs in chunks,
    driven as :func:`funcgan.sweep.run` drives them (a chunk's steps, then the next chunk's)."""
    gan = system.gan
    C = sweep.choose_chunk(system, S, chunk, True, device).chunk_size
    torch._dynamo.reset()
    n_chunks = -(-S // C)
    all_states = sweep.init_sweep(gan, sweep.grid(range(n_chunks * C)), device=device)
    chunks = [tree_map(lambda x, i=i: x[i * C : (i + 1) * C].clone(), all_states) for i in range(n_chunks)]
    del all_states
    data = tuple(x.to(device) for x in system.data)
    kernel_threads = sweep.lone_run_threads(S, device)
    step = sweep.make_sweep_step(
        gan, compile=True, mode=mode, kernel_threads=kernel_threads, steps_per_call=steps_per_call
    )
    callers = [sweep.caller(step) for _ in range(n_chunks)]  # as sweep.run calls it
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    cudagraphs = mode is not None and "reduce-overhead" in mode
    calls = max(1, steps_per_chunk // steps_per_call)

    def advance(i):
        if cudagraphs:
            torch.compiler.cudagraph_mark_step_begin()
        chunks[i], _ = callers[i](chunks[i], data)
        if cudagraphs:
            chunks[i] = tree_map(torch.clone, chunks[i])

    t0 = time.perf_counter()
    advance(0)
    _sync(device)
    compile_s = time.perf_counter() - t0

    def all_chunks():
        for i in range(n_chunks):
            for _ in range(calls):
                advance(i)

    all_chunks()
    all_chunks()

    def measure() -> float:
        per_iter = _timed(all_chunks, min_seconds, device)
        return n_chunks * C * calls * steps_per_call / per_iter

    info = {"compile_s": compile_s, "chunk": C, "state_bytes_per_seed": state_bytes_per_seed(chunks[0], C)}
    if device.startswith("cuda"):
        info["peak_mem_bytes_per_seed"] = torch.cuda.max_memory_allocated() / (n_chunks * C)
    return measure, info


def jax_runner_gaussian1d(S: int, min_seconds: float, batch: int = 100):
    """The seed-000 GAN in JAX: ``jit(vmap(step))`` over per-seed threefry keys, hand-written Adam."""
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None

    def init_linear(key, n_in, n_out):
        kw, kb = jax.random.split(key)
        bound = 1.0 / jnp.sqrt(n_in)
        return {
            "w": jax.random.uniform(kw, (n_in, n_out), minval=-bound, maxval=bound),
            "b": jax.random.uniform(kb, (n_out,), minval=-bound, maxval=bound),
        }

    def init(key):
        k = jax.random.split(key, 5)
        g = [init_linear(k[0], 10, 50), init_linear(k[1], 50, 1)]
        d = [init_linear(k[2], 1, 50), init_linear(k[3], 50, 1)]
        zeros = lambda t: jax.tree_util.tree_map(jnp.zeros_like, t)  # noqa: E731
        return {
            "g": g,
            "d": d,
            "gm": zeros(g),
            "gv": zeros(g),
            "dm": zeros(d),
            "dv": zeros(d),
            "t": jnp.zeros((), jnp.int32),
            "key": k[4],
        }

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
        bc1, bc2 = 1 - b1**t, 1 - b2**t
        params = jax.tree_util.tree_map(lambda p, m, v: p - lr / bc1 * m / (jnp.sqrt(v / bc2) + eps), params, m, v)
        return params, m, v

    def step(s):
        key, kr, kz1, kz2 = jax.random.split(s["key"], 4)
        real = jax.random.normal(kr, (batch, 1))
        fake = jax.lax.stop_gradient(mlp(s["g"], jax.random.normal(kz1, (batch, 10)), False))
        t = s["t"] + 1
        dl, dg = jax.value_and_grad(lambda d: bce(mlp(d, real, True), 1.0) + bce(mlp(d, fake, True), 0.0))(s["d"])
        d, dm, dv = adam(s["d"], dg, s["dm"], s["dv"], t)
        z = jax.random.normal(kz2, (batch, 10))
        gl, gg = jax.value_and_grad(lambda g: bce(mlp(d, mlp(g, z, False), True), 1.0))(s["g"])
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
        return S / _timed(one, min_seconds, "cpu")

    return measure, {"compile_s": compile_s, "backend": jax.default_backend()}


# ----------------------------------------------------------------------------- where the time goes


def _eager_parts() -> list[tuple[Any, str, str]]:
    """``(owner, attribute, label)`` of what an eager step is timed in: every public function of
    :mod:`funcgan.random` (the keys and draws, wherever they are called from: loops, data, dropout),
    the networks' forward (both routes of :func:`funcgan.nets.make_apply`), the gradient transforms
    (funcgan's own and ``torch.func``'s where a loop calls them by name), the optimizer updates
    (wherever a module imported ``apply_gradients`` by name) and the guard."""
    import importlib
    import pkgutil

    import torch.func

    from funcgan import guard, loops, step
    from funcgan.nets import functional

    draws = [name for name in fr.__all__ if name != "host_hash"]  # host_hash: a context manager
    parts: list[tuple[Any, str, str]] = [(fr, name, "random numbers (keys, draws)") for name in draws]
    parts += [
        (functional._Slots, "call", "networks (forward)"),
        (functional, "functional_call", "networks (forward)"),
        (step, "_grad_and_value", "autograd (backward, losses)"),
        (guard, "check", "guard"),
    ]
    transforms = {getattr(torch.func, name): name for name in ("grad", "grad_and_value", "vjp")}
    modules = [step] + [
        importlib.import_module(f"funcgan.loops.{m.name}") for m in pkgutil.iter_modules(loops.__path__)
    ]
    for module in modules:  # the names each module calls (a by-name import binds its own)
        if getattr(module, "apply_gradients", None) is step.apply_gradients:
            parts.append((module, "apply_gradients", "optimizer updates"))
        for name in transforms.values():
            if transforms.get(getattr(module, name, None)) == name:
                parts.append((module, name, "autograd (backward, losses)"))
    return parts


class SelfTimes:
    """Self time per label of timed calls that may nest: a call's time less that of the timed calls
    made inside it (a network's forward inside a gradient counts as the forward only)."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter):
        self.spent: dict[str, float] = {}
        self._open: list[float] = []  # per open timed call: the time its timed callees took
        self._clock = clock

    def wrap(self, fn: Callable, label: str) -> Callable:
        """``fn``, its calls timed under ``label``."""

        def run(*args: Any, **kwargs: Any) -> Any:
            self._open.append(0.0)
            t = self._clock()
            try:
                return fn(*args, **kwargs)
            finally:
                took = self._clock() - t
                inner = self._open.pop()
                self.spent[label] = self.spent.get(label, 0.0) + took - inner
                if self._open:
                    self._open[-1] += took

        return run


def profile_eager(system, steps: int = 50) -> dict[str, float]:
    """Milliseconds per eager step (``sweep.run(..., compile=False)`` of one run, as the CLI drives it),
    by what they are spent in: each part's self time (:class:`SelfTimes`; a dropout key drawn inside
    a forward counts as random numbers), and the rest (the loop's own code, metrics, the sweep's
    bookkeeping, its setup and results spread over the steps) as "other". The timers cost ~1 us a
    call, so the parts add up to a little more than an untimed step."""
    sweep.run(system, [{"seed": 0}], 3, compile=False)  # warm
    times = SelfTimes()
    patched: list[tuple[Any, str, Callable]] = []
    try:
        for owner, name, label in _eager_parts():
            fn = getattr(owner, name)
            setattr(owner, name, times.wrap(fn, label))
            patched.append((owner, name, fn))  # restored below, even if a later patch fails
        t0 = time.perf_counter()
        sweep.run(system, [{"seed": 0}], steps, compile=False)
        total = time.perf_counter() - t0
    finally:
        for owner, name, fn in patched:
            setattr(owner, name, fn)
    out = {"total": total / steps * 1e3}
    out.update({label: v / steps * 1e3 for label, v in times.spent.items()})
    out["other (loop code, metrics, bookkeeping)"] = out["total"] - sum(times.spent.values()) / steps * 1e3
    return out


def profile_compiled(system, S: int, calls: int = 20) -> dict[str, float]:
    """Milliseconds per compiled call, by kernel kind (RNG, matrix products, fused elementwise) and the
    per-call overhead (dynamo's cache lookup and guards, the wrapper), from torch's profiler."""
    import torch._inductor.config as ic
    from torch.profiler import ProfilerActivity, profile

    with ic.patch({"cpp.enable_kernel_profile": True}):
        st = sweep.init_sweep(system.gan, sweep.grid(range(S)))
        fn = sweep.caller(sweep.make_sweep_step(system.gan, compile=True))
        for _ in range(4):
            st, _ = fn(st, system.data)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(calls):
                st, _ = fn(st, system.data)
    parts = {
        "total": 0.0,
        "random numbers": 0.0,
        "matrix products (bmm/mm)": 0.0,
        "fused kernels": 0.0,
        "call overhead (guards, wrapper)": 0.0,
    }
    for ev in prof.key_averages():
        ms = ev.self_cpu_time_total / 1e3 / calls
        parts["total"] += ms
        name = ev.key
        if "cpp_fused" in name and ("rshift" in name or "bitwise_xor" in name) and "bmm" not in name:
            parts["random numbers"] += ms
        elif name.startswith("aten::bmm") or name.startswith("aten::mm") or name.startswith("aten::addmm"):
            parts["matrix products (bmm/mm)"] += ms
        elif "cpp_fused" in name:
            parts["fused kernels"] += ms
        else:
            parts["call overhead (guards, wrapper)"] += ms
    return parts


def _print_profile(problem: str, eager: dict[str, float], compiled: dict[str, float] | None, S: int) -> None:
    print(f"\n{problem}: where an eager step's {eager['total']:.2f} ms go (self time, timers included):")
    for k, v in eager.items():
        if k != "total":
            print(f"  {k:<40} {v:7.3f} ms")
    if compiled:
        print(f"{problem}: where a compiled call at S={S} ({compiled['total']:.3f} ms) goes:")
        for k, v in compiled.items():
            if k != "total":
                print(f"  {k:<34} {v:7.3f} ms")


# ----------------------------------------------------------------------------- main


def _checked(args: argparse.Namespace) -> tuple[list[str], list[int]]:
    """The problems and sizes, every option checked before anything is timed (``CLIError`` otherwise)."""
    problems = [p for p in args.problems.split(",") if p.strip()]
    unknown = [p for p in problems if p not in systems.PROBLEMS]
    if unknown or not problems:
        raise CLIError(
            f"--problems: unknown problem '{unknown[0] if unknown else args.problems}'; "
            f"choose from {', '.join(systems.PROBLEMS)}"
        )
    items = [v for v in args.sizes.split(",") if v.strip()]
    if not items:
        raise CLIError("--sizes: no size given")
    sizes = [O.parse_int("sizes", v) for v in items]
    O.device(args.device)
    for name in ("chunk", "imperative_steps", "steps_per_chunk", "steps_per_call", "repeats"):
        if getattr(args, name) is not None:
            O.parse_int(name.replace("_", "-"), getattr(args, name))
    if not (math.isfinite(args.min_seconds) and args.min_seconds > 0):
        raise CLIError(f"--min-seconds must be a finite number > 0, got {args.min_seconds}")
    O.compile_settings(None, args.mode, args.device)
    if args.json is not None:
        parent = os.path.dirname(os.path.abspath(args.json))
        if not os.path.isdir(parent) or os.path.isdir(args.json):
            raise CLIError(
                f"--json {args.json}: "
                + ("is a directory" if os.path.isdir(args.json) else f"directory '{parent}' does not exist")
            )
    return problems, sizes


def main(argv=None) -> int:
    """Run the benchmark; 0, or 2 with one line on stderr for bad input (before anything is timed)."""
    try:
        return _main(argv)
    except CLIError as e:
        print(f"funcgan: {e}" if not str(e).startswith("funcgan") else str(e), file=sys.stderr)
        return 2


def _main(argv) -> int:
    ap = O.Parser(prog="funcgan bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problems", default="gaussian1d,mnist")
    ap.add_argument("--sizes", default="1,16,256,1024,4096")
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--chunk",
        type=int,
        default=None,
        help="runs per compiled call (default: sweep.run's own; on the CPU funcgan.memory.cpu_chunk, else 256)",
    )
    ap.add_argument("--min-seconds", type=float, default=2.0)
    ap.add_argument("--imperative-steps", type=int, default=300)
    ap.add_argument("--steps-per-chunk", type=int, default=10)
    ap.add_argument("--steps-per-call", type=int, default=1, help="steps inside one compiled call")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved timing rounds per S (best kept)")
    ap.add_argument("--mode", default=None, help="torch.compile mode (reduce-overhead: CUDA graphs)")
    ap.add_argument("--profile", action="store_true", help="print where a step's time goes")
    ap.add_argument("--no-jax", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    problems, sizes = _checked(args)
    results: dict[str, Any] = {
        "device": args.device,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "problems": {},
        "steps_per_call": args.steps_per_call,
    }
    if args.device.startswith("cuda"):
        results["gpu"] = torch.cuda.get_device_name()
    for problem in problems:
        system = systems.make_system(problem, **SMALL.get(problem, {}))
        imperative = imperative_runner(system, args.device, args.imperative_steps)
        eager = eager_runner(system, args.device, max(20, args.imperative_steps // 4))
        rows = []
        print(f"\n{problem}: best of {args.repeats} interleaved rounds per S (seed-steps/s)", flush=True)
        print(
            f"{'S':>6} {'imperative':>11} {'eager':>9} {'compiled':>11} {'compile s':>9} {'jax':>11} "
            f"{'comp/imp':>9} {'comp/jax':>9} {'state B/seed':>12}"
        )
        for S in sizes:
            row: dict[str, Any] = {"S": S}
            compiled, info = compiled_runner(
                system,
                S,
                args.device,
                args.chunk,
                args.min_seconds,
                args.mode,
                args.steps_per_chunk,
                args.steps_per_call,
            )
            row.update(info)
            jax_run = None if args.no_jax or problem != "gaussian1d" else jax_runner_gaussian1d(S, args.min_seconds)
            if jax_run is not None:
                row["jax_compile_s"] = jax_run[1]["compile_s"]
            best: dict[str, float] = {}
            for _ in range(args.repeats):
                rounds = {"imperative": imperative, "eager": eager, "compiled": compiled}
                if jax_run is not None:
                    rounds["jax"] = jax_run[0]
                for name, measure in rounds.items():
                    best[name] = max(best.get(name, 0.0), measure())
            row.update(best)
            row["compiled_over_imperative"] = row["compiled"] / row["imperative"]
            if "jax" in row:
                row["compiled_over_jax"] = row["compiled"] / row["jax"]
            rows.append(row)
            fmt = lambda k, w=11, row=row: f"{row[k]:>{w},.0f}" if k in row else f"{'-':>{w}}"  # noqa: E731
            print(
                f"{S:>6} {fmt('imperative')} {fmt('eager', 9)} {fmt('compiled')} {row['compile_s']:>9.1f} "
                f"{fmt('jax')} {row['compiled_over_imperative']:>8.1f}x "
                + (f"{row['compiled_over_jax']:>8.2f}x" if "jax" in row else f"{'-':>9}")
                + f" {row['state_bytes_per_seed']:>12,.0f}",
                flush=True,
            )
        results["problems"][problem] = rows
        if args.profile:
            pe = profile_eager(system)
            width = max(r["chunk"] for r in rows)  # the widest chunk timed
            pc = profile_compiled(system, width) if args.device == "cpu" else None
            _print_profile(problem, pe, pc, width)
            results["problems"][problem + "/profile"] = {"eager": pe, "compiled": pc}
    results["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
        print(f"wrote {args.json}")
    return 0
