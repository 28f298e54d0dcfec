"""Data for the seed systems (imperative shell: file reading lives here).

* :func:`load_mnist`: MNIST from the standard IDX files (``train-images-idx3-ubyte``,
  optionally gzipped) in a directory the user provides.
* :func:`load_digits`: scikit-learn's bundled 8x8 digits (1,797 images), which
  ships inside the package, so nothing is downloaded; a stand-in for MNIST.
* :func:`glyph_digits`: 8x8 digits rendered from a built-in 5x7 bitmap font with
  random shifts and stroke intensities, drawn from a key; needs nothing.
* :func:`paired_digits`: seed 002's paired data set: (digit, the same digit
  rotated by 90 degrees), a pix2pix-style translation that trains in minutes.
* :func:`digits32`: the 8x8 digits (scikit-learn's, else the glyphs) upscaled to
  32x32 images in [-1, 1] with their labels, for the conv systems (DCGAN, SN-GAN, cGAN).

Flat images are float tensors in [0, 1], shape ``(N, H*W)``; :func:`digits32` gives
``(N, 1, 32, 32)``. This module reads files only when a system is built, never
inside a step; the systems import it, the core does not.
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import torch

from funcgan import random as fr

__all__ = [
    "load_mnist",
    "load_digits",
    "glyph_digits",
    "paired_digits",
    "digits32",
    "upscale",
    "check_data",
    "MNIST_FILES",
]

MNIST_FILES = ("train-images-idx3-ubyte", "train-images.idx3-ubyte")

# 5x7 bitmap font for 0-9, one string of 7 rows of 5 bits per digit.
_FONT = {
    0: ["01110", "10001", "10011", "10101", "11001", "10001", "01110"],
    1: ["00100", "01100", "00100", "00100", "00100", "00100", "01110"],
    2: ["01110", "10001", "00001", "00010", "00100", "01000", "11111"],
    3: ["11110", "00001", "00001", "01110", "00001", "00001", "11110"],
    4: ["00010", "00110", "01010", "10010", "11111", "00010", "00010"],
    5: ["11111", "10000", "11110", "00001", "00001", "10001", "01110"],
    6: ["00110", "01000", "10000", "11110", "10001", "10001", "01110"],
    7: ["11111", "00001", "00010", "00100", "01000", "01000", "01000"],
    8: ["01110", "10001", "10001", "01110", "10001", "10001", "01110"],
    9: ["01110", "10001", "10001", "01111", "00001", "00010", "01100"],
}


def _read_idx_images(path: Path) -> torch.Tensor:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 16:
        raise ValueError(f"load_mnist: {path} is too short to be an IDX image file")
    magic, n, rows, cols = struct.unpack(">IIII", raw[:16])
    if magic != 2051:
        raise ValueError(f"load_mnist: {path} is not an IDX3 image file (magic {magic}, expected 2051)")
    if len(raw) != 16 + n * rows * cols:
        raise ValueError(f"load_mnist: {path} holds {len(raw) - 16} pixel bytes, header says {n}x{rows}x{cols}")
    images = torch.frombuffer(bytearray(raw[16:]), dtype=torch.uint8).reshape(n, rows * cols)
    return images.to(torch.float32) / 255.0


def load_mnist(data_dir: str | os.PathLike) -> torch.Tensor:
    """MNIST training images ``(60000, 784)`` in [0, 1] from IDX files in ``data_dir``.

    Raises:
        FileNotFoundError: the directory or the image file is missing (the message
            names the files looked for).
    """
    d = Path(data_dir)
    if not d.is_dir():
        raise FileNotFoundError(f"load_mnist: data directory '{d}' does not exist")
    for name in MNIST_FILES:
        for cand in (d / name, d / (name + ".gz")):
            if cand.is_file():
                return _read_idx_images(cand)
    raise FileNotFoundError(
        f"load_mnist: no MNIST image file in '{d}'; expected one of "
        + ", ".join(n + s for n in MNIST_FILES for s in ("", ".gz"))
    )


def load_digits(with_labels: bool = False):
    """scikit-learn's 8x8 digits ``(1797, 64)`` in [0, 1] (needs ``funcgan[digits]``), and with
    ``with_labels`` their labels ``(1797,)`` int64."""
    try:
        from sklearn.datasets import load_digits as _sk_digits
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("load_digits needs scikit-learn: pip install 'funcgan[digits]'") from e
    bunch = _sk_digits()
    x = torch.as_tensor(bunch.data, dtype=torch.float32) / 16.0
    if with_labels:
        return x, torch.as_tensor(bunch.target, dtype=torch.int64)
    return x


def upscale(x: torch.Tensor, size: int = 32, side: int = 8) -> torch.Tensor:
    """Flat ``(N, side*side)`` images in [0, 1] as ``(N, 1, size, size)`` images in [-1, 1] (bilinear)."""
    img = x.reshape(-1, 1, side, side)
    big = torch.nn.functional.interpolate(img, size=(size, size), mode="bilinear", align_corners=False)
    return (big.clamp(0.0, 1.0) * 2.0 - 1.0).contiguous()


def digits32(key: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, str]:
    """``(images (N, 1, 32, 32) in [-1, 1], labels (N,), source)``: scikit-learn's digits upscaled, or
    4,096 built-in glyph digits (drawn from ``key``) when scikit-learn is not installed."""
    try:
        x, y = load_digits(with_labels=True)
        source = "scikit-learn 8x8 digits upscaled to 32x32"
    except ImportError:
        x, y = glyph_digits(key if key is not None else fr.key(3232), 4096)
        source = "built-in glyph digits upscaled to 32x32"
    return upscale(x), y, source


def glyph_digits(key: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` 8x8 digit images rendered from the built-in font, and their labels.

    Each image places a 5x7 glyph at a random offset (4 x 2 positions) with a
    random stroke intensity in [0.6, 1]. Deterministic given ``key``.

    Returns:
        ``(images (n, 64) float32, labels (n,) int64)``.
    """
    font = torch.tensor([[[int(c) for c in row] for row in _FONT[d]] for d in range(10)], dtype=torch.float32)
    k_lab, k_dx, k_dy, k_int = fr.split(key, 4)
    labels = fr.randint(k_lab, (n,), 0, 10)
    dx = fr.randint(k_dx, (n,), 0, 4)
    dy = fr.randint(k_dy, (n,), 0, 2)
    inten = fr.uniform(k_int, (n,), minval=0.6, maxval=1.0)
    canvas = torch.zeros(n, 8, 8)
    rows = torch.arange(7)[:, None] + dy[:, None, None]  # (n, 7, 1)
    cols = torch.arange(5)[None, :] + dx[:, None, None]  # (n, 1, 5)
    idx = torch.arange(n)[:, None, None]
    canvas[idx, rows, cols] = font[labels] * inten[:, None, None]
    return canvas.reshape(n, 64), labels


def paired_digits(key: torch.Tensor, n: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
    """Seed 002's paired set: (glyph digit, the digit rotated 90 degrees), each ``(n, 64)``."""
    a, _ = glyph_digits(key, n)
    b = torch.rot90(a.reshape(n, 8, 8), k=1, dims=(1, 2)).reshape(n, 64).contiguous()
    return a, b


def check_data(name: str, x: torch.Tensor, feature_shape: tuple[int, ...] | None = None) -> None:
    """Raise a clear error unless ``x`` is a finite floating tensor of the expected feature shape."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: data must be a tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name}: data must be floating point, got {x.dtype}")
    if x.dim() < 2 or x.shape[0] == 0:
        raise ValueError(f"{name}: data must be (N, features...) with N >= 1, got shape {tuple(x.shape)}")
    if feature_shape is not None and tuple(x.shape[1:]) != tuple(feature_shape):
        raise ValueError(
            f"{name}: data examples have shape {tuple(x.shape[1:])}, the discriminator expects {tuple(feature_shape)}"
        )
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).any(dim=tuple(range(1, x.dim()))).sum())
        raise ValueError(f"{name}: data holds non-finite values in {bad} example(s)")
