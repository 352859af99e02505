"""``bench/child_rss.py``: the CLI in a child process reports its own peak RSS and torch threads,
which the real-model bench records next to each patch's wall time."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.helpers import load_bench_script


def test_the_child_reports_its_peak_and_its_torch_threads(tmp_path: Path, llama_dir: Path) -> None:
    child_rss = load_bench_script("child_rss")
    rss_file = tmp_path / "child.rss"
    # A dry run loads torch and reads the model's shapes, and writes nothing.
    cmd = child_rss.cli_command(["patch", str(llama_dir), "--dry-run"], rss_file)
    # One thread, not the machine's default, so the figure must come from the child.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    peak, reported = child_rss.read_peak_and_threads(rss_file)
    # The CLI imports torch, so its threads are known, and they are the child's, not ours.
    assert reported == 1
    assert 20 * 2**20 < peak < 4 * 2**30
    assert not rss_file.exists()
