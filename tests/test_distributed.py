"""torchrun sharding: 2 gloo processes write the same per-seed table as one process."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest


def _sweep(tmp, nproc):
    out = tmp / f"out{nproc}"
    cmd = ["--seeds", "0:7", "--steps", "6", "--no-compile", "--no-progress", "--samples", "500", "--out", str(out)]
    if nproc == 1:
        args = [sys.executable, "-m", "funcgan", "sweep", *cmd]
    else:
        args = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
                "--master-addr", "127.0.0.1", "--master-port", str(29500 + os.getpid() % 1000),
                "-m", "funcgan", "sweep", *cmd]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with open(out / "per_seed.csv") as f:
        return list(csv.DictReader(f)), proc.stdout


@pytest.mark.skipif(sys.platform == "win32", reason="gloo via torchrun")
def test_two_process_sweep_equals_one_process(tmp_path):
    one, _ = _sweep(tmp_path, 1)
    two, stdout = _sweep(tmp_path, 2)
    assert "(2 processes)" in stdout
    assert [r["seed"] for r in two] == [r["seed"] for r in one] == [str(i) for i in range(7)]
    for a, b in zip(one, two):
        assert a.keys() == b.keys()
        for k in a:
            if k in ("seed", "diverged_at"):
                assert a[k] == b[k]
            else:  # same runs, different batch widths: equal up to float32 round-off
                assert abs(float(a[k]) - float(b[k])) <= 1e-4 * max(1.0, abs(float(a[k]))), (k, a[k], b[k])
