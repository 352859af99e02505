"""Disk space for the output: checked before any work, and a full disk reported in one line.

The output's size is known before the run: the source's weights (the patched checkpoint has the
same tensors, dtypes and layout), its small files (config, tokenizer), ε in fp32 when
``--save-delta`` is given, and a margin for the index, provenance and card.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import InputError, RuntimeFailure

# Test hook, read only in ``free_bytes``: pretend the output's disk has this many bytes free.
FAKE_FREE_ENV = "PANACEA_PATCH_FAKE_FREE_BYTES"
MARGIN = 1 << 20  # index, panacea_patch.json, README.md and safetensors headers


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError  # pragma: no cover


def existing_dir(path: Path) -> Path:
    """The nearest directory at or above ``path`` that exists (where the output will land)."""
    p = Path(path).expanduser().resolve()
    while not p.exists():
        p = p.parent
    return p if p.is_dir() else p.parent


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still use on the disk holding ``path``."""
    fake = os.environ.get(FAKE_FREE_ENV)
    if fake:
        return int(fake)
    return shutil.disk_usage(existing_dir(path)).free


def delta_bytes(params: int, tensors: int) -> int:
    """Size of ``panacea_delta.safetensors``: ε in fp32 plus a header entry per tensor."""
    return 4 * params + 200 * tensors


def output_bytes(weight_files: Iterable[Path], source_dir: Path, *, delta: int = 0) -> int:
    """Bytes the output will take: weights, small files, ``delta`` bytes of ε, and a margin."""
    weights = sum(Path(f).stat().st_size for f in weight_files)
    small = sum(
        f.stat().st_size
        for f in Path(source_dir).iterdir()
        if f.is_file() and f.suffix not in (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
    )
    return weights + small + delta + MARGIN


def check_free_space(out: Path, needed: int, *, delta: int = 0) -> None:
    """Fail (exit 2) before any work when the output cannot fit on its disk."""
    where = existing_dir(Path(out).parent)
    free = free_bytes(where)
    if free >= needed:
        return
    extra = f" ({human(delta)} of it for --save-delta)" if delta else ""
    raise InputError(
        f"not enough free space for the output {out}: it needs {needed} bytes "
        f"({human(needed)}){extra}, and {where} has {free} bytes ({human(free)}) free",
        hint=f"free at least {human(needed - free)} there, or choose an --out on a disk with "
        f"{human(needed)} free",
    )


@contextmanager
def disk_full_is_a_failure(out: Path, needed: int) -> Iterator[None]:
    """Turn "No space left on device" while writing into one line (exit 1), no traceback."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        where = existing_dir(Path(out).parent)
        raise RuntimeFailure(
            f"the disk filled up while writing {out} (No space left on device): the output "
            f"needs {needed} bytes ({human(needed)}), {where} has {human(free_bytes(where))} "
            "free now; nothing was written",
            hint=f"free {human(needed)} there or choose an --out on another disk, then run again",
        ) from None
