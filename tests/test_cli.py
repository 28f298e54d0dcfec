"""The command line: train, sweep, verify, export, report; resume after kill -9; bad input refused.

Bad input is one line on stderr and exit code 2, before anything trains (the catalogue is below).
Resumed runs are compared bitwise with uninterrupted ones (the same eager steps, the same keys).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from funcgan import checkpoint, sweep, systems
from funcgan.cli import main

FAST = ["--no-progress", "--samples", "200"]


def _cli(tmp_path, *argv) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "funcgan", *argv], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_train_prints_summary_and_writes_outputs(tmp_path, capsys):
    rc = main(["train", "--steps", "30", *FAST, "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0
    assert "final D loss" in out and "generated: mean" in out and "eager" in out
    payload = json.loads((tmp_path / "metrics.json").read_text())
    assert payload["logged_steps"][-1] == 30 and len(payload["history"]["gen/loss"]) == len(payload["logged_steps"])
    assert (tmp_path / "losses.png").stat().st_size > 0 and (tmp_path / "samples.png").stat().st_size > 0
    assert checkpoint.read_meta(tmp_path / "state.safetensors")["kind"] == "train"


@pytest.mark.parametrize("argv,needle", [
    (["--problem", "mnist", "--scheme", "simultaneous", "--loss", "hinge", "--gp", "1", "--n-disc", "2"], "hinge"),
    (["--loss", "rasgan"], "rasgan"),
    (["--problem", "digits", "--ema", "0.999"], "ema_gen_pixel_mean"),
    (["--problem", "pix2pix"], "l1_to_target"),
    (["--problem", "ring8", "--scheme", "unrolled", "--unroll", "2"], "modes"),
    (["--problem", "dirac", "--scheme", "consensus"], "radius"),
    (["--problem", "dcgan", "--width", "4", "--batch-size", "8", "--loss", "wasserstein", "--gp", "10", "--n-disc",
      "5"], "wasserstein"),
    (["--problem", "sngan", "--width", "4", "--batch-size", "8", "--n-disc", "2"], "hinge"),
    (["--problem", "cgan", "--width", "4", "--batch-size", "8"], "gen_pixel_mean"),
])
def test_every_system_trains_with_any_loop_objective_and_penalty(argv, needle, capsys):
    assert main(["train", "--steps", "3", *FAST, *argv]) == 0
    assert needle in capsys.readouterr().out


def test_sweep_grids_penalty_weights_and_groups_the_summary(tmp_path, capsys):
    rc = main(["sweep", "--problem", "ring8", "--hidden", "8", "--batch-size", "16", "--seeds", "0:3", "--steps", "4",
               "--gp", "1,10", "--no-compile", *FAST, "--out", str(tmp_path)])
    assert rc == 0
    rows = json.loads((tmp_path / "per_seed.json").read_text())
    assert len(rows) == 6 and {r["gp"] for r in rows} == {1.0, 10.0}
    groups = json.loads((tmp_path / "summary.json").read_text())["summary"]["groups"]
    assert [(g["gp"], g["seeds"], g["diverged"]) for g in groups] == [(1.0, 3, 0), (10.0, 3, 0)]
    assert "gp=1.0: 3 seeds" in capsys.readouterr().out


def test_diverging_seeds_are_flagged_reported_and_excluded(tmp_path, capsys):
    rc = main(["sweep", "--seeds", "0:2", "--steps", "40", "--gen-lr", "1e-3,1e6", "--no-compile", *FAST,
               "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0 and "flagged as diverged: 2" in out and "diverged: seed 0 at step" in out
    groups = json.loads((tmp_path / "summary.json").read_text())["summary"]["groups"]
    assert groups[1]["diverged"] == 2 and groups[1]["metrics"] == {} and groups[0]["diverged"] == 0
    rc = main(["train", "--steps", "40", "--gen-lr", "1e6", *FAST])
    assert rc == 1 and "flagged at step" in capsys.readouterr().out


def test_a_lone_run_is_its_sweep_row_bitwise(tmp_path):
    main(["sweep", "--seeds", "3,5,8", "--steps", "25", "--no-compile", *FAST, "--out", str(tmp_path / "s")])
    main(["train", "--seed", "5", "--steps", "25", *FAST, "--out", str(tmp_path / "t")])
    s = json.loads((tmp_path / "s" / "per_seed.json").read_text())[1]
    t = json.loads((tmp_path / "t" / "per_seed.json").read_text())[0]
    assert s["seed"] == t["seed"] == 5
    for k in ("disc_loss", "gen_loss", "gen_mean", "gen_std"):
        assert s[k] == t[k]


def test_resume_continues_the_same_run_bitwise_with_its_step_numbering(tmp_path, capsys):
    main(["train", "--steps", "12", *FAST, "--log-every", "3", "--out", str(tmp_path / "full")])
    main(["train", "--steps", "7", *FAST, "--log-every", "3", "--out", str(tmp_path / "part")])
    assert main(["train", "--resume", str(tmp_path / "part"), "--steps", "12", *FAST]) == 0
    assert "resumed from" in capsys.readouterr().out
    a = json.loads((tmp_path / "full" / "metrics.json").read_text())
    b = json.loads((tmp_path / "part" / "metrics.json").read_text())
    assert a["logged_steps"] == b["logged_steps"] == [3, 6, 9, 12]
    assert a["history"] == b["history"]
    assert a["summary"] == b["summary"]


def test_sweep_resume_refuses_a_different_grid(tmp_path):
    assert main(["sweep", "--seeds", "0:2", "--steps", "3", "--gen-lr", "1e-3", "--no-compile", *FAST,
                 "--out", str(tmp_path)]) == 0
    assert main(["sweep", "--resume", str(tmp_path), "--gen-lr", "1e-2", *FAST]) == 2
    assert main(["sweep", "--resume", str(tmp_path), "--seeds", "0:3", *FAST]) == 2
    assert main(["sweep", "--resume", str(tmp_path), "--steps", "5", *FAST]) == 0


def _kill_when(proc, path: Path, predicate, timeout=240):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if path.exists() and predicate():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("the run never reached the point to kill it at")


def test_kill_9_during_training_loses_at_most_the_steps_since_the_last_checkpoint(tmp_path):
    """A sweep killed with SIGKILL resumes from its last checkpoint and ends bitwise equal to an
    uninterrupted sweep."""
    args = ["sweep", "--seeds", "0:4", "--steps", "400", "--checkpoint-every", "40", "--no-compile", "--chunk-size",
            "2", *FAST]
    full = tmp_path / "full"
    assert _cli(tmp_path, *args, "--out", str(full)).returncode == 0
    part = tmp_path / "part"
    proc = subprocess.Popen([sys.executable, "-m", "funcgan", *args, "--out", str(part)], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    ckpt = part / "state.safetensors"

    def midway():
        try:
            return 0 < sum(_steps(ckpt)) < 1600
        except Exception:
            return False

    _kill_when(proc, ckpt, midway)
    done = sum(_steps(ckpt))
    assert 0 < done < 1600
    resumed = _cli(tmp_path, "sweep", "--resume", str(part), *FAST)
    assert resumed.returncode == 0, resumed.stderr
    a = json.loads((full / "per_seed.json").read_text())
    b = json.loads((part / "per_seed.json").read_text())
    assert a == b


def _steps(path):
    meta = checkpoint.read_meta(path)
    spec_points = meta["points"]
    system = systems.make_system(meta["config"]["problem"])
    template = sweep.init_sweep(system.gan, [{k: v for k, v in p.items()} for p in spec_points])
    return checkpoint.load(path, template).state.step.tolist()


def test_kill_9_during_a_checkpoint_write_leaves_the_previous_checkpoint(tmp_path):
    """A writer killed mid-write leaves the old checkpoint intact and a temporary file, which the next
    run clears; the checkpoint itself is never torn."""
    out = tmp_path / "run"
    assert main(["train", "--steps", "5", *FAST, "--out", str(out)]) == 0
    before = (out / "state.safetensors").read_bytes()
    script = (
        "import os, signal, sys\n"
        "from funcgan import checkpoint\n"
        "real_fsync = os.fsync\n"
        "def kill(fd):\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "os.fsync = kill\n"
        "from funcgan import systems, random as fr\n"
        "from funcgan.step import init_state\n"
        "s = systems.make_system('gaussian1d')\n"
        f"checkpoint.save({str(out / 'state.safetensors')!r}, init_state(s.gan, fr.key(1)), meta={{}})\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    assert (out / "state.safetensors").read_bytes() == before
    stray = [p for p in out.iterdir() if p.name.startswith(".funcgan-tmp-")]
    assert stray, "the killed writer should have left its temporary file"
    assert main(["train", "--resume", str(out), "--steps", "6", *FAST]) == 0
    assert not [p for p in out.iterdir() if p.name.startswith(".funcgan-tmp-")]


def test_export_writes_state_dicts_that_load_into_the_users_module(tmp_path, capsys):
    from funcgan import nets

    out = tmp_path / "run"
    assert main(["sweep", "--problem", "sngan", "--width", "4", "--batch-size", "8", "--n-disc", "1", "--seeds", "0:2",
                 "--steps", "2", "--no-compile", *FAST, "--out", str(out), "--ema", "0.9"]) == 0
    assert main(["export", str(out), "--seed", "1", "--ema"]) == 0
    from safetensors.torch import load_file

    g = nets.SNGANGenerator(128, 4, 1)
    g.load_state_dict(load_file(out / "seed1_gen.safetensors"))
    d = nets.SNGANDiscriminator(4, 1)
    d.load_state_dict(load_file(out / "seed1_disc.safetensors"))
    g.eval()
    assert torch.isfinite(g(torch.randn(2, 128))).all()
    assert main(["export", str(out), "--seed", "7"]) == 2
    blocker = tmp_path / "a-file"
    blocker.write_text("x")  # --out under a file: bad input (exit 2), refused before anything is written
    assert main(["export", str(out), "--seed", "1", "--out", str(blocker / "sub" / "g")]) == 2
    assert "cannot write there" in capsys.readouterr().err


def test_verify_passes_and_prints_table(capsys):
    assert main(["verify", "--steps", "3", "--problems", "gaussian1d,mnist,sngan", "--dtypes", "float64"]) == 0
    out = capsys.readouterr().out
    assert out.count(" ok ") == 3 and "buffers" in out


def test_report_small(tmp_path):
    rc = main(["report", "--problems", "ring8", "--schemes", "alternating,simultaneous", "--seeds", "2", "--steps", "4",
               "--dirac-steps", "8", "--hidden", "8", "--out", str(tmp_path)])
    assert rc == 0
    text = (tmp_path / "report.md").read_text()
    assert "| ring8 | alternating |" in text and "| simultaneous |" in text


BAD_INPUT = [
    (["train", "--problem", "cifar"], "unknown problem 'cifar'"),
    (["train", "--problem", "mnist", "--data-dir", "/nonexistent"], "data directory '/nonexistent' does not exist"),
    (["train", "--lr", "-1"], "--lr must be > 0"),
    (["train", "--lr", "nan"], "--lr: values must be finite"),
    (["train", "--lr", "abc"], "not a comma-separated list of numbers"),
    (["train", "--steps", "0"], "--steps must be >= 1"),
    (["train", "--steps", "2.5"], "--steps: '2.5' is not an integer"),
    (["train", "--steps", str(2**32 + 1)], "--steps must be at most 2**32 = 4,294,967,296"),
    (["verify", "--steps", str(2**32 + 1)], "--steps must be at most 2**32"),
    # a run's history of 2**32 steps logged every step (~256 GiB) cannot be held: refused, not OOM-killed
    (["train", "--steps", str(2**32), "--log-every", "1"], "1 run(s) of 4,294,967,296 steps need about"),
    (["sweep", "--seeds", "0:1000000000", "--steps", "1"], "1,000,000,000 run(s) of 1 steps need about"),
    (["sweep", "--seeds", f"0:{2**63}", "--steps", "1"], "9,223,372,036,854,775,808 run(s) of 1 steps need"),
    (["verify", "--problems", ","], "--problems: no problem given"),
    (["train", "--seed", "-1"], "--seed must be in [0, 9223372036854775808)"),
    (["train", "--seed", str(2**64)], "--seed must be in [0, 9223372036854775808)"),
    (["train", "--log-every", "0"], "--log-every must be >= 1"),
    (["train", "--samples", "0"], "--samples must be >= 1"),
    (["train", "--checkpoint-every", "-5"], "--checkpoint-every must be >= 1"),
    (["train", "--gen-lr", "1e-3,1e-4"], "one value expected here"),
    (["train", "--scheme", "leapfrog"], "unknown scheme 'leapfrog'"),
    (["train", "--loss", "kl"], "unknown objective 'kl'"),
    (["train", "--unroll", "3"], "option 'unroll' does not apply to the alternating loop"),
    (["train", "--n-disc", "0"], "--n-disc must be >= 1"),
    (["train", "--gp", "-1"], "--gp must be >= 0"),
    (["train", "--clip", "0"], "--clip must be > 0"),
    (["train", "--ema", "1.5"], "--ema must be in [0, 1)"),
    (["train", "--penalty-every", "2"], "--penalty-every needs a penalty"),
    (["train", "--problem", "gaussian1d", "--width", "8"], "--width does not apply to problem 'gaussian1d'"),
    (["train", "--gen-clip-norm", "1"], "does not apply to problem 'gaussian1d' (its optimizers do not clip)"),
    (["train", "--scheme", "adaptive", "--loss", "rasgan"], "steps D on real and generated data separately"),
    (["train", "--problem", "sngan", "--loss", "bce"], "outputs logits"),
    (["train", "--compile", "--no-compile"], "contradict each other"),
    (["train", "--mode", "reduce-overhead"], "--mode needs a compiled run"),
    (["train", "--compile", "--mode", "eager"], "--mode: unknown torch.compile mode 'eager'"),
    (["train", "--compile", "--backend", "nope"], "--backend: unknown torch.compile backend 'nope'"),
    (["train", "--compile", "--backend", "aot_eager", "--mode", "max-autotune"], "applies to the inductor backend only"),
    (["train", "--compile", "--mode", "reduce-overhead"], "makes CUDA graphs; the device is cpu"),
    (["train", "--backend", "aot_eager"], "--backend needs a compiled run"),
    (["sweep", "--compile", "--mode", "fast"], "--mode: unknown torch.compile mode 'fast'"),
    (["train", "--device", "tpu"], "--device: bad device 'tpu'"),
    (["train", "--dtype", "float16"], "invalid choice"),
    (["train", "--bogus"], "unrecognized arguments: --bogus"),
    (["train", "--resume", "/nonexistent/run"], "no checkpoint there"),
    (["sweep", "--seeds", "3:3"], "gives no seeds"),
    (["sweep", "--seeds", "1,1"], "repeats a seed"),
    (["sweep", "--seeds", "0,18446744073709551616"], "seeds must be in [0, 2**63)"),
    (["sweep", "--seeds", "a:b"], "--seeds: bad value"),
    (["sweep", "--chunk-size", "-3"], "--chunk-size must be >= 1"),
    (["sweep", "--chunk-size", "0"], "--chunk-size must be >= 1"),
    (["sweep", "--gen-lr", "0"], "--gen-lr must be > 0"),
    (["sweep", "--gen-lr", "1e-3,1e-3"], "repeats a value"),
    (["sweep", "--gen-betas", "0.5"], "is not B1:B2"),
    (["sweep", "--gen-betas", "1.5:0.9"], "betas[0] must be in [0.0, 1.0)"),
    (["sweep", "--problem", "ring8", "--l1-weight", "1,2"], "does not apply to the alternating loop"),
    (["report", "--schemes", "leapfrog"], "unknown scheme 'leapfrog'"),
    (["export", "/nonexistent/run"], "no checkpoint there"),
    (["verify", "--problems", "cifar"], "unknown problem 'cifar'"),
    (["bench", "--problems", "cifar"], "--problems: unknown problem 'cifar'"),
    (["bench", "--sizes", "1,x"], "--sizes: 'x' is not an integer"),
    (["bench", "--sizes", "0"], "--sizes must be >= 1"),
    (["bench", "--chunk", "0"], "--chunk must be >= 1"),
    (["bench", "--repeats", "0"], "--repeats must be >= 1"),
    (["bench", "--steps-per-call", "0"], "--steps-per-call must be >= 1"),
    (["bench", "--min-seconds", "nan"], "--min-seconds must be a finite number > 0"),
    (["bench", "--mode", "eager"], "--mode: unknown torch.compile mode 'eager'"),
    (["bench", "--device", "tpu"], "--device: bad device 'tpu'"),
    (["bench", "--json", "/nonexistent/dir/out.json"], "directory '/nonexistent/dir' does not exist"),
    (["bench", "--bogus"], "unrecognized arguments: --bogus"),
]


@pytest.mark.parametrize("argv,needle", BAD_INPUT)
def test_bad_input_is_one_line_and_exit_code_2(argv, needle, capsys, tmp_path):
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert needle in err, err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_bad_resume_files_are_refused_with_a_message(tmp_path, capsys):
    for name, payload in (("empty", b""), ("garbage", b"not a checkpoint at all" * 10)):
        d = tmp_path / name
        d.mkdir()
        (d / "state.safetensors").write_bytes(payload)
        assert main(["train", "--resume", str(d)]) == 2
        assert "not a readable funcgan checkpoint" in capsys.readouterr().err
    good = tmp_path / "good"
    assert main(["train", "--steps", "3", *FAST, "--out", str(good)]) == 0
    raw = (good / "state.safetensors").read_bytes()
    (good / "state.safetensors").write_bytes(raw[: len(raw) // 2])  # truncated
    assert main(["train", "--resume", str(good)]) == 2
    assert "not a readable funcgan checkpoint" in capsys.readouterr().err


def test_resume_refuses_options_that_would_be_ignored(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--steps", "3", *FAST, "--out", str(out)]) == 0
    for argv, needle in ((["--lr", "0.1"], "--lr: a resumed train keeps its settings"),
                         (["--gp", "1"], "--gp: a resumed train keeps its settings"),
                         (["--dtype", "float64"], "--dtype: a resumed train keeps its settings"),
                         (["--seed", "4"], "the resumed run is seed 0")):
        assert main(["train", "--resume", str(out), *argv, *FAST]) == 2
        assert needle in capsys.readouterr().err


def test_unwritable_out_is_refused_before_training(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["train", "--out", str(blocker / "sub"), *FAST]) == 2
    assert "cannot write there" in capsys.readouterr().err


def test_cuda_request_without_cuda_is_a_clear_error(capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(["train", "--device", "cuda"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_python_dash_m_entry_point(tmp_path):
    proc = _cli(tmp_path, "--help")
    assert proc.returncode == 0 and "train" in proc.stdout and "sweep" in proc.stdout and "export" in proc.stdout
    proc = _cli(tmp_path, "train", "--seed", "-3")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


# The command's quick exit (funcgan.cli.console_main: atexit handlers, stdout and stderr flushed, then
# os._exit instead of the interpreter's teardown of torch): nothing a normal exit keeps may be lost.
# The children run with stdout block-buffered (PYTHONUNBUFFERED removed), so a missing flush would show.


def _buffered_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONUNBUFFERED", "FUNCGAN_FULL_EXIT")}


_ROUTE_PROBE = """
import os, sys
real = os._exit
os._exit = lambda code: (sys.stderr.write("quick exit\\n"), sys.stderr.flush(), real(code))
import funcgan.cli as cli
sys.argv = ["funcgan", "train", "--steps", "20", "--no-progress", "--samples", "200", *sys.argv[2:]]
mode = os.environ["PROBE_MODE"]
if mode == "traced":
    sys.settrace(lambda *a: None)  # a tracer (pdb, coverage) writes after the command: the full exit
cli.console_main()
"""


@pytest.mark.parametrize("mode", ["quick", "traced", "asked"])
def test_the_command_takes_the_quick_exit_only_where_nothing_is_left_to_do(tmp_path, mode):
    env = {**_buffered_env(), "PROBE_MODE": mode, **({"FUNCGAN_FULL_EXIT": "1"} if mode == "asked" else {})}
    proc = subprocess.run([sys.executable, "-c", _ROUTE_PROBE, "x", "--out", "out"], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert ("quick exit" in proc.stderr) == (mode == "quick")
    lines = proc.stdout.rstrip().splitlines()  # every line arrived through the block-buffered pipe
    assert any(x.startswith("data:") for x in lines) and lines[-1] == "wrote out/state.safetensors"
    assert checkpoint.read_meta(tmp_path / "out" / "state.safetensors")["kind"] == "train"
    assert json.loads((tmp_path / "out" / "summary.json").read_text())


def test_the_quick_exit_keeps_the_exit_code_of_bad_input(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "funcgan", "train", "--steps", "0"], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path, env=_buffered_env())
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_output_the_quick_exit_cannot_write_is_an_error_not_a_success(tmp_path):
    """stdout on a full device: the final flush fails, and the exit says so with Python's code 120."""
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "funcgan", "train", "--steps", "5", "--no-progress"], stdout=full,
                              stderr=subprocess.PIPE, text=True, timeout=300, cwd=tmp_path, env=_buffered_env())
    assert proc.returncode == 120 and "could not write the command's output" in proc.stderr


_EXIT_PROBE = """
import atexit, sys
import funcgan.cli as cli
atexit.register(lambda: print("atexit ran"))
print("a line held in the pipe's buffer")
if sys.argv[1] == "raw":
    import os; os._exit(3)  # the negative control: os._exit alone
cli._exit_now(3)
"""


@pytest.mark.parametrize("how", ["funcgan", "raw"])
def test_exit_now_runs_atexit_and_flushes_where_a_raw_os_exit_loses_output(how):
    proc = subprocess.run([sys.executable, "-c", _EXIT_PROBE, how], capture_output=True, text=True, timeout=120,
                          env=_buffered_env())
    assert proc.returncode == 3, proc.stderr
    lines = proc.stdout.splitlines()
    assert ("a line held in the pipe's buffer" in lines) == (how == "funcgan")  # the flush
    assert ("atexit ran" in lines) == (how == "funcgan")  # the handlers; the raw exit loses both


def test_the_quick_exit_waits_like_python_for_a_running_non_daemon_thread():
    from funcgan.cli import _quick_exit_safe

    assert _quick_exit_safe() or sys.gettrace() is not None  # pytest's threads are daemons (a coverage run traces)
    release = threading.Event()
    worker = threading.Thread(target=release.wait)
    worker.start()
    try:
        assert not _quick_exit_safe()
    finally:
        release.set()
        worker.join()


@pytest.mark.parametrize("before", ["enable", "disable"])
def test_importing_funcgan_leaves_the_garbage_collector_as_it_found_it(before):
    probe = f"import gc; gc.{before}(); import funcgan; print(gc.isenabled())"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(before == "enable")


def test_self_times_count_a_nested_call_in_the_inner_part_only():
    """``funcgan bench --profile``'s eager breakdown: with a clock that ticks once a reading, an outer
    call (6 ticks from its start to its end, 2 of them inside an inner call) and a second, lone inner
    call (2 ticks) give exact self times; an inclusive count (the outer call's 6) would fail."""
    from funcgan.bench import SelfTimes

    ticks = iter(range(100))
    times = SelfTimes(clock=lambda: float(next(ticks)))
    inner = times.wrap(lambda: next(ticks), "inner")  # reads the clock once: 2 ticks from start to end

    def body():
        next(ticks)
        inner()
        next(ticks)

    times.wrap(body, "outer")()
    inner()
    assert times.spent == {"inner": 4.0, "outer": 4.0}


@pytest.mark.parametrize("scheme", [None, "reuse"])
def test_bench_eager_profile_names_every_part_of_a_step(scheme, capsys):
    """Every part is reached, the guard and the forward included, and so are the updates a loop makes
    through names it imported itself (ReuseFake's G step: ``apply_gradients`` and ``vjp`` in
    ``funcgan.loops.base`` and ``.reuse``); patched names are restored afterwards."""
    from funcgan import bench, step
    from funcgan.loops import base
    from funcgan.systems import seeds

    from funcgan.loops import ReuseFake

    parts = bench.profile_eager(seeds.gaussian1d(scheme=ReuseFake if scheme else None), steps=5)
    named = [k for k in parts if k not in ("total", "other (loop code, metrics, bookkeeping)")]
    assert set(named) == {label for _, _, label in bench._eager_parts()}
    assert all(parts[k] > 0 for k in named) and parts["total"] > 0
    # self times partition the timed calls, which all lie inside the timed run: a call counted twice
    # (in its own part and its caller's) could push the sum past the run's wall time
    assert sum(parts[k] for k in named) <= parts["total"]
    assert base.apply_gradients is step.apply_gradients and base.grad_and_value is torch.func.grad_and_value
    assert not capsys.readouterr().out  # the profile prints nothing itself


def test_bench_eager_profile_counts_updates_made_through_a_by_name_import(monkeypatch):
    """Negative control: with only ``funcgan.step``'s own name patched (the first version), ReuseFake's G
    update, made through ``funcgan.loops.base``'s import, is not counted: fewer optimizer calls."""
    from funcgan import bench
    from funcgan.loops import ReuseFake
    from funcgan.systems import seeds

    counted = []
    real_wrap = bench.SelfTimes.wrap

    def wrap(self, fn, label):
        inner = real_wrap(self, fn, label)
        return (lambda *a, **k: counted.append(1) or inner(*a, **k)) if label == "optimizer updates" else inner

    monkeypatch.setattr(bench.SelfTimes, "wrap", wrap)
    system = seeds.gaussian1d(scheme=ReuseFake)
    bench.profile_eager(system, steps=4)
    full = len(counted)
    real_parts = bench._eager_parts
    monkeypatch.setattr(bench, "_eager_parts", lambda: [p for p in real_parts() if p[0].__name__ != "funcgan.loops.base"])
    counted.clear()
    bench.profile_eager(system, steps=4)
    assert full == 2 * 4 and len(counted) == 4  # D and G updates each step; without base's name: D only


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_an_unbuffered_output_that_fails_mid_command_is_one_line_and_code_120(tmp_path):
    """With ``PYTHONUNBUFFERED=1`` the summary's ``print`` itself fails (no final flush to catch it): the
    error is still one line on stderr and exit code 120, not a traceback."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "funcgan", "train", "--steps", "5", "--no-progress"], stdout=full,
                              stderr=subprocess.PIPE, text=True, timeout=300, cwd=tmp_path, env=env)
    assert proc.returncode == 120, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "No space left on device" in proc.stderr


def test_the_machines_io_error_inside_a_command_names_its_file_and_others_keep_their_traceback(monkeypatch, capfd):
    """An OSError of the machine escaping a command (a full disk, here from a patched command) is one line
    with its reason and file; any other OSError (a bug's, an unchecked input's) is raised as it is."""
    import errno

    from funcgan.cli import run

    def failing(error):
        def cmd(args):
            raise error

        return cmd

    monkeypatch.setattr(run, "cmd_train", failing(OSError(errno.ENOSPC, "No space left on device", "runs/x/m.jsonl")))
    assert main(["train", "--steps", "5"]) == 120
    assert capfd.readouterr().err == "funcgan: stopped by an I/O error: No space left on device: runs/x/m.jsonl\n"
    monkeypatch.setattr(run, "cmd_train", failing(PermissionError(errno.EACCES, "Permission denied", "x")))
    with pytest.raises(PermissionError):
        main(["train", "--steps", "5"])
    monkeypatch.setattr(run, "cmd_train", failing(FileNotFoundError(errno.ENOENT, "No such file", "y")))
    with pytest.raises(FileNotFoundError):
        main(["train", "--steps", "5"])


def test_a_resumed_compiled_run_says_where_its_keys_are_hashed_for_the_steps_left():
    """``sweep.run`` chooses host or in-step hashing again on resume, by the run-steps left; the resumed
    line says which, with the same rule (an eager run, CUDA or another backend say nothing of it)."""
    from types import SimpleNamespace

    from funcgan.cli.driver import _resumed_hashing

    spec = SimpleNamespace(compile=True, device="cpu", backend="inductor")
    few, many = sweep.HOST_HASH_RUN_STEPS, sweep.HOST_HASH_RUN_STEPS + 1
    assert _resumed_hashing(spec, few).endswith(f"{few:,} run-steps left, keys hashed on the host")
    assert _resumed_hashing(spec, many).endswith("keys hashed in the step")
    for elsewhere in ({"device": "cpu", "backend": "aot_eager"}, {"device": "cuda", "backend": "inductor"}):
        assert _resumed_hashing(SimpleNamespace(compile=True, **elsewhere), few) == ""  # no host hash there
    assert _resumed_hashing(SimpleNamespace(compile=False, device="cpu", backend="inductor"), few) == ""
