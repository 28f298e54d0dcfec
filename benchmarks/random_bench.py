"""Normal samples per second: funcgan.random (eager, vmapped over keys, compiled) vs torch.randn.

    python benchmarks/random_bench.py [--device cuda] [--seeds 256] [--per-seed 2100]

The default shape is a sweep's draw: 256 seeds x 2,100 samples (one seed-step of
the seed-000 GAN draws 2,100 normals). All run in this one process; compare ratios.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from funcgan import random as fr  # noqa: E402


def rate(fn, n, device, seconds=2.0):
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    calls, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        calls += 1
        if device.startswith("cuda"):
            torch.cuda.synchronize()
    return n * calls / (time.perf_counter() - t0)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seeds", type=int, default=256)
    ap.add_argument("--per-seed", type=int, default=2100)
    args = ap.parse_args(argv)
    S, n, dev = args.seeds, args.per_seed, args.device
    keys = fr.split(fr.key(0, device=dev), S)
    draw = lambda k: fr.normal(k, (n,))
    vm = torch.func.vmap(draw, randomness="error")
    comp = torch.compile(vm, fullgraph=True)
    rows = [
        ("torch.randn (global RNG)", rate(lambda: torch.randn(S, n, device=dev), S * n, dev)),
        ("funcgan eager, stacked keys", rate(lambda: fr.normal(keys, (n,)), S * n, dev)),
        ("funcgan vmap(normal)", rate(lambda: vm(keys), S * n, dev)),
        ("funcgan compile(vmap(normal))", rate(lambda: comp(keys), S * n, dev)),
    ]
    base = rows[0][1]
    print(f"{S} keys x {n} normal samples, float32, {dev}, {torch.get_num_threads()} threads")
    for name, r in rows:
        print(f"  {name:<32} {r / 1e6:8.1f} M samples/s  ({r / base:5.2f}x torch.randn)")


if __name__ == "__main__":
    main()
