"""The shell's figures: drawn by a helper process or here, the same PNG either way, never dropped."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from funcgan.cli import paint  # noqa: E402


def _figures(tmp_path, tag: str) -> list[dict]:
    rng = np.random.default_rng(0)
    steps = np.arange(0, 100, 10)
    runs = rng.normal(size=(10, 3))
    return [
        {
            "kind": "curves",
            "path": str(tmp_path / f"{tag}-curves.png"),
            "title": "t",
            "panels": [
                {"title": "D", "x": steps, "runs": runs, "band": np.quantile(runs, [0.1, 0.5, 0.9], axis=1)},
                {"title": "G", "x": steps, "runs": runs[:, :1], "band": None},
            ],
        },
        {
            "kind": "hist",
            "path": str(tmp_path / f"{tag}-hist.png"),
            "title": "h",
            "series": [("a", rng.normal(size=500))],
        },
        {
            "kind": "scatter",
            "path": str(tmp_path / f"{tag}-scatter.png"),
            "title": "s",
            "xlabel": "x",
            "series": [("p", rng.normal(size=20), rng.normal(size=20), {"s": 3})],
        },
        {
            "kind": "image",
            "path": str(tmp_path / f"{tag}-image.png"),
            "title": "i",
            "pixels": rng.uniform(size=(9, 17)),
        },
    ]


def test_the_helper_draws_the_same_png_as_this_process(tmp_path):
    helper = paint.Painter(helper=True)
    assert helper.helper_running, helper.why_in_process
    by_helper = helper.draw(_figures(tmp_path, "helper"))
    assert helper.why_in_process is None  # nothing fell back to this process
    here = paint.Painter(helper=False).draw(_figures(tmp_path, "here"))
    assert len(by_helper) == len(here) == 4
    for a, b in zip(by_helper, here):
        data = Path(a).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert data == Path(b).read_bytes(), (a, b)  # Agg draws the same bytes from the same data


def test_a_helper_that_dies_leaves_the_figures_to_this_process(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "executable", "/bin/false")  # the "helper" exits 1 at once
    p = paint.Painter(helper=True)
    written = p.draw(_figures(tmp_path, "x"))
    assert "exited with 1" in (p.why_in_process or "")
    assert all(Path(w).read_bytes()[:4] == b"\x89PNG" for w in written)


def test_a_figure_the_helper_cannot_draw_raises_here_not_silently(tmp_path):
    bad = {"kind": "pie", "path": str(tmp_path / "pie.png"), "title": "?"}
    with paint.Painter(helper=True) as p, pytest.raises(ValueError, match="unknown figure kind 'pie'"):
        p.draw(_figures(tmp_path, "ok")[:1] + [bad])
    assert (tmp_path / "ok-curves.png").exists()  # the figures it could draw are written


def test_no_matplotlib_in_the_helper_writes_nothing(tmp_path, monkeypatch):
    fake = tmp_path / "fake"
    (fake / "matplotlib").mkdir(parents=True)
    (fake / "matplotlib" / "__init__.py").write_text("raise ImportError('no matplotlib here')\n")
    monkeypatch.setenv("PYTHONPATH", str(fake))
    figures = _figures(tmp_path, "none")
    assert paint.Painter(helper=True).draw(figures) == [None] * 4
    assert not any((tmp_path / f"none-{k}.png").exists() for k in ("curves", "hist", "scatter", "image"))


def test_no_matplotlib_here_starts_no_helper_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(paint, "available", lambda: False)
    p = paint.Painter()
    assert not p.helper_running and p.why_in_process == "no matplotlib"
    assert p.draw(_figures(tmp_path, "n")) == [None] * 4


@pytest.mark.parametrize("cores", [1, 2, 3])
def test_the_default_draws_here_without_cores_to_spare(monkeypatch, cores):
    monkeypatch.setattr(paint, "usable_cores", lambda: cores)
    monkeypatch.delitem(sys.modules, "matplotlib", raising=False)
    p = paint.Painter()
    assert not p.helper_running and p.why_in_process.startswith(f"{cores} core(s)")


def test_the_default_starts_a_helper_with_cores_to_spare(monkeypatch):
    monkeypatch.setattr(paint, "usable_cores", lambda: paint.HELPER_MIN_CORES)
    monkeypatch.delitem(sys.modules, "matplotlib", raising=False)
    with paint.Painter() as p:
        assert p.why_in_process is None and p.helper_running


def test_the_default_draws_here_once_matplotlib_is_loaded():
    import matplotlib  # noqa: F401

    p = paint.Painter()
    assert not p.helper_running and p.why_in_process == "matplotlib already imported here"


def test_close_stops_a_waiting_helper():
    p = paint.Painter(helper=True)
    proc = p._proc
    assert proc is not None and proc.poll() is None
    p.close()
    assert proc.poll() is not None and not p.helper_running
