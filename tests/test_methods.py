"""Closed form and Panacea on real fixtures, checked against independent computations."""

from __future__ import annotations

import json
import math
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from panacea_patch import patch
from panacea_patch.config import PatchConfig, example_toml
from panacea_patch.data import build_batches, load_pairs
from panacea_patch.errors import RuntimeFailure
from tests.helpers import FAST_PATCH, dir_hashes, load_all, read_json_stdout, run_cli

# Whole responses (no token budget) and no guard: these tests check the method's maths.
FAST = {**FAST_PATCH, "response_tokens": 0}


def _targets(result) -> list[str]:
    return [t["name"] for t in result.targets]


def _delta(src: Path, out: Path, names: list[str]) -> dict[str, torch.Tensor]:
    a, b = load_all(src), load_all(out)
    return {n: b[n].double() - a[n].double() for n in names}


def _mean_h(model_dir: Path, split: str, limit: int = 16) -> float:
    """Token-weighted harmful response CE, computed independently of the library's objective."""
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    pairs = load_pairs("builtin:harmful", role="harmful", split=split, limit=limit)
    (batch,) = build_batches(tok, pairs, batch_size=len(pairs), max_length=128)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return float(
        F.cross_entropy(
            logits[:, :-1].flatten(0, 1), batch["labels"][:, 1:].flatten(), ignore_index=-100
        )
    )


def test_closed_form_is_parallel_to_independent_gradient(llama_dir: Path, tmp_path: Path) -> None:
    rho = 0.05
    result = patch(llama_dir, tmp_path / "out", method="closed-form", rho=rho, **FAST)
    names = _targets(result)
    # Independent ∇h: one big batch (not the library's batching), plain autograd.
    tok = AutoTokenizer.from_pretrained(llama_dir)
    model = AutoModelForCausalLM.from_pretrained(llama_dir, dtype=torch.float32)
    pairs = load_pairs("builtin:harmful", role="harmful", split="optimize", limit=16)
    (batch,) = build_batches(tok, pairs, batch_size=len(pairs), max_length=128)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    h = F.cross_entropy(
        logits[:, :-1].flatten(0, 1), batch["labels"][:, 1:].flatten(), ignore_index=-100
    )
    h.backward()
    params = dict(model.named_parameters())
    grad = torch.cat([params[n].grad.double().flatten() for n in names])
    eps = torch.cat([d.flatten() for d in _delta(llama_dir, tmp_path / "out", names).values()])
    cos = float(grad @ eps / (grad.norm() * eps.norm()))
    assert cos > 0.999, cos
    assert float(eps.norm()) == pytest.approx(rho, rel=0.01)
    assert result.realized_norm == pytest.approx(rho, rel=0.01)


def test_panacea_raises_h_on_heldout_and_respects_max_kl(llama_dir: Path, tmp_path: Path) -> None:
    kappa = 0.02
    # alpha=1: on an untrained fixture the refusal term has nothing to restore, so a large
    # refusal weight (the organism-calibrated default) would dominate the harmful loss; the
    # answer-KL weight (calibrated on SmolLM2's answers) likewise, so u is the plain KL here.
    result = patch(
        llama_dir,
        tmp_path / "out",
        method="panacea",
        max_kl=kappa,
        steps=4,
        h_max=50.0,
        alpha=1.0,
        answer_kl_weight=0.0,
        **FAST,
    )
    path = result.optimization["rho_search"]
    assert path and any(p["ok"] for p in path)
    # Two optimizations at most; the rest of the search is probes (ε scaled, forward passes).
    assert 1 <= len([p for p in path if not p.get("probe")]) <= 2
    chosen = [p for p in path if p["rho"] == result.rho]
    assert chosen and all(p["kl"] <= kappa for p in chosen)
    assert _mean_h(tmp_path / "out", "evaluate") > _mean_h(llama_dir, "evaluate")
    history = result.optimization["history"]
    assert len(history) == 4 and all({"h", "r", "u", "J"} <= set(h) for h in history)
    record = json.loads((tmp_path / "out" / "panacea_patch.json").read_text())
    assert record["optimization"]["rho_search"] == path
    assert set(record["data"]["digests"]) == {"harmful", "refusal", "benign"}


def test_panacea_is_deterministic(llama_sharded_bf16_dir: Path, tmp_path: Path) -> None:
    for name in ("a", "b"):
        patch(llama_sharded_bf16_dir, tmp_path / name, rho_rel=0.02, steps=2, seed=5, **FAST)

    def weights(d: str) -> dict[str, str]:
        return {k: v for k, v in dir_hashes(tmp_path / d).items() if k.endswith(".safetensors")}

    assert weights("a") == weights("b")


def test_layer_budget_respects_each_share(qwen2_dir: Path, tmp_path: Path) -> None:
    rho = 0.08
    result = patch(qwen2_dir, tmp_path / "out", rho=rho, budget="layer", steps=2, **FAST)
    w = load_all(qwen2_dir)
    names = _targets(result)
    total = math.sqrt(sum(float(w[n].double().pow(2).sum()) for n in names))
    for n, d in _delta(qwen2_dir, tmp_path / "out", names).items():
        share = rho * float(w[n].double().norm()) / total
        assert float(d.norm()) <= share * 1.001 + 1e-7, n
    assert result.realized_norm <= rho * 1.001


def test_adapter_output_is_an_adapter_that_generates(
    lora_dir: Path, llama_dir: Path, tmp_path: Path
) -> None:
    from peft import PeftModel

    result = patch(lora_dir, tmp_path / "out", rho_rel=0.05, steps=2, **FAST)
    assert all(".lora_" in n for n in _targets(result))
    assert (tmp_path / "out" / "adapter_config.json").exists()
    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(llama_dir), tmp_path / "out"
    )
    out = model.generate(torch.tensor([[1, 5, 7]]), max_new_tokens=4, do_sample=False)
    assert out.shape[1] == 7


def test_merge_adapter_writes_full_model(lora_dir: Path, llama_dir: Path, tmp_path: Path) -> None:
    from peft import PeftModel

    result = patch(lora_dir, tmp_path / "out", rho=0.05, steps=2, merge_adapter=True, **FAST)
    out = tmp_path / "out"
    assert not (out / "adapter_config.json").exists() and (out / "config.json").exists()
    merged_ref = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(llama_dir), lora_dir
    )
    merged_ref = merged_ref.merge_and_unload().state_dict()
    patched = load_all(out)
    base = load_all(llama_dir)
    assert patched.keys() == base.keys()
    diff = math.sqrt(
        sum(
            float((patched[n].double() - merged_ref[n].double()).pow(2).sum())
            for n in _targets(result)
        )
    )
    # ε is measured from the merged weights, not the base's.
    assert diff == pytest.approx(result.realized_norm, rel=1e-3)
    assert 0 < diff <= 0.05 * 1.001
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.generate(torch.tensor([[1, 5]]), max_new_tokens=3, do_sample=False).shape[1] == 5


def _poisoned_copy(src: Path, dst: Path, name_part: str) -> Path:
    shutil.copytree(src, dst)
    f = dst / "model.safetensors"
    tensors = load_file(f)
    victim = next(n for n in sorted(tensors) if name_part in n)
    tensors[victim][0, 0] = float("nan")
    save_file(tensors, f, metadata={"format": "pt"})
    return dst


def test_nan_weight_aborts_naming_the_tensor(llama_dir: Path, tmp_path: Path) -> None:
    src = _poisoned_copy(llama_dir, tmp_path / "src", "layers.1.mlp.down_proj")
    with pytest.raises(RuntimeFailure, match=r"layers\.1\.mlp\.down_proj"):
        patch(src, tmp_path / "out", rho=0.1, steps=1, **FAST)
    assert not (tmp_path / "out").exists()


def test_nan_loss_aborts_naming_the_step(llama_dir: Path, tmp_path: Path) -> None:
    src = _poisoned_copy(llama_dir, tmp_path / "src", "embed_tokens")
    proc = run_cli(
        "patch",
        str(src),
        "--out",
        str(tmp_path / "out"),
        "--rho",
        "0.1",
        "--max-examples",
        "8",
        "--json",
    )
    assert proc.returncode == 1, proc.stderr
    assert "nan" in proc.stderr.lower() and "nothing was written" in proc.stderr
    assert read_json_stdout(proc)["exit_code"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_ctrl_c_during_optimization_writes_nothing(llama_dir: Path, tmp_path: Path) -> None:
    # A shell that starts the suite in the background makes its children ignore SIGINT, and
    # Python keeps an inherited SIG_IGN: restore the default, as an interactive user has it.
    script = (
        "import signal; signal.signal(signal.SIGINT, signal.default_int_handler);"
        "from panacea_patch import patch; print('go', flush=True);"
        f"patch({str(llama_dir)!r}, {str(tmp_path / 'out')!r}, rho=0.1, steps=100000, max_examples=8, progress=False)"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "go"
    time.sleep(6)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    assert proc.returncode != 0
    assert list(tmp_path.iterdir()) == []


def test_config_file_and_cli_override(llama_dir: Path, tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('method = "random"\nrho = 0.3\nseed = 4\n')
    yaml = tmp_path / "c.yaml"
    yaml.write_text("method: random\nrho: 0.3\nseed: 4\n")
    for cfg, extra, rho in ((toml, [], 0.3), (yaml, ["--rho", "0.2"], 0.2)):
        out = tmp_path / f"out-{cfg.suffix[1:]}"
        proc = run_cli(
            "patch", str(llama_dir), "--out", str(out), "--config", str(cfg), *extra, "--json"
        )
        assert proc.returncode == 0, proc.stderr
        data = read_json_stdout(proc)
        assert (
            data["method"] == "random" and data["seed"] == 4 and data["rho"] == pytest.approx(rho)
        )


def test_example_config_mirrors_every_option() -> None:
    import tomllib

    text = (Path(__file__).resolve().parents[1] / "examples" / "patch.toml").read_text()
    assert text == example_toml(), "regenerate examples/patch.toml from PatchConfig"
    values = tomllib.loads(text)
    cfg = PatchConfig.from_mapping(values)
    assert cfg == PatchConfig()
    for f in PatchConfig.__dataclass_fields__.values():
        assert f.metadata["help"], f.name
        assert f.name in text


def test_cli_flags_mirror_config() -> None:
    from click.testing import CliRunner
    from panacea_patch.cli.main import main

    help_text = CliRunner().invoke(main, ["patch", "--help"], terminal_width=200).output
    for name in PatchConfig.__dataclass_fields__:
        assert "--" + name.replace("_", "-") in help_text, name


def test_gradient_checkpointing_gives_the_same_closed_form(llama_dir: Path, tmp_path: Path) -> None:
    """Checkpointing trades compute for memory; it must not change ε."""
    names = None
    deltas = []
    for i, gc in enumerate((False, True)):
        result = patch(
            llama_dir,
            tmp_path / f"o{i}",
            method="closed-form",
            rho=0.05,
            gradient_checkpointing=gc,
            **FAST,
        )
        names = _targets(result)
        deltas.append(_delta(llama_dir, tmp_path / f"o{i}", names))
    for n in names or []:
        torch.testing.assert_close(deltas[0][n], deltas[1][n], atol=1e-6, rtol=1e-4)
