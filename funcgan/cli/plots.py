"""The one place the shell imports matplotlib (optional extra ``funcgan[plots]``)."""

from __future__ import annotations

from typing import Any


def pyplot() -> Any | None:
    """``matplotlib.pyplot`` with the non-interactive Agg backend, or None if not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def save(fig: Any, path: Any, dpi: int = 110, tight: bool = True) -> str:
    """Lay out, write and close a figure; returns the path as a string."""
    import matplotlib.pyplot as plt

    if tight:
        fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return str(path)
