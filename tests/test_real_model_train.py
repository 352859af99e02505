"""Scenario B's training stage in ``bench/real_model_train.py``: a retrained stage is checked
against the recorded one, so results recorded on another machine's model are never silently
reused for a different model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import ModuleType

import pytest

from tests.helpers import load_bench_script


@pytest.fixture(scope="module")
def bench_modules() -> tuple[ModuleType, ModuleType]:
    rm = load_bench_script("real_model")
    return rm, load_bench_script("real_model_train")


ROWS = [
    {"prompt": f"Name a colour, number {i}.", "response": "Blue is a colour."} for i in range(8)
]


def test_a_retrained_stage_is_compared_with_the_recorded_one(
    bench_modules: tuple[ModuleType, ModuleType], llama_dir: Path, tmp_path: Path
) -> None:
    rm, train = bench_modules
    records, cache = tmp_path / "records", tmp_path / "cache"
    bench = rm.Bench(cache, threads=1, records=records)
    merged = train.train_stage(bench, "align", llama_dir, ROWS)
    assert (merged / "config.json").exists()
    first = json.loads((records / "train" / "align.json").read_text())
    assert len(first["adapter_sha256"]) == 64
    # Cached: a second call trains nothing.
    assert train.train_stage(bench, "align", llama_dir, ROWS) == merged
    assert json.loads((records / "train" / "align.json").read_text()) == first

    # A new machine: the cache is gone, the records stay. Same data: the same adapter.
    shutil.rmtree(cache)
    bench = rm.Bench(cache, threads=1, records=records)
    train.train_stage(bench, "align", llama_dir, ROWS)
    again = json.loads((records / "train" / "align.json").read_text())
    assert again["adapter_sha256"] == first["adapter_sha256"]
    assert "recorded_before" not in again

    # Other data: another adapter, and the record keeps what it replaced.
    shutil.rmtree(cache)
    bench = rm.Bench(cache, threads=1, records=records)
    other = [{**r, "response": "Green is a colour too."} for r in ROWS]
    train.train_stage(bench, "align", llama_dir, other)
    changed = json.loads((records / "train" / "align.json").read_text())
    assert changed["adapter_sha256"] != first["adapter_sha256"]
    assert changed["recorded_before"]["adapter_sha256"] == first["adapter_sha256"]
