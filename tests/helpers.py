"""Small assertions shared by the checkpoint tests."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import torch
from safetensors import safe_open


def load_all(model_dir: Path, pattern: str = "*.safetensors") -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(Path(model_dir).glob(pattern)):
        if f.name == "panacea_delta.safetensors":
            continue
        with safe_open(f, "pt") as sf:
            for k in sf.keys():  # noqa: SIM118 - safe_open has no __iter__
                out[k] = sf.get_tensor(k)
    return out


def dir_hashes(d: Path) -> dict[str, str]:
    return {
        str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(Path(d).rglob("*"))
        if p.is_file()
    }


def tensor_bytes(t: torch.Tensor) -> bytes:
    return t.contiguous().view(torch.uint8).numpy().tobytes()


def run_cli(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run the real console entry point in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "panacea_patch.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def read_json_stdout(proc: subprocess.CompletedProcess) -> dict:
    return json.loads(proc.stdout)


def load_bench_script(name: str) -> ModuleType:
    """Import ``bench/NAME.py`` as a module (bench/ is not a package)."""
    path = Path(__file__).resolve().parents[1] / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up by name
    spec.loader.exec_module(module)
    return module


# Small, quick patch settings for the untrained fixtures, with the damage guard off: they have no
# refusals to restore, and these settings serve tests of the method, not of the guard.
FAST_PATCH: dict = dict(
    max_examples=16,
    batch_size=8,
    max_length=128,
    progress=False,
    max_damage_kl=0,
    min_refusal_drop=0,
)
