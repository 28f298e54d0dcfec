"""Sharding over processes: 2 ranks write the same per-seed table as one process.

Launched by torchrun (workers use torchrun's store) and by hand with the
env:// variables a cluster launcher sets (rank 0 hosts the store).
"""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys

import pytest

ARGS = ["--seeds", "0:7", "--steps", "6", "--no-compile", "--no-progress", "--samples", "500"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _table(out):
    with open(out / "per_seed.csv") as f:
        return list(csv.DictReader(f))


def _one_process(tmp):
    out = tmp / "one"
    proc = subprocess.run([sys.executable, "-m", "funcgan", "sweep", *ARGS, "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return _table(out)


def _torchrun(tmp):
    out = tmp / "torchrun"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                           "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
                           "-m", "funcgan", "sweep", *ARGS, "--out", str(out)],
                          capture_output=True, text=True, timeout=300, env={**_env(), "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return _table(out), proc.stdout


def _by_hand(tmp):
    out = tmp / "by_hand"
    port = str(_free_port())
    procs = [subprocess.Popen([sys.executable, "-m", "funcgan", "sweep", *ARGS, "--out", str(out)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={**_env(), "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1",
                                   "MASTER_PORT": port, "RANK": str(r), "LOCAL_RANK": str(r),
                                   "WORLD_SIZE": "2"})
             for r in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert "wrote" not in outs[1]  # only rank 0 writes
    return _table(out), outs[0]


def _env():
    return {k: v for k, v in os.environ.items() if not k.startswith("TORCHELASTIC")}


def _assert_same(one, two):
    """Eager runs are the plain step whatever the process: the tables are equal, not just close."""
    assert [r["seed"] for r in two] == [r["seed"] for r in one] == [str(i) for i in range(7)]
    assert one == two


@pytest.mark.skipif(sys.platform == "win32", reason="torchrun on POSIX")
def test_two_process_sweep_equals_one_process(tmp_path):
    one = _one_process(tmp_path)
    two, stdout = _torchrun(tmp_path)
    assert "(2 processes)" in stdout
    _assert_same(one, two)
    two, stdout = _by_hand(tmp_path)
    assert "(2 processes)" in stdout
    _assert_same(one, two)


# rank 1 kills itself (SIGKILL) on the job's first attempt, instead of writing its third checkpoint
_DIES_ONCE = """
import os, signal, sys
from funcgan import checkpoint
from funcgan.cli import main
if os.environ["RANK"] == "1" and os.environ["TORCHELASTIC_RESTART_COUNT"] == "0":
    real, saves = checkpoint.save, []
    def save(*args, **kwargs):
        saves.append(1)
        if len(saves) == 3:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    checkpoint.save = save
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.skipif(sys.platform == "win32", reason="torchrun on POSIX")
def test_a_killed_rank_is_restarted_by_torchrun_and_resumes_from_its_own_checkpoint(tmp_path):
    """torchrun --max-restarts 1: rank 1 dies mid-sweep (SIGKILL), the elastic agent restarts the
    job, every rank continues from its own last checkpoint, and the gathered table is the one an
    uninterrupted single process writes."""
    args = ["sweep", "--seeds", "0:4", "--steps", "40", "--checkpoint-every", "10", "--no-compile", "--no-progress",
            "--samples", "500", "--chunk-size", "1"]
    one = tmp_path / "one"
    proc = subprocess.run([sys.executable, "-m", "funcgan", *args, "--out", str(one)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    script = tmp_path / "dies_once.py"
    script.write_text(_DIES_ONCE)
    out = tmp_path / "elastic"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--max-restarts",
                           "1", "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), str(script),
                           *args, "--out", str(out)],
                          capture_output=True, text=True, timeout=300, env={**_env(), "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "rank 1 restarted; resuming from" in proc.stdout  # the kill happened and rank 1 resumed
    assert _table(out) == _table(one)
