"""The token budget, length batching, early stopping and the damage guard, on real fixtures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer

from panacea_patch import patch
from panacea_patch.data import IGNORE_INDEX, build_batches, count_tokens, load_pairs
from panacea_patch.methods.optimize import EarlyStop
from tests.helpers import FAST_PATCH, dir_hashes, load_all, read_json_stdout, run_cli

FAST = dict(FAST_PATCH)


def _harmful(limit: int = 16) -> list:
    return load_pairs("builtin:harmful", role="harmful", split="optimize", limit=limit)


def test_response_tokens_keeps_prompt_and_first_n_response_tokens(tiny_tokenizer) -> None:
    pairs = _harmful(8)
    (full,) = build_batches(tiny_tokenizer, pairs, batch_size=8, max_length=128)
    (cut,) = build_batches(tiny_tokenizer, pairs, batch_size=8, max_length=128, response_tokens=3)
    for row in range(8):
        labels_full, labels_cut = full["labels"][row], cut["labels"][row]
        kept = labels_cut[labels_cut != IGNORE_INDEX]
        assert kept.numel() == 3
        # The kept tokens are the first three response tokens, after the same prompt.
        assert torch.equal(kept, labels_full[labels_full != IGNORE_INDEX][:3])
    assert count_tokens([cut]) < count_tokens([full])


def test_by_length_batching_cuts_padding_and_keeps_every_example(tiny_tokenizer) -> None:
    pairs = load_pairs("builtin:benign", role="benign", split="optimize", limit=64)
    plain = build_batches(tiny_tokenizer, pairs, batch_size=8, max_length=128, shuffle_seed=0)
    grouped = build_batches(
        tiny_tokenizer, pairs, batch_size=8, max_length=128, shuffle_seed=0, by_length=True
    )
    real = sum(int(b["attention_mask"].sum()) for b in plain)
    assert sum(int(b["attention_mask"].sum()) for b in grouped) == real
    assert count_tokens(grouped) < count_tokens(plain)

    def rows(batches: list[dict]) -> list[tuple[int, ...]]:
        return sorted(
            tuple(b["input_ids"][i][b["attention_mask"][i].bool()].tolist())
            for b in batches
            for i in range(b["input_ids"].shape[0])
        )

    assert rows(grouped) == rows(plain)


def _independent_grad(model_dir: Path, names: list[str], n_tokens: int | None) -> torch.Tensor:
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    (batch,) = build_batches(tok, _harmful(), batch_size=16, max_length=128)
    labels = batch["labels"].clone()
    if n_tokens is not None:
        for row in labels:
            where = (row != IGNORE_INDEX).nonzero().flatten()
            row[where[n_tokens:]] = IGNORE_INDEX
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten()).backward()
    params = dict(model.named_parameters())
    return torch.cat([params[n].grad.double().flatten() for n in names])


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm()))


def test_closed_form_follows_the_token_budget(llama_dir: Path, tmp_path: Path) -> None:
    result = patch(
        llama_dir, tmp_path / "out", method="closed-form", rho=0.05, response_tokens=4, **FAST
    )
    names = [t["name"] for t in result.targets]
    src, out = load_all(llama_dir), load_all(tmp_path / "out")
    eps = torch.cat([(out[n].double() - src[n].double()).flatten() for n in names])
    budget = _independent_grad(llama_dir, names, 4)
    whole = _independent_grad(llama_dir, names, None)
    assert _cos(eps, budget) > 0.999
    # A run that ignored the budget would follow the whole-response gradient instead.
    assert _cos(eps, whole) < _cos(eps, budget) - 0.01
    phases = result.optimization["phases"]
    assert phases["closed_form"]["passes"] == 2
    assert phases["closed_form"]["tokens"] > 0


def test_json_reports_passes_tokens_seconds_per_phase(llama_dir: Path, tmp_path: Path) -> None:
    args = ["--max-examples", "16", "--max-length", "128", "--steps", "3", "--patience", "0"]
    args += ["--min-refusal-drop", "0"]  # an untrained fixture has no refusals to restore

    def run(out: str, *extra: str) -> dict:
        proc = run_cli(
            "patch", str(llama_dir), "--out", str(tmp_path / out), "--json", *args, *extra
        )
        assert proc.returncode == 0, proc.stderr
        return read_json_stdout(proc)

    short, whole = run("a", "--response-tokens", "2"), run("b", "--response-tokens", "0")
    for res in (short, whole):
        phases = res["optimization"]["phases"]
        assert set(phases) >= {"reference", "closed_form", "ascent", "guard"}
        assert phases["ascent"]["passes"] == 3 * 3
        assert all(p["seconds"] >= 0 for p in phases.values())
        assert res["guard"]["heldout_kl"] is not None
    assert (
        short["optimization"]["phases"]["ascent"]["tokens"]
        < whole["optimization"]["phases"]["ascent"]["tokens"]
    )


def test_early_stop_waits_for_patience_on_the_smoothed_objective() -> None:
    stop = EarlyStop(patience=3)
    rising = [stop.stop(v) for v in (1.0, 2.0, 3.0, 4.0)]
    assert not any(rising)
    flat = [stop.stop(v) for v in (0.0, 0.0, 0.0)]
    assert flat == [False, False, True]
    # One noisy dip inside a rising run does not stop it.
    stop = EarlyStop(patience=3)
    assert not any(stop.stop(v) for v in (1.0, 2.0, 1.5, 3.0, 4.0, 5.0))


def test_patience_shortens_the_ascent(llama_dir: Path, tmp_path: Path) -> None:
    opts = dict(FAST, steps=40, alpha=1.0)
    full = patch(llama_dir, tmp_path / "a", patience=0, **opts)
    early = patch(llama_dir, tmp_path / "b", patience=1, **opts)
    assert full.optimization["steps_run"] == 40
    assert early.optimization["steps_run"] < 40
    passes = early.optimization["phases"]["ascent"]["passes"]
    assert passes == 3 * early.optimization["steps_run"]


def _cli_patch(src: Path, out: Path, *flags: str) -> tuple[list[str], Any]:
    """``panacea-patch patch`` on a fixture with small data; the arguments and the process."""
    args = ["patch", str(src), "--out", str(out), "--max-examples", "16", "--max-length", "128"]
    args += flags
    return args, run_cli(*args)


def test_guard_stops_a_damaging_run_and_writes_nothing(llama_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    before = dir_hashes(llama_dir)
    flags = ("--steps", "2", "--rho-rel", "0.5", "--max-damage-kl", "0.01")
    args, proc = _cli_patch(llama_dir, out, *flags)
    assert proc.returncode == 1, proc.stderr
    assert "damage guard" in proc.stderr and "--rho" in proc.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []
    assert dir_hashes(llama_dir) == before

    forced = run_cli(*args, "--force", "--json")
    assert forced.returncode == 0, forced.stderr
    guard = read_json_stdout(forced)["guard"]
    assert guard["tripped"] and guard["forced"] and guard["heldout_kl"] > 0.01
    assert 0 < guard["rho_that_fits"] < guard["rho"]
    record = json.loads((out / "panacea_patch.json").read_text())
    assert record["guard"]["tripped"] is True
    card = (out / "README.md").read_text()
    assert "## Damage guard" in card and "tripped; written with --force" in card


def test_a_default_budget_the_guard_stops_is_refit_once(llama_dir: Path, tmp_path: Path) -> None:
    from panacea_patch.errors import RuntimeFailure
    from panacea_patch.guard import guard_verdict

    # The closed form alone (0 steps): on this fixture its KL grows like rho squared.
    kw = {**FAST, "steps": 0, "max_damage_kl": 1e-12, "force": True}
    first = patch(llama_dir, tmp_path / "forced", **kw).guard
    assert first["tripped"] and "refit_from" not in first  # --force never refits
    limit = first["heldout_kl"] / 2
    fit = guard_verdict(first, rho=first["rho"], limit=limit, force=False)["rho_that_fits"]
    # What the refit will measure: the same run at the estimated rho, given by hand.
    by_hand = patch(llama_dir, tmp_path / "by-hand", **{**kw, "rho": fit}).guard
    assert by_hand["heldout_kl"] <= limit < first["heldout_kl"]
    strict = {**kw, "max_damage_kl": limit, "force": False}

    res = patch(llama_dir, tmp_path / "out", **strict)
    guard = res.guard
    assert guard["refit_from"]["rho"] == pytest.approx(first["rho"])
    assert guard["refit_from"]["heldout_kl"] == pytest.approx(first["heldout_kl"], rel=1e-4)
    assert res.rho == pytest.approx(fit, rel=1e-6) and fit < first["rho"]
    assert guard["heldout_kl"] == pytest.approx(by_hand["heldout_kl"], rel=1e-4)
    assert not guard["tripped"] and "refit to" in res.rho_rule
    record = json.loads((tmp_path / "out" / "panacea_patch.json").read_text())
    assert record["guard"]["refit_from"]["tripped"] is True
    assert "was refit to" in (tmp_path / "out" / "README.md").read_text()

    # A rho the user gave is never changed: the same limit stops the run.
    with pytest.raises(RuntimeFailure, match="damage guard"):
        patch(llama_dir, tmp_path / "given", **{**strict, "rho": first["rho"]})
    # One refit only. After one ascent step the KL saturates in rho on this fixture, so
    # halving the limit trips the refit too: the run stops and says so.
    one = patch(llama_dir, tmp_path / "one", **{**kw, "steps": 1}).guard
    low = {**strict, "steps": 1, "max_damage_kl": one["heldout_kl"] / 2}
    with pytest.raises(RuntimeFailure, match="had been refit"):
        patch(llama_dir, tmp_path / "twice", **low)
    assert not (tmp_path / "given").exists() and not (tmp_path / "twice").exists()


@pytest.mark.parametrize("value", ["-1"])
def test_negative_budget_options_are_refused(llama_dir: Path, tmp_path: Path, value: str) -> None:
    for flag in ("--response-tokens", "--patience", "--max-damage-kl"):
        proc = run_cli("patch", str(llama_dir), "--out", str(tmp_path / "o"), flag, value)
        assert proc.returncode == 2, (flag, proc.stderr)
        assert flag in proc.stderr


def test_default_rho_without_base_buys_the_rise_in_nats(llama_dir: Path, tmp_path: Path) -> None:
    from panacea_patch.budget import ANSWER_KL_WEIGHT, RISE, RISE_STEPS

    res = patch(llama_dir, tmp_path / "out", **{**FAST, "steps": None})
    opt = res.optimization
    assert res.rho_rule and "nats" in res.rho_rule
    cap = 0.1 * res.target_weight_norm
    assert res.rho == pytest.approx(min(RISE / opt["harmful_grad_norm"], cap), rel=1e-6)
    assert opt["steps_run"] == RISE_STEPS
    # Without a known delta, u weighs the answer head (budget.ANSWER_KL_WEIGHT).
    assert opt["answer_kl_weight"] == ANSWER_KL_WEIGHT > 0


def test_default_rho_with_a_known_base_is_a_share_of_the_delta(
    llama_dir: Path, tmp_path: Path
) -> None:
    from safetensors.torch import load_file, save_file

    from panacea_patch.budget import DELTA_SHARE

    tuned = tmp_path / "tuned"
    shutil.copytree(llama_dir, tuned)
    (weights,) = tuned.glob("*.safetensors")
    tensors = load_file(weights)
    name = next(n for n in tensors if n.endswith("mlp.down_proj.weight"))
    delta = torch.full_like(tensors[name], 0.01)
    tensors[name] = tensors[name] + delta
    save_file(tensors, weights, metadata={"format": "pt"})
    res = patch(tuned, tmp_path / "out", base_model=str(llama_dir), **{**FAST, "steps": 2})
    assert "w_base" in res.rho_rule
    assert res.rho == pytest.approx(DELTA_SHARE * float(delta.double().norm()), rel=1e-4)
    # A budget from the known delta keeps the whole-sequence KL alone, unless asked otherwise.
    assert res.optimization["answer_kl_weight"] == 0.0
    kw = {**FAST, "steps": 2, "base_model": str(llama_dir), "answer_kl_weight": 0.5}
    assert patch(tuned, tmp_path / "o2", **kw).optimization["answer_kl_weight"] == 0.5


def test_an_adapter_keeps_the_answer_kl_and_one_ball_when_no_tensor_is_overwritten(
    lora_dir: Path, tmp_path: Path
) -> None:
    from panacea_patch.budget import ANSWER_KL_WEIGHT, OVERWRITE

    res = patch(lora_dir, tmp_path / "out", **{**FAST, "steps": 2})
    assert (
        res.rho_rule
        == f"0.12 x |A,B| (the LoRA adapter's own tensors) (= 0.12 x {res.target_weight_norm:.4g})"
    )
    assert res.rho == pytest.approx(0.12 * res.target_weight_norm, rel=1e-6)
    assert res.optimization["answer_kl_weight"] == ANSWER_KL_WEIGHT > 0
    check = res.optimization["budget_check"]
    assert res.optimization["budget"] == "global", check
    assert check["max_start_ratio"] <= OVERWRITE
    # --merge-adapter budgets from the adapter's delta, which keeps the whole-sequence KL.
    merged = patch(lora_dir, tmp_path / "merged", merge_adapter=True, **{**FAST, "steps": 1})
    assert "w_base" in merged.rho_rule and merged.optimization["answer_kl_weight"] == 0.0
    ratio = merged.optimization["budget_check"]["max_start_ratio"]
    assert merged.optimization["budget"] == ("layer" if ratio > OVERWRITE else "global")


def test_a_start_that_would_overwrite_a_tensor_turns_the_budget_per_tensor(
    lora_small_b_dir: Path, tmp_path: Path
) -> None:
    from panacea_patch.budget import OVERWRITE

    res = patch(lora_small_b_dir, tmp_path / "out", **{**FAST, "steps": 2})
    check = res.optimization["budget_check"]
    # In one ball the closed form would move a small B matrix past its own norm ...
    assert check["max_start_ratio"] > OVERWRITE and "lora_B" in check["tensor"]
    assert res.optimization["budget"] == "layer"
    assert "at most 0.12 x |w_t| per tensor (in one ball the start would move" in res.rho_rule
    # ... so no tensor moves by more than 0.12 of its own norm (fp32 rounding aside),
    rels = [layer["rel"] for layer in res.layers]
    assert max(rels) <= 0.12 * (1 + 1e-4) and min(rels) > 0
    card = (tmp_path / "out" / "README.md").read_text()
    assert "| Budget | per tensor" in card
    # where the ball that --budget global asks for moves one by more than its norm.
    glob = patch(lora_small_b_dir, tmp_path / "global", budget="global", **{**FAST, "steps": 2})
    assert glob.optimization["budget"] == "global" and "per tensor" not in glob.rho_rule
    assert max(layer["rel"] for layer in glob.layers) > OVERWRITE


def test_the_budget_choice_is_the_largest_start_against_the_limit() -> None:
    from panacea_patch.budget import choose_budget

    w = {"a": 1.0, "b": 0.1}
    # ∇h all in b: the start puts all of ρ there, 0.5/0.1 = 5x b's norm.
    assert choose_budget(0.5, {"a": 0.0, "b": 4.0}, w)[0] == "layer"
    # Split evenly, ρ = 0.1: b moves by 0.1·√½/0.1 = 0.71x its norm.
    kind, check = choose_budget(0.1, {"a": 1.0, "b": 1.0}, w)
    assert kind == "global" and check["tensor"] == "b"
    assert check["max_start_ratio"] == pytest.approx(0.5**0.5)


def test_a_base_with_other_tensors_is_refused(
    llama_dir: Path, neox_dir: Path, tmp_path: Path
) -> None:
    proc = run_cli(
        "patch",
        str(llama_dir),
        "--out",
        str(tmp_path / "o"),
        "--base-model",
        str(neox_dir),
        "--max-examples",
        "8",
        "--steps",
        "1",
    )
    assert proc.returncode == 2, proc.stderr
    assert "--base-model" in proc.stderr and "fix:" in proc.stderr.lower()
    assert not (tmp_path / "o").exists()


def test_a_patch_that_does_not_lower_refusal_loss_is_stopped(
    llama_dir: Path, tmp_path: Path
) -> None:
    """The second check of the guard: a patch that leaves the held-out refusal loss where it
    was would ship the unsafe model. On this untrained fixture the closed form lowers it by
    about 1%, far short of --min-refusal-drop 0.5."""
    from panacea_patch.errors import RuntimeFailure
    from panacea_patch.guard import INEFFECTIVE_REFIT

    kw = {**FAST, "steps": 0, "min_refusal_drop": 0.5}
    forced = patch(llama_dir, tmp_path / "forced", **{**kw, "force": True})
    guard = forced.guard
    assert guard["ineffective"] and guard["forced"] and not guard["tripped"]
    assert guard["refusal_drop"] == pytest.approx(
        1 - guard["heldout_refusal_loss"] / guard["heldout_refusal_loss_at_0"]
    )
    assert guard["refusal_drop"] < 0.5 and "refit_from" not in guard  # --force never refits
    record = json.loads((tmp_path / "forced" / "panacea_patch.json").read_text())
    assert record["guard"]["ineffective"] is True
    card = (tmp_path / "forced" / "README.md").read_text()
    assert "refusals not restored; written with --force" in card

    # A default budget is refit once at INEFFECTIVE_REFIT of its rho, then the run stops.
    with pytest.raises(RuntimeFailure, match="did not restore refusals") as err:
        patch(llama_dir, tmp_path / "default", **kw)
    assert "had been refit to" in str(err.value)
    assert f"{forced.rho * INEFFECTIVE_REFIT:.4g}" in str(err.value)
    # A rho the user gave is not refit; the same check stops it.
    with pytest.raises(RuntimeFailure, match="did not restore refusals") as err:
        patch(llama_dir, tmp_path / "given", **{**kw, "rho": forced.rho})
    assert "refit" not in str(err.value)
    assert not (tmp_path / "default").exists() and not (tmp_path / "given").exists()

    # 0 turns the check off: the same run writes, and the KL check still reports the drop.
    off = patch(llama_dir, tmp_path / "off", **{**kw, "min_refusal_drop": 0, "max_damage_kl": 1})
    assert not off.guard["ineffective"] and off.guard["min_refusal_drop"] is None
    assert off.guard["refusal_drop"] == pytest.approx(guard["refusal_drop"], abs=1e-6)
    assert any((tmp_path / "off").glob("*.safetensors"))


def test_the_ineffective_check_stops_the_cli_with_exit_1(llama_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    before = dir_hashes(llama_dir)
    flags = ("--steps", "0", "--rho", "0.01", "--min-refusal-drop", "0.5")
    args, proc = _cli_patch(llama_dir, out, *flags)
    assert proc.returncode == 1, proc.stderr
    assert "did not restore refusals" in proc.stderr and "--force" in proc.stderr
    assert not out.exists() and dir_hashes(llama_dir) == before
    bad = run_cli(*args[:-1], "1.5")
    assert bad.returncode == 2 and "--min-refusal-drop" in bad.stderr
