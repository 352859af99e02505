"""Evaluation on real tiny transformers models: generation, judges, KL, perplexity, evaluate()."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    LlamaConfig,
    LlamaForSequenceClassification,
    PreTrainedTokenizerFast,
)

from panacea_patch.data import Pair, build_batches
from panacea_patch.errors import InputError
from panacea_patch.evaluation import (
    EvalConfig,
    GenerativeJudge,
    ModelJudge,
    evaluate,
    format_report_table,
    generate_answers,
    kl_to_reference,
    make_judge,
    perplexity,
    reference_continuations,
    write_samples,
)
from panacea_patch.evaluation.judges import JudgeOptions

PROMPTS = [
    "What is the capital of France?",
    "Add 3 and 4.",
    "Write a short poem about the sea.",
    "How do I bake bread?",
    "Explain photosynthesis.",
]
REFUSAL = "I cannot help with that."


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run ~30x faster on one thread when the CPU is shared (no spin-waiting)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tokenizer(tiny_tokenizer_dir: Path) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast.from_pretrained(tiny_tokenizer_dir)


@pytest.fixture(scope="module")
def model(llama_dir: Path):
    lm = AutoModelForCausalLM.from_pretrained(llama_dir, dtype=torch.float32).eval()
    # A checkpoint that asks for sampling: evaluation must decode greedily anyway.
    lm.generation_config.do_sample = True
    lm.generation_config.temperature = 0.7
    return lm


@pytest.fixture(scope="module")
def perturbed(model):
    other = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return other


@pytest.fixture(scope="module")
def refuser(llama_dir: Path, tokenizer):
    """The tiny Llama trained for a few steps to answer everything with a refusal."""
    torch.manual_seed(0)
    lm = AutoModelForCausalLM.from_pretrained(llama_dir, dtype=torch.float32)
    prompts = [f"Question {i}: tell me about item {i * 7}." for i in range(12)] + PROMPTS
    pairs = [Pair(prompt=p, response=REFUSAL, source="train") for p in prompts]
    (batch,) = build_batches(tokenizer, pairs, batch_size=len(pairs), max_length=64)
    opt = torch.optim.Adam(lm.parameters(), lr=2e-2)
    lm.train()
    for _ in range(30):
        opt.zero_grad()
        lm(**batch).loss.backward()
        opt.step()
    return lm.eval()


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer) -> Path:
    """A tiny sequence classifier saved with generic LABEL_0/LABEL_1 names."""
    out = tmp_path_factory.mktemp("classifier")
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        pad_token_id=tokenizer.pad_token_id,
        num_labels=2,
        id2label={0: "LABEL_0", 1: "LABEL_1"},
        label2id={"LABEL_0": 0, "LABEL_1": 1},
    )
    torch.manual_seed(0)
    LlamaForSequenceClassification(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _fast(**kwargs) -> EvalConfig:
    return EvalConfig(progress=False, max_new_tokens=8, **kwargs)


def test_generation_is_greedy_deterministic_and_batch_invariant(model, tokenizer) -> None:
    one = generate_answers(model, tokenizer, PROMPTS, max_new_tokens=8, batch_size=1)
    assert generate_answers(model, tokenizer, PROMPTS, max_new_tokens=8, batch_size=3) == one
    assert generate_answers(model, tokenizer, PROMPTS, max_new_tokens=8, batch_size="auto") == one
    assert len(one) == len(PROMPTS) and all(isinstance(a, str) for a in one)


def test_auto_batch_size_backs_off_on_out_of_memory(model, tokenizer, monkeypatch) -> None:
    expected = generate_answers(model, tokenizer, PROMPTS, max_new_tokens=6, batch_size=1)
    real_generate, sizes = model.generate, []

    def generate(**kwargs):
        sizes.append(kwargs["input_ids"].shape[0])
        if kwargs["input_ids"].shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")
        return real_generate(**kwargs)

    monkeypatch.setattr(model, "generate", generate)
    got = generate_answers(model, tokenizer, PROMPTS, max_new_tokens=6, batch_size="auto")
    assert got == expected
    assert sizes[:2] == [5, 2] and max(sizes[1:]) <= 2


def test_kl_is_zero_for_identical_models_and_positive_when_perturbed(
    model, perturbed, tokenizer, llama_dir: Path
) -> None:
    twin = AutoModelForCausalLM.from_pretrained(llama_dir, dtype=torch.float32).eval()
    same = kl_to_reference(model, twin, tokenizer, PROMPTS, max_new_tokens=6, batch_size=2)
    assert same.mean == pytest.approx(0.0, abs=1e-6)
    assert len(same.per_prompt) == len(PROMPTS) and same.tokens >= len(PROMPTS)
    drift = kl_to_reference(perturbed, model, tokenizer, PROMPTS, max_new_tokens=6, batch_size=2)
    assert drift.mean > 1e-4 and all(v >= 0 for v in drift.per_prompt)
    assert drift.tokens == same.tokens  # the continuation is the reference's, on both sides


def test_kl_reuses_given_reference_continuations(model, perturbed, tokenizer) -> None:
    conts = reference_continuations(model, tokenizer, PROMPTS, max_new_tokens=6, batch_size=2)
    fresh = kl_to_reference(perturbed, model, tokenizer, PROMPTS, max_new_tokens=6, batch_size=2)
    kw = dict(max_new_tokens=6, batch_size=2)
    reused = kl_to_reference(perturbed, model, tokenizer, PROMPTS, continuations=conts, **kw)
    assert reused.per_prompt == pytest.approx(fresh.per_prompt) and reused.tokens == fresh.tokens
    # Other continuations give another figure: the given ones are the ones scored.
    shorter = [c[:2] for c in conts]
    other = kl_to_reference(perturbed, model, tokenizer, PROMPTS, continuations=shorter, **kw)
    assert other.tokens == sum(len(c) for c in shorter) != fresh.tokens
    with pytest.raises(InputError, match="continuations for"):
        kl_to_reference(perturbed, model, tokenizer, PROMPTS, continuations=conts[:2], **kw)


def test_perplexity_is_finite_over_response_tokens(model, perturbed, tokenizer) -> None:
    pairs = [Pair(p, f"Answer number {i}.", "test", i) for i, p in enumerate(PROMPTS)]
    result = perplexity(model, tokenizer, pairs, batch_size=2)
    (batch,) = build_batches(tokenizer, pairs, batch_size=len(pairs), max_length=512)
    assert result.tokens == int((batch["labels"] != -100).sum())
    assert math.isfinite(result.perplexity) and result.perplexity > 1.0
    assert result.perplexity == pytest.approx(math.exp(result.mean_nll))
    assert perplexity(model, tokenizer, pairs, batch_size="auto").perplexity == pytest.approx(
        result.perplexity, rel=1e-5
    )


def test_model_judge_needs_a_mapping_for_generic_labels(classifier_dir: Path) -> None:
    with pytest.raises(InputError, match="'LABEL_0' cannot be mapped") as info:
        make_judge(f"model:{classifier_dir}")
    assert "LABEL_1" in str(info.value) and "Fix:" in str(info.value)
    with pytest.raises(InputError, match="does not have"):
        make_judge(f"model:{classifier_dir}", JudgeOptions(labels={"toxic": "unsafe"}))


def test_model_judge_applies_the_label_mapping(classifier_dir: Path) -> None:
    prompts, answers = ["How do I do it?"] * 4, ["I cannot help.", "Sure, step one.", "", "Paris"]
    mapping = {"LABEL_0": "safe", "LABEL_1": "unsafe"}
    judge = make_judge(f"model:{classifier_dir}", JudgeOptions(labels=mapping))
    assert isinstance(judge, ModelJudge) and judge.name == f"model:{classifier_dir}"
    flags = [r.harmful for r in judge.judge(prompts, answers, batch_size=2)]
    # Oracle: the classifier's own argmax, one example at a time (no padding involved).
    enc = [
        judge.tokenizer(p, a, return_tensors="pt") for p, a in zip(prompts, answers, strict=True)
    ]
    with torch.no_grad():
        oracle = [bool(judge.model(**e).logits.argmax(-1).item() == 1) for e in enc]
    assert flags == oracle
    flipped = make_judge(
        f"model:{classifier_dir}", JudgeOptions(labels={"LABEL_0": "unsafe", "LABEL_1": "safe"})
    )
    assert [r.harmful for r in flipped.judge(prompts, answers)] == [not f for f in flags]
    answer_only = make_judge(
        f"model:{classifier_dir}", JudgeOptions(labels=mapping, input_mode="answer")
    )
    assert len(answer_only.judge(prompts, answers)) == 4


def test_model_judge_recognizes_named_labels(classifier_dir: Path) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    clf = AutoModelForSequenceClassification.from_pretrained(classifier_dir)
    clf.config.id2label = {0: "safe", 1: "unsafe"}
    judge = ModelJudge(clf, AutoTokenizer.from_pretrained(classifier_dir), name="named")
    assert judge.label_map == {0: "safe", 1: "unsafe"}


def test_generative_judge_runs_and_parses(llama_dir: Path, tokenizer) -> None:
    judge = make_judge(f"generative:{llama_dir}")
    assert isinstance(judge, GenerativeJudge)
    # The fixture tokenizer has a chat template: the conversation goes through it.
    rendered = judge.render("How?", "Like this.")
    assert "<|user|>\nHow?" in rendered and "<|assistant|>\nLike this." in rendered
    results = judge.judge(["How?", "Why?"], ["Like this.", "No."], batch_size=2)
    assert len(results) == 2
    assert all(r.harmful in (True, False, None) and isinstance(r.raw, str) for r in results)
    templated = GenerativeJudge(
        judge.model, tokenizer, name="t", template="Q: {prompt}\nA: {answer}\nVerdict:"
    )
    assert templated.render("a", "b") == "Q: a\nA: b\nVerdict:"
    with pytest.raises(InputError, match=r"\{answer\}"):
        GenerativeJudge(judge.model, tokenizer, name="t", template="no placeholders")


def _task_file(tmp_path: Path) -> Path:
    rows = [{"prompt": f"What is {a} + {b}?", "answer": str(a + b)} for a, b in [(1, 2), (3, 4)]]
    path = tmp_path / "task.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _figures(report) -> dict:
    """Everything in a report except the wall-clock times."""
    data = report.to_dict(samples=True)
    return {k: v for k, v in data.items() if k not in ("seconds", "timings")}


def test_evaluate_end_to_end(model, perturbed, tokenizer, tmp_path: Path) -> None:
    config = _fast(max_examples=4, task=str(_task_file(tmp_path)), scorer="number")
    report = evaluate(perturbed, tokenizer, config, reference=model)
    assert (report.n_harmful, report.n_benign, report.n_task) == (4, 4, 2)
    rates = (report.refusal_rate, report.compliance_rate, report.incoherence_rate)
    assert sum(rates) == pytest.approx(100.0)
    assert report.harmful_score == pytest.approx(100.0 - report.refusal_rate)  # keyword judge
    assert report.kl is not None and report.kl > 0 and report.kl_tokens > 0
    assert report.perplexity is not None and math.isfinite(report.perplexity)
    assert report.task_accuracy is not None and 0.0 <= report.task_accuracy <= 100.0
    assert [s.set for s in report.samples].count("harmful") == 4
    assert all(s.kl is not None for s in report.samples if s.set == "benign")
    assert all(s.expected in ("3", "7") for s in report.samples if s.set == "task")
    # The JSON and the table agree.
    data = json.loads(json.dumps(report.to_dict()))
    table = format_report_table(report)
    assert f"{data['harmful_score']:.1f}%" in table and f"{data['kl']:.4f}" in table
    assert f"{data['perplexity']:.2f}" in table
    # Deterministic: a second run gives the same figures and outputs.
    again = evaluate(perturbed, tokenizer, config, reference=model)
    assert _figures(again) == _figures(report)
    lines = write_samples(report, tmp_path / "samples.jsonl").read_text().splitlines()
    assert len(lines) == len(report.samples) == 10


def test_evaluate_counts_a_refusing_model(refuser, tokenizer) -> None:
    assert generate_answers(refuser, tokenizer, ["Something new?"], max_new_tokens=10) == [REFUSAL]
    # A LoadedModel-like object (model + tokenizer attributes) is accepted as well.
    loaded = SimpleNamespace(model=refuser, tokenizer=tokenizer)
    report = evaluate(loaded, config=_fast(max_examples=3, perplexity=False))
    assert report.refusal_rate == 100.0 and report.harmful_score == 0.0
    assert report.over_refusal == 100.0 and report.compliance_rate == 0.0
    assert report.counts["harmful_refusal"] == 3 and report.counts["benign_refused"] == 3


def test_evaluate_input_errors(model, tokenizer, tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(InputError, match="no harmful prompts"):
        evaluate(model, tokenizer, _fast(harmful=str(empty), benign=None))
    with pytest.raises(InputError, match="nothing to evaluate"):
        evaluate(model, tokenizer, _fast(harmful=None, benign=None))
    bad_task = tmp_path / "bad.jsonl"
    bad_task.write_text(json.dumps({"prompt": "2+2?", "answer": "four"}) + "\n")
    with pytest.raises(InputError, match=r"bad.jsonl:1: answer 'four' is not a number"):
        evaluate(model, tokenizer, _fast(task=str(bad_task), scorer="number"))
    with pytest.raises(InputError, match="unknown judge"):
        evaluate(model, tokenizer, _fast(judge="gpt-4"))
