"""Provenance: ``panacea_patch.json`` and the short entry in each safetensors header."""

from __future__ import annotations

import datetime as _dt
import json
import platform
import shlex
import sys
from importlib import metadata as _md
from pathlib import Path
from typing import Any

from . import __version__

PROVENANCE_FILE = "panacea_patch.json"
METADATA_KEY = "panacea_patch"
_PACKAGES = (
    "torch",
    "transformers",
    "peft",
    "safetensors",
    "huggingface-hub",
    "accelerate",
    "triton",
    "numpy",  # with torch, defines the random method's CPU noise (kernels/cpu_noise.py)
)


def package_versions() -> dict[str, str]:
    out = {"panacea-patch": __version__, "python": platform.python_version()}
    for pkg in _PACKAGES:
        try:
            out[pkg] = _md.version(pkg)
        except _md.PackageNotFoundError:
            continue
    return out


def command_line() -> str | None:
    """The ``panacea-patch`` command as typed, or None when the run came from Python.

    Tokens are only ever taken from the environment, so argv carries no secret.
    """
    argv = list(sys.argv)
    if not argv:
        return None
    main_spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    via_module = main_spec is not None and main_spec.name.startswith("panacea_patch.cli")
    if via_module or Path(argv[0]).name == "panacea-patch":
        return shlex.join(["panacea-patch", *argv[1:]])
    return None


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def metadata_entry(record: dict[str, Any]) -> dict[str, str]:
    """The short entry written into every output safetensors header (values must be strings)."""
    short = {
        "tool": "panacea-patch",
        "version": __version__,
        "method": record.get("method"),
        "rho": record.get("rho"),
        "seed": record.get("seed"),
        "source": record.get("source", {}).get("repo_id") or record.get("source", {}).get("spec"),
        "source_commit": record.get("source", {}).get("commit_sha"),
        "details": PROVENANCE_FILE,
    }
    return {METADATA_KEY: json.dumps(short, sort_keys=True)}


def write_provenance(out_dir: Path, record: dict[str, Any]) -> Path:
    path = out_dir / PROVENANCE_FILE
    path.write_text(json.dumps(record, indent=2, sort_keys=False, default=str) + "\n")
    return path


def read_provenance(model_dir: Path) -> dict[str, Any] | None:
    path = Path(model_dir) / PROVENANCE_FILE
    return json.loads(path.read_text()) if path.exists() else None
