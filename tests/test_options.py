"""Options shared by ``patch`` and ``finetune`` are declared once (issue 13, item 2).

For both commands: the config class, its generated CLI flags and ``examples/<command>.toml`` agree,
and every option the two share comes from ``panacea_patch.options.SHARED``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from panacea_patch.cli.main import main

from panacea_patch import config as patch_config
from panacea_patch.config import PatchConfig
from panacea_patch.options import SHARED
from panacea_patch.training import config as finetune_config
from panacea_patch.training.config import FinetuneConfig

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
COMMANDS = [
    ("patch", PatchConfig, patch_config.example_toml),
    ("finetune", FinetuneConfig, finetune_config.example_toml),
]
# Same name, different meaning or default: declared by each command on purpose.
NOT_SHARED = {
    "seed": "what the seed drives differs (noise and data order vs data order and LoRA init)",
    "batch_size": "8 examples per role for patch; the paper's 10 for finetune",
    "dtype": "compute dtype with 'auto' for patch; the dtype weights are trained in for finetune",
    "rho": "an absolute budget (default derived) for patch; the paper's rho = 1 for finetune",
}


@pytest.mark.parametrize(("command", "cls", "example"), COMMANDS)
def test_example_config_mirrors_every_option(command: str, cls: Any, example: Any) -> None:
    import tomllib

    text = (EXAMPLES / f"{command}.toml").read_text()
    assert text == example(), f"regenerate examples/{command}.toml from {cls.__name__}"
    assert cls.from_mapping(tomllib.loads(text)) == cls()
    for f in dataclasses.fields(cls):
        assert f.metadata["help"], f.name
        assert f.name in text


@pytest.mark.parametrize(("command", "cls", "example"), COMMANDS)
def test_cli_flags_mirror_config(command: str, cls: Any, example: Any) -> None:
    help_text = CliRunner().invoke(main, [command, "--help"], terminal_width=200).output
    for f in dataclasses.fields(cls):
        flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
        assert flag in help_text, (command, f.name)
    assert "--config" in help_text and "-q, --quiet" in help_text


def test_shared_options_are_declared_once() -> None:
    patch_fields = {f.name: f for f in dataclasses.fields(PatchConfig)}
    finetune_fields = {f.name: f for f in dataclasses.fields(FinetuneConfig)}
    for name in SHARED:
        for fields in (patch_fields, finetune_fields):
            assert fields[name].metadata.get("shared") == name, name
        a, b = patch_fields[name], finetune_fields[name]
        assert (a.default, a.metadata["group"]) == (b.default, b.metadata["group"]), name
    both = set(patch_fields) & set(finetune_fields)
    assert both - set(SHARED) == set(NOT_SHARED), "share the option in panacea_patch/options.py"
    assert "progress_interval" in SHARED


def test_finetune_reads_a_config_file_and_flags_override_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from panacea_patch import training

    seen: list[FinetuneConfig] = []

    def fake_finetune(base: str, out: str, *, config: FinetuneConfig, **_: Any) -> Any:
        seen.append(config)
        raise SystemExit(0)

    monkeypatch.setattr(training, "finetune", fake_finetune, raising=False)
    cfg = tmp_path / "ft.toml"
    cfg.write_text('[finetune]\ntrain = "d.jsonl"\nlora = false\nlr = 1e-4\nseed = 3\n')
    args = ["finetune", "BASE", "--out", "o", "--config", str(cfg), "--seed", "5"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert (seen[0].train, seen[0].lora, seen[0].lr, seen[0].seed) == ("d.jsonl", False, 1e-4, 5)

    cfg.write_text("epochz = 3\n")
    result = CliRunner().invoke(main, ["finetune", "BASE", "--out", "o", "--config", str(cfg)])
    assert result.exit_code == 2 and "unknown option(s) epochz" in result.output
