"""Pure-torch references for every kernel op: the CPU path and the test oracle.

Every op walks its tensors in cache-sized chunks and reuses one scratch buffer, so memory traffic
stays at one pass where eager PyTorch would make several, and no full-size temporary is allocated.
Math is fp32 whatever the storage dtype.

The random method's noise on CPU (``randn_sumsq``, ``randn_apply_``) comes from torch's own
generator in counter-addressed blocks (``cpu_noise``, ~4 ns per element): the same seed gives
the same bytes for any chunk size, tensor split and thread count, but not the stream ``tl.randn``
draws on GPU. Same backend, same bytes; CPU and GPU differ.

The Philox stream is still emulated bit-for-bit from Triton's ``tl.randn``
(triton/language/random.py) where the two backends must agree: the stochastic-rounding bits of
``project_apply_`` (Philox word 2), and ``philox_normal``, the oracle the Triton kernel tests use.
Philox-4x32-10 runs on the counter ``(lo32(c), hi32(c), 0, 0)`` with key
``(lo32(seed), hi32(seed))``; words 0 and 1 become uniforms through Triton's int32 mapping and a
Box-Muller cosine. uint32 arithmetic runs in int64 and is masked back to 32 bits; the 32x32
products wrap in int64, which keeps their low 64 bits, all the high word needs. At 40-80 ns per
element it is far too slow to be the random method's CPU path.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from . import _checks, cpu_noise

_M32 = 0xFFFFFFFF
_PHILOX_KEY_A = 0x9E3779B9
_PHILOX_KEY_B = 0xBB67AE85
_PHILOX_ROUND_A = 0xD2511F53
_PHILOX_ROUND_B = 0xCD9E8D57
PHILOX_ROUNDS = 10


def _f32(x: float) -> float:
    """``x`` rounded to fp32, as a Python float: Triton types float literals as fp32."""
    return torch.tensor(x, dtype=torch.float32).item()


# Triton's constants, rounded as Triton rounds them.
_INT32_TO_UNIFORM = _f32(4.6566127342e-10)
_TWO_PI = _f32(6.283185307179586)
_U_MIN = _f32(1.0e-7)

# Elements per chunk. Streaming ops want the chunk to stay in L2 across the two or three ops
# applied to it; Philox needs ~8 int64 buffers per element, so its chunks are smaller.
STREAM_CHUNK = 1 << 19
PHILOX_CHUNK = 1 << 15
_GPU_CHUNK = 1 << 24  # on CUDA (forced torch backend) per-op launch cost dominates instead


def _chunk(device: torch.device, base: int) -> int:
    return base if device.type == "cpu" else max(base, _GPU_CHUNK)


# --------------------------------------------------------------------------------------------
# Philox
# --------------------------------------------------------------------------------------------


def philox4x32(seed: int, counters: torch.Tensor) -> list[torch.Tensor]:
    """Philox-4x32-10 words for int64 ``counters`` (each in [0, 2**63)), as int64 in [0, 2**32).

    Matches ``tl.randint4x(seed, counters)`` word for word.
    """
    c0 = counters & _M32
    c1 = counters >> 32
    c2 = torch.zeros_like(counters)
    c3 = torch.zeros_like(counters)
    spare_a = torch.empty_like(counters)
    spare_b = torch.empty_like(counters)
    k0, k1 = seed & _M32, (seed >> 32) & _M32
    for _ in range(PHILOX_ROUNDS):
        # Multiplicands must be clean 32-bit values; the products wrap in int64 but keep the
        # low 64 bits exactly. Words that only feed XORs (c1, c3) may carry junk above bit 31:
        # it never reaches the low 32 bits, and the XOR results are masked before multiplying.
        torch.mul(c2, _PHILOX_ROUND_B, out=spare_a)
        torch.mul(c0, _PHILOX_ROUND_A, out=spare_b)
        torch.bitwise_right_shift(spare_a, 32, out=c0)  # c0, c2 are dead once multiplied
        c0.bitwise_xor_(c1).bitwise_xor_(k0).bitwise_and_(_M32)
        torch.bitwise_right_shift(spare_b, 32, out=c2)
        c2.bitwise_xor_(c3).bitwise_xor_(k1).bitwise_and_(_M32)
        c1, spare_a = spare_a, c1  # low words of the products, junk above bit 31
        c3, spare_b = spare_b, c3
        k0 = (k0 + _PHILOX_KEY_A) & _M32
        k1 = (k1 + _PHILOX_KEY_B) & _M32
    return [c0, c1.bitwise_and_(_M32), c2, c3.bitwise_and_(_M32)]


def _uniform_(x: torch.Tensor) -> torch.Tensor:
    """Triton's ``uint_to_uniform_float`` for uint32 words held in int64 (consumes ``x``)."""
    # Viewed as int32, a word >= 2**31 is negative and Triton takes ~x, which is x ^ 0xFFFFFFFF.
    x.bitwise_xor_((x >> 31) * _M32)
    return x.to(torch.float32).mul_(_INT32_TO_UNIFORM)


def _normal_from_words(w0: torch.Tensor, w1: torch.Tensor) -> torch.Tensor:
    """Box-Muller cosine branch exactly as ``tl.randn`` orders it."""
    u1 = _uniform_(w0).clamp_min_(_U_MIN)
    th = _uniform_(w1).mul_(_TWO_PI)
    r = u1.log_().mul_(-2.0).sqrt_()
    return r.mul_(th.cos_())


def _counters(start: int, count: int, device: torch.device) -> torch.Tensor:
    return torch.arange(start, start + count, dtype=torch.int64, device=device)


def philox_normal(
    seed: int, offset: int, numel: int, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """The normals ``z[i]`` at counters ``offset + i``, i < numel, as fp32 (``tl.randn``'s values).

    Small ``numel`` only: this materializes the whole stream (tests and diagnostics).
    """
    seed, offset = _checks.check_stream(seed, offset, numel)
    device = torch.device(device)
    out = torch.empty(numel, dtype=torch.float32, device=device)
    step = _chunk(device, PHILOX_CHUNK)
    for s in range(0, numel, step):
        n = min(step, numel - s)
        words = philox4x32(seed, _counters(offset + s, n, device))
        out[s : s + n] = _normal_from_words(words[0], words[1])
    return out


def philox_bits(
    seed: int, offset: int, numel: int, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """The stochastic-rounding words (Philox word 2) at counters ``offset + i``, as int64."""
    seed, offset = _checks.check_stream(seed, offset, numel)
    return philox4x32(seed, _counters(offset, numel, torch.device(device)))[2]


# --------------------------------------------------------------------------------------------
# Rounding
# --------------------------------------------------------------------------------------------


def _fp32_bits(x: torch.Tensor) -> torch.Tensor:
    return x.view(torch.int32).to(torch.int64) & _M32


def stochastic_round_bits(x: torch.Tensor, rand: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Stochastically round fp32 ``x`` to ``dtype`` (bf16/fp16); returns the int16 bit patterns.

    ``rand`` holds uniform 32-bit words (int64). The result is one of the two neighbours of ``x``,
    the upper one with probability equal to the fraction of the gap ``x`` covers, so the rounding
    is unbiased. NaN stays NaN; fp16 overflow beyond 65536 is inf. Values below 2**-32 (fp16 only)
    round to zero: their bias is under 2**-32.
    """
    u = _fp32_bits(x)
    sign = (u >> 16) & 0x8000
    a = u & 0x7FFFFFFF
    if dtype == torch.bfloat16:
        h = (a + (rand & 0xFFFF)) >> 16
        h = torch.where(a > 0x7F800000, 0x7FC0, h)
    elif dtype == torch.float16:
        h = _sr_fp16_magnitude(a, rand)
    else:
        raise TypeError(f"stochastic rounding targets bfloat16 or float16, not {dtype}")
    bits = h | sign
    # int16 holds the 16-bit pattern; values >= 2**15 wrap to the negative representative.
    return (bits - ((bits & 0x8000) << 1)).to(torch.int16)


def _sr_fp16_magnitude(a: torch.Tensor, rand: torch.Tensor) -> torch.Tensor:
    """fp16 magnitude bits for fp32 magnitude bits ``a`` (the branches of the Triton kernel)."""
    # Normal fp16 range: rebias the exponent (127 -> 15) and add random bits below the cut.
    normal = ((a - 0x38000000) + (rand & 0x1FFF)) >> 13
    # Subnormal fp16 range: the value is m * 2**-shift units of 2**-24.
    exp = a >> 23
    m = (a & 0x7FFFFF) | ((exp > 0).to(torch.int64) << 23)
    shift = (126 - exp).clamp_(max=31)
    mask = (1 << shift) - 1
    q = m >> shift
    up = ((rand & mask) < (m & mask)).to(torch.int64)
    sub = torch.where(exp <= 94, 0, q + up)
    h = torch.where(a >= 0x38800000, normal, sub)
    h = torch.where(a >= 0x47800000, 0x7C00, h)
    return torch.where(a > 0x7F800000, 0x7E00, h)


def _store_stochastic(out: torch.Tensor, value: torch.Tensor, seed: int, counter: int) -> None:
    """Write fp32 ``value`` into 16-bit ``out`` with stochastic rounding (Philox word 2 bits)."""
    rand = philox4x32(seed, _counters(counter, value.numel(), value.device))[2]
    out.view(torch.int16).copy_(stochastic_round_bits(value, rand, out.dtype))


# --------------------------------------------------------------------------------------------
# Ops
# --------------------------------------------------------------------------------------------


def _flat(*tensors: torch.Tensor) -> list[torch.Tensor]:
    return [t.view(-1) for t in tensors]


def _scratch(n: int, device: torch.device) -> torch.Tensor:
    return torch.empty(n, dtype=torch.float32, device=device)


def _sum_parts(parts: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    if not parts:
        return torch.zeros((), dtype=torch.float32, device=device)
    return torch.stack(parts).sum()


def pgd_step_(eps: torch.Tensor, grad: torch.Tensor, step: float) -> torch.Tensor:
    """``eps += step * grad`` in place with fp32 math; returns ``sum(eps**2)`` as an fp32 scalar."""
    _checks.check_tensor("eps", eps, _checks.EPS_DTYPES)
    _checks.check_tensor("grad", grad, _checks.GRAD_DTYPES)
    _checks.check_same("eps", eps, {"grad": grad})
    step = _checks.check_scalar("step", step)
    e, g = _flat(eps, grad)
    size = _chunk(eps.device, STREAM_CHUNK)
    tmp = None if eps.dtype == torch.float32 else _scratch(min(size, e.numel()), eps.device)
    parts = []
    for s in range(0, e.numel(), size):
        ec, gc = e[s : s + size], g[s : s + size]
        if gc.dtype == torch.float64:
            gc = gc.float()  # fp32 math: round the gradient first, as the kernel loads it
        parts.append(_pgd_chunk(ec, gc, step, tmp))
    return _sum_parts(parts, eps.device)


def _pgd_chunk(
    ec: torch.Tensor, gc: torch.Tensor, step: float, tmp: torch.Tensor | None
) -> torch.Tensor:
    """One chunk of ``pgd_step_``, while it is in cache: update, then its sum of squares."""
    if tmp is None:  # fp32 eps
        ec.add_(gc, alpha=step)
        return torch.dot(ec, ec)
    t = tmp[: ec.numel()]
    ec.copy_(t.copy_(ec).add_(gc, alpha=step))
    t.copy_(ec)  # the norm is of the stored (rounded) eps
    return torch.dot(t, t)


def project_apply_(
    eps: torch.Tensor,
    w0: torch.Tensor,
    out: torch.Tensor,
    scale: float,
    rounding: str = "nearest",
    seed: int = 0,
    offset: int = 0,
) -> None:
    """``eps *= scale`` in place, then ``out = round(w0 + eps)`` in ``out.dtype``.

    ``rounding`` is ``"nearest"`` (round-to-nearest-even, equal to ``.to(dtype)``) or
    ``"stochastic"`` (bits from the Philox stream at counters ``offset + i`` for ``seed``).
    ``out`` may be ``w0`` itself.
    """
    _checks.check_tensor("eps", eps, _checks.EPS_DTYPES)
    _checks.check_tensor("w0", w0, _checks.WEIGHT_DTYPES)
    _checks.check_tensor("out", out, _checks.WEIGHT_DTYPES)
    _checks.check_same("eps", eps, {"w0": w0, "out": out})
    scale = _checks.check_scalar("scale", scale)
    stochastic = _checks.check_rounding(rounding) == "stochastic"
    seed, offset = _checks.check_stream(seed, offset, eps.numel())
    e, w, o = _flat(eps, w0, out)
    size = _chunk(eps.device, PHILOX_CHUNK if stochastic else STREAM_CHUNK)
    tmp = _scratch(min(size, e.numel()), eps.device)
    eps_tmp = None if eps.dtype == torch.float32 else _scratch(tmp.numel(), eps.device)
    for s in range(0, e.numel(), size):
        ec, wc, oc = e[s : s + size], w[s : s + size], o[s : s + size]
        t = tmp[: ec.numel()]
        if eps_tmp is None:
            if scale != 1.0:
                ec.mul_(scale)
            e32 = ec
        else:
            ec.copy_(eps_tmp[: ec.numel()].copy_(ec).mul_(scale))
            e32 = eps_tmp[: ec.numel()].copy_(ec)  # w0 receives the stored (rounded) eps
        # Same-dtype fp32 ops and plain casts: torch's mixed-dtype add into a 16-bit output
        # takes a slower path with an internal temporary.
        if wc.dtype == torch.float32 and oc.dtype == torch.float32:
            torch.add(wc, e32, out=oc)
            continue
        if wc.dtype == torch.float32:
            torch.add(wc, e32, out=t)
        else:
            t.copy_(wc).add_(e32)
        if stochastic and oc.dtype != torch.float32:
            _store_stochastic(oc, t, seed, offset + s)
        else:
            oc.copy_(t)  # fp32 -> bf16/fp16 cast: round to nearest even


def randn_sumsq(
    numel: int, seed: int, offset: int, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """``sum(z**2)`` over the CPU noise at counters ``offset .. offset+numel-1`` (fp64 scalar).

    ``z`` is ``cpu_noise``'s stream (torch's CPU generator in counter-addressed blocks), not
    Triton's: the same on this backend for any chunking and thread count.
    """
    if isinstance(numel, bool) or not isinstance(numel, int) or numel < 0:
        raise ValueError(f"numel must be a non-negative int, got {numel!r}")
    total = cpu_noise.sumsq(numel, seed, offset)
    return torch.tensor(total, dtype=torch.float64, device=torch.device(device))


def randn_apply_(
    w0: torch.Tensor,
    out: torch.Tensor,
    scale: float,
    seed: int,
    offset: int,
    *,
    norms: bool = False,
) -> tuple[float, float] | None:
    """``out = round_nearest(w0 + scale * z)``, z the CPU noise at counters ``offset + i``.

    With ``norms``, returns ``(sum((out - w0)**2), sum(w0**2))`` measured on the way (CPU only).
    """
    _checks.check_tensor("w0", w0, _checks.WEIGHT_DTYPES)
    _checks.check_tensor("out", out, _checks.WEIGHT_DTYPES)
    _checks.check_same("w0", w0, {"out": out})
    scale = _checks.check_scalar("scale", scale)
    return cpu_noise.apply_(w0, out, scale, seed, offset, norms=norms)


def multi_sumsq(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """``sum over tensors of sum(t**2)``, accumulated in fp32, as an fp32 scalar."""
    ts = _checks.check_tensor_list(tensors)
    device = ts[0].device if ts else torch.device("cpu")
    size = _chunk(device, STREAM_CHUNK)
    tmp = None
    parts = []
    fp32 = [t for t in ts if t.dtype == torch.float32]
    if fp32:
        # One C++ loop (one multi-tensor kernel on CUDA) instead of a Python call per tensor.
        parts.append(torch.stack(torch._foreach_norm(fp32)).square_().sum())
    for t in ts:
        if t.dtype == torch.float32:
            continue
        flat = t.view(-1)
        if tmp is None:
            tmp = _scratch(size, device)
        for s in range(0, flat.numel(), size):
            c = tmp[: min(size, flat.numel() - s)].copy_(flat[s : s + size])
            parts.append(torch.dot(c, c))
    return _sum_parts(parts, device)
