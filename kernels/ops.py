"""The single dispatch point for the kernel ops: ``from panacea_patch.kernels import ops``.

Every element-wise update of weights or perturbations in the library goes through these functions.
Each call picks a backend from the tensors' device:

- ``PANACEA_KERNELS=torch``: the pure-torch reference, everywhere.
- ``PANACEA_KERNELS=triton``: the Triton kernels; an error where they cannot run (no Triton, no
  GPU driver, or CPU tensors without ``TRITON_INTERPRET=1`` set before the kernels were imported).
- unset or ``auto``: compiled Triton for CUDA tensors when Triton works, the reference otherwise.
  The interpreter (``TRITON_INTERPRET=1``) is never picked automatically: it is for testing the
  kernels, which force ``triton``.

Triton is imported lazily, on the first call that needs it, so CPU users never pay for it.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Sequence
from typing import Literal

import torch

from panacea_patch.errors import InputError, RuntimeFailure

from . import cpu_noise, reference

ENV_VAR = "PANACEA_KERNELS"
Backend = Literal["triton", "torch"]


class KernelConfigError(InputError, ValueError):
    """``PANACEA_KERNELS`` holds a value other than triton, torch or auto."""


class KernelBackendError(RuntimeFailure, RuntimeError):
    """The Triton backend was forced where it cannot run."""


def _forced() -> Backend | None:
    value = os.environ.get(ENV_VAR, "").strip().lower()
    if value in ("", "auto"):
        return None
    if value in ("triton", "torch"):
        return value  # type: ignore[return-value]
    raise KernelConfigError(
        f"{ENV_VAR}={value!r} is not a kernel backend",
        hint=f"set {ENV_VAR} to 'triton', 'torch' or 'auto', or unset it",
    )


@functools.cache
def _triton_import_problem() -> str | None:
    """Why the Triton kernels cannot be imported here, or None when they can."""
    try:
        from . import _triton_common  # noqa: F401
    except Exception as err:  # ImportError, or a broken Triton install raising anything
        return f"Triton is not usable here ({type(err).__name__}: {err})"
    return None


@functools.cache
def _cuda_driver_problem() -> str | None:
    """Why compiled Triton kernels cannot launch on this machine, or None when they can."""
    if not torch.cuda.is_available():
        return "no CUDA device is available"
    try:
        import triton

        triton.runtime.driver.active.get_current_device()
    except Exception as err:
        return f"Triton has no working GPU driver ({type(err).__name__}: {err})"
    return None


def triton_problem(device: torch.device) -> str | None:
    """Why the Triton kernels cannot run on tensors on ``device``, or None when they can."""
    problem = _triton_import_problem()
    if problem is not None:
        return problem
    from . import _triton_common

    if _triton_common.INTERPRETED:
        # The interpreter runs kernels on host memory (it stages CUDA tensors through the host).
        return None if device.type in ("cpu", "cuda") else f"the interpreter cannot use {device}"
    if device.type != "cuda":
        hint = (
            "set TRITON_INTERPRET=1 before panacea_patch.kernels is first imported"
            if device.type == "cpu"
            else "use CUDA tensors"
        )
        return f"compiled Triton kernels need CUDA tensors, got {device} ({hint})"
    return _cuda_driver_problem()


def _use_triton(device: torch.device) -> bool:
    forced = _forced()
    if forced == "torch":
        return False
    if forced is None:
        # Auto: compiled kernels on CUDA only. Checking the device first keeps CPU-only runs from
        # importing Triton at all; the interpreter is for testing the kernels, never picked here.
        if device.type != "cuda" or triton_problem(device) is not None:
            return False
        from . import _triton_common

        return not _triton_common.INTERPRETED
    problem = triton_problem(device)
    if problem is not None:
        raise KernelBackendError(
            f"{ENV_VAR}=triton was requested but {problem}",
            hint=f"unset {ENV_VAR} (or set it to 'torch') to use the pure-torch reference",
        )
    return True


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def backend(device: torch.device | str | None = None) -> Backend:
    """The backend the dispatch picks for tensors on ``device`` (default: CUDA if present)."""
    dev = _default_device() if device is None else torch.device(device)
    return "triton" if _use_triton(dev) else "torch"


def _device_of(t: object) -> torch.device:
    # Non-tensors fall through to the reference, whose checks raise the proper TypeError.
    return t.device if isinstance(t, torch.Tensor) else torch.device("cpu")


def pgd_step_(eps: torch.Tensor, grad: torch.Tensor, step: float) -> torch.Tensor:
    """``eps += step * grad`` in place (fp32 math); returns ``sum(eps**2)`` as an fp32 scalar.

    ``eps`` is fp32 or bf16, ``grad`` any float dtype of the same shape; both contiguous.
    """
    if _use_triton(_device_of(eps)):
        from .pgd_step import pgd_step_triton

        with _on(eps):
            return pgd_step_triton(eps, grad, step)
    return reference.pgd_step_(eps, grad, step)


def _on(t: torch.Tensor) -> contextlib.AbstractContextManager:
    """Triton launches on the current CUDA device: make it the tensor's (device maps, issue 12)."""
    dev = t.device
    if dev.type == "cuda" and dev.index is not None and dev.index != torch.cuda.current_device():
        return torch.cuda.device(dev)
    return contextlib.nullcontext()


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

    ``rounding="nearest"`` equals ``.to(out.dtype)`` exactly; ``"stochastic"`` draws its bits
    from the Philox stream (``seed``, counters ``offset + i``). ``out`` may alias ``w0``.
    """
    if _use_triton(_device_of(eps)):
        from .project_apply import project_apply_triton

        with _on(eps):
            project_apply_triton(eps, w0, out, scale, rounding=rounding, seed=seed, offset=offset)
        return
    reference.project_apply_(eps, w0, out, scale, rounding=rounding, seed=seed, offset=offset)


def noise_generator(device: torch.device | str | None = None) -> str:
    """Which generator draws the random method's noise for tensors on ``device``.

    ``"triton-philox4x32"`` (``tl.randn``) on the Triton backend; on the torch backend
    ``cpu_noise.GENERATOR``, ``"torch-mt19937+numpy-philox4x64"`` (torch's CPU generator for each
    block's direction, numpy's Philox for its radius). The same seed gives the same noise on the
    same backend only.
    """
    return "triton-philox4x32" if backend(device) == "triton" else cpu_noise.GENERATOR


def randn_sumsq(
    numel: int, seed: int, offset: int, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """``sum(z**2)`` for the normals ``z`` at counters ``offset + i``, ``i < numel``.

    A scalar tensor: fp32 from Triton, fp64 from the CPU path. ``z`` is a pure function of the
    seed and the counter on each backend, but the backends draw different streams
    (``noise_generator``).
    """
    dev = torch.device(device)
    if _use_triton(dev):
        from .randn import randn_sumsq_triton

        return randn_sumsq_triton(numel, seed, offset, device=dev)
    return reference.randn_sumsq(numel, seed, offset, device=dev)


def randn_apply_(
    w0: torch.Tensor,
    out: torch.Tensor,
    scale: float,
    seed: int,
    offset: int,
    *,
    norms: bool = False,
) -> tuple[float, float] | None:
    """``out = round_nearest(w0 + scale * z)`` with ``z`` the normals at counters ``offset + i``.

    Triton's Philox on the Triton backend, ``cpu_noise`` on the torch backend: same seed and same
    backend give the same bytes for any tensor split, block or chunk size and thread count.
    ``norms=True`` asks for ``(sum((out - w0)**2), sum(w0**2))`` measured on the way; the CPU path
    gives it (saving a second pass over both tensors), the others return None.
    """
    if _use_triton(_device_of(w0)):
        from .randn import randn_apply_triton

        randn_apply_triton(w0, out, scale, seed, offset)
        return None
    return reference.randn_apply_(w0, out, scale, seed, offset, norms=norms)


def multi_sumsq(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """``sum(t**2)`` over all elements of all ``tensors`` (fp32 accumulation), one launch per dtype."""
    first = tensors[0] if isinstance(tensors, Sequence) and len(tensors) > 0 else None
    if first is not None and isinstance(first, torch.Tensor):
        devices = list(dict.fromkeys(t.device for t in tensors if isinstance(t, torch.Tensor)))
        if len(devices) > 1:
            # Tensors spread by a device map: one sum per device, added on the first's device.
            parts = [multi_sumsq([t for t in tensors if t.device == d]) for d in devices]
            return torch.stack([p.to(first.device) for p in parts]).sum()
    if first is not None and _use_triton(_device_of(first)):
        from .multi_sumsq import multi_sumsq_triton

        with _on(first):
            return multi_sumsq_triton(tensors)
    return reference.multi_sumsq(tensors)


__all__ = [
    "ENV_VAR",
    "KernelBackendError",
    "KernelConfigError",
    "backend",
    "multi_sumsq",
    "noise_generator",
    "pgd_step_",
    "project_apply_",
    "randn_apply_",
    "randn_sumsq",
    "triton_problem",
]
