"""The one place the shell draws figures (matplotlib: the optional extra ``funcgan[plots]``).

Figures from plain data can be drawn in a helper process so that matplotlib's import overlaps training:

``funcgan train`` and ``funcgan sweep`` describe their figures as plain dicts of numpy arrays,
strings and numbers (no torch). On a machine with cores to spare (:data:`HELPER_MIN_CORES`), a
:class:`Painter` made before training starts a helper Python process that imports matplotlib
(about half a second on a 2-core CPU, more than the figures take to draw) while the run trains;
:meth:`Painter.draw` hands it the figures when the run ends and waits for them. With fewer cores
the helper's import competes with training for them: on 2 cores, ``funcgan train`` (1-D GAN, 1000
steps) took 0.3-0.5 s longer with the helper than drawing here after training (medians of 5
interleaved runs), so there the figures are drawn here. When no helper can run (no interpreter
path, the helper dies, its answer is garbled, or matplotlib is already imported here, which makes
drawing in this process the cheaper way), the same :func:`draw` runs in this process: a figure is
never silently dropped.

This file imports nothing from funcgan and no torch, so the helper runs it as a plain script::

    python funcgan/cli/paint.py        # reads a pickled list of figures on stdin, answers per line

Figure kinds (``fig["kind"]``), each with ``path`` and ``title``:

* ``"curves"``: ``panels``, a list of ``{"title", "x", "runs" (T, n), "band" (3, T) or None}``: every
  run in grey and, with a band, the 10-90% range and the median.
* ``"hist"``: ``series``, a list of ``(label, values)``, overlaid density histograms.
* ``"scatter"``: ``series``, a list of ``(label, x, y, style)`` (``style``: matplotlib keywords),
  ``xlabel``, ``ylabel`` (optional), ``size`` (inches).
* ``"image"``: ``pixels`` (H, W) grey or (H, W, 3) in [0, 1], axes off.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
import subprocess
import sys
from typing import Any

__all__ = ["Painter", "draw", "available", "pyplot", "save", "usable_cores", "HELPER_MIN_CORES"]

_DPI = 110
#: the fewest usable cores on which the default :class:`Painter` starts a helper (see above)
HELPER_MIN_CORES = 4


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def available() -> bool:
    """Whether matplotlib is installed (the optional extra ``funcgan[plots]``), without importing it."""
    return importlib.util.find_spec("matplotlib") is not None


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def pyplot() -> Any | None:
    """``matplotlib.pyplot`` with the non-interactive Agg backend, or None if not installed (for a
    command that composes its own figure in this process, as ``funcgan report`` does)."""
    try:
        return _pyplot()
    except ImportError:
        return None


def save(fig: Any, path: Any, dpi: int = _DPI) -> str:
    """Lay out, write and close a figure; returns the path as a string."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return str(path)


def draw(fig_spec: dict[str, Any]) -> str:
    """Draw one figure described by ``fig_spec`` and write it to ``fig_spec["path"]``; returns the path."""
    plt = _pyplot()
    kind = fig_spec["kind"]
    if kind == "curves":
        panels = fig_spec["panels"]
        fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
        for ax, p in zip(axes[0], panels):
            runs = p["runs"]
            for i in range(runs.shape[1]):
                ax.plot(p["x"], runs[:, i], color="0.7", lw=0.3)
            if p.get("band") is not None:
                lo, mid, hi = p["band"]
                ax.fill_between(p["x"], lo, hi, alpha=0.3, label="10-90%")
                ax.plot(p["x"], mid, color="k", lw=1.2, label="median")
                ax.legend()
            ax.set_title(p["title"])
            ax.set_xlabel("step")
    elif kind == "hist":
        fig, ax = plt.subplots(figsize=(7, 4))
        for label, values in fig_spec["series"]:
            ax.hist(values, bins=80, alpha=0.5, density=True, label=label)
        ax.legend()
    elif kind == "scatter":
        fig, ax = plt.subplots(figsize=fig_spec.get("size", (5, 5)))
        for label, x, y, style in fig_spec["series"]:
            ax.scatter(x, y, label=label, **style)
        if fig_spec.get("xlabel"):
            ax.set_xlabel(fig_spec["xlabel"])
        if fig_spec.get("ylabel"):
            ax.set_ylabel(fig_spec["ylabel"])
        ax.legend()
    elif kind == "image":
        px = fig_spec["pixels"]
        fig, ax = plt.subplots(figsize=(6, 6 * px.shape[0] / px.shape[1]))
        ax.imshow(px, cmap="gray", vmin=0, vmax=1)
        ax.axis("off")
    else:
        raise ValueError(f"paint: unknown figure kind {kind!r}")
    if kind != "curves":
        ax.set_title(fig_spec["title"])
    return save(fig, fig_spec["path"])


class Painter:
    """Draws a run's figures, in a helper process started now when that is the faster way.

    Use it as a context manager around training, so the helper never outlives the command::

        with Painter() as painter:
            result = train(...)
            written = painter.draw([fig1, fig2])   # paths written (None where no matplotlib)

    Args:
        helper: ``None`` (default): a helper when matplotlib is installed and not yet imported in this
            process and at least :data:`HELPER_MIN_CORES` cores are usable; ``True``/``False``: always /
            never (tests use both).
    """

    def __init__(self, helper: bool | None = None):
        self.why_in_process: str | None = None
        self._proc: subprocess.Popen | None = None
        if helper is None:
            if not available():
                self.why_in_process = "no matplotlib"
            elif "matplotlib" in sys.modules:
                self.why_in_process = "matplotlib already imported here"
            elif (cores := usable_cores()) < HELPER_MIN_CORES:
                self.why_in_process = f"{cores} core(s): a helper would slow training more than it saves"
            helper = self.why_in_process is None
        if helper:
            self._start()

    def _start(self) -> None:
        if not sys.executable:
            self.why_in_process = "no interpreter path for a helper"
            return
        try:
            self._proc = subprocess.Popen(
                [sys.executable, os.path.abspath(__file__)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        except OSError as e:
            self.why_in_process = f"the helper did not start ({e})"

    @property
    def helper_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def draw(self, figures: list[dict[str, Any]], timeout: float = 600.0) -> list[str | None]:
        """Draw ``figures``; returns each one's path, or None for all when matplotlib is missing."""
        answers: dict[str, str] = {}
        if self._proc is not None:
            answers = self._ask_helper(figures, timeout)
        if answers.get("*") == "unavailable":
            return [None] * len(figures)
        out: list[str | None] = []
        for f in figures:
            if answers.get(str(f["path"])) == "ok":
                out.append(str(f["path"]))
            elif not available():
                out.append(None)
            else:  # not drawn by a helper (none, or it failed on this figure): draw it here
                out.append(draw(f))
        return out

    def _ask_helper(self, figures: list[dict[str, Any]], timeout: float) -> dict[str, str]:
        proc, self._proc = self._proc, None
        assert proc is not None
        try:
            stdout, stderr = proc.communicate(pickle.dumps(figures, protocol=pickle.HIGHEST_PROTOCOL), timeout)
        except (OSError, subprocess.TimeoutExpired) as e:
            proc.kill()
            proc.communicate()
            self.why_in_process = f"the helper failed ({type(e).__name__})"
            return {}
        answers: dict[str, str] = {}
        for line in stdout.decode("utf-8", "replace").splitlines():
            verdict, _, path = line.partition(" ")
            answers[path] = verdict
        if proc.returncode != 0:
            self.why_in_process = f"the helper exited with {proc.returncode}: {stderr.decode()[-300:]!r}"
        return answers

    def close(self) -> None:
        """Stop the helper if it is still waiting (the run failed before its figures)."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.communicate()  # reaps it and closes its pipes
            self._proc = None

    def __enter__(self) -> Painter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _helper_main() -> int:
    """The helper: import matplotlib first (the point of the helper), then draw what stdin asks."""
    try:
        _pyplot()
        ok = True
    except ImportError:
        ok = False
    try:
        figures = pickle.load(sys.stdin.buffer)
    except EOFError:  # the parent went away before its figures: nothing to draw
        return 0
    if not ok:
        print("unavailable *", flush=True)
        return 0
    for f in figures:
        try:
            draw(f)
            print(f"ok {f['path']}", flush=True)
        except Exception as e:  # reported per figure; the parent draws it again itself and shows the error
            print(f"failed {f['path']}", flush=True)
            print(f"{f['path']}: {type(e).__name__}: {e}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(_helper_main())
