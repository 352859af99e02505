"""Read raw rows from files and datasets, each row tagged with where it came from.

A reader yields ``(number, row)`` pairs: ``number`` is the 1-based line where the row starts for
text formats (JSON Lines, JSON, CSV) and the 1-based row index for Parquet and Hugging Face
datasets, so every later error can say ``SOURCE:NUMBER``.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from panacea_patch.errors import InputError

Row = Mapping[str, Any]
NumberedRows = Iterator[tuple[int, Row]]

FILE_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
DATASETS_HINT = "install the optional dependency: pip install 'panacea-patch[datasets]'"


def where(source: str, number: int | None) -> str:
    """Format a location as ``source:number`` (or just ``source`` when the number is unknown)."""
    return source if number is None else f"{source}:{number}"


def decode_text(data: bytes, source: str) -> str:
    """Decode UTF-8 (with or without a byte-order mark); undecodable bytes name their line."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise InputError(
            f"{where(source, line)}: byte 0x{data[exc.start]:02x} at column {column} is not valid UTF-8",
            hint="re-save the file as UTF-8",
        ) from exc


def _require_object(value: Any, source: str, line: int) -> Row:
    if not isinstance(value, dict):
        raise InputError(
            f"{where(source, line)}: expected a JSON object with prompt/response fields, "
            f"got {type(value).__name__}",
            hint='write one object per row, e.g. {"prompt": "...", "response": "..."}',
        )
    return value


def read_jsonl(data: bytes, source: str) -> NumberedRows:
    """Rows of a JSON Lines file; blank lines are skipped but still counted."""
    text = decode_text(data, source)
    # split("\n") rather than splitlines(): JSON strings may hold U+2028, which splitlines breaks on.
    for number, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise InputError(
                f"{where(source, number)}: invalid JSON ({exc.msg} at column {exc.colno})",
                hint="each line of a .jsonl file must be one complete JSON object",
            ) from exc
        yield number, _require_object(value, source, number)


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _array_items(text: str, pos: int) -> Iterator[tuple[int, Any]]:
    """Walk a JSON array starting at ``text[pos] == '['`` and yield (offset, item)."""
    decoder = json.JSONDecoder()
    pos = _skip_space(text, pos + 1)
    if text[pos] == "]":
        return
    while True:
        item, end = decoder.raw_decode(text, pos)
        yield pos, item
        pos = _skip_space(text, end)
        if text[pos] == "]":
            return
        pos = _skip_space(text, pos + 1)  # past the comma


def _data_array_offset(text: str, pos: int) -> int | None:
    """Offset of the array under key ``"data"`` in the object at ``text[pos] == '{'``."""
    decoder = json.JSONDecoder()
    pos = _skip_space(text, pos + 1)
    while text[pos] != "}":
        key, end = decoder.raw_decode(text, pos)
        pos = _skip_space(text, _skip_space(text, end) + 1)  # past the colon
        if key == "data":
            return pos
        _, end = decoder.raw_decode(text, pos)
        pos = _skip_space(text, end)
        if text[pos] == ",":
            pos = _skip_space(text, pos + 1)
    return None


def read_json(data: bytes, source: str) -> NumberedRows:
    """Rows of a JSON file holding a list of objects, or an object with a ``data`` list."""
    text = decode_text(data, source)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{where(source, exc.lineno)}: invalid JSON ({exc.msg} at column {exc.colno})",
            hint="fix the JSON syntax, or use .jsonl with one object per line",
        ) from exc
    start = _skip_space(text, 0)
    if isinstance(value, dict) and isinstance(value.get("data"), list):
        offset = _data_array_offset(text, start)
    elif isinstance(value, list):
        offset = start
    else:
        offset = None
    if offset is None:
        raise InputError(
            f'{source}: expected a JSON list of objects or an object with a "data" list',
            hint='write [{"prompt": ..., "response": ...}, ...] or {"data": [...]}',
        )
    # json.loads already validated the text, so the walk below cannot fail; it only adds lines.
    for item_offset, item in _array_items(text, offset):
        line = text.count("\n", 0, item_offset) + 1
        yield line, _require_object(item, source, line)


def read_csv(data: bytes, source: str) -> NumberedRows:
    """Rows of a CSV file with a header line; a row's number is the line it starts on."""
    text = decode_text(data, source)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        reader.fieldnames  # noqa: B018  (reads the header so line_num counts it)
        previous_end = reader.line_num
        for row in reader:
            # line_num counts physical lines read so far, so quoted multi-line cells still work.
            start = previous_end + 1
            previous_end = reader.line_num
            yield start, {k: v for k, v in row.items() if k is not None}
    except csv.Error as exc:
        raise InputError(
            f"{where(source, reader.line_num)}: malformed CSV ({exc})",
            hint="check the quoting on that line",
        ) from exc


def read_parquet(path: Path, source: str) -> NumberedRows:
    """Rows of a Parquet file (needs pyarrow)."""
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise InputError(f"{source}: reading Parquet needs pyarrow", hint=DATASETS_HINT) from exc
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several unrelated types for a bad file
        raise InputError(
            f"{source}: cannot read Parquet ({exc})",
            hint="check that the file is a valid Parquet file",
        ) from exc
    yield from enumerate(table.to_pylist(), start=1)


def read_file(path: Path, source: str) -> NumberedRows:
    """Dispatch on the file suffix."""
    suffix = path.suffix.lower()
    if suffix not in FILE_SUFFIXES:
        raise InputError(
            f"{source}: unsupported file type '{suffix or path.name}'",
            hint=f"use one of {', '.join(FILE_SUFFIXES)}, a dataset hf:org/name, or builtin:NAME",
        )
    if not path.is_file():
        raise InputError(
            f"{source}: no such file", hint="check the path, or use hf:org/name for a Hub dataset"
        )
    if suffix == ".parquet":
        return read_parquet(path, source)
    data = path.read_bytes()
    text_readers = {".jsonl": read_jsonl, ".json": read_json, ".csv": read_csv}
    return text_readers[suffix](data, source)


# ---------------------------------------------------------------------------------------------
# Hugging Face datasets


def parse_hf_spec(spec: str) -> tuple[str, str | None, str | None]:
    """Split ``org/name[:config][@split]`` into (name, config, split).

    Only the last path component is searched for ``:`` and ``@``, so local paths work and HF
    slice syntax such as ``@train[:100]`` survives.
    """
    head, slash, tail = spec.rpartition("/")
    split = None
    if "@" in tail:
        tail, split = tail.split("@", 1)
    config = None
    if ":" in tail:
        tail, config = tail.split(":", 1)
    name = f"{head}{slash}{tail}"
    if not tail:
        raise InputError(
            f"hf:{spec}: missing dataset name", hint="write hf:org/name[:config][@split]"
        )
    return name, config or None, split or None


def _is_saved_to_disk(path: Path) -> bool:
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


def _pick_split(dataset: Any, source: str) -> Any:
    """From a DatasetDict take ``train``, or the only split; a plain Dataset passes through."""
    if not hasattr(dataset, "keys"):
        return dataset
    names = list(dataset.keys())
    if "train" in names:
        return dataset["train"]
    if len(names) == 1:
        return dataset[names[0]]
    raise InputError(
        f"{source}: the dataset has splits {', '.join(names)} and none is 'train'",
        hint=f"pick one, e.g. {source}@{names[0]}",
    )


def _load_hf(name: str, config: str | None, split: str | None) -> Any:
    import datasets  # imported lazily: optional dependency, and slow to import

    local = Path(name)
    if local.is_dir() and _is_saved_to_disk(local):
        loaded = datasets.load_from_disk(str(local))
        if split is not None and hasattr(loaded, "keys"):
            return loaded[split]
        return loaded
    return datasets.load_dataset(name, config, split=split)


def read_hf(spec: str, source: str) -> NumberedRows:
    """Rows of a Hugging Face dataset (Hub id, local dataset directory, or save_to_disk output)."""
    name, config, split = parse_hf_spec(spec)
    try:
        import datasets  # noqa: F401  (probe only; _load_hf imports it for use)
    except ImportError as exc:
        raise InputError(
            f"{source}: reading datasets needs `datasets`", hint=DATASETS_HINT
        ) from exc
    try:
        dataset = _load_hf(name, config, split)
    except InputError:
        raise
    except Exception as exc:  # datasets raises many types (not found, bad config, network)
        raise InputError(
            f"{source}: cannot load dataset '{name}' ({type(exc).__name__}: {exc})",
            hint="check the name, config and split (hf:org/name[:config][@split]), "
            "your network, and HF_TOKEN for gated datasets",
        ) from exc
    dataset = _pick_split(dataset, source)
    yield from enumerate(dataset, start=1)
