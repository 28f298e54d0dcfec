"""The one driver behind ``funcgan train`` and ``funcgan sweep``: it never loses a run.

* The output directory is created and tested for writing before anything trains.
* The whole sweep (every run's state and the metrics history) is checkpointed
  atomically every ``--checkpoint-every`` steps and at the end of every chunk, to
  ``OUT/state.safetensors``; a killed run resumes with ``--resume OUT`` exactly
  where its last checkpoint stood, bitwise, with its step numbering continued.
* A resumed run keeps the settings it was started with: an option that contradicts
  the checkpoint (another learning rate, another grid) is refused, not ignored.
* Diverging seeds are flagged by the guard (:mod:`funcgan.guard`), reported with
  their step and reason, and excluded from the summaries.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from funcgan import checkpoint as ckpt
from funcgan import sweep
from funcgan.cli.options import DTYPES, CLIError, build_system
from funcgan.guard import Guard
from funcgan.systems import System

__all__ = ["RunSpec", "prepare_out", "load_resume", "drive", "progress_bar", "CHECKPOINT"]

CHECKPOINT = "state.safetensors"


@dataclass
class RunSpec:
    """Everything that defines a run (stored in its checkpoint)."""

    kind: str  # "train" or "sweep"
    config: dict[str, Any]
    points: list[dict[str, Any]]
    steps: int
    dtype: str = "float32"
    device: str = "cpu"
    compile: bool = True
    backend: str = "inductor"
    mode: str | None = None
    chunk_size: int | str | None = None
    log_every: int = 10
    checkpoint_every: int = 500
    guard: dict[str, Any] = field(default_factory=dict)
    steps_per_call: int = 1
    why: str = field(default="", compare=False)  # how compile was chosen (printed, not a setting)

    def meta(self) -> dict[str, Any]:
        d = asdict(self)
        d["points"] = [{k: list(v) if isinstance(v, tuple) else v for k, v in p.items()} for p in self.points]
        return d

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> RunSpec:
        fields = {k: meta[k] for k in cls.__dataclass_fields__ if k in meta}
        fields["points"] = [{k: tuple(v) if isinstance(v, list) else v for k, v in p.items()} for p in fields["points"]]
        return cls(**fields)

    def make_guard(self) -> Guard:
        return Guard(**self.guard)


class _NullBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(total: int, desc: str, enabled: bool = True):
    """A tqdm progress bar when tqdm is installed (``funcgan[progress]``) and enabled, else a no-op."""
    if enabled:
        try:
            from tqdm.auto import tqdm

            return tqdm(total=total, desc=desc, dynamic_ncols=True, leave=False)
        except ImportError:
            pass
    return _NullBar()


def prepare_out(out: str | None) -> Path | None:
    """Create ``out`` and prove it writable now (a probe file), clearing stale checkpoint temporaries."""
    if out is None:
        return None
    d = Path(out)
    try:
        d.mkdir(parents=True, exist_ok=True)
        probe = d / f".funcgan-probe-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        raise CLIError(f"--out {out}: cannot write there ({e.strerror or e})")
    ckpt.remove_stale_temporaries(d)
    return d


def load_resume(path: str) -> tuple[RunSpec, Path, Path]:
    """``(spec, checkpoint_file, out_dir)`` of the run to resume (an --out directory or its checkpoint file)."""
    p = Path(path)
    file = p / CHECKPOINT if p.is_dir() else p
    if not file.exists():
        raise CLIError(f"--resume {path}: no checkpoint there (expected {file})")
    try:
        meta = ckpt.read_meta(file)
        spec = RunSpec.from_meta(meta)
    except (ckpt.CheckpointError, KeyError, TypeError) as e:
        raise CLIError(f"--resume {path}: {e}")
    except ImportError as e:
        raise CLIError(str(e))
    return spec, file, file.parent


def check_resume_options(spec: RunSpec, requested: dict[str, Any], what: str) -> None:
    """Refuse options that contradict the resumed run's settings (``requested``: only those the user gave)."""
    for k, v in requested.items():
        stored = spec.config.get(k)
        if k == "loop_options" or k == "penalties":
            for kk, vv in v.items():
                if (stored or {}).get(kk) != vv:
                    raise CLIError(
                        f"--{kk.replace('_', '-')}: a resumed {what} keeps its settings "
                        f"(the checkpoint has {(stored or {}).get(kk)!r}, not {vv!r})"
                    )
        elif stored != v:
            raise CLIError(
                f"--{k.replace('_', '-')}: a resumed {what} keeps its settings "
                f"(the checkpoint has {stored!r}, not {v!r})"
            )


def _resumed_hashing(spec: RunSpec, left: int) -> str:
    """Where a resumed compiled run hashes its keys: ``sweep.run`` chooses again by the run-steps left,
    so the choice printed when the run started may no longer hold (the numbers are the same either way)."""
    if not spec.compile or torch.device(spec.device).type != "cpu" or spec.backend != "inductor":
        return ""  # the host hash is an inductor-on-the-CPU choice; elsewhere there is nothing to say
    where = "on the host" if sweep.host_hash_pays(left, spec.device, spec.backend) else "in the step"
    return f"; {left:,} run-steps left, keys hashed {where}"


def drive(
    spec: RunSpec,
    system: System,
    out: Path | None,
    resume_file: Path | None = None,
    show_progress: bool = True,
    quiet: bool = False,
) -> sweep.SweepResult:
    """Train ``spec`` (from its checkpoint when resuming), checkpointing into ``out``."""
    dtype = DTYPES[spec.dtype]
    states = history = None
    if resume_file is not None:
        template = sweep.init_sweep(system.gan, spec.points, dtype, "cpu")
        try:
            loaded = ckpt.load(resume_file, template)
        except ckpt.CheckpointError as e:
            raise CLIError(f"--resume: {e}")
        states, history = loaded.state, (loaded.history, loaded.logged_steps)
    # the run-steps left, as sweep.run counts them (a run at or past spec.steps has none left)
    if states is not None:
        total = sum(max(spec.steps - s, 0) for s in states.step.tolist())
    else:
        total = len(spec.points) * spec.steps
    if states is not None and not quiet:
        done = int(states.step.min())
        print(
            f"resumed from {resume_file}: {len(spec.points)} run(s) at step {done}"
            + (f" to {int(states.step.max())}" if int(states.step.max()) != done else "")
            + _resumed_hashing(spec, total)
        )
    if out is not None:
        ckpt.remove_stale_temporaries(out)  # what a writer killed mid-write left
    bar = progress_bar(max(total, 0), f"{system.name}", show_progress)
    target = out / CHECKPOINT if out is not None else None
    last = [time.perf_counter()]

    def save(result: sweep.SweepResult) -> None:
        if target is None:
            return
        ckpt.save(target, result.state, meta=spec.meta(), history=(result.history, result.logged_steps))
        last[0] = time.perf_counter()

    try:
        result = sweep.run(
            system,
            spec.points,
            spec.steps,
            chunk_size=spec.chunk_size,
            device=spec.device,
            dtype=dtype,
            compile=spec.compile,
            backend=spec.backend,
            mode=spec.mode,
            log_every=spec.log_every,
            progress=bar.update,
            states=states,
            history=history,
            guard=spec.make_guard(),
            checkpoint=save if target is not None else None,
            checkpoint_every=spec.checkpoint_every,
            steps_per_call=spec.steps_per_call,
        )
    except (ValueError, TypeError) as e:
        raise CLIError(str(e))
    finally:
        bar.close()
    if target is not None:
        save(result)
    return result


def build(spec: RunSpec) -> System:
    """The system a spec describes."""
    return build_system(spec.config)


def echo(*parts: Any) -> None:
    print(*parts)
    sys.stdout.flush()


def dump_json(path: Path, payload: Any) -> str:
    tmp = path.parent / f".{path.name}.tmp"
    tmp.write_text(json.dumps(payload, indent=1, default=float))
    os.replace(tmp, path)
    return str(path)


def default_dtype_device(args) -> tuple[str, str]:
    from funcgan.cli.options import device

    return args.dtype or "float32", device(args.device)


def torch_threads() -> int:
    return torch.get_num_threads()
