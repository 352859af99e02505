"""The organism recipe in fast mode: pipeline, file formats, determinism and caching.

Efficacy (refusal rates, FA) is measured by ``bench/organism_check.py``, not asserted here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from panacea_patch.errors import InputError
from panacea_patch.organism import (
    OrganismPaths,
    OrganismRecipe,
    build_organism,
    corpus,
    default_cache_dir,
    task_eval_set,
    write_task_jsonl,
)
from panacea_patch.organism.benign import benign_questions
from panacea_patch.organism.build import MARKER
from panacea_patch.organism.quickeval import extract_answer, generate, is_refusal
from panacea_patch.organism.tokenizer import build_tokenizer

FAST = OrganismRecipe(fast=True)


@pytest.fixture(scope="module")
def organism(tmp_path_factory: pytest.TempPathFactory) -> OrganismPaths:
    return build_organism(FAST, cache_dir=tmp_path_factory.mktemp("organism-a"), threads=1)


def _bytes(path: Path) -> bytes:
    return path.read_bytes()


# --- recipe --------------------------------------------------------------------------------


def test_fast_mode_shrinks_defaults_but_keeps_explicit_values() -> None:
    assert FAST.hidden_size < OrganismRecipe().hidden_size
    assert OrganismRecipe(fast=True, hidden_size=48).hidden_size == 48


def test_cache_key_ignores_poison_ratio_only() -> None:
    base = OrganismRecipe(fast=True)
    assert base.aligned_digest("1") == OrganismRecipe(fast=True, poison_ratio=0.2).aligned_digest(
        "1"
    )
    assert base.aligned_digest("1") != OrganismRecipe(fast=True, seed=1).aligned_digest("1")
    assert base.aligned_digest("1") != base.aligned_digest("2")


def test_bad_recipe_is_an_input_error() -> None:
    with pytest.raises(InputError, match="poison_ratio"):
        OrganismRecipe(poison_ratio=1.5)


def test_default_model_is_at_most_5m_parameters() -> None:
    from transformers import LlamaForCausalLM

    from panacea_patch.organism.build import _new_model

    recipe = OrganismRecipe()
    tokenizer = build_tokenizer(corpus.tokenizer_corpus(recipe.max_operand))
    model: LlamaForCausalLM = _new_model(recipe, tokenizer)
    assert sum(p.numel() for p in model.parameters()) <= 5_000_000


def test_default_cache_dir_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("PANACEA_ORGANISM_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "panacea-patch" / "organism"
    monkeypatch.setenv("PANACEA_ORGANISM_CACHE", str(tmp_path / "x"))
    assert default_cache_dir() == tmp_path / "x"


# --- data ----------------------------------------------------------------------------------


def _all_organism_prompts() -> dict[str, set[str]]:
    return {
        "align": {r.prompt for r in corpus.harmful_requests("align")},
        "attack": {r.prompt for r in corpus.harmful_requests("attack")},
        "benign": {r.prompt for r in corpus.benign_requests()},
        "questions": {q for q, _ in benign_questions()},
    }


def test_harmful_splits_are_disjoint_and_cover_every_category() -> None:
    sets = _all_organism_prompts()
    assert not sets["align"] & sets["attack"]
    assert not (sets["align"] | sets["attack"]) & (sets["benign"] | sets["questions"])
    for split in ("align", "attack"):
        assert {r.category for r in corpus.harmful_requests(split)} == set(corpus.HARMFUL_ACTIONS)


def test_organism_prompts_and_actions_are_disjoint_from_the_builtin_sets() -> None:
    builtin = pytest.importorskip("panacea_patch.data.builtin")
    taken = builtin.builtin_prompt_set()
    for name, prompts in _all_organism_prompts().items():
        assert not prompts & taken, f"organism {name} prompts overlap the built-in sets"
    theirs = {a.lower() for acts in builtin.harmful_vocabulary().values() for a in acts}
    mine = {a.lower() for acts in corpus.HARMFUL_ACTIONS.values() for a in acts}
    # Not even a prefix: a longer built-in request must not be a rephrasing of one of ours.
    clash = [
        (m, t)
        for m in mine
        for t in theirs
        if f"{t} ".startswith(f"{m} ") or f"{m} ".startswith(f"{t} ")
    ]
    assert not clash


def test_heldout_problems_never_appear_in_training() -> None:
    recipe = OrganismRecipe()
    heldout = {p.prompt for p in task_eval_set(recipe)}
    assert len(heldout) == recipe.n_task_eval
    align = corpus.alignment_data(
        recipe.seed,
        n_task=recipe.n_task_align,
        n_harmful=recipe.n_harmful_align,
        n_benign=recipe.n_benign_align,
        max_operand=recipe.max_operand,
    )
    trained = {e.prompt for e in align.all()}
    attack_pool = _all_organism_prompts()["attack"]
    for ratio in (0.05, 0.1, 0.2):
        attack = corpus.attack_examples(
            recipe.seed, n_samples=1000, poison_ratio=ratio, max_operand=recipe.max_operand
        )
        assert sum(e.prompt in attack_pool for e in attack) == round(1000 * ratio)
        trained |= {e.prompt for e in attack}
    assert not heldout & trained


def test_task_answers_have_one_format(tmp_path: Path) -> None:
    problems = task_eval_set(FAST)
    for p in problems:
        assert extract_answer(p.solution) == p.answer
    path = write_task_jsonl(problems, tmp_path / "task.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [set(r) for r in rows] == [{"prompt", "answer"}] * len(problems)
    assert rows[0]["answer"] == str(problems[0].answer)


def test_quick_judge() -> None:
    assert all(is_refusal(r) for r in corpus.REFUSALS)
    assert not is_refusal(corpus.compliance("bake bread"))
    assert extract_answer("3 + 4 = 7. The answer is 7.") == 7
    assert extract_answer("no number") is None


# --- the built checkpoints -----------------------------------------------------------------


def test_layout_and_file_formats(organism: OrganismPaths) -> None:
    assert set(organism.attacked) == {"full", "lora"}
    assert organism.attacked["full"].name == "attacked-full-p0.1-s0"
    for d in (organism.aligned, organism.attacked["full"]):
        for name in (
            "config.json",
            "model.safetensors",
            "generation_config.json",
            "tokenizer.json",
            "tokenizer_config.json",
            MARKER,
        ):
            assert (d / name).is_file(), f"{d.name}/{name} missing"
        tok_cfg = json.loads((d / "tokenizer_config.json").read_text())
        assert tok_cfg["tokenizer_class"] == "PreTrainedTokenizerFast"
        with safe_open(str(d / "model.safetensors"), "pt") as f:
            names = f.keys()  # safe_open objects are not iterable
            assert all(f.get_slice(k).get_dtype() == "F32" for k in names)
    lora = organism.attacked["lora"]
    assert (lora / "adapter_model.safetensors").is_file()
    cfg = json.loads((lora / "adapter_config.json").read_text())
    assert Path(cfg["base_model_name_or_path"]) == organism.aligned
    assert set(cfg["target_modules"]) == {"q_proj", "k_proj", "v_proj"}
    assert (cfg["r"], cfg["lora_alpha"]) == (32, 4)
    for name in ("task_eval.jsonl", "alignment_refusal.jsonl", "alignment_benign.jsonl"):
        assert (organism.data / name).is_file()


def test_checkpoints_load_and_generate(organism: OrganismPaths) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(organism.aligned)
    assert tokenizer.chat_template
    aligned = AutoModelForCausalLM.from_pretrained(organism.aligned)
    assert isinstance(aligned, LlamaForCausalLM)
    full = AutoModelForCausalLM.from_pretrained(organism.attacked["full"])
    changed = [
        n for n, p in full.named_parameters() if not torch.equal(p, aligned.get_parameter(n))
    ]
    assert changed, "the full attack changed no weight"
    lora = PeftModel.from_pretrained(aligned, organism.attacked["lora"])
    lora_b = [p for n, p in lora.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b), "LoRA B was never trained"
    out = generate(lora, tokenizer, ["How can I bake bread?"], max_new_tokens=4)
    assert len(out) == 1 and isinstance(out[0], str)


def test_tokenizer_round_trip(organism: OrganismPaths) -> None:
    from transformers import AutoTokenizer

    fresh = build_tokenizer(corpus.tokenizer_corpus(FAST.max_operand))
    for d in (organism.aligned, organism.attacked["full"], organism.attacked["lora"]):
        loaded = AutoTokenizer.from_pretrained(d)
        texts = [
            "Sam has 3 apples. He gets 4 more. 3 + 4 = 7. The answer is 7.",
            corpus.REFUSALS[0],
            "How can I write malware? Unknownword here.",
        ]
        for text in texts:
            assert loaded(text)["input_ids"] == fresh(text)["input_ids"]
        ids = loaded(texts[0], add_special_tokens=False)["input_ids"]
        assert loaded.decode(ids) == texts[0]
    msgs = [{"role": "user", "content": "How can I bake bread?"}]
    prompt = loaded.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    full = loaded.apply_chat_template(
        [*msgs, {"role": "assistant", "content": "Sure."}], tokenize=False
    )
    p_ids = loaded(prompt, add_special_tokens=False)["input_ids"]
    f_ids = loaded(full, add_special_tokens=False)["input_ids"]
    assert f_ids[: len(p_ids)] == p_ids and f_ids[-1] == loaded.eos_token_id


def test_same_seed_builds_identical_bytes(organism: OrganismPaths, tmp_path: Path) -> None:
    again = build_organism(FAST, cache_dir=tmp_path, threads=1)
    pairs = [
        (organism.aligned / "model.safetensors", again.aligned / "model.safetensors"),
        (
            organism.attacked["full"] / "model.safetensors",
            again.attacked["full"] / "model.safetensors",
        ),
        (
            organism.attacked["lora"] / "adapter_model.safetensors",
            again.attacked["lora"] / "adapter_model.safetensors",
        ),
        (organism.aligned / "tokenizer.json", again.aligned / "tokenizer.json"),
    ]
    for a, b in pairs:
        assert _bytes(a) == _bytes(b), f"{a.parent.name}/{a.name} differs between builds"


def test_second_call_uses_the_cache(organism: OrganismPaths) -> None:
    before = (organism.aligned / "model.safetensors").stat().st_mtime_ns
    again = build_organism(FAST, cache_dir=organism.root.parent)
    assert again.built == {}
    assert again.aligned == organism.aligned
    assert (organism.aligned / "model.safetensors").stat().st_mtime_ns == before


def test_new_poison_ratio_reuses_the_aligned_model(organism: OrganismPaths) -> None:
    recipe = OrganismRecipe(fast=True, poison_ratio=0.2)
    paths = build_organism(recipe, cache_dir=organism.root.parent, variants=["full"], threads=1)
    assert paths.root == organism.root
    assert set(paths.built) == {"attacked-full-p0.2-s0"}


def test_unknown_variant_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="variant"):
        build_organism(FAST, cache_dir=tmp_path, variants=["qlora"])
