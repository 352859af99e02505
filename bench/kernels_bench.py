"""Benchmark the kernel ops against eager PyTorch and ``torch._foreach_*`` doing the same work.

For each size N it times, per operation, three implementations:

- ``fused``: ``panacea_patch.kernels.ops`` through the dispatch (Triton on CUDA, the pure-torch
  reference on CPU);
- ``eager``: the plain PyTorch sequence a user would write for the same update;
- ``foreach``: the same sequence with ``torch._foreach_*`` ops, where one exists.

It reports GB/s of useful traffic (bytes the update must read and write, once each), the speed
ratio against eager, and the fraction of a plain device copy moving the same number of bytes,
measured in the same run. Times are the best of ``--repeats`` runs after a warm-up.

    python bench/kernels_bench.py                     # sizes chosen for the device
    python bench/kernels_bench.py --sizes 1e6 1e7 --threads 1 --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from panacea_patch.kernels import ops

CPU_SIZES = (1e6, 1e7)
GPU_SIZES = (1e6, 1e8, 1e9)
N_MULTI = 256  # tensors in the multi-tensor sum of squares, like a LoRA adapter's gradients
BYTES_PER_ELEMENT_PEAK = 44  # rough peak memory of all buffers and eager temporaries per element


@dataclass
class Row:
    """One timed implementation of one op at one size."""

    op: str
    n: int
    impl: str
    ms: float
    gbps: float | None = None
    vs_eager: float | None = None
    vs_copy: float | None = None


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_time(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Best wall time of ``repeats`` calls of ``fn`` after one warm-up, in seconds."""
    fn()
    _sync(device)
    best = math.inf
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            best = min(best, start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
    return best


# --------------------------------------------------------------------------------------------
# The work, three ways
# --------------------------------------------------------------------------------------------


class Buffers:
    """The tensors of one layerwise update of N elements: fp32 eps and grad, bf16 weights."""

    def __init__(self, n: int, device: torch.device) -> None:
        gen = torch.Generator(device=device).manual_seed(0)
        self.eps = torch.randn(n, device=device, generator=gen) * 1e-3
        self.grad = torch.randn(n, device=device, generator=gen)
        self.w0 = torch.randn(n, device=device, generator=gen).to(torch.bfloat16)
        self.out = torch.empty_like(self.w0)
        self.step = 1e-4
        # Keeps the projection active: every step leaves eps outside the ball, so eps is rescaled.
        self.rho = 0.5 * math.sqrt(ops.multi_sumsq([self.eps]).item())


def _scale(rho: float, sumsq: torch.Tensor) -> float:
    return min(1.0, rho / max(math.sqrt(sumsq.item()), 1e-30))


def pgd_impls(b: Buffers) -> dict[str, Callable[[], object]]:
    """``eps += step * grad; return sum(eps**2)``."""

    def eager() -> object:
        b.eps.add_(b.grad * b.step)
        return (b.eps * b.eps).sum()

    def foreach() -> object:
        torch._foreach_add_([b.eps], [b.grad], alpha=b.step)
        return torch._foreach_norm([b.eps])[0] ** 2

    return {
        "fused": lambda: ops.pgd_step_(b.eps, b.grad, b.step),
        "eager": eager,
        "foreach": foreach,
    }


def project_impls(b: Buffers) -> dict[str, Callable[[], object]]:
    """``eps *= scale; out = bf16(w0 + eps)``."""
    scale = 0.999999  # not 1.0, which would let the fused kernel skip writing eps

    def eager() -> None:
        b.eps.mul_(scale)
        b.out.copy_(b.w0.float() + b.eps)

    def foreach() -> None:
        torch._foreach_mul_([b.eps], scale)
        torch._foreach_copy_([b.out], torch._foreach_add([b.eps], [b.w0]))

    return {
        "fused": lambda: ops.project_apply_(b.eps, b.w0, b.out, scale),
        "eager": eager,
        "foreach": foreach,
    }


def update_impls(b: Buffers) -> dict[str, Callable[[], object]]:
    """One optimizer step: gradient step, norm, projection onto the ball, patched weights."""

    def fused() -> None:
        scale = _scale(b.rho, ops.pgd_step_(b.eps, b.grad, b.step))
        ops.project_apply_(b.eps, b.w0, b.out, scale)

    def eager() -> None:
        b.eps.add_(b.grad * b.step)
        scale = _scale(b.rho, (b.eps * b.eps).sum())
        b.eps.mul_(scale)
        b.out.copy_(b.w0.float() + b.eps)

    def foreach() -> None:
        torch._foreach_add_([b.eps], [b.grad], alpha=b.step)
        scale = _scale(b.rho, torch._foreach_norm([b.eps])[0] ** 2)
        torch._foreach_mul_([b.eps], scale)
        torch._foreach_copy_([b.out], torch._foreach_add([b.eps], [b.w0]))

    return {"fused": fused, "eager": eager, "foreach": foreach}


def randn_apply_impls(b: Buffers) -> dict[str, Callable[[], object]]:
    """``out = bf16(w0 + scale * z)``. Eager draws torch's own normals (another stream)."""
    gen = torch.Generator(device=b.w0.device).manual_seed(1)

    def eager() -> None:
        z = torch.randn(b.w0.numel(), device=b.w0.device, generator=gen)
        b.out.copy_(b.w0.float() + 1e-3 * z)

    return {"fused": lambda: ops.randn_apply_(b.w0, b.out, 1e-3, 7, 0), "eager": eager}


def randn_sumsq_impls(b: Buffers) -> dict[str, Callable[[], object]]:
    """``sum(z**2)`` for the noise of N elements. Eager materializes torch's own normals."""
    n, device = b.w0.numel(), b.w0.device
    gen = torch.Generator(device=device).manual_seed(1)

    def eager() -> object:
        return torch.randn(n, device=device, generator=gen).pow(2).sum()

    return {"fused": lambda: ops.randn_sumsq(n, 7, 0, device=device), "eager": eager}


def multi_impls(b: Buffers) -> dict[str, Callable[[], object]]:
    """Sum of squares over N_MULTI fp32 tensors that together hold N elements."""
    ts = list(b.grad.chunk(N_MULTI))

    def eager() -> object:
        return torch.stack([(t * t).sum() for t in ts]).sum()

    def foreach() -> object:
        return torch.stack(torch._foreach_norm(ts)).pow(2).sum()

    return {"fused": lambda: ops.multi_sumsq(ts), "eager": eager, "foreach": foreach}


# op name -> (implementations, useful bytes per element: each input read once, each output
# written once; None where the work has no memory traffic to speak of)
OPS: dict[str, tuple[Callable[[Buffers], dict[str, Callable[[], object]]], int | None]] = {
    "pgd_step_": (pgd_impls, 4 + 4 + 4),  # read eps, grad; write eps
    "project_apply_": (project_impls, 4 + 4 + 2 + 2),  # read+write eps; read w0; write out
    "update (step+apply)": (update_impls, 12 + 12),
    "randn_apply_": (randn_apply_impls, 2 + 2),  # read w0; write out
    "randn_sumsq": (randn_sumsq_impls, None),
    "multi_sumsq": (multi_impls, 4),
}


def copy_gbps(n: int, device: torch.device, repeats: int) -> float:
    """Bandwidth of ``dst.copy_(src)`` moving 12 bytes per element (6 read, 6 written)."""
    src = torch.ones(3 * n // 2, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    seconds = best_time(lambda: dst.copy_(src), device, repeats)
    return 12 * n / seconds / 1e9


def bench_size(n: int, device: torch.device, repeats: int, only: list[str] | None) -> list[Row]:
    """All ops at one size; rows carry GB/s, ratio against eager and fraction of copy."""
    copy = copy_gbps(n, device, repeats)
    rows = [Row("copy", n, "torch", 12 * n / copy / 1e6, copy, None, 1.0)]
    b = Buffers(n, device)
    for name, (impls_of, bytes_per_el) in OPS.items():
        if only and name not in only:
            continue
        times = {impl: best_time(fn, device, repeats) for impl, fn in impls_of(b).items()}
        for impl, seconds in times.items():
            gbps = bytes_per_el * n / seconds / 1e9 if bytes_per_el else None
            rows.append(
                Row(
                    name,
                    n,
                    impl,
                    seconds * 1e3,
                    gbps,
                    times["eager"] / seconds,
                    gbps / copy if gbps else None,
                )
            )
    return rows


def block_sweep(n: int, device: torch.device, repeats: int) -> list[Row]:
    """Triton only: pgd_step_ and project_apply_ at several block sizes and warp counts."""
    from panacea_patch.kernels.pgd_step import pgd_step_triton
    from panacea_patch.kernels.project_apply import project_apply_triton

    b = Buffers(n, device)
    rows = []
    for block in (1024, 2048, 4096, 8192):
        for warps in (4, 8):
            tag = f"triton block={block} warps={warps}"
            t = best_time(
                lambda bl=block, w=warps: pgd_step_triton(
                    b.eps, b.grad, 1e-4, block=bl, num_warps=w
                ),
                device,
                repeats,
            )
            rows.append(Row("pgd_step_", n, tag, t * 1e3, 12 * n / t / 1e9))
            t = best_time(
                lambda bl=block, w=warps: project_apply_triton(
                    b.eps, b.w0, b.out, 0.999999, block=bl, num_warps=w
                ),
                device,
                repeats,
            )
            rows.append(Row("project_apply_", n, tag, t * 1e3, 12 * n / t / 1e9))
    return rows


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


def _free_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _fmt(x: float | None, spec: str) -> str:
    width = int(spec.split(".")[0].rstrip("%f"))
    return f"{'-':>{width}}" if x is None else format(x, spec)


def print_rows(rows: list[Row]) -> None:
    """A fixed-width table of the rows."""
    print(f"{'op':<22}{'N':>12}  {'impl':<28}{'ms':>10}{'GB/s':>9}{'x eager':>9}{'of copy':>9}")
    for r in rows:
        print(
            f"{r.op:<22}{r.n:>12.3g}  {r.impl:<28}{r.ms:>10.3f}{_fmt(r.gbps, '9.1f')}"
            f"{_fmt(r.vs_eager, '9.2f')}{_fmt(r.vs_copy, '9.0%')}"
        )


def environment(device: torch.device) -> dict[str, object]:
    """What the figures were measured on."""
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    return {
        "device": str(device),
        "device_name": name or platform.machine(),
        "backend": ops.backend(device),
        "torch": torch.__version__,
        "triton": triton_version,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--sizes", type=float, nargs="+", help="element counts (default per device)")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per case (best is kept)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--ops", nargs="+", choices=list(OPS), help="only these ops")
    p.add_argument("--sweep", action="store_true", help="Triton block/warp sweep at the largest N")
    p.add_argument("--json", help="also write the rows and environment to this file")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print a table and optionally write JSON."""
    args = parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = [int(s) for s in (args.sizes or (GPU_SIZES if device.type == "cuda" else CPU_SIZES))]
    repeats = args.repeats or (20 if device.type == "cuda" else 5)
    env = environment(device)
    print(json.dumps(env))
    rows: list[Row] = []
    skipped = []
    for n in sizes:
        if n * BYTES_PER_ELEMENT_PEAK > 0.8 * _free_bytes(device):
            skipped.append(n)
            print(f"skip N={n:.3g}: needs ~{n * BYTES_PER_ELEMENT_PEAK / 1e9:.0f} GB")
            continue
        rows += bench_size(n, device, repeats, args.ops)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if args.sweep and env["backend"] == "triton":
        done = [n for n in sizes if n not in skipped]
        if done:
            rows += block_sweep(max(done), device, repeats)
    print_rows(rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"env": env, "skipped": skipped, "rows": [asdict(r) for r in rows]}, f, indent=1
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
