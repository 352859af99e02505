"""Streaming safetensors: header parsing, validation and a one-tensor-at-a-time file writer.

The safetensors library's ``save_file`` serialises a whole dict at once, which doubles peak memory
for a shard. The format is simple enough (8-byte little-endian header length, a JSON header, then
raw little-endian tensor bytes) that writing it tensor by tensor keeps memory at one tensor.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch

from .errors import InputError

DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}
DTYPE_NAMES: dict[torch.dtype, str] = {v: k for k, v in DTYPES.items()}

_MAX_HEADER = 100_000_000
_WRITEBACK_EVERY = 64 << 20  # bytes between writeback kicks in StreamingWriter
_DONTNEED = getattr(os, "POSIX_FADV_DONTNEED", 4)


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives: file, dtype, shape and byte range inside the data section."""

    name: str
    file: Path
    dtype: torch.dtype
    shape: tuple[int, ...]
    begin: int
    end: int
    data_start: int

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


@dataclass(frozen=True)
class Header:
    """A parsed safetensors header."""

    file: Path
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]
    data_start: int


def _corrupt(path: Path, why: str) -> InputError:
    return InputError(
        f"{path} is not a valid safetensors file: {why}",
        hint="re-download or re-save the checkpoint; the file looks truncated or corrupt",
    )


def read_header(path: Path) -> Header:
    """Parse and validate a safetensors header against the file's real size."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise _corrupt(path, "shorter than the 8-byte header length")
        (n,) = struct.unpack("<Q", raw)
        if n > _MAX_HEADER or 8 + n > size:
            raise _corrupt(path, f"header length {n} exceeds the file size {size}")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise _corrupt(path, f"header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise _corrupt(path, "header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    data_start = 8 + n
    tensors: dict[str, TensorInfo] = {}
    for name, entry in header.items():
        try:
            dtype = DTYPES[entry["dtype"]]
            begin, end = (int(x) for x in entry["data_offsets"])
            shape = tuple(int(s) for s in entry["shape"])
        except (KeyError, TypeError, ValueError):
            raise _corrupt(path, f"bad entry for tensor {name!r}") from None
        info = TensorInfo(name, path, dtype, shape, begin, end, data_start)
        expected = info.numel * torch.empty((), dtype=dtype).element_size()
        if end - begin != expected:
            raise _corrupt(path, f"tensor {name!r} has {end - begin} bytes, expected {expected}")
        if data_start + end > size:
            raise _corrupt(path, f"tensor {name!r} ends past the end of the file (truncated)")
        tensors[name] = info
    return Header(path, tensors, {str(k): str(v) for k, v in metadata.items()}, data_start)


def bytes_to_tensor(buf: bytearray, info: TensorInfo) -> torch.Tensor:
    """View raw little-endian bytes as a tensor (no copy)."""
    if info.numel == 0:
        return torch.empty(info.shape, dtype=info.dtype)
    return torch.frombuffer(buf, dtype=info.dtype).reshape(info.shape)


def tensor_to_bytes(t: torch.Tensor) -> memoryview:
    """The raw bytes of a CPU tensor, without a copy when it is contiguous."""
    t = t.detach().to("cpu").contiguous()
    if t.numel() == 0:
        return memoryview(b"")
    return memoryview(t.view(torch.uint8).numpy().data).cast("B")


class Background:
    """One worker thread running jobs in submission order, at most ``depth`` of them queued.

    File writes and sha256 release the GIL, so they run on another core while the caller
    computes the next tensor. ``submit`` re-raises a failed job's error at the next call;
    ``wait`` at the end. Queued jobs hold their data, so memory grows by at most ``depth`` items.
    """

    def __init__(self, depth: int = 2) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="panacea-io")
        self._pending: deque[Future[None]] = deque()
        self._depth = depth

    def submit(self, fn: Callable[..., None], *args: object) -> None:
        self._pending.append(self._pool.submit(fn, *args))
        while len(self._pending) > self._depth:
            self._pending.popleft().result()

    def wait(self) -> None:
        """Finish every queued job; raises the first error."""
        try:
            while self._pending:
                self._pending.popleft().result()
        finally:
            self.cancel()

    def cancel(self) -> None:
        """Drop what has not started, wait for what has, ignore errors (after a failure)."""
        for f in self._pending:
            f.cancel()
        self._pending.clear()
        self._pool.shutdown(wait=True)


class StreamingWriter:
    """Write one safetensors file tensor by tensor, hashing the bytes as they go.

    The header needs every tensor's byte range up front, so the caller declares the layout
    (names, dtypes, shapes) first and then supplies the data in that same order. Writing and
    hashing run in a background thread (``Background``): the buffers passed to ``write`` must
    not be modified afterwards; an I/O error surfaces at a later ``write`` or at ``close``.
    """

    def __init__(
        self,
        path: Path,
        layout: list[tuple[str, torch.dtype, tuple[int, ...]]],
        metadata: dict[str, str] | None = None,
    ) -> None:
        self.path = path
        self._io: Background | None = None
        self._order = [name for name, _, _ in layout]
        header: dict[str, object] = {}
        if metadata:
            header["__metadata__"] = metadata
        offset = 0
        self._sizes: dict[str, int] = {}
        for name, dtype, shape in layout:
            n = 1
            for s in shape:
                n *= s
            nbytes = n * torch.empty((), dtype=dtype).element_size()
            header[name] = {
                "dtype": DTYPE_NAMES[dtype],
                "shape": list(shape),
                "data_offsets": [offset, offset + nbytes],
            }
            self._sizes[name] = nbytes
            offset += nbytes
        blob = json.dumps(header, separators=(",", ":")).encode()
        # safetensors aligns the data section to 8 bytes with trailing spaces.
        blob += b" " * (-len(blob) % 8)
        self._file: BinaryIO = open(path, "wb")  # noqa: SIM115 - closed in close()
        self.sha256 = hashlib.sha256()
        self._unflushed = self._advised = 0
        self._emit(struct.pack("<Q", len(blob)) + blob)
        self._next = 0
        self._io = Background()

    def _emit(self, data: bytes | bytearray | memoryview) -> None:
        if self._io is not None:
            self._io.submit(self._emit_now, data)
        else:
            self._emit_now(data)

    def _emit_now(self, data: bytes | bytearray | memoryview) -> None:
        self._file.write(data)
        self.sha256.update(data)
        self._unflushed += len(data)
        if self._unflushed >= _WRITEBACK_EVERY:
            self._start_writeback()

    def _start_writeback(self) -> None:
        """Start writing what is written so far to disk, without waiting for it.

        Left to the kernel, a multi-GB output sits dirty in the page cache and is written out only
        at the end (or by whoever syncs), after the compute. FADV_DONTNEED on the written range
        starts the writeback now, overlapping it with the next tensors, and drops the pages once
        clean, so the output does not crowd the page cache. Best effort: ignored where unsupported.
        """
        self._file.flush()
        end = self._file.tell()
        with contextlib.suppress(AttributeError, OSError):
            os.posix_fadvise(self._file.fileno(), self._advised, end - self._advised, _DONTNEED)
        self._advised, self._unflushed = end, 0

    def write(self, name: str, data: bytes | bytearray | memoryview) -> None:
        """Write the next tensor's raw bytes; names must come in the declared order."""
        expected = self._order[self._next]
        if name != expected:
            raise RuntimeError(f"tensor {name!r} written out of order (expected {expected!r})")
        if len(data) != self._sizes[name]:
            raise RuntimeError(f"tensor {name!r}: {len(data)} bytes, expected {self._sizes[name]}")
        self._emit(data)
        self._next += 1

    def close(self) -> str:
        """Finish the file; returns its sha256. Fails if a declared tensor was never written."""
        if self._next != len(self._order):
            self.abort()
            raise RuntimeError(f"{self.path}: only {self._next}/{len(self._order)} tensors written")
        try:
            if self._io is not None:
                self._io.wait()
            self._start_writeback()  # flushes, and starts writing the tail to disk
        except BaseException:
            self.abort()  # e.g. ENOSPC on the last buffered bytes: do not leak the descriptor
            raise
        self._file.close()
        return self.sha256.hexdigest()

    def abort(self) -> None:
        """Close the file after a failure. Never raises: the error that led here is the one to
        report. Closing flushes buffered bytes, which fails again on a full disk (ENOSPC);
        ``BufferedWriter.close`` still closes the descriptor when its flush fails."""
        if self._io is not None:
            self._io.cancel()
        with contextlib.suppress(OSError):
            self._file.close()
