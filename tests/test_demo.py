"""`panacea-patch demo --fast`: the whole pipeline end to end (formats and plumbing, not efficacy)."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import read_json_stdout, run_cli


def test_demo_fast_runs_and_caches(tmp_path: Path) -> None:
    args = ["demo", "--fast", "--cache-dir", str(tmp_path / "cache"), "--json", "-q"]
    first = run_cli(*args, timeout=600)
    assert first.returncode == 0, first.stderr
    data = read_json_stdout(first)
    names = [r["model"] for r in data["rows"]]
    assert names == ["aligned", "attacked (full)", "random", "closed-form", "panacea"]
    assert data["build_seconds"], "a cold run builds the organism"
    patched = data["rows"][2:]
    assert len({r["rho"] for r in patched}) == 1 and patched[0]["rho"] > 0  # same rho for all
    for row in data["rows"]:
        assert 0 <= row["harmful_score"] <= 100 and 0 <= row["task_accuracy"] <= 100
    assert data["rows"][1]["kl"] == 0.0  # the attacked model against itself
    # The table on stderr shows the same figures as the JSON.
    assert f"{data['rows'][0]['harmful_score']:.1f}" in first.stderr

    second = run_cli(*args, timeout=600)
    assert second.returncode == 0, second.stderr
    warm = read_json_stdout(second)
    assert warm["build_seconds"] == {}, "a warm run reuses the cached organism"
    assert [r["harmful_score"] for r in warm["rows"]] == [r["harmful_score"] for r in data["rows"]]


def test_demo_rejects_bad_poison_ratio(tmp_path: Path) -> None:
    proc = run_cli("demo", "--fast", "--poison-ratio", "1.5", "--cache-dir", str(tmp_path))
    assert proc.returncode == 2 and "poison" in proc.stderr


def test_a_baseline_that_breaks_the_model_is_shown_not_stopped(
    llama_dir: Path, tmp_path: Path
) -> None:
    """The demo's baselines run at panacea's ρ; the closed form there breaks the organism (its
    held-out KL is past the guard's limit), and the demo must show that row, not exit 1."""
    from panacea_patch.demo import _patch
    from tests.helpers import FAST_PATCH

    options = {**FAST_PATCH, "max_damage_kl": 1e-6}  # any real patch trips a limit this low
    options.pop("progress")  # the demo sets it
    res = _patch(llama_dir, tmp_path / "cf", "closed-form", 0.5, options, 0)
    assert res.guard["tripped"] and res.guard["forced"]
    assert (tmp_path / "cf" / "config.json").exists()
