"""``bench/real_model.py``'s cache: stages built on other built-in data are retired, not reused.

No model is loaded: the test builds cache directories by hand and checks what the bench does
with them when it starts.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest

from tests.helpers import load_bench_script


@pytest.fixture(scope="module")
def rm() -> ModuleType:
    return load_bench_script("real_model")


def _stage(cache: Path, rel: str, text: str = "{}") -> Path:
    path = cache / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _fill(cache: Path) -> None:
    _stage(cache, "smollm2-float32/config.json")
    _stage(cache, "evals/A-panacea.json", '{"over_refusal": 7.0}')
    _stage(cache, "B-aligned/config.json")
    _stage(cache, "continuations/smollm2-float32-eval.json", "[]")
    times = {"prepare:convert-float32": 44.0, "eval:A-panacea": 1352.4}
    _stage(cache, "times.json", json.dumps(times))


def test_a_cache_without_a_data_version_is_retired_once(rm: ModuleType, tmp_path: Path) -> None:
    _fill(tmp_path)
    bench = rm.Bench(tmp_path, threads=1)
    (old,) = tmp_path.glob("superseded-*")
    assert json.loads((old / "evals" / "A-panacea.json").read_text()) == {"over_refusal": 7.0}
    assert (old / "B-aligned" / "config.json").exists()
    assert not (tmp_path / "evals").exists() and not (tmp_path / "continuations").exists()
    # The converted checkpoints do not depend on the data sets: they stay.
    assert (tmp_path / "smollm2-float32" / "config.json").exists()
    assert bench.times == {"prepare:convert-float32": 44.0}
    assert json.loads((old / "times.json").read_text())["eval:A-panacea"] == 1352.4
    recorded = json.loads((tmp_path / "data-version.json").read_text())
    assert recorded == {"builtin": rm.builtin_fingerprint()}

    _stage(tmp_path, "evals/A-panacea.json", '{"over_refusal": 3.0}')
    rm.Bench(tmp_path, threads=1)
    assert len(list(tmp_path.glob("superseded-*"))) == 1
    assert (tmp_path / "evals" / "A-panacea.json").exists()


def test_a_cache_of_other_data_is_retired(rm: ModuleType, tmp_path: Path) -> None:
    _fill(tmp_path)
    _stage(tmp_path, "data-version.json", json.dumps({"builtin": "0" * 64}))
    rm.Bench(tmp_path, threads=1)
    (old,) = tmp_path.glob("superseded-000000000000-*")
    assert (old / "evals" / "A-panacea.json").exists()
    assert not (tmp_path / "B-aligned").exists()


def test_timings_of_two_processes_on_one_cache_are_both_kept(
    rm: ModuleType, tmp_path: Path
) -> None:
    first, second = rm.Bench(tmp_path, threads=1), rm.Bench(tmp_path, threads=1)
    first.timed("patch:A-panacea", 10.0)
    second.timed("train:align", 20.0)
    times = json.loads((tmp_path / "times.json").read_text())
    assert times == {"patch:A-panacea": 10.0, "train:align": 20.0}


def _never(what: str):
    def build() -> Path:
        raise AssertionError(f"{what} was built although every result using it is recorded")

    return build


def test_recorded_results_are_not_rerun_on_an_empty_cache(rm: ModuleType, tmp_path: Path) -> None:
    # A new machine: the tracked records hold a patch and its evaluation, the cache is empty.
    records, cache = tmp_path / "records", tmp_path / "cache"
    _stage(records, "data-version.json", json.dumps({"builtin": rm.builtin_fingerprint()}))
    _stage(records, "results/A-panacea.json", json.dumps({"rho": 0.5, "bench_seconds": 9.0}))
    _stage(records, "evals/A-panacea.json", json.dumps({"harmful_score": 7.3}))
    bench = rm.Bench(cache, threads=1, records=records)
    out, res = bench.patch("A-panacea", _never("the source"))
    assert res["rho"] == 0.5 and not out.exists()
    row = bench.evaluate("A-panacea", out, _never("the reference"))
    assert row == {"harmful_score": 7.3}
    # Records were not retired (same data), and nothing was written into the cache for them.
    assert not list(records.glob("superseded-*"))
    assert not (cache / "results").exists() and not (cache / "evals").exists()


def test_a_recorded_patch_without_weights_or_evaluation_runs_again(
    rm: ModuleType, tmp_path: Path
) -> None:
    records, cache = tmp_path / "records", tmp_path / "cache"
    _stage(records, "results/A-random.json", json.dumps({"rho": 0.5}))
    bench = rm.Bench(cache, threads=1, records=records)
    with pytest.raises(AssertionError, match="the source was built"):
        bench.patch("A-random", _never("the source"))


def test_measurements_go_to_the_records_and_models_to_the_cache(
    rm: ModuleType, tmp_path: Path
) -> None:
    records, cache = tmp_path / "records", tmp_path / "cache"
    bench = rm.Bench(cache, threads=1, records=records)
    bench.save("cost/A.json", {"token_ratio": 4.2})
    bench.timed("train:align", 5.0)
    assert json.loads((records / "cost" / "A.json").read_text()) == {"token_ratio": 4.2}
    assert json.loads((records / "times.json").read_text()) == {"train:align": 5.0}
    assert bench._path("B-aligned/config.json") == cache / "B-aligned" / "config.json"
    # Both roots carry the data version their entries were built on.
    for root in (records, cache):
        version = json.loads((root / "data-version.json").read_text())
        assert version == {"builtin": rm.builtin_fingerprint()}
