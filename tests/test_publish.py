"""panacea_patch.publish without a network: the card and chart of an output, push argument checks."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from huggingface_hub import ModelCard
from panacea_patch.cli.main import main

from panacea_patch import patch, publish
from panacea_patch.card import MARKER, is_generated_card
from panacea_patch.errors import InputError
from panacea_patch.provenance import PROVENANCE_FILE, read_provenance
from panacea_patch.publish import CHART_FILE, default_commit_message, write_card
from tests.helpers import dir_hashes

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SOURCE_CARD = (
    "---\nlicense: apache-2.0\nlanguage: [en]\ntags: [chat]\n---\n# tiny\n\nSource notes.\n"
)


@pytest.fixture(autouse=True)
def _restore_cli_logging() -> Iterator[None]:
    """The CLI installs a handler on the stream CliRunner swaps in; put the logger back after."""
    logger = logging.getLogger("panacea_patch")
    handlers, level = list(logger.handlers), logger.level
    yield
    logger.handlers[:], logger.level = handlers, level


@pytest.fixture(scope="module")
def source_with_card(llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama with a model card of its own (license, tags, text)."""
    src = tmp_path_factory.mktemp("src") / "llama-ft"
    shutil.copytree(llama_dir, src)
    (src / "README.md").write_text(SOURCE_CARD)
    return src


@pytest.fixture(scope="module")
def patched_once(source_with_card: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("patched") / "out"
    patch(source_with_card, out, method="random", rho=0.3, progress=False)
    return out


@pytest.fixture
def output(patched_once: Path, tmp_path: Path) -> Path:
    """A fresh copy of a patched output, for tests that change it."""
    out = tmp_path / "out"
    shutil.copytree(patched_once, out)
    return out


def set_metrics(out: Path, metrics: dict) -> None:
    record = read_provenance(out) or {}
    record["metrics"] = metrics
    (out / PROVENANCE_FILE).write_text(json.dumps(record, indent=2))


# ---------------------------------------------------------------------------- the patch run


def test_a_patch_writes_the_card_and_the_chart(patched_once: Path, source_with_card: Path):
    chart = patched_once / CHART_FILE
    assert chart.read_bytes().startswith(PNG_MAGIC)
    text = (patched_once / "README.md").read_text()
    assert is_generated_card(text)
    assert f"![Per-layer perturbation norms]({CHART_FILE})" in text
    card = ModelCard.load(patched_once / "README.md")
    assert card.data.license == "apache-2.0"  # the source card's metadata is carried
    assert {"panacea-patch", "safety", "chat"} <= set(card.data.tags)
    assert card.data.base_model is None  # a local source is not a Hub id
    assert "Source notes." in text
    # Made from Python, so the card gives the equivalent command line.
    assert f"panacea-patch patch {source_with_card} --out OUT --method random --rho 0.3" in text


def test_a_refresh_is_idempotent(output: Path):
    before = dir_hashes(output)
    assert write_card(output, source_dir=None) == output / "README.md"
    assert dir_hashes(output) == before


def test_metrics_added_later_reach_the_card(output: Path):
    set_metrics(output, {"before": {"harmful_score": 80.0}, "after": {"harmful_score": 5.0}})
    write_card(output, source_dir=None)
    card = ModelCard.load(output / "README.md")
    assert {r.metric_type: r.metric_value for r in card.data.eval_results} == {
        "harmful_score": 5.0,
        "harmful_score_before": 80.0,
    }


def test_the_source_card_survives_when_the_source_is_gone(source_with_card: Path, tmp_path: Path):
    src = tmp_path / "src"
    shutil.copytree(source_with_card, src)
    out = tmp_path / "out"
    patch(src, out, method="random", rho=0.3, progress=False)
    shutil.rmtree(src)  # e.g. a cleared Hub cache, or the output copied to another machine
    set_metrics(out, {"after": {"harmful_score": 1.0}})
    write_card(out, source_dir=None)
    text = (out / "README.md").read_text()
    card = ModelCard.load(out / "README.md")
    assert card.data.license == "apache-2.0" and card.data.language == ["en"]
    assert "chat" in card.data.tags
    assert text.count("Source notes.") == 1
    assert card.data.eval_results[0].metric_value == 1.0


def test_a_user_readme_is_kept_unless_asked(output: Path):
    (output / "README.md").write_text("# My own notes\n")
    assert write_card(output, source_dir=None) is None
    assert (output / "README.md").read_text() == "# My own notes\n"
    assert write_card(output, source_dir=None, overwrite_readme=True) == output / "README.md"
    assert (output / "README.md").read_text().count(MARKER) == 1


def test_not_an_output_is_an_input_error(tmp_path: Path):
    with pytest.raises(InputError, match="not a panacea-patch output"):
        write_card(tmp_path, source_dir=None)
    (tmp_path / PROVENANCE_FILE).write_text("{broken")
    with pytest.raises(InputError, match="cannot read"):
        write_card(tmp_path, source_dir=None)


# ---------------------------------------------------------------------------- the chart


def _redraw(out: Path) -> None:
    (out / CHART_FILE).unlink(missing_ok=True)
    os.utime(out / PROVENANCE_FILE)


def test_a_chart_newer_than_the_record_is_reused(output: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(publish, "_plot_simple", None)  # any drawing would fail
    monkeypatch.setitem(sys.modules, "panacea_patch.inspect", None)
    assert publish.render_chart(output, read_provenance(output) or {}) == CHART_FILE


def test_without_inspect_the_simple_chart_is_drawn(output: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "panacea_patch.inspect", None)  # import fails
    _redraw(output)
    write_card(output, source_dir=None)
    assert (output / CHART_FILE).read_bytes().startswith(PNG_MAGIC)
    assert f"]({CHART_FILE})" in (output / "README.md").read_text()


def test_without_matplotlib_the_card_links_no_chart(
    output: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    _redraw(output)
    with caplog.at_level(logging.INFO, logger="panacea_patch"):
        write_card(output, source_dir=None)
    assert not (output / CHART_FILE).exists()
    assert CHART_FILE not in (output / "README.md").read_text()
    assert "panacea-patch[plots]" in caplog.text


def test_a_failing_chart_never_fails_the_card(output: Path, monkeypatch: pytest.MonkeyPatch):
    def broken(*args: object) -> None:
        raise RuntimeError("no fonts")

    monkeypatch.setitem(sys.modules, "panacea_patch.inspect", None)
    monkeypatch.setattr(publish, "_plot_simple", broken)
    _redraw(output)
    assert write_card(output, source_dir=None) == output / "README.md"
    assert not (output / CHART_FILE).exists()


def test_a_record_without_layers_gets_no_chart(tmp_path: Path):
    (tmp_path / PROVENANCE_FILE).write_text(json.dumps({"method": "random", "layers": [{}]}))
    write_card(tmp_path, source_dir=None)
    assert not (tmp_path / CHART_FILE).exists()
    assert is_generated_card((tmp_path / "README.md").read_text())


# ---------------------------------------------------------------------------- push arguments


def test_default_commit_message_names_the_tool_method_and_rho():
    message = default_commit_message({"method": "panacea", "rho": 0.0512345, "version": "0.1.0"})
    assert message == "Add a panacea-patch 0.1.0 safety patch (method=panacea, rho=0.05123)"
    assert "rho=unknown" in default_commit_message({})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"push_to_hub": "no-namespace"}, "not a Hub repository id"),
        ({"push_to_hub": "org/x", "hub_revision": "a" * 40}, "commit sha"),
        ({"push_to_hub": "org/x", "hub_revision": "bad..name"}, "not a valid branch name"),
        ({"push_to_hub": "org/x", "hub_revision": "dev", "create_pr": True}, "pull request"),
    ],
)
def test_a_bad_push_target_fails_before_any_work(
    llama_dir: Path, tmp_path: Path, options: dict, message: str
):
    with pytest.raises(InputError, match=message):
        patch(llama_dir, tmp_path / "out", method="random", rho=0.3, progress=False, **options)
    assert not (tmp_path / "out").exists()


def test_push_cli_argument_errors_exit_2(output: Path, tmp_path: Path):
    runner = CliRunner()
    result = runner.invoke(main, ["push", str(tmp_path / "none"), "org/x"])
    assert result.exit_code == 2 and "is not a directory" in result.stderr
    result = runner.invoke(main, ["push", str(tmp_path), "org/x", "--json"])
    assert result.exit_code == 2 and "not a panacea-patch output" in result.stderr
    assert json.loads(result.stdout)["exit_code"] == 2
    result = runner.invoke(main, ["push", str(output), "org/x", "--revision", "b", "--create-pr"])
    assert result.exit_code == 2 and "pull request" in result.stderr
