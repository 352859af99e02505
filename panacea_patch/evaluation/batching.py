"""Run work in batches, halving the batch size on out-of-memory when it is ``"auto"``."""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence
from typing import Literal, TypeVar

import torch

from panacea_patch.errors import InputError, RuntimeFailure
from panacea_patch.progress import progress_bar

BatchSize = int | Literal["auto"]

#: Where ``"auto"`` starts. High on purpose: a too-large batch costs one failed try, a too-small
#: one costs the whole run.
AUTO_START = 64

T = TypeVar("T")
R = TypeVar("R")


def check_batch_size(batch_size: BatchSize) -> BatchSize:
    """Validate a batch size: a positive int or the string ``"auto"``."""
    if batch_size == "auto":
        return batch_size
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(
            f"batch size {batch_size!r} is not valid",
            hint="pass a positive integer or 'auto'",
        )
    return batch_size


def is_out_of_memory(exc: BaseException) -> bool:
    """True for CUDA/CPU allocator failures, whatever exception class the backend used."""
    oom_type = getattr(torch, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def _release_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_batched(
    fn: Callable[[list[T]], list[R]],
    items: Sequence[T],
    batch_size: BatchSize,
    *,
    desc: str = "",
    progress: bool = False,
) -> list[R]:
    """Apply ``fn`` to consecutive batches of ``items`` and concatenate the results.

    With ``batch_size="auto"`` the first batch holds :data:`AUTO_START` items; on out-of-memory
    the same batch is retried at half the size, and the smaller size is kept for the rest of the
    run. A fixed batch size that runs out of memory raises :class:`RuntimeFailure`.
    ``fn`` must return one result per item.
    """
    check_batch_size(batch_size)
    auto = batch_size == "auto"
    size = max(1, min(AUTO_START if auto else int(batch_size), len(items)))
    results: list[R] = []
    bar = progress_bar(
        total=len(items), desc=desc or "batches", unit="item", enabled=progress, leave=False
    )
    with bar:
        while len(results) < len(items):
            chunk = list(items[len(results) : len(results) + size])
            out = _try(fn, chunk)
            if out is None:
                size = _smaller(size, auto, desc)
                continue
            if len(out) != len(chunk):
                raise RuntimeFailure(
                    f"{desc or 'batch'}: got {len(out)} results for {len(chunk)} items"
                )
            results.extend(out)
            bar.update(len(chunk))
    return results


def _try(fn: Callable[[list[T]], list[R]], chunk: list[T]) -> list[R] | None:
    # Returns None on OOM; the memory is released outside the except block so the traceback's
    # frames (which pin the activations) are already gone.
    oom = False
    try:
        return fn(chunk)
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        oom = True
    if oom:
        _release_memory()
    return None


def _smaller(size: int, auto: bool, desc: str) -> int:
    what = desc or "evaluation"
    if not auto:
        raise RuntimeFailure(
            f"{what} ran out of memory at batch size {size}",
            hint="pass a smaller batch size, or 'auto' to back off automatically",
        )
    if size == 1:
        raise RuntimeFailure(
            f"{what} ran out of memory even at batch size 1",
            hint="lower max-new-tokens, use a smaller model, or run on a device with more memory",
        )
    return size // 2
