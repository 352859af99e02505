"""`panacea-patch eval` and `patch --eval` through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import read_json_stdout, run_cli


def test_eval_command_json_and_table_agree(llama_dir: Path, tmp_path: Path) -> None:
    samples = tmp_path / "samples.jsonl"
    args = [
        "eval",
        str(llama_dir),
        "--reference",
        str(llama_dir),
        "--max-examples",
        "6",
        "--max-new-tokens",
        "6",
        "--samples",
        str(samples),
        "-q",
    ]
    proc = run_cli(*args, "--json")
    assert proc.returncode == 0, proc.stderr
    data = read_json_stdout(proc)
    assert 0 <= data["harmful_score"] <= 100
    assert abs(data["kl"]) < 1e-6  # the model against itself
    table = run_cli(*args).stdout
    assert f"{data['harmful_score']:.1f}" in table
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    assert len(rows) >= 6 and all("verdict" in r or "output" in r for r in rows)


def test_eval_unknown_judge_is_a_usage_error(llama_dir: Path) -> None:
    proc = run_cli("eval", str(llama_dir), "--judge", "oracle", "--max-examples", "2", "-q")
    assert proc.returncode == 2 and "keyword" in proc.stderr


def test_patch_eval_records_before_and_after(llama_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = run_cli(
        "patch",
        str(llama_dir),
        "--out",
        str(out),
        "--method",
        "random",
        "--rho",
        "0.5",
        "--eval",
        "--max-examples",
        "4",
        "--max-new-tokens",
        "5",
        "-q",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    data = read_json_stdout(proc)
    assert {"before", "after"} <= set(data["metrics"])
    record = json.loads((out / "panacea_patch.json").read_text())
    assert record["metrics"] == data["metrics"]
    assert "harmful" in proc.stderr.lower()  # the before/after table, on stderr with --json
    card = (out / "README.md").read_text()
    assert "eval_results" in card or "model-index" in card
