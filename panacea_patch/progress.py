"""Progress for terminals and for logs: one factory, a tqdm bar on a TTY, timed plain lines otherwise.

Every long phase of the library (optimizing, writing, evaluating, fine-tuning) reports through
:func:`progress_bar`. When stderr is a terminal it is a tqdm bar with total and ETA. When stderr is
a file or a pipe (CI, a Kubernetes job, ``nohup``) a bar's ``\\r`` updates would fill the log, so it
writes one plain line at most every *interval* seconds instead, each with the phase, done/total,
rate and ETA, and one final line when the phase ends. ``enabled=False`` (the CLI's ``-q``) silences
both.

The interval is, in order: the ``interval`` argument, the one set by :func:`progress_interval` for
the calling block (the ``--progress-interval`` option), the environment variable
``PANACEA_PATCH_PROGRESS_INTERVAL``, then 30 seconds.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any, TextIO

from .errors import InputError

ENV_INTERVAL = "PANACEA_PATCH_PROGRESS_INTERVAL"
DEFAULT_INTERVAL = 30.0
PREFIX = "progress:"

_interval: ContextVar[float | None] = ContextVar("panacea_patch_progress_interval", default=None)


def check_interval(seconds: float, origin: str = "--progress-interval") -> float:
    """``seconds`` as a float, or :class:`InputError` naming ``origin`` when it is not >= 0."""
    if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds >= 0):
        raise InputError(
            f"{origin} must be a number of seconds >= 0, got {seconds!r}",
            hint="pass e.g. --progress-interval 30, or 0 for a line at every update",
        )
    return float(seconds)


@contextlib.contextmanager
def progress_interval(seconds: float | None) -> Iterator[None]:
    """Within the block, progress lines use ``seconds`` (None keeps the environment or default).

    A bad value, given or in the environment, fails here, before any work starts.
    """
    token = _interval.set(check_interval(seconds)) if seconds is not None else None
    if token is None:
        resolve_interval()
    try:
        yield
    finally:
        if token is not None:
            _interval.reset(token)


def resolve_interval(interval: float | None = None) -> float:
    """The interval in force: the argument, the block's, ``$PANACEA_PATCH_PROGRESS_INTERVAL``, 30."""
    if interval is not None:
        return check_interval(interval)
    if (block := _interval.get()) is not None:
        return block
    env = os.environ.get(ENV_INTERVAL, "").strip()
    if env:
        try:
            value = float(env)
        except ValueError:
            value = -1.0
        return check_interval(value, f"{ENV_INTERVAL} (now {env!r})")
    return DEFAULT_INTERVAL


def is_terminal(stream: Any = None) -> bool:
    """Whether progress on ``stream`` (default stderr) can redraw a bar in place."""
    stream = sys.stderr if stream is None else stream
    if "ipykernel" in sys.modules:  # a notebook: tqdm.auto draws a widget
        return True
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (ValueError, OSError):  # a closed stream
        return False


class Progress:
    """What :func:`progress_bar` returns: a context manager counting the work done in one phase."""

    def __init__(self, total: int | None, desc: str, unit: str) -> None:
        self._total = total
        self.desc, self.unit = desc, unit
        self.n = 0
        self.postfix: dict[str, Any] = {}
        self.closed = False

    @property
    def total(self) -> int | None:
        return self._total

    @total.setter
    def total(self, value: int | None) -> None:
        self._total = value
        self._total_changed()

    def _total_changed(self) -> None:
        """Hook for a display that shows the total."""

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, **kv: Any) -> None:
        self.postfix.update(kv)

    def close(self, *, failed: bool = False) -> None:
        self.closed = True

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        self.close(failed=exc_type is not None)


class _Bar(Progress):
    """A tqdm bar on stderr."""

    def __init__(self, total: int | None, desc: str, unit: str, *, leave: bool) -> None:
        super().__init__(total, desc, unit)
        from tqdm.auto import tqdm

        self._bar = tqdm(
            total=total,
            desc=desc,
            unit=unit,
            unit_scale=unit == "B",
            file=sys.stderr,
            leave=leave,
            dynamic_ncols=True,
        )

    def _total_changed(self) -> None:
        self._bar.total = self._total
        self._bar.refresh()

    def update(self, n: int = 1) -> None:
        super().update(n)
        self._bar.update(n)

    def set_postfix(self, **kv: Any) -> None:
        super().set_postfix(**kv)
        self._bar.set_postfix(self.postfix, refresh=False)

    def close(self, *, failed: bool = False) -> None:
        if not self.closed:
            self._bar.close()
        super().close(failed=failed)


class _Lines(Progress):
    """Plain lines for a log: at most one every ``interval`` seconds, and one when the phase ends."""

    def __init__(
        self,
        total: int | None,
        desc: str,
        unit: str,
        *,
        interval: float,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(total, desc, unit)
        self.interval, self._stream, self._clock = interval, stream, clock
        self._start = self._last = clock()

    def update(self, n: int = 1) -> None:
        super().update(n)
        now = self._clock()
        if now - self._last >= self.interval:
            self._last = now
            self._write(self._line(now))

    def close(self, *, failed: bool = False) -> None:
        if not self.closed:
            self._write(self._final(self._clock(), failed))
        super().close(failed=failed)

    def _line(self, now: float) -> str:
        elapsed = now - self._start
        rate = self.n / elapsed if elapsed > 0 else 0.0
        done = self._amount(self.n)
        if self.total:
            done += f"/{self._amount(self.total)} {self.unit} ({100 * self.n / self.total:.0f}%)"
            left = self.total - self.n
            eta = _duration(left / rate) if rate > 0 and left >= 0 else "?"
        else:
            done += f" {self.unit}"
            eta = "?"
        return f"{PREFIX} {self.desc}: {done}, {self._rate(rate)}, ETA {eta}{self._postfix()}"

    def _final(self, now: float, failed: bool) -> str:
        elapsed = now - self._start
        rate = self.n / elapsed if elapsed > 0 else 0.0
        done = self._amount(self.n)
        if self.total:
            done += f"/{self._amount(self.total)}"
        state = "stopped" if failed else "done"
        return (
            f"{PREFIX} {self.desc}: {state}, {done} {self.unit} in {_duration(elapsed)},"
            f" {self._rate(rate)}{self._postfix()}"
        )

    def _amount(self, value: float) -> str:
        if self.unit == "B":
            return _scaled(value)
        return f"{value:g}" if isinstance(value, float) else str(value)

    def _rate(self, rate: float) -> str:
        if self.unit == "B":
            return f"{_scaled(rate)} B/s"
        if 0 < rate < 1:
            return f"{1 / rate:.3g} s/{self.unit}"
        return f"{rate:.3g} {self.unit}/s"

    def _postfix(self) -> str:
        return "".join(f", {k}={v}" for k, v in self.postfix.items())

    def _write(self, line: str) -> None:
        stream = self._stream or sys.stderr
        stream.write(line + "\n")
        stream.flush()


def _scaled(value: float) -> str:
    """1234567 -> '1.23M' (the unit follows)."""
    for prefix in ("", "k", "M", "G", "T"):
        if abs(value) < 1000 or prefix == "T":
            return f"{value:.3g}{prefix}" if prefix else f"{value:.0f}"
        value /= 1000
    return f"{value:.3g}T"  # pragma: no cover - the loop always returns


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def progress_bar(
    *,
    total: int | None,
    desc: str,
    unit: str,
    enabled: bool,
    interval: float | None = None,
    leave: bool = True,
) -> Progress:
    """The progress of one phase: a tqdm bar on a terminal, timed plain lines in a log.

    Use it as a context manager (or call ``close()``): ``with progress_bar(...) as bar:
    bar.update(n)``. ``bar.total`` may be set later, when the amount of work is known;
    ``bar.set_postfix(loss=...)`` adds figures to the bar or to each line. ``enabled=False``
    shows nothing. ``interval`` (seconds between lines in a log) defaults as the module says;
    ``leave`` keeps a finished terminal bar on screen.
    """
    if not enabled:
        return Progress(total, desc, unit)
    if is_terminal():
        return _Bar(total, desc, unit, leave=leave)
    return _Lines(total, desc, unit, interval=resolve_interval(interval))


@contextlib.contextmanager
def hub_progress_bars(enabled: bool) -> Iterator[None]:
    """huggingface_hub's progress bars off for the block when not ``enabled`` (a global switch)."""
    from huggingface_hub.utils import (
        are_progress_bars_disabled,
        disable_progress_bars,
        enable_progress_bars,
    )

    if enabled or are_progress_bars_disabled():
        yield
        return
    disable_progress_bars()
    try:
        yield
    finally:
        enable_progress_bars()
