"""Kernel ops: Triton launchers (interpreter on CPU, compiled on a GPU) against torch references.

The references are checked against independent oracles (torch's own casts, float64 sums, a
pure-Python Philox); the Triton launchers are checked against the references, except the random
method's noise: its CPU path draws another stream (tests/test_random_noise.py), so the Triton
randn kernels are checked against their own stream, the Philox emulation and the normal law.
"""

from __future__ import annotations

import os

# Before anything imports the kernels: @triton.jit reads it at decoration time.
os.environ.setdefault("TRITON_INTERPRET", "1")

import math

import pytest
import torch
from panacea_patch.kernels import ops
from panacea_patch.kernels import reference as ref

pytest.importorskip("triton")

from panacea_patch.kernels import _triton_common as tc
from panacea_patch.kernels.multi_sumsq import multi_sumsq_triton
from panacea_patch.kernels.pgd_step import pgd_step_triton
from panacea_patch.kernels.project_apply import project_apply_triton
from panacea_patch.kernels.randn import randn_apply_triton, randn_sumsq_triton

if tc.INTERPRETED:
    DEV = torch.device("cpu")
elif torch.cuda.is_available():
    DEV = torch.device("cuda")
else:  # Triton imported without the interpreter on a machine without a GPU
    DEV = None

needs_triton = pytest.mark.skipif(
    DEV is None, reason="Triton can run neither compiled nor interpreted"
)

SMALL_SHAPES = [(1,), (7,), (4097,), (33, 129)]
LARGE_SHAPE = (300_007,)
SHAPES = [*SMALL_SHAPES, LARGE_SHAPE]
SEEDS = [0, 1234, 2**40 + 17]
# (eps dtype, atol, rtol): fp32 allows an ulp of fused-vs-separate multiply-add; bf16 a bf16 ulp.
EPS_TOL = [(torch.float32, 1e-6, 1e-6), (torch.bfloat16, 1e-6, 2**-7)]
WEIGHT_DTYPES = [torch.float32, torch.bfloat16, torch.float16]
GRAD_DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64]
# Every dtype on the small shapes; the large shape (slow in the interpreter) with fp32 eps only.
PGD_CASES = [
    (shape, *tol, grad) for shape in SMALL_SHAPES for tol in EPS_TOL for grad in GRAD_DTYPES
] + [(LARGE_SHAPE, *EPS_TOL[0], torch.float32)]
PROJECT_CASES = [
    (shape, *tol, out) for shape in SMALL_SHAPES for tol in EPS_TOL for out in WEIGHT_DTYPES
] + [(LARGE_SHAPE, *EPS_TOL[0], out) for out in WEIGHT_DTYPES]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(
    shape: tuple[int, ...], dtype: torch.dtype, seed: int, scale: float = 1.0
) -> torch.Tensor:
    return (torch.randn(shape, generator=_gen(seed)) * scale).to(dtype).to(DEV or "cpu")


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int16 if t.element_size() == 2 else torch.int32)


def _assert_same_bits(a: torch.Tensor, b: torch.Tensor) -> None:
    """Bit-for-bit equality, NaN payloads aside."""
    nan = torch.isnan(a.float())
    assert torch.equal(nan, torch.isnan(b.float()))
    assert torch.equal(_bits(a)[~nan], _bits(b)[~nan])


# --------------------------------------------------------------------------------------------
# The references against independent oracles
# --------------------------------------------------------------------------------------------


def _py_philox(seed: int, counter: int) -> list[int]:
    """Philox-4x32-10 in plain Python integers, written from the published algorithm."""
    m = 0xFFFFFFFF
    c = [counter & m, counter >> 32, 0, 0]
    k0, k1 = seed & m, (seed >> 32) & m
    for _ in range(10):
        p0 = 0xD2511F53 * c[0]
        p1 = 0xCD9E8D57 * c[2]
        c = [(p1 >> 32) ^ c[1] ^ k0, p1 & m, (p0 >> 32) ^ c[3] ^ k1, p0 & m]
        k0, k1 = (k0 + 0x9E3779B9) & m, (k1 + 0xBB67AE85) & m
    return c


@pytest.mark.parametrize("seed", [*SEEDS, 2**63 - 1])
@pytest.mark.parametrize("counter", [0, 5, 2**31 + 3, 2**32 + 1, 2**62 + 12345])
def test_reference_philox_words_match_python(seed: int, counter: int) -> None:
    words = ref.philox4x32(seed, torch.tensor([counter], dtype=torch.int64))
    assert [int(w.item()) for w in words] == _py_philox(seed, counter)


def test_reference_normals_follow_box_muller() -> None:
    seed, offset, n = 99, 2**33 - 5, 64
    z = ref.philox_normal(seed, offset, n)
    expected = []
    for i in range(n):
        w = _py_philox(seed, offset + i)
        u = [(x ^ 0xFFFFFFFF if x >= 2**31 else x) * 4.6566127342e-10 for x in w[:2]]
        expected.append(math.sqrt(-2.0 * math.log(max(u[0], 1e-7))) * math.cos(2 * math.pi * u[1]))
    torch.testing.assert_close(z, torch.tensor(expected, dtype=torch.float32), atol=1e-5, rtol=1e-5)


def test_reference_normals_are_standard_normal() -> None:
    z = ref.philox_normal(7, 0, 200_000).double()
    assert abs(z.mean().item()) < 0.02
    assert abs(z.var().item() - 1.0) < 0.02


def test_reference_stream_is_chunk_independent(monkeypatch: pytest.MonkeyPatch) -> None:
    whole = ref.philox_normal(3, 10, 5000)
    monkeypatch.setattr(ref, "PHILOX_CHUNK", 256)
    assert torch.equal(ref.philox_normal(3, 10, 5000), whole)
    assert torch.equal(ref.philox_normal(3, 1010, 4000), whole[1000:])


@pytest.mark.parametrize("eps_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("grad_dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_reference_pgd_step_matches_eager(eps_dtype: torch.dtype, grad_dtype: torch.dtype) -> None:
    eps = torch.randn(300_007, generator=_gen(1)).to(eps_dtype)
    grad = torch.randn(300_007, generator=_gen(2)).to(grad_dtype)
    expected = (eps.float() + 0.25 * grad.float()).to(eps_dtype)
    sumsq = ref.pgd_step_(eps, grad, 0.25)
    torch.testing.assert_close(
        eps, expected, atol=1e-6, rtol=1e-6 if eps_dtype == torch.float32 else 2**-7
    )
    assert sumsq.dtype == torch.float32 and sumsq.shape == ()
    assert sumsq.item() == pytest.approx((eps.double() ** 2).sum().item(), rel=1e-5)


@pytest.mark.parametrize("eps_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("w_dtype", WEIGHT_DTYPES)
@pytest.mark.parametrize("out_dtype", WEIGHT_DTYPES)
def test_reference_project_apply_nearest_is_torch_cast(
    eps_dtype: torch.dtype, w_dtype: torch.dtype, out_dtype: torch.dtype
) -> None:
    eps = (torch.randn(300_007, generator=_gen(3)) * 1e-2).to(eps_dtype)
    w0 = torch.randn(300_007, generator=_gen(4)).to(w_dtype)
    out = torch.empty(300_007, dtype=out_dtype)
    expected_eps = (eps.float() * 0.5).to(eps_dtype)
    ref.project_apply_(eps, w0, out, 0.5)
    assert torch.equal(eps, expected_eps)
    _assert_same_bits(out, (w0.float() + expected_eps.float()).to(out_dtype))


# --------------------------------------------------------------------------------------------
# Triton launchers against the references
# --------------------------------------------------------------------------------------------


@needs_triton
@pytest.mark.parametrize(("shape", "eps_dtype", "atol", "rtol", "grad_dtype"), PGD_CASES)
def test_pgd_step_matches_reference(
    shape: tuple[int, ...],
    eps_dtype: torch.dtype,
    atol: float,
    rtol: float,
    grad_dtype: torch.dtype,
) -> None:
    eps = _randn(shape, eps_dtype, 11)
    grad = _randn(shape, grad_dtype, 12)
    grad_before = grad.clone()
    eps_ref = eps.clone()
    ptr = eps.data_ptr()
    got = pgd_step_triton(eps, grad, -0.3)
    want = ref.pgd_step_(eps_ref, grad, -0.3)
    assert eps.data_ptr() == ptr and eps.shape == shape and eps.dtype == eps_dtype
    assert torch.equal(grad, grad_before)
    torch.testing.assert_close(eps, eps_ref, atol=atol, rtol=rtol)
    assert got.dtype == torch.float32 and got.shape == () and got.device == eps.device
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(got.double(), (eps.double() ** 2).sum(), atol=1e-6, rtol=1e-5)


@needs_triton
@pytest.mark.parametrize(("shape", "eps_dtype", "atol", "rtol", "out_dtype"), PROJECT_CASES)
@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
def test_project_apply_matches_reference(
    shape: tuple[int, ...],
    eps_dtype: torch.dtype,
    atol: float,
    rtol: float,
    out_dtype: torch.dtype,
    rounding: str,
) -> None:
    eps = _randn(shape, eps_dtype, 21, scale=1e-2)
    w0 = _randn(shape, out_dtype, 22)
    w0_before = w0.clone()
    out, out_ref, eps_ref = torch.empty_like(w0), torch.empty_like(w0), eps.clone()
    project_apply_triton(eps, w0, out, 0.75, rounding=rounding, seed=5, offset=2**32 - 3)
    ref.project_apply_(eps_ref, w0, out_ref, 0.75, rounding=rounding, seed=5, offset=2**32 - 3)
    assert torch.equal(w0, w0_before)
    torch.testing.assert_close(eps, eps_ref, atol=atol, rtol=rtol)
    # Same eps, same Philox bits, same bit-level rounding: the outputs agree exactly.
    _assert_same_bits(out, out_ref)
    if rounding == "nearest":
        _assert_same_bits(out, (w0.float() + eps.float()).to(out_dtype))


@needs_triton
@pytest.mark.parametrize("eps_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("w_dtype", WEIGHT_DTYPES)
@pytest.mark.parametrize("out_dtype", WEIGHT_DTYPES)
def test_project_apply_mixed_dtypes_round_like_torch(
    eps_dtype: torch.dtype, w_dtype: torch.dtype, out_dtype: torch.dtype
) -> None:
    eps = _randn((4097,), eps_dtype, 25, scale=1e-2)
    w0 = _randn((4097,), w_dtype, 26)
    out = torch.empty(4097, dtype=out_dtype, device=DEV)
    expected_eps = (eps.float() * 1.5).to(eps_dtype)
    project_apply_triton(eps, w0, out, 1.5)
    assert torch.equal(eps, expected_eps)
    _assert_same_bits(out, (w0.float() + expected_eps.float()).to(out_dtype))


@needs_triton
@pytest.mark.parametrize("out_dtype", WEIGHT_DTYPES)
def test_project_apply_in_place_on_w0(out_dtype: torch.dtype) -> None:
    eps = _randn((4097,), torch.float32, 31, scale=1e-2)
    w = _randn((4097,), out_dtype, 32)
    expected = (w.float() + eps).to(out_dtype)
    ptr = w.data_ptr()
    assert project_apply_triton(eps, w, w, 1.0) is None
    assert w.data_ptr() == ptr
    _assert_same_bits(w, expected)


def _special_fp32_values() -> torch.Tensor:
    """Every fp16 and bf16 value, the midpoints between neighbours and the fp32 values beside them,
    the overflow thresholds, infinities, NaN, fp32 subnormals, and random bit patterns."""
    all16 = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16)
    parts = []
    for dtype in (torch.float16, torch.bfloat16):
        vals = all16.view(dtype).float()
        vals = vals[torch.isfinite(vals)].unique()
        mids = ((vals[1:].double() + vals[:-1].double()) / 2).float()
        bits = mids.view(torch.int32)
        parts += [vals, mids, (bits + 1).view(torch.float32), (bits - 1).view(torch.float32)]
    rand_bits = torch.randint(-(2**31), 2**31, (60_000,), generator=_gen(5), dtype=torch.int64)
    parts.append(rand_bits.to(torch.int32).view(torch.float32))
    edges = [65504.0, 65519.99, 65520.0, 65536.0, 1e30, 3e38, 1e-45, 1e-40, -0.0, 0.0, 2**-14]
    edges += [float("inf"), float("-inf"), float("nan"), 2**-24, 2**-25, 1.5 * 2**-25]
    parts.append(torch.tensor(edges))
    x = torch.cat(parts)
    return torch.cat([x, -x])


@needs_triton
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("out_dtype", [torch.bfloat16, torch.float16])
def test_nearest_rounding_equals_torch_cast_bit_for_bit(out_dtype: torch.dtype) -> None:
    x = _special_fp32_values().to(DEV)
    eps = x.clone()
    # w0 = -0.0 leaves every x unchanged, -0.0 included (x + -0.0 == x in IEEE arithmetic).
    w0 = torch.full_like(x, -0.0)
    out = torch.empty(x.shape, dtype=out_dtype, device=DEV)
    with torch.no_grad():
        project_apply_triton(eps, w0, out, 1.0)
    _assert_same_bits(out, x.to(out_dtype))


def _neighbours(x: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The representable ``dtype`` values just below and above each fp32 ``x`` (equal if exact)."""
    near = x.to(dtype)
    bits = near.view(torch.int16).to(torch.int32)
    mag, sign = bits & 0x7FFF, bits & 0x8000
    away = near.float().abs() < x.abs()  # nearest lies towards zero: the other one is further out
    other_mag = torch.where(away, mag + 1, (mag - 1).clamp_min(0))
    other = (other_mag | sign).to(torch.int16).view(dtype)
    other = torch.where(near.float() == x, near, other)
    lo = torch.minimum(near.float(), other.float())
    hi = torch.maximum(near.float(), other.float())
    return lo, hi


@needs_triton
@pytest.mark.parametrize("out_dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("seed", SEEDS)
def test_stochastic_rounding_returns_a_neighbour(out_dtype: torch.dtype, seed: int) -> None:
    x = torch.randn(70_000, generator=_gen(seed % 1000)) * torch.logspace(-9, 4, 70_000)
    eps = x.to(DEV)
    out = torch.empty(x.shape, dtype=out_dtype, device=DEV)
    project_apply_triton(eps, torch.zeros_like(eps), out, 1.0, rounding="stochastic", seed=seed)
    lo, hi = _neighbours(x, out_dtype)
    got = out.float().cpu()
    assert bool(((got == lo) | (got == hi)).all())
    # Both neighbours occur: it is not round-to-nearest in disguise.
    near = x.to(out_dtype).float()
    assert 0.05 < (got != near).float().mean().item() < 0.5


@needs_triton
@pytest.mark.parametrize("out_dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("frac", [0.1, 0.5, 0.83])
@pytest.mark.parametrize("base", [1.0, -3.0, 2**-20, 100.0])
def test_stochastic_rounding_is_unbiased(out_dtype: torch.dtype, frac: float, base: float) -> None:
    n = 1 << 16
    lo = torch.tensor(base).to(out_dtype)
    step = (torch.tensor(abs(base)).to(out_dtype).view(torch.int16) + 1).view(
        out_dtype
    ).float() - abs(lo.float())
    x = (lo.float() + math.copysign(frac, base) * step).item()
    eps = torch.full((n,), x, device=DEV)
    out = torch.empty(n, dtype=out_dtype, device=DEV)
    project_apply_triton(
        eps, torch.zeros_like(eps), out, 1.0, rounding="stochastic", seed=9, offset=7
    )
    mean_err = (out.double() - x).mean().item() / step.item()
    # Each draw errs by at most one gap; the mean of n draws has std <= 0.5/sqrt(n) gaps.
    assert abs(mean_err) < 5 * 0.5 / math.sqrt(n)


# The random method's noise: Triton draws tl.randn's Philox stream, the CPU path its own
# (cpu_noise, tested in test_random_noise.py). Same backend, same bytes; the backends differ, so
# the Triton kernels are checked against their own stream, the exact Philox emulation
# (ref.philox_normal) and the normal law, not against the CPU path.


def _triton_z(n: int, seed: int, offset: int, block: int | None = None) -> torch.Tensor:
    """Triton's normals at counters offset + i, read back through randn_apply on zeros."""
    z = torch.empty(n, device=DEV)
    randn_apply_triton(torch.zeros(n, device=DEV), z, 1.0, seed, offset, block=block)
    return z


@needs_triton
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seed", SEEDS)
def test_randn_sumsq_matches_its_stream(shape: tuple[int, ...], seed: int) -> None:
    n = math.prod(shape)
    got = randn_sumsq_triton(n, seed, 2**33 + 1, device=DEV)
    assert got.dtype == torch.float32 and got.shape == ()
    z = _triton_z(n, seed, 2**33 + 1, block=65536)
    torch.testing.assert_close(got.double(), (z.double() ** 2).sum(), atol=1e-5, rtol=1e-5)


@needs_triton
@pytest.mark.parametrize("shape", SMALL_SHAPES)
@pytest.mark.parametrize("out_dtype", WEIGHT_DTYPES)
@pytest.mark.parametrize("seed", SEEDS)
def test_randn_apply_adds_its_scaled_stream(
    shape: tuple[int, ...], out_dtype: torch.dtype, seed: int
) -> None:
    w0 = _randn(shape, out_dtype, 41)
    out = torch.empty_like(w0)
    randn_apply_triton(w0, out, 0.05, seed, 17)
    z = _triton_z(w0.numel(), seed, 17).view(shape)
    want = (w0.float() + 0.05 * z).to(out_dtype)
    # Fused multiply-add in the kernel against two roundings here: an fp32 ulp, which can flip
    # a bf16/fp16 rounding now and then.
    torch.testing.assert_close(
        out, want, atol=1e-6, rtol=2**-7 if out_dtype != torch.float32 else 1e-6
    )
    if out_dtype != torch.float32:
        assert (out != want).float().mean().item() < 1e-3


@needs_triton
def test_randn_triton_is_standard_normal_and_seeded() -> None:
    n = 1 << 17
    z = _triton_z(n, 5, 2**32 + 3, block=65536)
    assert abs(z.double().mean().item()) < 0.015
    assert abs(z.double().var().item() - 1.0) < 0.015
    assert abs((z.abs() > 3).double().mean().item() - 0.0027) < 0.001
    assert torch.equal(_triton_z(n, 5, 2**32 + 3, block=65536), z)  # deterministic per seed
    other = _triton_z(n, 6, 2**32 + 3, block=65536)
    assert (other != z).float().mean().item() > 0.99


@needs_triton
@pytest.mark.parametrize("seed", SEEDS)
def test_randn_stream_independent_of_block_size(seed: int) -> None:
    n = 4097
    zero = torch.zeros(n, device=DEV)
    outs = []
    for block in (1024, 8192):
        z = torch.empty(n, device=DEV)
        randn_apply_triton(zero, z, 1.0, seed, 2**32 - 100, block=block)
        outs.append(z)
    assert torch.equal(outs[0], outs[1])
    # Element i is the normal at counter offset + i: a later offset is a shifted view.
    tail = torch.empty(n - 1000, device=DEV)
    randn_apply_triton(zero[1000:], tail, 1.0, seed, 2**32 - 100 + 1000, block=2048)
    assert torch.equal(tail, outs[0][1000:])
    torch.testing.assert_close(
        outs[0].cpu(), ref.philox_normal(seed, 2**32 - 100, n), atol=1e-5, rtol=1e-5
    )
    sums = [randn_sumsq_triton(n, seed, 2**32 - 100, device=DEV, block=b) for b in (1024, 8192)]
    torch.testing.assert_close(sums[0], sums[1], atol=0, rtol=1e-6)
    torch.testing.assert_close(sums[0], (outs[0].double() ** 2).sum().float(), atol=0, rtol=1e-5)


@needs_triton
@pytest.mark.parametrize("block", [1024, 65536])
def test_stochastic_rounding_independent_of_block_size(block: int) -> None:
    eps = _randn((4097,), torch.float32, 51, scale=1e-3)
    w0 = _randn((4097,), torch.bfloat16, 52)
    out, out_ref = torch.empty_like(w0), torch.empty_like(w0)
    project_apply_triton(eps.clone(), w0, out, 1.0, rounding="stochastic", seed=4, block=block)
    ref.project_apply_(eps.clone(), w0, out_ref, 1.0, rounding="stochastic", seed=4)
    _assert_same_bits(out, out_ref)


@needs_triton
@pytest.mark.parametrize(
    "dtypes", [[torch.float32], [torch.bfloat16, torch.float32, torch.float16, torch.float64]]
)
def test_multi_sumsq_matches_reference(dtypes: list[torch.dtype]) -> None:
    sizes = [1, 7, 4097, 0, 33 * 129, 20_000, 3, 65_537]
    ts = [_randn((s,), dtypes[i % len(dtypes)], 60 + i) for i, s in enumerate(sizes)]
    got = multi_sumsq_triton(ts, block=4096)
    want = ref.multi_sumsq(ts)
    exact = sum((t.double() ** 2).sum() for t in ts)
    assert got.dtype == torch.float32 and got.shape == ()
    torch.testing.assert_close(got, want, atol=0, rtol=1e-5)
    torch.testing.assert_close(got.double(), exact, atol=0, rtol=1e-5)


@needs_triton
def test_multi_sumsq_of_nothing_is_zero() -> None:
    assert multi_sumsq_triton([]).item() == 0.0
    assert ref.multi_sumsq([]).item() == 0.0
    assert multi_sumsq_triton([torch.empty(0, device=DEV)]).item() == 0.0


# --------------------------------------------------------------------------------------------
# Whole methods through the dispatch: Triton and the reference agree
# --------------------------------------------------------------------------------------------


def _run_optimizer(shapes: list[tuple[int, ...]], rho: float) -> tuple[list[torch.Tensor], ...]:
    """Normalized projected gradient ascent as the optimizer runs it, through ``ops`` only."""
    w0s = [_randn(s, torch.bfloat16, 70 + i) for i, s in enumerate(shapes)]
    grads = [_randn(s, torch.float32, 80 + i) for i, s in enumerate(shapes)]
    eps = [torch.zeros(s, device=DEV or "cpu") for s in shapes]
    outs = [torch.empty_like(w) for w in w0s]
    for k in range(4):
        gnorm = math.sqrt(ops.multi_sumsq(grads).item())
        sumsq = sum(
            ops.pgd_step_(e, g, rho / gnorm).item() for e, g in zip(eps, grads, strict=True)
        )
        scale = min(1.0, rho / math.sqrt(sumsq))
        offset = 0
        for e, w, o in zip(eps, w0s, outs, strict=True):
            ops.project_apply_(e, w, o, scale, rounding="stochastic", seed=k, offset=offset)
            offset += e.numel()
        grads = [g.flip(0).contiguous() for g in grads]
    return eps, outs


def _run_random(shapes: list[tuple[int, ...]], rho: float) -> list[torch.Tensor]:
    """The random method as it runs: one norm pass, then one apply pass, through ``ops`` only."""
    w0s = [_randn(s, torch.bfloat16, 90 + i) for i, s in enumerate(shapes)]
    offsets = [0, *torch.tensor([math.prod(s) for s in shapes]).cumsum(0).tolist()[:-1]]
    total = sum(
        ops.randn_sumsq(math.prod(s), 123, o, device=DEV or "cpu").item()
        for s, o in zip(shapes, offsets, strict=True)
    )
    outs = [torch.empty_like(w) for w in w0s]
    for w, o, off in zip(w0s, outs, offsets, strict=True):
        ops.randn_apply_(w, o, rho / math.sqrt(total), 123, off)
    return outs


@needs_triton
def test_optimizer_agrees_across_backends_random_repeats_on_each(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    shapes = [(33, 129), (7,), (4097,)]
    results = {}
    for name in ("torch", "triton"):
        monkeypatch.setenv(ops.ENV_VAR, name)
        assert ops.backend(DEV) == name
        results[name] = _run_optimizer(shapes, 0.5)
        # The random method draws a different stream on each backend: each must repeat its own
        # bytes and land ‖ε‖ = ρ (up to bf16 rounding of w + ε).
        first, again = _run_random(shapes, 0.5), _run_random(shapes, 0.5)
        for a, b in zip(first, again, strict=True):
            _assert_same_bits(a, b)
        w0s = [_randn(s, torch.bfloat16, 90 + i) for i, s in enumerate(shapes)]
        realized = math.sqrt(
            sum(
                ((o.double() - w.double()) ** 2).sum().item()
                for o, w in zip(first, w0s, strict=True)
            )
        )
        assert realized == pytest.approx(0.5, rel=0.05)
    for a_list, b_list in zip(results["torch"], results["triton"], strict=True):
        for a, b in zip(a_list, b_list, strict=True):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=2**-7)
            if a.dtype != torch.float32:  # fp32 eps may differ by an ulp (fused multiply-add)
                assert (a != b).float().mean().item() < 1e-2


# --------------------------------------------------------------------------------------------
# Dispatch
# --------------------------------------------------------------------------------------------


def test_dispatch_defaults_to_reference_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ops.ENV_VAR, raising=False)
    assert ops.backend("cpu") == "torch"
    monkeypatch.setenv(ops.ENV_VAR, "auto")
    assert ops.backend("cpu") == "torch"


def test_dispatch_forced_torch_runs_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ops.ENV_VAR, "torch")
    assert ops.backend() == "torch"
    eps, grad = torch.ones(5), torch.ones(5)
    assert ops.pgd_step_(eps, grad, 1.0).item() == 20.0


@needs_triton
def test_dispatch_forced_triton_calls_the_launcher(monkeypatch: pytest.MonkeyPatch) -> None:
    from panacea_patch.kernels import pgd_step

    calls = []

    def spy(*args: object, **kwargs: object) -> torch.Tensor:
        calls.append(args)
        return pgd_step_triton(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pgd_step, "pgd_step_triton", spy)
    monkeypatch.setenv(ops.ENV_VAR, "triton")
    assert ops.backend(DEV) == "triton"
    eps = torch.ones(5, device=DEV)
    assert ops.pgd_step_(eps, torch.ones(5, device=DEV), 1.0).item() == 20.0
    assert len(calls) == 1


def test_dispatch_rejects_unknown_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ops.ENV_VAR, "cuda")
    with pytest.raises(ValueError, match="PANACEA_KERNELS"):
        ops.backend()
    with pytest.raises(ops.KernelConfigError):
        ops.pgd_step_(torch.ones(1), torch.ones(1), 1.0)


def test_forcing_triton_where_it_cannot_run_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tc, "INTERPRETED", False)
    monkeypatch.setenv(ops.ENV_VAR, "triton")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        ops.pgd_step_(torch.ones(3), torch.ones(3), 1.0)
    with pytest.raises(ops.KernelBackendError):
        ops.backend("cpu")
    # The launcher itself refuses host tensors it cannot address.
    with pytest.raises(ValueError, match="CUDA"):
        pgd_step_triton(torch.ones(3), torch.ones(3), 1.0)


# --------------------------------------------------------------------------------------------
# Input errors: clear, the same on both backends, never a silent copy
# --------------------------------------------------------------------------------------------

BACKENDS = {
    "torch": (ref.pgd_step_, ref.project_apply_, ref.randn_apply_, ref.multi_sumsq),
    "triton": (pgd_step_triton, project_apply_triton, randn_apply_triton, multi_sumsq_triton),
}


def _impls(name: str) -> tuple:
    if name == "triton" and DEV is None:
        pytest.skip("Triton cannot run here")
    return BACKENDS[name]


def _dev(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.zeros(shape, dtype=dtype, device=DEV or "cpu")


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_errors_on_non_contiguous_inputs(backend: str) -> None:
    pgd, project, randn_apply, multi = _impls(backend)
    bad = _dev(8, 6).t()
    with pytest.raises(ValueError, match="not contiguous"):
        pgd(bad, _dev(6, 8).t(), 1.0)
    with pytest.raises(ValueError, match="not contiguous"):
        project(_dev(6, 8), bad, _dev(6, 8), 1.0)
    with pytest.raises(ValueError, match="not contiguous"):
        randn_apply(_dev(6, 8), bad, 1.0, 0, 0)
    with pytest.raises(ValueError, match="not contiguous"):
        multi([_dev(3), bad])


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_errors_on_mismatched_inputs(backend: str) -> None:
    pgd, project, randn_apply, _ = _impls(backend)
    with pytest.raises(ValueError, match="shape"):
        pgd(_dev(4), _dev(5), 1.0)
    with pytest.raises(ValueError, match="shape"):
        project(_dev(4), _dev(4), _dev(2, 2), 1.0)
    with pytest.raises(ValueError, match="shape"):
        randn_apply(_dev(4), _dev(3), 1.0, 0, 0)


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_errors_on_bad_dtypes_and_arguments(backend: str) -> None:
    pgd, project, randn_apply, multi = _impls(backend)
    with pytest.raises(TypeError, match="eps has dtype"):
        pgd(_dev(4, dtype=torch.float16), _dev(4), 1.0)
    with pytest.raises(TypeError, match="grad has dtype"):
        pgd(_dev(4), _dev(4, dtype=torch.int32), 1.0)
    with pytest.raises(TypeError, match="step"):
        pgd(_dev(4), _dev(4), torch.tensor(1.0))
    with pytest.raises(TypeError, match="out has dtype"):
        project(_dev(4), _dev(4), _dev(4, dtype=torch.float64), 1.0)
    with pytest.raises(ValueError, match="rounding"):
        project(_dev(4), _dev(4), _dev(4), 1.0, rounding="up")
    with pytest.raises(ValueError, match="seed"):
        project(_dev(4), _dev(4), _dev(4), 1.0, seed=-1)
    with pytest.raises(ValueError, match="overflows"):
        randn_apply(_dev(4), _dev(4), 1.0, 0, 2**63 - 2)
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        pgd([0.0], _dev(1), 1.0)
    with pytest.raises(TypeError, match="sequence"):
        multi(_dev(4))


@needs_triton
def test_launchers_reject_bad_block_sizes() -> None:
    with pytest.raises(ValueError, match="power of two"):
        pgd_step_triton(_dev(4), _dev(4), 1.0, block=1000)
    with pytest.raises(ValueError, match="numel"):
        randn_sumsq_triton(-1, 0, 0, device=DEV)
