"""End-to-end random patching of real fixture checkpoints (issue: Foundation)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from panacea_patch import patch
from panacea_patch.checkpoint import ShardReader
from panacea_patch.provenance import METADATA_KEY, PROVENANCE_FILE
from panacea_patch.source import resolve_source
from panacea_patch.targets import select_targets
from tests.helpers import dir_hashes, load_all, read_json_stdout, run_cli, tensor_bytes


def _targets(model_dir: Path) -> set[str]:
    src = resolve_source(model_dir)
    with ShardReader(src) as r:
        return {
            t.name
            for t in select_targets(r.infos(), config=src.config, adapter=src.kind == "adapter")
        }


@pytest.mark.parametrize(
    "fixture", ["llama_dir", "llama_sharded_bf16_dir", "qwen2_dir", "neox_dir", "lora_dir"]
)
def test_random_patch_invariants(
    fixture: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    src_dir: Path = request.getfixturevalue(fixture)
    before = dir_hashes(src_dir)
    rho = 0.5
    result = patch(src_dir, tmp_path / "out", method="random", rho=rho, seed=3, progress=False)

    assert dir_hashes(src_dir) == before, "the source must never be modified"
    a, b = load_all(src_dir), load_all(tmp_path / "out")
    assert a.keys() == b.keys()
    targets = _targets(src_dir)
    assert targets and result.num_target_tensors == len(targets)
    sumsq = 0.0
    for name in a:
        assert a[name].shape == b[name].shape and a[name].dtype == b[name].dtype, name
        if name in targets:
            sumsq += (b[name].double() - a[name].double()).pow(2).sum().item()
        else:
            assert tensor_bytes(a[name]) == tensor_bytes(b[name]), f"{name} must be untouched"
    realized = math.sqrt(sumsq)
    assert result.realized_norm == pytest.approx(realized, rel=1e-4)
    if a[next(iter(targets))].dtype == torch.float32:
        assert realized == pytest.approx(rho, rel=0.01)
    else:  # bf16 rounding changes the realized norm; it is reported, not asserted against ρ
        assert 0.5 * rho < realized < 2 * rho
    # Same file layout, aux files copied, provenance present.
    src_files = {p.name for p in src_dir.iterdir() if p.name != "README.md"}
    out_files = {p.name for p in (tmp_path / "out").iterdir()}
    assert src_files <= out_files
    assert PROVENANCE_FILE in out_files


def test_same_seed_is_byte_identical_and_other_seed_differs(
    llama_sharded_bf16_dir: Path, tmp_path: Path
) -> None:
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        patch(
            llama_sharded_bf16_dir,
            tmp_path / name,
            method="random",
            rho=0.5,
            seed=seed,
            progress=False,
        )

    def weights(d: str) -> dict[str, str]:
        return {k: v for k, v in dir_hashes(tmp_path / d).items() if k.endswith(".safetensors")}

    assert weights("a") == weights("b")
    assert weights("a") != weights("c")


def test_provenance_and_metadata(llama_sharded_bf16_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = patch(llama_sharded_bf16_dir, out, method="random", rho=0.25, seed=1, progress=False)
    record = json.loads((out / PROVENANCE_FILE).read_text())
    assert record["method"] == "random" and record["seed"] == 1
    assert record["rho"] == pytest.approx(0.25)
    assert record["realized_norm"] == pytest.approx(result.realized_norm)
    # Input hashes are the real sha256 of the source files.
    src_hashes = dir_hashes(llama_sharded_bf16_dir)
    assert record["source"]["files"] and all(
        src_hashes[name] == digest for name, digest in record["source"]["files"].items()
    )
    assert {layer["name"] for layer in record["layers"]} == _targets(llama_sharded_bf16_dir)
    assert sum(layer["share"] for layer in record["layers"]) == pytest.approx(1.0)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    for shard in set(index["weight_map"].values()):
        with safe_open(out / shard, "pt") as f:
            meta = json.loads(f.metadata()[METADATA_KEY])
        assert meta["method"] == "random" and meta["tool"] == "panacea-patch"


def test_patched_model_loads_and_runs(qwen2_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    patch(qwen2_dir, tmp_path / "out", method="random", rho=0.3, progress=False)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    logits = model(torch.tensor([[1, 2, 3]])).logits
    assert torch.isfinite(logits).all()
    # Tied embeddings stay tied: lm_head still shares the (untouched) embedding matrix.
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()


def test_adapter_output_loads_with_peft(lora_dir: Path, llama_dir: Path, tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    patch(lora_dir, tmp_path / "out", method="random", rho=0.2, progress=False)
    base = AutoModelForCausalLM.from_pretrained(llama_dir)
    model = PeftModel.from_pretrained(base, tmp_path / "out")
    assert torch.isfinite(model(torch.tensor([[1, 2, 3]])).logits).all()


def test_dry_run_lists_targets_and_writes_nothing(neox_dir: Path, tmp_path: Path) -> None:
    proc = run_cli("patch", str(neox_dir), "--dry-run", "--json")
    assert proc.returncode == 0, proc.stderr
    data = read_json_stdout(proc)
    assert data["dry_run"] and data["num_target_tensors"] == len(data["targets"]) > 0
    assert all(".layers." in t["name"] for t in data["targets"])
    assert list(tmp_path.iterdir()) == []
    text = run_cli("patch", str(neox_dir), "--dry-run")
    assert "target tensors" in text.stdout


def test_cli_json_contract(llama_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = run_cli(
        "patch", str(llama_dir), "--out", str(out), "--method", "random", "--rho", "0.5", "--json"
    )
    assert proc.returncode == 0, proc.stderr
    data = read_json_stdout(proc)
    for key in (
        "output",
        "method",
        "rho",
        "realized_norm",
        "num_target_tensors",
        "num_target_params",
        "seconds",
    ):
        assert key in data
    assert data["output"] == str(out.resolve()) and data["method"] == "random"


def test_targets_regex_override(llama_dir: Path, tmp_path: Path) -> None:
    result = patch(
        llama_dir,
        tmp_path / "out",
        method="random",
        rho=0.1,
        targets=r"\.mlp\.down_proj\.",
        progress=False,
    )
    assert result.num_target_tensors == 2
    changed = {layer["name"] for layer in result.layers}
    assert all("down_proj" in n for n in changed)


def test_rho_rel_is_relative_to_target_norm(llama_dir: Path, tmp_path: Path) -> None:
    result = patch(llama_dir, tmp_path / "out", method="random", rho_rel=0.02, progress=False)
    assert result.target_weight_norm and result.rho == pytest.approx(
        0.02 * result.target_weight_norm
    )
    assert result.realized_norm == pytest.approx(result.rho, rel=0.01)
