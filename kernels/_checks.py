"""Argument validation shared by the Triton launchers and the torch references.

Both backends validate the same way, so a caller sees the same error whichever one the dispatch
picks. Nothing here copies: a bad input is an error, never a silent ``.contiguous()`` in a hot loop.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch

EPS_DTYPES = (torch.float32, torch.bfloat16)
WEIGHT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
GRAD_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
ROUNDING_MODES = ("nearest", "stochastic")

# Philox keys and counters are 64-bit; seeds and counters stay below 2**63 so they travel as
# signed int64 everywhere (Triton scalar arguments, torch int64 tensors) without wrapping.
MAX_COUNTER = 2**63 - 1


def _names(dtypes: Sequence[torch.dtype]) -> str:
    return ", ".join(str(d).removeprefix("torch.") for d in dtypes)


def check_tensor(name: str, t: object, dtypes: Sequence[torch.dtype]) -> torch.Tensor:
    """Check that ``t`` is a contiguous tensor of an allowed dtype and return it."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in dtypes:
        raise TypeError(f"{name} has dtype {t.dtype}; expected one of: {_names(dtypes)}")
    if not t.is_contiguous():
        raise ValueError(
            f"{name} is not contiguous (shape {tuple(t.shape)}, strides {t.stride()}); "
            "pass a contiguous tensor (the kernels never copy silently)"
        )
    return t


def check_same(ref_name: str, ref: torch.Tensor, others: dict[str, torch.Tensor]) -> None:
    """Check that every tensor in ``others`` has the shape and device of ``ref``."""
    for name, t in others.items():
        if t.shape != ref.shape:
            raise ValueError(
                f"{name} has shape {tuple(t.shape)} but {ref_name} has shape {tuple(ref.shape)}"
            )
        if t.device != ref.device:
            raise ValueError(f"{name} is on {t.device} but {ref_name} is on {ref.device}")


def check_scalar(name: str, value: object) -> float:
    """Check that ``value`` is a real Python/numpy number (not a tensor: that would sync)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    return float(value)


def check_rounding(rounding: object) -> str:
    """Check the rounding mode name."""
    if rounding not in ROUNDING_MODES:
        raise ValueError(f"rounding must be one of {ROUNDING_MODES}, got {rounding!r}")
    return str(rounding)


def check_counter(name: str, value: object) -> int:
    """Check a Philox seed or counter offset: an int in [0, 2**63)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    value = int(value)
    if not 0 <= value <= MAX_COUNTER:
        raise ValueError(f"{name} must be in [0, 2**63), got {value}")
    return value


def check_stream(seed: object, offset: object, numel: int) -> tuple[int, int]:
    """Check a seed and the counter range ``[offset, offset + numel)`` it will consume."""
    seed_i = check_counter("seed", seed)
    offset_i = check_counter("offset", offset)
    if offset_i + numel - 1 > MAX_COUNTER:
        raise ValueError(f"offset {offset_i} + numel {numel} overflows the 63-bit counter space")
    return seed_i, offset_i


def check_tensor_list(tensors: object) -> list[torch.Tensor]:
    """Check the input of ``multi_sumsq``: contiguous float tensors on one device."""
    if isinstance(tensors, torch.Tensor) or not isinstance(tensors, Sequence):
        raise TypeError("tensors must be a sequence of torch.Tensor (a list or tuple)")
    out = [check_tensor(f"tensors[{i}]", t, GRAD_DTYPES) for i, t in enumerate(tensors)]
    if out:
        device = out[0].device
        for i, t in enumerate(out):
            if t.device != device:
                raise ValueError(f"tensors[{i}] is on {t.device} but tensors[0] is on {device}")
    return out
