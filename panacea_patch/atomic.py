"""All-or-nothing output directories.

Everything is written into a hidden temporary directory beside the destination and renamed into
place only when the run succeeds, so a failure, Ctrl-C or SIGTERM leaves neither a partial output
nor a stray temporary directory.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import InputError

TMP_PREFIX = ".panacea-tmp-"


class Terminated(BaseException):
    """Raised inside the run when SIGTERM arrives, so cleanup runs like on Ctrl-C."""


def check_output_path(out: Path, *, overwrite: bool, source: Path | None = None) -> Path:
    """Validate ``out`` before any work starts; returns it resolved."""
    out = Path(out).expanduser().resolve()
    if source is not None:
        src = Path(source).resolve()
        if out == src or src in out.parents:
            raise InputError(
                f"output directory {out} is the source or lies inside it",
                hint="choose an --out directory outside the source checkpoint",
            )
        if out in src.parents:
            raise InputError(
                f"output directory {out} contains the source checkpoint {src}",
                hint="choose an --out directory that does not contain the source",
            )
    if out.exists() and not overwrite:
        raise InputError(
            f"output directory {out} already exists",
            hint="choose another --out, or pass --overwrite to replace it",
        )
    if out.exists() and not out.is_dir():
        raise InputError(f"output path {out} is a file", hint="choose a directory path for --out")
    _probe_writable(_existing_ancestor(out.parent))
    return out


def _probe_writable(parent: Path) -> None:
    # A real probe rather than os.access: root passes access() checks on read-only mounts.
    try:
        probe = tempfile.mkdtemp(prefix=TMP_PREFIX + "probe-", dir=parent)
    except OSError as exc:
        raise InputError(
            f"cannot write to {parent} (permission denied: {exc.strerror})",
            hint="choose an --out location you can write to",
        ) from None
    os.rmdir(probe)


def _existing_ancestor(p: Path) -> Path:
    while not p.exists():
        p = p.parent
    return p


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise Terminated(f"terminated by signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def atomic_output_dir(
    out: Path, *, overwrite: bool = False, source: Path | None = None
) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``out`` when the block exits cleanly."""
    out = check_output_path(out, overwrite=overwrite, source=source)
    out.parent.mkdir(parents=True, exist_ok=True)
    with _sigterm_raises():
        tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX + out.name + "-", dir=out.parent))
        try:
            yield tmp
            _replace(tmp, out, overwrite=overwrite)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def _replace(tmp: Path, out: Path, *, overwrite: bool) -> None:
    os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; outputs are meant to be shared
    if out.exists():
        if not overwrite:
            raise InputError(f"output directory {out} appeared during the run", hint="retry")
        trash = Path(tempfile.mkdtemp(prefix=TMP_PREFIX + "old-", dir=out.parent))
        os.replace(out, trash / out.name)
        os.replace(tmp, out)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, out)
