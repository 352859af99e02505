"""The package installs as panacea_patch.{kernels,cli}, never as top-level kernels or cli."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _python_elsewhere(code: str, cwd: Path) -> subprocess.CompletedProcess:
    # Run outside the repo so the working directory cannot stand in for the installed package.
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True)


def test_editable_install_exposes_only_namespaced_packages(tmp_path: Path) -> None:
    proc = _python_elsewhere(
        "import importlib.util as u, panacea_patch.kernels, panacea_patch.cli.main;"
        "print(u.find_spec('kernels') is None or 'panacea' not in str(u.find_spec('kernels').origin));"
        "print(u.find_spec('cli') is None)",
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "True"]


def test_console_script_is_installed() -> None:
    exe = shutil.which("panacea-patch")
    assert exe, "the panacea-patch console script is not on PATH (pip install -e .)"
    proc = subprocess.run([exe, "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and "panacea-patch" in proc.stdout


@pytest.mark.slow
def test_built_wheel_layout(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = tmp_path.glob("panacea_patch-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"panacea_patch"}, tops
    assert "panacea_patch/kernels/__init__.py" in names
    assert "panacea_patch/cli/main.py" in names
    assert any(n.startswith("panacea_patch/data/builtin/") and n.endswith(".jsonl") for n in names)
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert (
        "panacea-patch = panacea_patch.cli.main:main" in zipfile.ZipFile(wheel).read(entry).decode()
    )
