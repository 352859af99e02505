"""Lazy shard reading and streaming, layout-preserving checkpoint writing."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import InputError
from .hashing import file_sha256
from .safetensors_io import (
    Background,
    Header,
    StreamingWriter,
    TensorInfo,
    bytes_to_tensor,
    read_header,
    tensor_to_bytes,
)
from .source import INDEX_NAME, PICKLE_INDEX, ResolvedSource

# Files that are weights or our own artefacts: never copied verbatim into an output.
_SKIP_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".lock")
_SKIP_NAMES = {INDEX_NAME, PICKLE_INDEX, "panacea_patch.json", "README.md", ".gitattributes"}

Transform = Callable[[str, torch.Tensor], "torch.Tensor | None"]


class ShardReader:
    """Reads tensors lazily from a checkpoint's shards, keeping at most one shard file open."""

    def __init__(self, source: ResolvedSource) -> None:
        self.source = source
        self._headers: dict[Path, Header] = {}
        self._infos: dict[str, TensorInfo] = {}
        self._pickled: dict[Path, dict[str, torch.Tensor]] = {}
        self._open_path: Path | None = None
        self._open_file: io.BufferedReader | None = None
        for f in source.weight_files:
            infos = self._pickle_infos(f) if source.is_pickle else read_header(f).tensors
            for name, info in infos.items():
                if name in self._infos:
                    raise InputError(
                        f"tensor {name!r} appears in both {self._infos[name].file.name} and {f.name}",
                        hint="fix the shard index so each tensor is stored once",
                    )
                self._infos[name] = info

    def __enter__(self) -> ShardReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._open_file is not None:
            self._open_file.close()
        self._open_file = self._open_path = None
        self._pickled.clear()

    def names(self) -> list[str]:
        return list(self._infos)

    def info(self, name: str) -> TensorInfo:
        return self._infos[name]

    def infos(self) -> dict[str, TensorInfo]:
        return dict(self._infos)

    def metadata(self, file: Path) -> dict[str, str]:
        if self.source.is_pickle:
            return {"format": "pt"}
        return self._header(file).metadata

    def shards(self) -> list[tuple[Path, list[str]]]:
        """Each weight file with its tensor names in on-disk order."""
        by_file: dict[Path, list[TensorInfo]] = {f: [] for f in self.source.weight_files}
        for info in self._infos.values():
            by_file[info.file].append(info)
        return [(f, [i.name for i in sorted(v, key=lambda i: i.begin)]) for f, v in by_file.items()]

    def get(self, name: str) -> torch.Tensor:
        """One tensor, read into fresh memory (no mmap, so RSS reflects only what is held)."""
        info = self._infos[name]
        if self.source.is_pickle:
            return self._pickled_file(info.file)[name]
        return bytes_to_tensor(self.read_bytes(info), info)

    def read_bytes(self, info: TensorInfo) -> bytearray:
        f = self._file(info.file)
        f.seek(info.data_start + info.begin)
        buf = bytearray(info.nbytes)
        if f.readinto(buf) != info.nbytes:
            raise InputError(
                f"{info.file} ended early while reading {info.name!r}", hint="re-download the file"
            )
        return buf

    def stream_file(self, file: Path) -> Iterator[tuple[TensorInfo, bytearray]]:
        """Yield each tensor of ``file`` with its bytes, in on-disk order.

        Bytes are read sequentially so the caller can hash the whole file in the same pass.
        """
        for name in dict(self.shards())[file]:
            info = self._infos[name]
            if self.source.is_pickle:
                yield info, bytearray(tensor_to_bytes(self.get(name)))
            else:
                yield info, self.read_bytes(info)

    def header_bytes(self, file: Path) -> bytes:
        """The raw header of a safetensors file (empty for pickle files)."""
        if self.source.is_pickle:
            return b""
        f = self._file(file)
        f.seek(0)
        return f.read(self._header(file).data_start)

    def data_end(self, file: Path) -> int:
        """Byte position just past the last tensor (-1 for pickle files)."""
        if self.source.is_pickle:
            return -1
        infos = [i for i in self._infos.values() if i.file == file]
        return self._header(file).data_start + max((i.end for i in infos), default=0)

    def _header(self, file: Path) -> Header:
        if file not in self._headers:
            self._headers[file] = read_header(file)
        return self._headers[file]

    def _file(self, path: Path) -> io.BufferedReader:
        if self._open_path != path:
            self.close()
            self._open_file = open(path, "rb")  # noqa: SIM115 - kept open across reads
            self._open_path = path
        assert self._open_file is not None
        return self._open_file

    def _pickled_file(self, path: Path) -> dict[str, torch.Tensor]:
        if path not in self._pickled:
            self._pickled.clear()
            self._pickled[path] = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return self._pickled[path]

    def _pickle_infos(self, path: Path) -> dict[str, TensorInfo]:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        out, offset = {}, 0
        for name, t in state.items():
            nbytes = t.numel() * t.element_size()
            out[name] = TensorInfo(name, path, t.dtype, tuple(t.shape), offset, offset + nbytes, 0)
            offset += nbytes
        return out


def output_name(file: Path) -> str:
    """Output file name for a source weight file (pickle shards become safetensors)."""
    name = file.name
    if name.startswith("pytorch_model"):
        name = "model" + name[len("pytorch_model") :]
    if name == "adapter_model.bin":
        return "adapter_model.safetensors"
    for suffix in (".bin", ".pt", ".pth", ".ckpt"):
        if name.endswith(suffix):
            return name[: -len(suffix)] + ".safetensors"
    return name


@dataclass
class WriteReport:
    """What ``write_patched`` wrote, with hashes computed while streaming."""

    input_hashes: dict[str, str] = field(default_factory=dict)
    output_hashes: dict[str, str] = field(default_factory=dict)
    changed: list[str] = field(default_factory=list)


def write_patched(
    reader: ShardReader,
    out_dir: Path,
    transform: Transform,
    *,
    metadata: dict[str, str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> WriteReport:
    """Stream every shard through ``transform`` into ``out_dir``, keeping the source's layout.

    ``transform(name, w0)`` returns the new tensor (same shape and dtype) or None to copy the
    bytes unchanged. Hashing and writing run in background threads, two tensors deep, so at
    most a few tensors (with their replacements) are in memory at a time. ``transform`` must not
    modify ``w0`` in place: its bytes may still be being hashed.
    """
    report = WriteReport()
    weight_map: dict[str, str] = {}
    for file, names in reader.shards():
        out_file = out_dir / output_name(file)
        layout = [(n, reader.info(n).dtype, reader.info(n).shape) for n in names]
        meta = {**reader.metadata(file), **(metadata or {})}
        writer = StreamingWriter(out_file, layout, meta)
        hasher = hashlib.sha256(reader.header_bytes(file))
        inhash = Background()  # the input's sha256, in order, on another core
        expected_offset = 0
        try:
            for info, raw in reader.stream_file(file):
                inhash.submit(hasher.update, raw)
                contiguous = info.begin == expected_offset
                expected_offset = info.end if contiguous else -1
                new = transform(info.name, bytes_to_tensor(raw, info))
                if new is None:
                    writer.write(info.name, raw)
                else:
                    _check_same(info, new)
                    writer.write(info.name, tensor_to_bytes(new))
                    report.changed.append(info.name)
                weight_map[info.name] = out_file.name
                if progress:
                    progress(info.nbytes)
                del raw, new
            inhash.wait()
        except BaseException:
            inhash.cancel()
            writer.abort()
            raise
        report.output_hashes[out_file.name] = writer.close()
        # The streamed digest equals the file's hash when the data section has no gaps, which
        # is how safetensors writes files; anything else costs one more read.
        whole = expected_offset >= 0 and reader.data_end(file) == file.stat().st_size
        report.input_hashes[file.name] = hasher.hexdigest() if whole else file_sha256(file)
    _write_index(reader, out_dir, weight_map)
    return report


def _check_same(info: TensorInfo, new: torch.Tensor) -> None:
    if tuple(new.shape) != info.shape or new.dtype != info.dtype:
        raise RuntimeError(
            f"transform changed {info.name!r} from {info.dtype}{list(info.shape)} "
            f"to {new.dtype}{list(new.shape)}"
        )


def _write_index(reader: ShardReader, out_dir: Path, weight_map: dict[str, str]) -> None:
    if reader.source.index is None and len(reader.source.weight_files) == 1:
        return
    total = sum(reader.info(n).nbytes for n in weight_map)
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (out_dir / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")


def copy_aux_files(source_dir: Path, out_dir: Path) -> list[str]:
    """Copy config, tokenizer, generation and other non-weight files; returns their names."""
    copied = []
    for f in sorted(source_dir.iterdir()):
        if not f.is_file() or f.name in _SKIP_NAMES or f.name.startswith("."):
            continue
        if f.suffix in _SKIP_SUFFIXES:
            continue
        shutil.copy2(f, out_dir / f.name)  # follows Hub-cache symlinks to the real blob
        copied.append(f.name)
    return copied
