"""Progress that suits logs (issue 13, item 5): timed plain lines off a terminal, tqdm bars on one."""

from __future__ import annotations

import fcntl
import io
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import threading
from collections import defaultdict
from pathlib import Path

import pytest

from panacea_patch import progress
from panacea_patch.errors import InputError
from panacea_patch.progress import PREFIX, progress_bar, progress_interval, resolve_interval
from tests.helpers import run_cli

LINE = re.compile(rf"^{PREFIX} (?P<phase>[^:]+): (?P<rest>.*)$")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_lines_come_at_most_once_per_interval_and_once_at_the_end() -> None:
    clock, out = Clock(), io.StringIO()
    bar = progress._Lines(None, "optimizing", "pass", interval=10.0, stream=out, clock=clock)
    with bar:
        bar.total = 100  # known only after creation, as for the optimization bar
        for _ in range(100):
            clock.now += 1.0
            bar.update()
        bar.set_postfix(loss=0.5)
    lines = out.getvalue().splitlines()
    assert len(lines) == 11 and "\r" not in out.getvalue()
    first, last = lines[0], lines[-1]
    assert first.startswith(f"{PREFIX} optimizing: 10/100 pass (10%), 1 pass/s, ETA 0:01:30")
    assert last == f"{PREFIX} optimizing: done, 100/100 pass in 0:01:40, 1 pass/s, loss=0.5"


def test_lines_for_bytes_and_for_a_failed_phase() -> None:
    clock, out = Clock(), io.StringIO()
    with (
        pytest.raises(RuntimeError),
        progress._Lines(4_000_000, "writing", "B", interval=1.0, stream=out, clock=clock) as bar,
    ):
        clock.now = 2.0
        bar.update(1_000_000)
        raise RuntimeError("boom")
    tick, final = out.getvalue().splitlines()
    assert tick == f"{PREFIX} writing: 1M/4M B (25%), 500k B/s, ETA 0:00:06"
    assert final.startswith(f"{PREFIX} writing: stopped, 1M/4M B in 0:00:02")


def test_disabled_shows_nothing_but_still_counts(capsys: pytest.CaptureFixture[str]) -> None:
    with progress_bar(total=3, desc="x", unit="item", enabled=False) as bar:
        bar.update(2)
        bar.total = 5
        bar.set_postfix(a=1)
    assert bar.n == 2 and bar.total == 5
    assert capsys.readouterr().err == ""


def test_interval_comes_from_argument_block_environment_then_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(progress.ENV_INTERVAL, raising=False)
    assert resolve_interval() == progress.DEFAULT_INTERVAL == 30.0
    monkeypatch.setenv(progress.ENV_INTERVAL, "12")
    assert resolve_interval() == 12.0
    with progress_interval(5):
        assert resolve_interval() == 5.0
        assert resolve_interval(2) == 2.0
    with progress_interval(None):
        assert resolve_interval() == 12.0
    monkeypatch.setenv(progress.ENV_INTERVAL, "soon")
    with pytest.raises(InputError, match=progress.ENV_INTERVAL):
        resolve_interval()
    with pytest.raises(InputError, match=progress.ENV_INTERVAL), progress_interval(None):
        pass  # a run checks the environment before it starts any work
    with pytest.raises(InputError, match="--progress-interval"), progress_interval(-1):
        pass


def _phases(stderr: str) -> dict[str, list[str]]:
    phases: dict[str, list[str]] = defaultdict(list)
    for line in stderr.splitlines():
        if m := LINE.match(line):
            phases[m["phase"]].append(m["rest"])
    return phases


# An untrained fixture has no refusals to restore: the guard's refusal check is off.
PATCH = ("--method", "panacea", "--steps", "2", "--max-examples", "8", "--eval")
PATCH += ("--min-refusal-drop", "0")
SMALL_EVAL = ("--max-new-tokens", "4")


def test_cli_in_a_log_writes_one_line_per_phase_per_interval(
    llama_dir: Path, tmp_path: Path
) -> None:
    env = {**os.environ, progress.ENV_INTERVAL: "3600"}
    proc = run_cli(
        "patch", str(llama_dir), "--out", str(tmp_path / "a"), *PATCH, *SMALL_EVAL, env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr
    phases = _phases(proc.stderr)
    assert {"optimizing", "writing"} <= set(phases), proc.stderr
    for phase, lines in phases.items():
        # Shorter than the interval: only the final line, which names the amount and the rate.
        assert all(rest.startswith("done, ") for rest in lines), (phase, lines)
        assert all("/s" in rest for rest in lines)
    assert len(phases["optimizing"]) == 1 and len(phases["writing"]) == 1

    # --progress-interval beats the environment; 0 writes a line at every update.
    proc = run_cli(
        "patch",
        str(llama_dir),
        "--out",
        str(tmp_path / "b"),
        "--method",
        "random",
        "--rho",
        "0.1",
        "--progress-interval",
        "0",
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    writing = _phases(proc.stderr)["writing"]
    assert len(writing) > 2 and writing[-1].startswith("done, ")
    assert all(re.search(r"\(\d+%\), .*/s, ETA \d+:\d\d:\d\d", rest) for rest in writing[:-1])


def test_cli_quiet_writes_no_progress(llama_dir: Path, tmp_path: Path) -> None:
    proc = run_cli(
        "patch",
        str(llama_dir),
        "--out",
        str(tmp_path / "q"),
        "--method",
        "random",
        "--rho",
        "0.1",
        "-q",
        "--progress-interval",
        "0",
    )
    assert proc.returncode == 0, proc.stderr
    assert PREFIX not in proc.stderr and "\r" not in proc.stderr


def test_cli_on_a_terminal_draws_bars(llama_dir: Path, tmp_path: Path) -> None:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))  # rows, columns
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "panacea_patch.cli",
            "patch",
            str(llama_dir),
            "--out",
            str(tmp_path / "t"),
            "--method",
            "random",
            "--rho",
            "0.1",
        ],
        stdout=subprocess.PIPE,
        stderr=slave,
        text=True,
    )
    os.close(slave)
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO once the child has closed its end
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    proc.wait(timeout=300)
    reader.join(timeout=10)
    os.close(master)
    terminal = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0, terminal
    assert "writing" in terminal and "\r" in terminal, terminal
    assert PREFIX not in terminal


def test_cli_finetune_in_a_log_writes_plain_lines(llama_dir: Path, tmp_path: Path) -> None:
    train = tmp_path / "train.jsonl"
    rows = [{"prompt": f"What is {i} plus {i}?", "response": f"It is {2 * i}."} for i in range(8)]
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    env = {**os.environ, progress.ENV_INTERVAL: "3600"}
    proc = run_cli(
        "finetune", str(llama_dir), "--train", str(train), "--out", str(tmp_path / "ft"),
        "--max-steps", "2", "--batch-size", "4", "--max-length", "128", "--lora-r", "4",
        "--final-eps-examples", "4", "--device", "cpu", env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr
    (line,) = _phases(proc.stderr)["fine-tuning"]
    assert line.startswith("done, 2/2 step in ") and ("step/s" in line or "s/step" in line)
