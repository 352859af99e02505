"""The random method's noise on CPU: counter-addressed blocks, ~4 ns per element.

``z[c]``, the normal at counter ``c`` (the counters the Triton kernels use: ``offset + i``), is
element ``c % BLOCK`` of block ``b = c // BLOCK``, and each block is drawn as a radius times a
direction:

    z_b = r_b * y_b / ||y_b||

- ``y_b``: ``Tensor.normal_`` over ``BLOCK`` fp32 elements from torch's CPU generator (mt19937,
  Box-Muller), seeded with ``(base(seed) + b) mod 2**32``;
- ``r_b**2 ~ chi2(BLOCK)``: one draw from numpy's Philox-4x64 keyed by 128 bits of the seed's
  hash, at counter ``(0, 0, b, 0)``.

``y_b / ||y_b||`` is uniform on the sphere and independent of ``||y_b||``; ``r_b`` is drawn
independently with the law of ``||y_b||``; so ``z_b`` is exactly ``N(0, I)``, like ``y_b`` itself.
What the split buys: the norm pass of the random method needs ``sum(z**2)``, and for every whole
block that is ``r_b**2``, known without drawing ``y_b``. Only the blocks a tensor boundary cuts are
drawn in the norm pass; the noise is drawn once, in the apply pass.

Reproducibility: ``z`` is a pure function of ``(seed, c)``.

- Any chunking, tensor split or order of calls gives the same values: a block is always drawn
  whole and sliced, never drawn in part.
- The thread count cannot change it: blocks are independent, each drawn by one thread, and
  ``normal_`` on one block is serial. Sums of squares are fp32 ``numpy.einsum`` over a fixed
  range (no BLAS, no threads), combined exactly with ``math.fsum``.
- ``w + c_b * y`` is two IEEE operations (``y *= c_b``, then ``+ w``), never a fused multiply-add,
  so a vectorized loop and its scalar tail agree bit for bit.

It is not the stream Triton's ``tl.randn`` draws on GPU: the same seed gives the same bytes on the
same backend only, and with the same torch and numpy releases (neither promises its normal or
chi-square algorithms across versions; ``panacea_patch.json`` records both). torch's CPU generator
seeds from 32 bits; consecutive block seeds keep the blocks of one run distinct up to 2**32 blocks
(1.4e14 elements).

Cost: about 3 ns per element for ``normal_`` on one core, once per patch, spread over
``torch.get_num_threads()`` threads (torch and numpy release the GIL). Every torch call works on at
most ``BLOCK`` elements, which is not above ATen's parallel grain, so no call opens a nested
OpenMP team inside a worker thread.
"""

from __future__ import annotations

import functools
import hashlib
import math
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
import torch

from . import _checks

GENERATOR = "torch-mt19937+numpy-philox4x64"
BLOCK = 1 << 15  # elements per block: part of the stream's definition
TASK_BLOCKS = 32  # blocks handed to a thread at once: scheduling only, never changes the values

_T = TypeVar("_T")
Piece = tuple[int, int, int, int]  # (block, first element in block, end in block, output index)


class _Thread(threading.local):
    """Per-thread generators and three BLOCK-sized fp32 buffers (noise, weights, scratch)."""

    def __init__(self) -> None:
        self.gen = torch.Generator()
        self.philox = np.random.Philox(key=[0, 0])
        self.chi = np.random.Generator(self.philox)
        self.bufs = (torch.empty(0),) * 3

    def buffers(self) -> tuple[torch.Tensor, ...]:
        if self.bufs[0].numel() != BLOCK:  # first use in this thread, or BLOCK changed (tests)
            self.bufs = tuple(torch.empty(BLOCK) for _ in range(3))
        return self.bufs


_local = _Thread()


@functools.cache
def _keys(seed: int) -> tuple[int, tuple[int, int]]:
    """(32-bit base of the block seeds, 128-bit Philox key of the radii) for ``seed``."""
    h = hashlib.blake2b(
        seed.to_bytes(8, "little"), digest_size=20, person=b"panacea-noise"
    ).digest()
    base = int.from_bytes(h[:4], "little")
    return base, (int.from_bytes(h[4:12], "little"), int.from_bytes(h[12:20], "little"))


def _radius_sq(key: tuple[int, int], b: int) -> float:
    """``r_b**2``, a chi-square draw with BLOCK degrees of freedom at Philox counter (0, 0, b, 0)."""
    t = _local
    t.philox.state = {
        "bit_generator": "Philox",
        "state": {
            "counter": np.array([0, 0, b, 0], dtype=np.uint64),
            "key": np.array(key, dtype=np.uint64),
        },
        "buffer": np.zeros(4, dtype=np.uint64),
        "buffer_pos": 4,
        "has_uint32": 0,
        "uinteger": 0,
    }
    return float(t.chi.chisquare(BLOCK))


def _direction(base: int, b: int) -> tuple[torch.Tensor, float]:
    """Block ``b``'s raw normals ``y_b`` (this thread's buffer, valid until its next call), ||y_b||²."""
    t = _local
    t.gen.manual_seed((base + b) & 0xFFFFFFFF)
    y = t.buffers()[0].normal_(generator=t.gen)
    return y, _sumsq(y)


def _sumsq(x: torch.Tensor) -> float:
    a = x.numpy()
    return float(np.einsum("i,i->", a, a))


def sumsq_fp32(x: torch.Tensor) -> float:
    """``sum(x**2)`` of a contiguous fp32 CPU chunk: fp32 in cache, float64 where fp32 overflows."""
    total = _sumsq(x)
    if not math.isfinite(total):  # |x| above ~1e19 (e.g. --rho 1e30), or NaN / inf
        a64 = x.numpy().astype(np.float64)
        total = float(np.einsum("i,i->", a64, a64))
    return total


def _pieces(offset: int, numel: int) -> list[Piece]:
    """The blocks that counters ``[offset, offset + numel)`` touch, in counter order."""
    out, c, end = [], offset, offset + numel
    while c < end:
        b, lo = divmod(c, BLOCK)
        hi = min(BLOCK, lo + end - c)
        out.append((b, lo, hi, c - offset))
        c += hi - lo
    return out


def _run(fn: Callable[[Sequence[Piece]], _T], pieces: list[Piece]) -> list[_T]:
    """``fn`` over the pieces in tasks, results in counter order, on torch's thread count."""
    tasks = [pieces[i : i + TASK_BLOCKS] for i in range(0, len(pieces), TASK_BLOCKS)]
    workers = min(torch.get_num_threads(), len(tasks))
    if workers <= 1:
        return [fn(t) for t in tasks]
    # A pool per call (two threads, ~0.1 ms): no threads outlive the call or survive a fork.
    with ThreadPoolExecutor(workers, thread_name_prefix="panacea-noise") as pool:
        return list(pool.map(fn, tasks))


def _block_scale(seed: int, b: int) -> tuple[torch.Tensor, float]:
    """``y_b`` and the factor ``r_b / ||y_b||`` that turns it into ``z_b``."""
    base, key = _keys(seed)
    y, ysq = _direction(base, b)
    return y, math.sqrt(_radius_sq(key, b) / ysq)


def normal(seed: int, offset: int, numel: int) -> torch.Tensor:
    """The normals at counters ``offset + i``, ``i < numel``, as fp32 (materialized: small only)."""
    seed, offset = _checks.check_stream(seed, offset, numel)
    out = torch.empty(numel)

    def task(pieces: Sequence[Piece]) -> None:
        for b, lo, hi, dst in pieces:
            y, k = _block_scale(seed, b)
            out[dst : dst + hi - lo].copy_(y[lo:hi].mul_(k))

    _run(task, _pieces(offset, numel))
    return out


def sumsq(numel: int, seed: int, offset: int) -> float:
    """``sum(z**2)`` over counters ``[offset, offset + numel)``.

    A whole block contributes ``r_b**2`` (no noise drawn); a cut block ``k**2 * sum(y[lo:hi]**2)``.
    The parts are added exactly (``math.fsum``), so the order of evaluation cannot matter.
    """
    seed, offset = _checks.check_stream(seed, offset, numel)
    key = _keys(seed)[1]

    def task(pieces: Sequence[Piece]) -> list[float]:
        parts = []
        for b, lo, hi, _ in pieces:
            if hi - lo == BLOCK:
                parts.append(_radius_sq(key, b))
            else:
                y, k = _block_scale(seed, b)
                parts.append(k * k * _sumsq(y[lo:hi]))
        return parts

    return math.fsum(p for parts in _run(task, _pieces(offset, numel)) for p in parts)


def apply_(
    w0: torch.Tensor,
    out: torch.Tensor,
    scale: float,
    seed: int,
    offset: int,
    *,
    norms: bool = False,
) -> tuple[float, float] | None:
    """``out = round_nearest(w0 + fl32(scale * r_b / ||y_b||) * y)`` element-wise; ``out`` may be
    ``w0``.

    With ``norms`` (CPU tensors), also returns ``(sum((out - w0)**2), sum(w0**2))`` of what was
    written, measured while each block is in cache (fp32 differences, float64 sums), which saves
    the caller a second pass over both tensors.
    """
    seed, offset = _checks.check_stream(seed, offset, w0.numel())
    w, o = w0.view(-1), out.view(-1)
    direct = w.dtype == torch.float32 and o.dtype == torch.float32
    norms = norms and w.device.type == "cpu"

    def task(pieces: Sequence[Piece]) -> list[tuple[float, float]]:
        parts = []
        for b, lo, hi, dst in pieces:
            n = hi - lo
            y, k = _block_scale(seed, b)
            z = y[lo:hi].mul_(scale * k)
            wc, oc = w[dst : dst + n], o[dst : dst + n]
            if wc.device.type != "cpu":  # the torch backend forced on an accelerator
                oc.copy_(wc.float().add_(z.to(wc.device)))
            elif norms:
                _, a, t = _local.buffers()
                x0 = a[:n].copy_(wc)  # before writing: out may be w0
                oc.copy_(torch.add(x0, z, out=t[:n]))  # fp32 math, round to nearest even
                d = t[:n].copy_(oc).sub_(x0)
                parts.append((sumsq_fp32(d), sumsq_fp32(x0)))
            elif direct:
                torch.add(wc, z, out=oc)
            else:  # fp32 math, then round to nearest even
                oc.copy_(torch.add(wc, z, out=_local.buffers()[1][:n]))
        return parts

    results = _run(task, _pieces(offset, w.numel()))
    if not norms:
        return None
    eps_sq = math.fsum(e for parts in results for e, _ in parts)
    return eps_sq, math.fsum(x for parts in results for _, x in parts)
