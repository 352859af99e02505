"""Every bad input gets a clear message naming the problem and the fix, exit 2, and no output."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from panacea_patch import patch
from panacea_patch.atomic import TMP_PREFIX
from panacea_patch.errors import InputError
from tests.helpers import dir_hashes, run_cli


def _assert_fails(args: list[str], tmp_path: Path, *needles: str, code: int = 2) -> str:
    proc = run_cli(*args)
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    msg = proc.stderr.lower()
    for needle in needles:
        assert needle.lower() in msg, (needle, proc.stderr)
    assert "fix:" in msg or "usage" in msg, proc.stderr
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith((TMP_PREFIX, "out"))]
    assert leftovers == [], leftovers
    return proc.stderr


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _random(src: Path, out: Path, *extra: str) -> list[str]:
    return ["patch", str(src), "--out", str(out), "--method", "random", "--rho", "0.1", *extra]


def test_missing_source(tmp_path: Path) -> None:
    _assert_fails(_random(tmp_path / "nope", tmp_path / "out"), tmp_path, "does not exist")


def test_directory_without_weights(tmp_path: Path, llama_dir: Path) -> None:
    d = tmp_path / "src"
    d.mkdir()
    shutil.copy(llama_dir / "config.json", d)
    _assert_fails(_random(d, tmp_path / "out"), tmp_path, "no model weights")


def test_truncated_safetensors(tmp_path: Path, llama_dir: Path) -> None:
    d = _copy(llama_dir, tmp_path / "src")
    f = d / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    _assert_fails(_random(d, tmp_path / "out"), tmp_path, "model.safetensors", "truncated")


def test_garbage_safetensors_header(tmp_path: Path, llama_dir: Path) -> None:
    d = _copy(llama_dir, tmp_path / "src")
    (d / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    _assert_fails(_random(d, tmp_path / "out"), tmp_path, "not a valid safetensors")


def test_index_names_missing_shard(tmp_path: Path, llama_sharded_bf16_dir: Path) -> None:
    d = _copy(llama_sharded_bf16_dir, tmp_path / "src")
    index = json.loads((d / "model.safetensors.index.json").read_text())
    victim = sorted(set(index["weight_map"].values()))[-1]
    (d / victim).unlink()
    _assert_fails(_random(d, tmp_path / "out"), tmp_path, "missing", victim)


def test_adapter_base_not_found(tmp_path: Path, lora_dir: Path) -> None:
    d = _copy(lora_dir, tmp_path / "src")
    cfg = json.loads((d / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = str(tmp_path / "no-such-base")
    (d / "adapter_config.json").write_text(json.dumps(cfg))
    _assert_fails(_random(d, tmp_path / "out"), tmp_path, "base model", "--base-model")


def test_output_exists_without_overwrite(tmp_path: Path, llama_dir: Path) -> None:
    out = tmp_path / "existing"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    proc = run_cli(*_random(llama_dir, out))
    assert proc.returncode == 2 and "--overwrite" in proc.stderr
    assert (out / "keep.txt").read_text() == "mine" and len(list(out.iterdir())) == 1


def test_overwrite_replaces_existing_output(tmp_path: Path, llama_dir: Path) -> None:
    out = tmp_path / "existing"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    proc = run_cli(*_random(llama_dir, out, "--overwrite"))
    assert proc.returncode == 0, proc.stderr
    assert not (out / "stale.txt").exists() and (out / "model.safetensors").exists()


@pytest.mark.parametrize("where", ["same", "inside"])
def test_output_is_source_or_inside_it(tmp_path: Path, llama_dir: Path, where: str) -> None:
    d = _copy(llama_dir, tmp_path / "src")
    before = dir_hashes(d)
    out = d if where == "same" else d / "patched"
    proc = run_cli(*_random(d, out, "--overwrite"))
    assert proc.returncode == 2 and "inside" in proc.stderr
    assert dir_hashes(d) == before


@pytest.mark.parametrize("rho", ["0", "-1", "nan", "inf"])
def test_bad_rho(tmp_path: Path, llama_dir: Path, rho: str) -> None:
    args = [
        "patch",
        str(llama_dir),
        "--out",
        str(tmp_path / "out"),
        "--method",
        "random",
        "--rho",
        rho,
    ]
    _assert_fails(args, tmp_path, "--rho", "finite number > 0")


def test_targets_match_nothing(tmp_path: Path, llama_dir: Path) -> None:
    _assert_fails(
        _random(llama_dir, tmp_path / "out", "--targets", "no_such_module"),
        tmp_path,
        "no tensor matches",
        "--dry-run",
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_output_parent_not_writable(tmp_path: Path, llama_dir: Path) -> None:
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o500)
    try:
        _assert_fails(_random(llama_dir, parent / "out"), tmp_path, "permission denied")
    finally:
        parent.chmod(0o700)


def test_output_parent_not_writable_checked_by_access(tmp_path: Path, llama_dir: Path) -> None:
    """Root bypasses permission bits, so also check the read-only-filesystem path via /proc."""
    out = Path("/proc/panacea-out")
    with pytest.raises(InputError) as err:
        patch(llama_dir, out, method="random", rho=0.1, progress=False)
    assert "cannot write" in str(err.value) or "permission" in str(err.value)


def test_pickle_refused_with_flag_named(tmp_path: Path, llama_dir: Path) -> None:
    from safetensors.torch import load_file

    d = tmp_path / "src"
    d.mkdir()
    shutil.copy(llama_dir / "config.json", d)
    torch.save(load_file(llama_dir / "model.safetensors"), d / "pytorch_model.bin")
    _assert_fails(_random(d, tmp_path / "out"), tmp_path, "pickle", "--allow-pickle")
    proc = run_cli(*_random(d, tmp_path / "out", "--allow-pickle"))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "model.safetensors").exists()


def test_unknown_config_key(tmp_path: Path, llama_dir: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('method = "random"\nrhoo = 1.0\n')
    _assert_fails(
        ["patch", str(llama_dir), "--out", str(tmp_path / "out"), "--config", str(cfg)],
        tmp_path,
        "rhoo",
        "valid options",
    )


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_while_writing_leaves_nothing(tmp_path: Path, sig: signal.Signals) -> None:
    """Kill a real run mid-write: no output and no temporary directory may remain."""
    from tests import factory

    src = tmp_path / "big"
    factory.build_model(src, family="llama", max_shard_size="200KB")
    # A slow transform keeps the writer busy long enough to be interrupted mid-shard.
    # SIGINT's default handler, even when the suite runs from a background shell (SIG_IGN).
    script = f"""
import signal
signal.signal(signal.SIGINT, signal.default_int_handler)
import time, panacea_patch.methods.random as r
orig = r.RandomTransform.__call__
def slow(self, name, w0):
    time.sleep(0.4)
    return orig(self, name, w0)
r.RandomTransform.__call__ = slow
from panacea_patch import patch
print("started", flush=True)
patch({str(src)!r}, {str(tmp_path / "out")!r}, method="random", rho=0.1, progress=False)
"""
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "started"
    deadline = time.time() + 60
    while not any(p.name.startswith(TMP_PREFIX) for p in tmp_path.iterdir()):
        assert time.time() < deadline, "the run never started writing"
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(sig)
    proc.wait(timeout=60)
    assert proc.returncode != 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big"]
