"""Explicit, splittable random keys (JAX style) written in plain tensor ops.

A key is an ``int64`` tensor of shape ``(2,)`` holding two 32-bit words. Every
function here is a pure function of its key: no global RNG is read or
advanced, so a seed's numbers never depend on which other seeds share a
``vmap`` batch, and eager, vmapped and compiled code draw the same numbers.

The generator is counter based: sample ``i`` of a key is a hash of
``(key, i)``. The hash is an xor-shift/multiply avalanche on 32-bit words
computed in int64 arithmetic; both multipliers are below 2**31, so no product
of a 32-bit word and a multiplier reaches 2**63 (signed overflow is undefined
in the C++ that inductor emits). All ops are elementwise, so the whole
generator vectorises under ``torch.func.vmap`` and fuses under
``torch.compile`` (or, under :func:`host_hash`, runs as one opaque host op of a
CPU graph: a shorter cold compile for a short run).

Keys may carry leading batch dimensions: a ``(S, 2)`` stack of keys gives
``(S, *shape)`` samples, each row equal to what its key gives alone.

Plainly eager on the CPU (:mod:`funcgan._mode`) the same integer hash runs on the host, where
an op costs a fraction of a dispatched torch op: a single key's ``split`` and ``fold_in`` in
Python integers, its draws in place in uint32 numpy, stacked keys in int64 numpy. Integer
arithmetic is exact in every form, so all give the torch route's bits (``tests/test_random.py``).

Example::

    k = funcgan.random.key(0)
    k_noise, k_data = funcgan.random.split(k)        # (2,) each
    z = funcgan.random.normal(k_noise, (64, 10))     # (64, 10) float32
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import TypeVar

import numpy as np
import torch

from funcgan._mode import plain_cpu_tensors

__all__ = [
    "key",
    "split",
    "fold_in",
    "bits",
    "uniform",
    "normal",
    "randint",
    "is_key",
    "host_hash",
]

Key = torch.Tensor
T = TypeVar("T", torch.Tensor, np.ndarray, int)
_MASK = 0xFFFFFFFF
# Odd multipliers below 2**31: x * m < 2**63 for every 32-bit x.
_M1 = 0x7FEB352D
_M2 = 0x5BD1E995
_U_M1, _U_M2 = np.uint32(_M1), np.uint32(_M2)
# Domain-separation constants (fractional digits of sqrt(2), sqrt(3), pi, e).
_C_SEED = 0x6A09E667
_C_SPLIT = 0xBB67AE85
_C_FOLD = 0x243F6A88
_C_WORD1 = 0xB7E15162
_C_OUT = 0x3C6EF372
#: whether a CPU ``torch.compile`` trace puts the hash on the host (see :func:`host_hash`); read only
#: while tracing, so a compiled function keeps the form it was traced in (dynamo guards on it: called
#: outside the block it recompiles); one setting for the process, so trace from one thread at a time
_host_hash_on = False


@contextlib.contextmanager
def host_hash(on: bool = True) -> Iterator[None]:
    """Within the block, a CPU ``torch.compile`` trace computes the key hash as one opaque host op
    (``funcgan::hash_block``, integer numpy) instead of ~60 inlined integer ops per draw.

    The words are the same integers either way, so a compiled run's numbers do not change (bitwise;
    ``tests/test_random.py``); what changes is the cost. Inlined, the hash is most of a step's cold
    inductor compile (its integer value ranges and C++) and nearly free per step (fused); on the
    host it is cut from the compile (the 1-D GAN's 64-run sweep: ~50 s to ~30 s on 2 cores) and
    costs a numpy pass per draw (~0.015 ms per run-step): it pays for short runs.
    ``funcgan.compile.compile(host_hash=True)`` calls its function inside this block,
    and ``funcgan.sweep.run`` chooses by the run-steps (:func:`funcgan.sweep.host_hash_pays`).
    Eager code and CUDA traces are unaffected.
    """
    global _host_hash_on
    before, _host_hash_on = _host_hash_on, bool(on)
    try:
        yield
    finally:
        _host_hash_on = before


def _mix(x: T) -> T:
    """A bijective 32-bit avalanche (xor-shift, multiply) in int64 arithmetic (torch, numpy or Python ints)."""
    x = x ^ (x >> 16)
    x = (x * _M1) & _MASK
    x = x ^ (x >> 15)
    x = (x * _M2) & _MASK
    x = x ^ (x >> 16)
    return x


def _block(k0: torch.Tensor, k1: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two 32-bit words from key words ``(k0, k1)`` and counters ``c``.

    Each word mixes the counter with both key words through three avalanche
    rounds, along two separate paths, so the pair carries 64 bits.

    Plainly eager on the CPU the same integer ops run in numpy (:func:`_block_numpy`; a single
    key takes the cheaper routes of :func:`_keys_from_ints` and :func:`_stream_u32` before it gets
    here), and so they do inside a CPU ``torch.compile`` graph traced under :func:`host_hash`, as one
    opaque call (:func:`_host_block`). Integer arithmetic is exact, so all give the same bits
    (``tests/test_random.py``).
    """
    if plain_cpu_tensors(k0, k1, c):
        return _block_numpy(k0, k1, c)
    if _host_hash_on and torch.compiler.is_compiling() and k0.device.type == "cpu":
        return _host_block(k0, k1, c)
    # both paths in one stacked tensor: the same ops, half the calls (what an eager step pays for)
    a, b = c ^ k0, c ^ k1 ^ _C_WORD1  # the counters' shape broadcast with the key's
    x = _mix(_mix(_mix(torch.stack([a, b])) ^ torch.stack([k1.expand(a.shape), k0.expand(a.shape)])) ^ _C_OUT)
    return x[0], x[1]


def _block_numpy(k0: torch.Tensor, k1: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_block` on the host, broadcast as torch broadcasts: in place in uint32 when every input
    is a 32-bit word (keys and counters are; :func:`_block_u32`), else in int64 (a hand-made key
    beyond 32-bit words wraps as it does in torch; the two paths apart)."""
    xs = [k0.numpy(), k1.numpy(), c.numpy()]
    if all(x.size == 0 or (x.min() >= 0 and x.max() <= _MASK) for x in xs):
        w = _block_u32(*xs).astype(np.int64)  # C order: what the op's fake promises a compiled graph
        return torch.from_numpy(w[0, ...]), torch.from_numpy(w[1, ...])  # [0, ...]: an array when 0-d
    with np.errstate(over="ignore"):
        w0, w1 = _two_words(*xs)
    shape = np.broadcast_shapes(*(x.shape for x in xs))  # 0-d: numpy scalars, made arrays here
    # a ufunc keeps its inputs' memory order (transposed inputs: transposed words): copied to C order
    return tuple(torch.from_numpy(np.broadcast_to(w, shape).astype(np.int64, order="C")) for w in (w0, w1))  # type: ignore[return-value]


def _block_u32(k0: np.ndarray | int, k1: np.ndarray | int, c: np.ndarray) -> np.ndarray:
    """:func:`_block`'s two words, stacked on a leading axis of 2, in place in one uint32 array, for
    key words and counters below 2**32 (broadcast together): a product wraps mod 2**32 as
    ``& _MASK`` takes it, and a shift of a word below 2**32 is the same logical or arithmetic, so
    the bits are int64's. Both paths in one array: ~8 numpy calls a round on half the bytes of the
    int64 route, ~2.5x faster (``tests/test_random.py``: the same bits)."""
    k0, k1 = np.asarray(k0, dtype=np.uint32), np.asarray(k1, dtype=np.uint32)
    c = np.asarray(c, dtype=np.uint32)
    x = np.empty((2, *np.broadcast_shapes(k0.shape, k1.shape, c.shape)), dtype=np.uint32)  # C order
    a, b = x[0, ...], x[1, ...]  # views, 0-d ones included (x[0] of a (2,) array would be a scalar copy)
    np.bitwise_xor(c, k0, out=a)
    np.bitwise_xor(c, k1, out=b)
    b ^= np.uint32(_C_WORD1)
    tmp = np.empty_like(x)
    _mix_u32(x, tmp)
    a ^= k1
    b ^= k0
    _mix_u32(x, tmp)
    x ^= np.uint32(_C_OUT)
    _mix_u32(x, tmp)
    return x


@torch.library.custom_op("funcgan::hash_block", mutates_args=(), device_types="cpu")
def _host_block(k0: torch.Tensor, k1: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_block` as one opaque op of a CPU ``torch.compile`` graph, run by :func:`_block_numpy`.

    Inlined, the hash is ~60 integer ops per draw whose value ranges inductor tightens symbolically
    and whose C++ it generates and compiles: most of a step's cold compile (the README's cold-compile
    figures). Opaque, inductor fuses the float work around it as before, and the words are the same
    integers, so a compiled run is bitwise the run it was (``tests/test_random.py``). Under ``vmap``
    the op broadcasts the batch (:func:`_host_block_vmap`); it has no gradient (integer outputs).
    """
    return _block_numpy(k0, k1, c)


@_host_block.register_fake
def _(k0: torch.Tensor, k1: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    shape = torch.broadcast_shapes(k0.shape, k1.shape, c.shape)
    return k0.new_empty(shape), k0.new_empty(shape)


@_host_block.register_vmap
def _host_block_vmap(info, in_dims, k0, k1, c):
    """The batch dimension of each input moved to the front (size 1 where unbatched) and the logical
    dimensions right-aligned behind it, so broadcasting pairs the same dimensions as unbatched."""
    xs = (k0, k1, c)
    rank = max(x.dim() - (d is not None) for x, d in zip(xs, in_dims))
    front = []
    for x, d in zip(xs, in_dims):
        x = x.unsqueeze(0) if d is None else x.movedim(d, 0)
        front.append(x.reshape(x.shape[:1] + (1,) * (rank + 1 - x.dim()) + x.shape[1:]))
    return _host_block(*front), (0, 0)


def _two_words(k0: T, k1: T, c: T) -> tuple[T, T]:
    """:func:`_block`'s two paths, apart, on numpy int64 arrays or Python integers."""
    return _mix(_mix(_mix(c ^ k0) ^ k1) ^ _C_OUT), _mix(_mix(_mix(c ^ k1 ^ _C_WORD1) ^ k0) ^ _C_OUT)


def _keys_from_ints(k0: int, k1: int, counters: Sequence[int]) -> Key:
    """``stack(_block(k0, k1, c), -1)`` for a few counters, in Python integers: ``(len(counters), 2)`` keys.

    A single key split or folded plainly eagerly (a step's ``split`` and ``fold_in``: four in each
    step of seed 000) hashes a handful of words, where a numpy or torch op costs its dispatch
    (~2 us) and a Python integer op ~0.1 us. The bits are those of the torch route: every result
    is masked to 32 bits, and the low 32 bits of a product, an xor or an arithmetic shift of
    Python's unbounded integers are those of int64's (``tests/test_random.py``, hand-made
    keys beyond 32-bit words included).
    """
    out = [w for c in counters for w in _two_words(k0, k1, c)]
    return torch.tensor(out, dtype=torch.int64).view(-1, 2)


def _one_key(k: Key) -> tuple[int, int] | None:
    """The two words of ``k`` when it is a single plain CPU key of 32-bit words in a plainly eager call
    (a step's draws; the uint32 route of :func:`_stream_u32` then gives the same bits), else None."""
    if k.dim() != 1 or not plain_cpu_tensors(k):  # (callers keep counters below 2**31)
        return None
    a, b = k.tolist()
    return (a, b) if 0 <= a <= _MASK and 0 <= b <= _MASK else None


def _mix_u32(x: np.ndarray, tmp: np.ndarray) -> None:
    """:func:`_mix` in place on a uint32 array: a product wraps mod 2**32 as ``& _MASK`` takes it, and a
    shift of a word below 2**32 is the same logical or arithmetic, so the bits are int64's."""
    for shift, mul in ((16, _U_M1), (15, _U_M2)):
        np.right_shift(x, shift, out=tmp)
        x ^= tmp
        x *= mul
    np.right_shift(x, 16, out=tmp)
    x ^= tmp


def _stream_u32(k0: int, k1: int, m: int) -> np.ndarray:
    """``cat(_block(k0, k1, arange(m)))`` (both words of counters ``0 .. m-1``, first words first) as a
    uint32 array, for one key of 32-bit words: a single key's draw (the noise and data batches of an
    eager step), by :func:`_block_u32`."""
    return _block_u32(k0, k1, np.arange(m, dtype=np.uint32)).reshape(-1)


def _words(k: Key) -> tuple[torch.Tensor, torch.Tensor]:
    """Key words shaped to broadcast against a trailing counter axis."""
    return k[..., 0:1], k[..., 1:2]


def is_key(x: object) -> bool:
    """Whether ``x`` looks like a key (or a stack of keys): int64, last dim 2."""
    return isinstance(x, torch.Tensor) and x.dtype == torch.int64 and x.dim() >= 1 and x.shape[-1] == 2


def _check_key(k: Key, fn: str) -> None:
    if not is_key(k):
        raise TypeError(
            f"funcgan.random.{fn}: expected a key (int64 tensor of shape (..., 2)), got "
            f"{type(k).__name__}"
            + (f" of dtype {k.dtype} and shape {tuple(k.shape)}" if isinstance(k, torch.Tensor) else "")
        )


def key(seed: int | torch.Tensor, device: torch.device | str | None = None) -> Key:
    """Make a key from an integer seed (or a 1-D int tensor of seeds).

    Args:
        seed: a non-negative int below 2**63, or an integer tensor of seeds
            (then the result has shape ``(*seed.shape, 2)``).
        device: where the key lives (default: CPU, or the seed tensor's device).

    Returns:
        An int64 tensor of shape ``(2,)`` (or ``(*seed.shape, 2)``).
    """
    if isinstance(seed, bool):
        raise TypeError("funcgan.random.key: seed must be an int, not bool")
    if isinstance(seed, int):
        if seed < 0 or seed >= 2**63:
            raise ValueError(f"funcgan.random.key: seed must be in [0, 2**63), got {seed}")
        s = torch.tensor(seed, dtype=torch.int64, device=device)
    elif isinstance(seed, torch.Tensor):
        if seed.is_floating_point() or seed.is_complex() or seed.dtype == torch.bool:
            raise TypeError(f"funcgan.random.key: seed tensor must be integer, got {seed.dtype}")
        s = seed.to(dtype=torch.int64, device=device if device is not None else seed.device)
    else:
        raise TypeError(f"funcgan.random.key: seed must be an int or integer tensor, got {type(seed).__name__}")
    lo = s & _MASK
    hi = (s >> 32) & _MASK
    k0 = _mix(_mix(lo ^ _C_SEED) ^ hi)
    k1 = _mix(_mix(hi ^ _C_SPLIT) ^ k0 ^ _C_FOLD)
    return torch.stack([k0, k1], dim=-1)


def split(k: Key, num: int = 2) -> Key:
    """Split a key into ``num`` new independent keys.

    Args:
        k: a key of shape ``(..., 2)``.
        num: how many keys (a Python int >= 1).

    Returns:
        ``(num, 2)`` keys for a single key; ``(..., num, 2)`` for stacked keys.
        Unpack them as ``k1, k2 = split(k)``.
    """
    _check_key(k, "split")
    if not isinstance(num, int) or num < 1:
        raise ValueError(f"funcgan.random.split: num must be an int >= 1, got {num!r}")
    if k.dim() == 1 and num <= 64 and plain_cpu_tensors(k):  # a few keys (many: numpy below)
        a, b = k.tolist()
        return _keys_from_ints(a ^ _C_SPLIT, b, range(num))
    k0, k1 = _words(k)
    c = torch.arange(num, dtype=torch.int64, device=k.device)
    w0, w1 = _block(k0 ^ _C_SPLIT, k1, c)  # (..., num)
    return torch.stack([w0, w1], dim=-1)


def fold_in(k: Key, data: int | torch.Tensor) -> Key:
    """Derive a new key from ``k`` and an integer (a step number, a seed index).

    Args:
        k: a key of shape ``(..., 2)``.
        data: a Python int in [0, 2**32) or an integer tensor broadcastable
            to ``k.shape[:-1]`` (a tensor keeps it a graph input under compile).

    Returns:
        A key of the same shape as ``k``.
    """
    _check_key(k, "fold_in")
    if isinstance(data, int) and (data < 0 or data > _MASK):
        raise ValueError(f"funcgan.random.fold_in: data must be in [0, 2**32), got {data}")
    one = isinstance(data, int) or (data.dtype == torch.int64 and data.dim() == 0)  # one key, one number
    if k.dim() == 1 and one and plain_cpu_tensors(k, *(() if isinstance(data, int) else (data,))):
        a, b = k.tolist()
        return _keys_from_ints(a ^ _C_FOLD, b, (int(data) & _MASK,))[0]
    if isinstance(data, int):
        d = torch.tensor(data, dtype=torch.int64, device=k.device)
    else:
        d = data.to(torch.int64) & _MASK
    k0, k1 = k[..., 0], k[..., 1]
    w0, w1 = _block(k0 ^ _C_FOLD, k1, d)
    return torch.stack([w0, w1], dim=-1)


def _shape(shape: int | Sequence[int]) -> tuple[int, ...]:
    if isinstance(shape, int):
        return (shape,)
    return tuple(int(s) for s in shape)


def bits(k: Key, shape: int | Sequence[int]) -> torch.Tensor:
    """Uniform random 32-bit words as int64 values in ``[0, 2**32)``.

    Returns a tensor of shape ``(*k.shape[:-1], *shape)``.
    """
    _check_key(k, "bits")
    shape = _shape(shape)
    n = math.prod(shape)
    one = _one_key(k) if n < 2**31 else None  # uint32 counters
    if one is not None:
        return torch.from_numpy(_stream_u32(*one, (n + 1) // 2)[:n].astype(np.int64)).reshape(shape)
    k0, k1 = _words(k)
    c = torch.arange((n + 1) // 2, dtype=torch.int64, device=k.device)
    w0, w1 = _block(k0, k1, c)
    w = torch.cat([w0, w1], dim=-1)[..., :n]
    return w.reshape((*k.shape[:-1], *shape))


def _unit_uniform(k: Key, n: int, dtype: torch.dtype) -> torch.Tensor:
    """``n`` floats in [0, 1) on a trailing axis; float64 uses 53 random bits."""
    one = _one_key(k) if n < 2**31 else None  # uint32 counters
    if one is not None:
        u = torch.from_numpy(_unit_uniform_host(one, n, dtype == torch.float64))
        return u if dtype in (torch.float32, torch.float64) else u.to(dtype)
    return _unit_uniform_torch(k, n, dtype)


def _unit_uniform_torch(k: Key, n: int, dtype: torch.dtype) -> torch.Tensor:
    """:func:`_unit_uniform` by torch ops (stacked keys, traced or transformed calls)."""
    k0, k1 = _words(k)
    if dtype == torch.float64:
        c = torch.arange(n, dtype=torch.int64, device=k.device)
        w0, w1 = _block(k0, k1, c)
        m = ((w0 >> 5) << 26) | (w1 >> 6)  # 27 + 26 = 53 bits, < 2**53
        return m.to(torch.float64) * (2.0**-53)
    c = torch.arange((n + 1) // 2, dtype=torch.int64, device=k.device)
    w0, w1 = _block(k0, k1, c)
    w = torch.cat([w0, w1], dim=-1)[..., :n]
    u = (w >> 8).to(torch.float32) * (2.0**-24)  # 24 bits: exact in float32
    return u if dtype == torch.float32 else u.to(dtype)


def _unit_uniform_host(one: tuple[int, int], n: int, wide: bool) -> np.ndarray:
    """:func:`_unit_uniform` of one key of 32-bit words, in numpy (a fresh array): float64 from 53 bits
    when ``wide``, else float32 from 24; the words' conversion to floats is exact."""
    if wide:
        x = _stream_u32(*one, n).astype(np.int64)
        return (((x[:n] >> 5) << 26) | (x[n:] >> 6)).astype(np.float64) * 2.0**-53
    return (_stream_u32(*one, (n + 1) // 2)[:n] >> 8).astype(np.float32) * np.float32(2.0**-24)


def _normal_host(one: tuple[int, int], n: int, wide: bool) -> torch.Tensor:
    """:func:`normal`'s ``n`` samples for one key of 32-bit words, plainly eager: the same uniforms and
    the same values as the torch route, in 4 torch calls and a few numpy ones instead of 11 torch calls.

    ``log1p``, ``sqrt``, ``cos`` and ``sin`` are torch's own kernels (what the torch route calls, on
    the same contiguous inputs, in place in numpy-backed buffers; torch's vectorized ``sqrt`` is not
    numpy's in the last bit); the rest is exactly rounded in IEEE arithmetic whoever computes it (a
    negation and products, by a scalar of the array's dtype as torch casts a Python scalar), so numpy
    does it in place (``tests/test_random.py``: bitwise the torch route's samples)."""
    half = (n + 1) // 2
    u = _unit_uniform_host(one, 2 * half, wide)
    f = u.dtype.type
    r, theta = u[:half], u[half:]
    np.negative(r, out=r)
    torch.from_numpy(r).log1p_()  # log1p(-u1)
    np.multiply(r, f(-2.0), out=r)
    torch.from_numpy(r).sqrt_()  # torch's (Sleef's, within 0.5001 ulp) differs from numpy's in the last bit
    np.multiply(theta, f(2.0 * math.pi), out=theta)
    z = np.empty(2 * half, dtype=u.dtype)
    zt, tt = torch.from_numpy(z), torch.from_numpy(theta)
    torch.cos(tt, out=zt[:half])
    torch.sin(tt, out=zt[half:])
    np.multiply(z[:half], r, out=z[:half])
    np.multiply(z[half:], r, out=z[half:])
    return zt[:n]


def _check_float_dtype(dtype: torch.dtype, fn: str) -> None:
    if not dtype.is_floating_point:
        raise TypeError(f"funcgan.random.{fn}: dtype must be floating point, got {dtype}")


def uniform(
    k: Key,
    shape: int | Sequence[int] = (),
    dtype: torch.dtype = torch.float32,
    minval: float | torch.Tensor = 0.0,
    maxval: float | torch.Tensor = 1.0,
) -> torch.Tensor:
    """Uniform samples in ``[minval, maxval)``.

    float32 samples carry 24 random bits, float64 samples 53; float16 and
    bfloat16 are drawn in float32 and rounded.

    Returns a tensor of shape ``(*k.shape[:-1], *shape)`` and dtype ``dtype``.
    """
    _check_key(k, "uniform")
    _check_float_dtype(dtype, "uniform")
    shape = _shape(shape)
    u = _unit_uniform(k, math.prod(shape), dtype).reshape((*k.shape[:-1], *shape))
    if isinstance(minval, float) and isinstance(maxval, float) and minval == 0.0 and maxval == 1.0:
        return u
    return u * (maxval - minval) + minval


def normal(
    k: Key,
    shape: int | Sequence[int] = (),
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Standard normal samples by the Box-Muller transform.

    Each pair of uniforms ``(u1, u2)`` gives ``sqrt(-2 log(1 - u1)) * (cos, sin)(2 pi u2)``;
    ``1 - u1`` lies in ``(0, 1]``, so the log is finite.

    Returns a tensor of shape ``(*k.shape[:-1], *shape)`` and dtype ``dtype``.
    """
    _check_key(k, "normal")
    _check_float_dtype(dtype, "normal")
    shape = _shape(shape)
    n = math.prod(shape)
    half = (n + 1) // 2
    work = dtype if dtype in (torch.float32, torch.float64) else torch.float32
    one = _one_key(k) if n < 2**31 else None  # uint32 counters
    if one is not None:
        z = _normal_host(one, n, work == torch.float64).reshape(shape)
        return z if work == dtype else z.to(dtype)
    u = _unit_uniform_torch(k, 2 * half, work)  # not a single plain key: the torch route
    u1, u2 = u[..., :half], u[..., half:]
    r = torch.sqrt(-2.0 * torch.log1p(-u1))
    theta = (2.0 * math.pi) * u2
    z = torch.cat([r * torch.cos(theta), r * torch.sin(theta)], dim=-1)
    z = z if n == 2 * half else z[..., :n]
    z = z.reshape((*k.shape[:-1], *shape))
    return z if work == dtype else z.to(dtype)


def randint(k: Key, shape: int | Sequence[int], low: int, high: int) -> torch.Tensor:
    """Integers in ``[low, high)`` (int64), e.g. minibatch indices.

    Drawn as ``low + word % (high - low)`` from 32-bit words; the modulo bias is
    below ``(high - low) / 2**32`` (2e-5 for a 60,000-example data set).
    """
    _check_key(k, "randint")
    if high <= low:
        raise ValueError(f"funcgan.random.randint: need low < high, got [{low}, {high})")
    if high - low > 2**31:
        raise ValueError("funcgan.random.randint: range must be at most 2**31")
    return bits(k, shape) % (high - low) + low
