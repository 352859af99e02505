"""Faults a new user meets (issue 12, item 6), each through the real CLI.

A disk too small for the output fails before any work (exit 2); a disk that fills during the
write fails in one line (exit 1) and leaves nothing; a huge ρ reports a finite norm and warns.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from panacea_patch import patch
from panacea_patch.atomic import TMP_PREFIX
from panacea_patch.diskspace import FAKE_FREE_ENV, delta_bytes
from panacea_patch.provenance import PROVENANCE_FILE
from panacea_patch.safetensors_io import StreamingWriter
from tests.helpers import load_all, read_json_stdout, run_cli

Mount = Callable[[str], Path]


def _random(src: Path, out: Path, *extra: str) -> list[str]:
    return ["patch", str(src), "--out", str(out), "--method", "random", "--rho", "0.1", *extra]


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, **extra}


def _no_leftovers(d: Path) -> None:
    left = [p.name for p in d.iterdir() if p.name.startswith((TMP_PREFIX, "out"))]
    assert left == [], left


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Mount]:
    """Mount a real tmpfs of a given size (needs root); skipped where mounting is not allowed."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        d = tmp_path / f"disk{len(mounted)}"
        d.mkdir()
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(d)],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here (needs root): {proc.stderr.strip()}")
        mounted.append(d)
        return d

    yield mount
    for d in mounted:
        subprocess.run(["umount", str(d)], check=False)


# --------------------------------------------------------------------------------------------
# Disk space
# --------------------------------------------------------------------------------------------


def test_too_little_free_space_fails_before_any_work(tmp_path: Path, llama_dir: Path) -> None:
    needed = {}
    for flag in ((), ("--save-delta",)):
        proc = run_cli(
            *_random(llama_dir, tmp_path / "out", *flag), env=_env(**{FAKE_FREE_ENV: "1000"})
        )
        assert proc.returncode == 2, proc.stderr
        err = proc.stderr
        assert "not enough free space" in err and "Fix:" in err, err
        assert str(tmp_path / "out") in err and "1000 bytes" in err, err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        match = re.search(r"needs (\d+) bytes", err)
        assert match, err
        needed[flag] = int(match.group(1))
        _no_leftovers(tmp_path)
    assert needed[()] > (llama_dir / "model.safetensors").stat().st_size
    # ε in fp32 for every targeted parameter comes on top with --save-delta.
    plan = patch(llama_dir, dry_run=True, method="random", rho=0.1, progress=False)
    assert needed[("--save-delta",)] - needed[()] == delta_bytes(
        plan.num_target_params, plan.num_target_tensors
    )


def test_too_little_free_space_on_a_real_small_disk(
    tmp_path: Path, llama_dir: Path, small_disk: Mount
) -> None:
    disk = small_disk("256k")
    proc = run_cli(*_random(llama_dir, disk / "sub" / "out"))
    assert proc.returncode == 2, proc.stderr
    assert "not enough free space" in proc.stderr and str(disk) in proc.stderr
    assert list(disk.iterdir()) == []


def test_disk_full_during_write_is_one_line_and_leaves_nothing(
    tmp_path: Path, llama_dir: Path, small_disk: Mount
) -> None:
    """A real ENOSPC: the pre-check is told the disk is large, the tmpfs is not."""
    disk = small_disk("128k")  # smaller than the fixture's weights (~180 kB)
    out = disk / "out"
    proc = run_cli(
        *_random(llama_dir, out, "--save-delta", "--quiet"),
        env=_env(**{FAKE_FREE_ENV: str(10**12)}),
    )
    assert proc.returncode == 1, proc.stderr
    err = proc.stderr.strip()
    assert "Traceback" not in err and "Errno" not in err, err
    assert len(err.splitlines()) == 1, err
    assert "No space left on device" in err and str(out) in err and "needs" in err, err
    assert "Fix:" in err
    assert list(disk.iterdir()) == []


def test_writer_abort_is_safe_when_closing_fails() -> None:
    """On /dev/full every flush fails with ENOSPC: abort() must not raise, close() must not leak."""
    layout: list[tuple[str, torch.dtype, tuple[int, ...]]] = [("a", torch.float32, (10,))]
    w = StreamingWriter(Path("/dev/full"), layout, {"format": "pt"})
    w.write("a", memoryview(torch.zeros(10).numpy().data).cast("B"))
    w.abort()  # the buffered bytes cannot be flushed: no exception
    assert w._file.closed
    w = StreamingWriter(Path("/dev/full"), layout)
    w.write("a", memoryview(torch.zeros(10).numpy().data).cast("B"))
    with pytest.raises(OSError) as err:
        w.close()
    assert err.value.errno == 28 and w._file.closed
    w.abort()  # and again after a failed close


# --------------------------------------------------------------------------------------------
# A huge ρ
# --------------------------------------------------------------------------------------------


def test_huge_rho_reports_a_finite_norm_and_warns(tmp_path: Path, llama_dir: Path) -> None:
    out = tmp_path / "out"
    proc = run_cli(
        "patch", str(llama_dir), "--out", str(out), "--method", "random", "--rho", "1e30", "--json"
    )
    assert proc.returncode == 0, proc.stderr
    data = read_json_stdout(proc)
    weights = load_all(out)
    assert all(torch.isfinite(t).all() for t in weights.values())
    assert math.isfinite(data["realized_norm"])
    assert data["realized_norm"] == pytest.approx(1e30, rel=1e-4)
    assert all(math.isfinite(layer["norm_eps"]) for layer in data["layers"])
    # ρ dwarfs the weights: warned on stderr, in --json and in the provenance, with the ratio.
    norm_w = math.sqrt(sum(layer["norm_w"] ** 2 for layer in data["layers"]))
    (warning,) = data["warnings"]
    assert "rho/|w| = " in warning and f"{1e30 / norm_w:.3g}" in warning
    assert "rho/|w|" in proc.stderr and "WARNING" in proc.stderr
    record = json.loads((out / PROVENANCE_FILE).read_text())
    assert record["warnings"] == data["warnings"]
    assert math.isfinite(record["realized_norm"])


def test_rho_just_above_the_weight_norm_warns_below_does_not(
    tmp_path: Path, llama_dir: Path
) -> None:
    small = patch(llama_dir, tmp_path / "a", method="random", rho=0.5, progress=False)
    assert small.warnings == []
    norm_w = math.sqrt(sum(layer["norm_w"] ** 2 for layer in small.layers))
    big = patch(llama_dir, tmp_path / "b", method="random", rho=2 * norm_w, progress=False)
    (warning,) = big.warnings
    assert "rho/|w| = 2" in warning and "--rho" in warning
