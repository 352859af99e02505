"""File hashing for provenance: one streamed sha256 per file."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(path: Path, *, chunk: int = 1 << 22) -> str:
    """Hex sha256 of the file at ``path``, read ``chunk`` bytes at a time."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
