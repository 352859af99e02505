"""The model card: front matter, body, the source card kept below, README ownership, no secrets."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_DISABLE_XET", "1")  # read by huggingface_hub at import

import copy
from pathlib import Path
from typing import Any

import pytest
from huggingface_hub import ModelCard

from panacea_patch.card import (
    MARKER,
    build_model_card,
    equivalent_command,
    is_generated_card,
    recover_source_card,
    write_model_card,
)
from panacea_patch.hub import download_snapshot, push_folder
from tests.hub_server import HubServer, require_lfs_uploads, write_tiny_checkpoint
from tests.hub_server import hub_server as hub_server  # the fixture, until conftest imports it

FAKE_TOKEN = "hf_FAKEtoken_leakcheck_123"
SHA = "c0ffee" + "0" * 34

RECORD: dict[str, Any] = {
    "tool": "panacea-patch",
    "version": "0.1.0",
    "created": "2025-06-01T12:00:00+00:00",
    "command": "panacea-patch patch org/ft-model out --rho 0.05 --seed 7 --save-delta",
    "source": {
        "spec": "org/ft-model@main",
        "repo_id": "org/ft-model",
        "revision": "main",
        "commit_sha": SHA,
        "kind": "full",
        "base_model": None,
        "files": {"model.safetensors": "ab" * 32},
    },
    "method": "panacea",
    "config": {"rho": 0.05, "steps": 20, "alpha": 1.0, "beta": 10.0},
    "seed": 7,
    "rho": 0.05,
    "realized_norm": 0.0498,
    "targets": {"count": 14, "params": 917504},
    "layers": [
        {"name": f"model.layers.{i}.mlp.up_proj.weight", "norm_eps": 0.01 * (i + 1), "norm_w": 3.0}
        | {"rel": 0.003 * (i + 1), "share": 0.07}
        for i in range(14)
    ],
    "data": {"harmful": "sha256:1111", "refusal": "sha256:2222", "benign": "sha256:3333"},
    "metrics": {
        "before": {"harmful_score": 87.5, "refusal_rate": 6.0, "task_accuracy": 71.0},
        "after": {"harmful_score": 4.5, "refusal_rate": 93.0, "task_accuracy": 70.0, "kl": 0.012},
    },
    "versions": {"panacea-patch": "0.1.0", "torch": "2.13.0", "transformers": "5.0.0"},
    "delta_file": "panacea_delta.safetensors",
}

SOURCE_CARD = """---
license: llama3.1
license_link: https://example.com/license
language:
- en
- de
datasets:
- org/chat-data
base_model: meta/base-model
tags:
- chat
- safety
model-index:
- name: ft-model
  results:
  - task: {type: text-generation}
    dataset: {name: mmlu, type: cais/mmlu}
    metrics:
    - {type: accuracy, value: 61.0}
---

# ft-model

A chat fine-tune. Use it responsibly.
"""


def record(**changes: Any) -> dict[str, Any]:
    rec = copy.deepcopy(RECORD)
    rec.update(changes)
    return rec


def metric(card: ModelCard, metric_type: str) -> float | None:
    for result in card.data.eval_results or []:
        if result.metric_type == metric_type:
            return result.metric_value
    return None


def test_front_matter_has_base_model_tags_library_and_eval_results():
    card = build_model_card(record())
    data = card.data
    assert data.base_model == "org/ft-model"
    assert data.library_name == "transformers"
    assert {"panacea-patch", "safety"} <= set(data.tags)
    assert data.pipeline_tag == "text-generation"
    assert metric(card, "harmful_score") == 4.5
    assert metric(card, "harmful_score_before") == 87.5
    assert metric(card, "task_accuracy") == 70.0
    assert metric(card, "task_accuracy_before") == 71.0
    assert metric(card, "kl") == 0.012
    assert metric(card, "kl_before") is None
    assert data.model_name == "ft-model-panacea"
    assert "license" not in data.to_dict()  # no source card, nothing to carry


def test_the_card_survives_a_save_and_load(tmp_path: Path):
    build_model_card(record(), source_card_text=SOURCE_CARD).save(tmp_path / "README.md")
    loaded = ModelCard.load(tmp_path / "README.md")
    assert loaded.data.base_model == "org/ft-model"
    assert loaded.data.license == "llama3.1"
    assert metric(loaded, "harmful_score") == 4.5
    assert is_generated_card((tmp_path / "README.md").read_text())


def test_adapter_cards_are_peft_and_point_at_a_base_model():
    source = record()["source"] | {"kind": "adapter", "base_model": "meta/base-model"}
    card = build_model_card(record(source=source))
    assert card.data.library_name == "peft"
    assert card.data.base_model == "org/ft-model"
    assert "peft" in card.data.tags
    local = source | {"repo_id": None, "revision": None, "spec": "/data/adapter"}
    card = build_model_card(record(source=local))
    assert card.data.base_model == "meta/base-model"
    assert "`/data/adapter`" in card.text


def test_body_says_what_was_done_and_how_to_reproduce_and_revert():
    text = build_model_card(record(), chart_filename="panacea_layers.png").text
    assert text.lstrip().startswith(MARKER)
    for expected in (
        "## What was done and why",
        "projected gradient ascent",
        "| Method | `panacea` |",
        "| ρ (perturbation budget, ‖ε‖₂) | 0.05 |",
        "| Realized ‖w′ − w‖₂ (after rounding to the stored dtype) | 0.0498 |",
        "| Seed | 7 |",
        f"| Source commit | `{SHA}` |",
        "| Harmful score | 87.5 | 4.5 | -83 |",
        "![Per-layer perturbation norms](panacea_layers.png)",
        "`model.layers.13.mlp.up_proj.weight`",
        "## How to reproduce",
        RECORD["command"],
        '"steps": 20',
        "- harmful: `sha256:1111`",
        "| transformers | 5.0.0 |",
        "## How to revert",
        'delta = load_file("panacea_delta.safetensors")',
        f"hf download org/ft-model --revision {SHA}",
        "## Limitations",
    ):
        assert expected in text, expected
    # Only the ten largest layers are tabled, largest first.
    assert "model.layers.3.mlp" not in text
    assert text.index("layers.13.") < text.index("layers.12.")


def test_without_a_delta_the_card_says_so():
    text = build_model_card(record(delta_file=None)).text
    assert "was not saved" in text
    assert "load_file" not in text


def test_source_card_is_kept_below_ours_with_its_metadata():
    card = build_model_card(record(), source_card_text=SOURCE_CARD)
    data = card.data.to_dict()
    assert data["license"] == "llama3.1"
    assert data["license_link"] == "https://example.com/license"
    assert data["language"] == ["en", "de"]
    assert data["datasets"] == ["org/chat-data"]
    assert data["base_model"] == "org/ft-model"  # we derive from the source, not its base
    assert data["tags"][:3] == ["panacea-patch", "safety", "chat"]
    # The source's own scores describe the source: they must not be claimed for this model.
    assert metric(card, "accuracy") is None
    text = card.text
    ours, theirs = text.index("## Patch summary"), text.index("A chat fine-tune.")
    assert ours < text.index("## Original model card") < theirs
    assert "# ft-model\n\nA chat fine-tune. Use it responsibly." in text


def test_minimal_and_odd_records_still_give_a_card():
    card = build_model_card({"tool": "panacea-patch"})
    assert card.data.library_name == "transformers"
    assert card.data.eval_results is None
    assert "## Evaluation" not in card.text
    odd = build_model_card(
        record(metrics={"after": {"harmful_score": None, "custom_score": 3}}, layers=[{}, 1])
    )
    assert metric(odd, "custom_score") == 3
    assert "| custom_score | — | 3 | — |" in odd.text


def test_no_secret_reaches_the_card(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    rec = record(
        command=f"panacea-patch patch org/ft out --token {FAKE_TOKEN} --push-to-hub org/x",
        config={"rho": 1.0, "hub_token": FAKE_TOKEN, "nested": {"api_key": "k-123"}},
    )
    content = build_model_card(rec, source_card_text=SOURCE_CARD + f"\n{FAKE_TOKEN}\n").content
    assert FAKE_TOKEN not in content
    assert "k-123" not in content
    assert "--token *** --push-to-hub org/x" in content


def test_write_model_card_owns_only_its_own_readme(tmp_path: Path):
    out, src = tmp_path / "out", tmp_path / "src"
    out.mkdir()
    src.mkdir()
    (src / "README.md").write_text(SOURCE_CARD)

    path = write_model_card(out, record(), source_dir=src, chart_filename="chart.png")
    assert path == out / "README.md"
    first = path.read_text()
    assert is_generated_card(first) and "A chat fine-tune." in first

    # Our own earlier card is replaced.
    assert write_model_card(out, record(seed=8), source_dir=src) == path
    assert "| Seed | 8 |" in path.read_text()

    # The user's README is kept...
    path.write_text("# My notes\n")
    assert write_model_card(out, record(), source_dir=src) is None
    assert path.read_text() == "# My notes\n"
    # ...unless they ask.
    assert write_model_card(out, record(), source_dir=src, overwrite_readme=True) == path
    assert is_generated_card(path.read_text())

    # The source card copied along with the checkpoint is ours to replace.
    path.write_text(SOURCE_CARD)
    assert write_model_card(out, record(), source_dir=src) == path
    assert is_generated_card(path.read_text())


def test_write_model_card_without_a_source_dir(tmp_path: Path):
    path = write_model_card(tmp_path, record(), source_dir=None)
    assert path is not None and "## Original model card" not in path.read_text()


def test_card_front_matter_on_the_hub(hub_server: HubServer, tmp_path: Path):
    """Pushed with the output, the card passes the Hub's YAML check and reads back intact."""
    require_lfs_uploads()
    out = tmp_path / "out"
    write_tiny_checkpoint(out)
    (out / "README.md").unlink()
    write_model_card(out, record(), source_dir=None, chart_filename="chart.png")
    push_folder(out, "panacea-org/card-check", token=hub_server.token)
    path, _ = download_snapshot("panacea-org/card-check", token=hub_server.token)
    card = ModelCard.load(path / "README.md")
    assert card.data.base_model == "org/ft-model"
    assert {"panacea-patch", "safety"} <= set(card.data.tags)
    assert metric(card, "harmful_score_before") == 87.5
    assert hub_server.count("validate_yaml") >= 1


def test_a_refresh_without_the_source_keeps_its_card(tmp_path: Path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "README.md").write_text(SOURCE_CARD)
    path = write_model_card(tmp_path, record(), source_dir=src)
    assert path is not None
    first = path.read_text()
    recovered = recover_source_card(first)
    assert recovered is not None
    meta = ModelCard(recovered).data.to_dict()
    assert meta["license"] == "llama3.1" and meta["datasets"] == ["org/chat-data"]
    assert meta["tags"] == ["chat"]  # ours (panacea-patch, safety) are not the source's
    assert "model-index" not in meta and "library_name" not in meta
    # Regenerated with the source gone, the card is unchanged.
    assert write_model_card(tmp_path, record(), source_dir=None) == path
    assert path.read_text() == first
    assert recover_source_card(build_model_card(record()).content) is None
    assert recover_source_card("# a user README\n") is None


def test_base_model_is_only_ever_a_hub_id():
    local = record()["source"] | {"repo_id": None, "kind": "adapter", "base_model": "/data/base"}
    peft_card = "---\nbase_model: /data/base\ntags:\n- base_model:adapter:/data/base\n- lora\n---\n"
    card = build_model_card(record(source=local), source_card_text=peft_card)
    assert card.data.base_model is None
    assert card.data.tags == ["panacea-patch", "safety", "lora", "peft"]
    hub_base = local | {"base_model": "meta/base-model"}
    assert build_model_card(record(source=hub_base)).data.base_model == "meta/base-model"


def test_a_python_run_gets_an_equivalent_command():
    config = {"method": "random", "rho": 0.3, "seed": 0, "eval": True, "revision": "dev"}
    rec = record(command="/usr/bin/python -m pytest tests", config=config)
    expected = f"panacea-patch patch org/ft-model@{SHA} --out OUT --method random --rho 0.3 --eval"
    assert equivalent_command(rec) == expected
    assert "made from Python" in build_model_card(rec).text
    assert expected in build_model_card(rec).text
    local = record()["source"] | {"repo_id": None, "spec": "./my model"}
    assert equivalent_command(record(source=local, config=config)) == (
        "panacea-patch patch './my model' --out OUT --method random --rho 0.3 --revision dev --eval"
    )
    assert equivalent_command({"command": "x"}) is None
