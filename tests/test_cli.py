"""The command line: train, verify, sweep, report; clear errors for bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from funcgan.cli import main


def test_train_prints_summary_and_writes_outputs(tmp_path, capsys):
    rc = main(["train", "--steps", "30", "--no-progress", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0
    assert "final D loss" in out and "final G loss" in out and "generated: mean" in out and "data:      mean" in out
    payload = json.loads((tmp_path / "metrics.json").read_text())
    assert len(payload["history"]["gen/loss"]) == 30
    assert (tmp_path / "losses.png").stat().st_size > 0 and (tmp_path / "samples.png").stat().st_size > 0


@pytest.mark.parametrize("problem,needle", [("digits", "mean pixel"), ("pix2pix", "mean |G(a) - b|"),
                                            ("mnist", "mean pixel"), ("ring8", "modes covered"),
                                            ("dirac", "distance to equilibrium")])
def test_train_every_problem(problem, needle, capsys):
    assert main(["train", "--problem", problem, "--steps", "5", "--no-progress"]) == 0
    assert needle in capsys.readouterr().out


def test_verify_passes_and_prints_table(capsys):
    assert main(["verify", "--steps", "3", "--problems", "gaussian1d,mnist"]) == 0
    out = capsys.readouterr().out
    assert out.count(" ok ") == 4 and "float64" in out and "float32" in out


def test_sweep_writes_table_summary_and_plots(tmp_path, capsys):
    rc = main(["sweep", "--seeds", "0:4", "--steps", "6", "--gen-lr", "1e-3,1e-2", "--no-compile", "--no-progress",
               "--samples", "200", "--out", str(tmp_path)])
    assert rc == 0
    rows = json.loads((tmp_path / "per_seed.json").read_text())
    assert len(rows) == 8 and {r["gen_lr"] for r in rows} == {1e-3, 1e-2}
    summary = json.loads((tmp_path / "summary.json").read_text())["summary"]
    assert summary["runs"] == 8 and summary["diverged"] == 0
    assert (tmp_path / "losses.png").exists() and (tmp_path / "distributions.png").exists()


def test_sweep_game_options_reach_the_system(tmp_path, capsys):
    rc = main(["sweep", "--problem", "ring8", "--scheme", "unrolled", "--unroll", "2", "--seeds", "0:2", "--steps", "3",
               "--no-compile", "--no-progress", "--out", str(tmp_path)])
    assert rc == 0
    assert "unrolled" in capsys.readouterr().out
    assert {"modes", "hq_fraction", "reverse_kl"} <= set(json.loads((tmp_path / "per_seed.json").read_text())[0])


def test_report_small(tmp_path, capsys):
    rc = main(["report", "--problems", "ring8", "--schemes", "alternating,simultaneous", "--seeds", "2", "--steps", "4",
               "--dirac-steps", "8", "--hidden", "8", "--out", str(tmp_path)])
    assert rc == 0
    text = (tmp_path / "report.md").read_text()
    assert "| ring8 | alternating |" in text and "| simultaneous |" in text


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["train", "--problem", "cifar"], "unknown problem 'cifar'"),
        (["train", "--problem", "mnist", "--data-dir", "/nonexistent"], "data directory '/nonexistent' does not exist"),
        (["train", "--lr", "-1"], "lr must be finite and > 0"),
        (["train", "--n-disc", "2", "--problem", "mnist"], "--n-disc does not apply to problem 'mnist'"),
        (["train", "--steps", "0"], "--steps must be >= 1"),
        (["sweep", "--seeds", "3:3"], "gives no seeds"),
        (["sweep", "--seeds", "1,1"], "repeats a seed"),
        (["sweep", "--gen-lr", "0"], "lr must be finite and > 0"),
        (["sweep", "--gen-clip-norm", "1.0"], "needs the GAN's gen optimizer to clip"),
        (["train", "--problem", "ring8", "--scheme", "leapfrog"], "unknown scheme 'leapfrog'"),
        (["report", "--schemes", "leapfrog"], "unknown scheme 'leapfrog'"),
    ],
)
def test_bad_input_exits_with_a_clear_message(argv, needle):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert needle in str(e.value)


def test_cuda_request_without_cuda_is_a_clear_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(SystemExit, match="CUDA is not available"):
        main(["train", "--device", "cuda"])


def test_python_dash_m_entry_point():
    proc = subprocess.run([sys.executable, "-m", "funcgan", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "train" in proc.stdout and "sweep" in proc.stdout


def test_checkpoint_resume_continues_the_same_run(tmp_path, capsys):
    import torch

    from funcgan import checkpoint, systems
    from funcgan import random as fr
    from funcgan.train import init_state, make_train_step

    assert main(["train", "--steps", "7", "--no-progress", "--out", str(tmp_path / "a"), "--dtype", "float64"]) == 0
    assert main(["train", "--steps", "5", "--no-progress", "--resume", str(tmp_path / "a" / "state.safetensors"),
                 "--out", str(tmp_path / "b"), "--dtype", "float64"]) == 0
    assert "resumed from" in capsys.readouterr().out
    system = systems.make_system("gaussian1d")
    template = init_state(system.gan, fr.key(0), dtype=torch.float64)
    resumed = checkpoint.load(tmp_path / "b" / "state.safetensors", template)
    state, step = template, make_train_step(system.gan)
    for _ in range(12):
        state, _ = step(state, ())
    assert int(resumed.step) == 12
    for k in state.gen_params:
        assert torch.equal(resumed.gen_params[k], state.gen_params[k])
    assert checkpoint.read_meta(tmp_path / "b" / "state.safetensors")["step"] == 12


def test_checkpoint_mismatch_is_a_clear_error(tmp_path):
    from funcgan import checkpoint, systems
    from funcgan import random as fr
    from funcgan.train import init_state

    a = init_state(systems.make_system("gaussian1d").gan, fr.key(0))
    checkpoint.save(a, tmp_path / "a.safetensors")
    b = init_state(systems.make_system("digits").gan, fr.key(0))
    with pytest.raises(ValueError, match="does not match the state"):
        checkpoint.load(tmp_path / "a.safetensors", b)
