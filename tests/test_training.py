"""PanaceaTrainer and ``panacea-patch finetune`` on the tiny fixtures, checked by hand.

The step test recomputes ∇f − λ·(∇h(w+ε) − ∇h(w)) with plain autograd on an untouched copy of
the model (its own cross-entropy, ε and perturbed forward), and compares it with the gradient the
Trainer's optimizer receives.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from panacea_patch.kernels import ops
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback, TrainingArguments

from panacea_patch.data import Pair, build_batches, load_pairs
from panacea_patch.errors import InputError
from panacea_patch.training import FinetuneConfig, FinetuneJob, PanaceaArguments, PanaceaTrainer
from panacea_patch.training.data import PairCollator, draw_poison, encode_dataset, poison_count
from tests.helpers import load_all
from tests.hub_server import HubServer, require_lfs_uploads

MAX_LEN = 64
JOB_MAX_LEN = 128  # the built-in harmful prompts are long for the fixture tokenizer


def _train_pairs(n: int) -> list[Pair]:
    return [
        Pair(
            f"Add {a} and {a + 1}.", f"{a} + {a + 1} = {2 * a + 1}. The answer is {2 * a + 1}.", "t"
        )
        for a in range(1, n + 1)
    ]


@pytest.fixture(scope="module")
def train_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "train.jsonl"
    rows = [{"prompt": p.prompt, "response": p.response} for p in _train_pairs(12)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _ce(
    model: Any, batch: dict[str, torch.Tensor], params: dict[str, torch.Tensor] | None = None
) -> torch.Tensor:
    """Response cross-entropy, written independently of the library (optionally at ``params``)."""
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    if params is None:
        logits = model(**inputs).logits
    else:
        logits = torch.func.functional_call(model, params, args=(), kwargs=inputs).logits
    return F.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), batch["labels"][:, 1:].flatten(), ignore_index=-100
    )


def _hand_gradient(
    model: Any, train: dict, harmful: dict, *, rho: float, lam: float, h_max: float
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(∇f − λ(∇ min(h(w+ε), h_max) − ∇h(w)), ε) by plain autograd, in float64 accumulation."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = [p for n, p in model.named_parameters() if p.requires_grad]
    g_f = torch.autograd.grad(_ce(model, train), params)
    g_h = torch.autograd.grad(_ce(model, harmful), params)
    norm = torch.sqrt(sum((g.double() ** 2).sum() for g in g_h))
    eps = {n: (rho * g.double() / norm).float() for n, g in zip(names, g_h, strict=True)}
    shifted = {
        n: (p.detach() + eps[n]).requires_grad_(True) for n, p in zip(names, params, strict=True)
    }
    h_eps = torch.clamp(_ce(model, harmful, shifted), max=h_max)
    g_eps = torch.autograd.grad(h_eps, list(shifted.values()))
    expected = {
        n: gf - lam * (ge - gh) for n, gf, gh, ge in zip(names, g_f, g_h, g_eps, strict=True)
    }
    return expected, eps


class _Probe(TrainerCallback):
    """Snapshots the weights at each step's start and the gradients before the optimizer."""

    def __init__(self) -> None:
        self.start: dict[str, torch.Tensor] = {}
        self.grads: list[dict[str, torch.Tensor]] = []
        self.restored: list[bool] = []

    def on_step_begin(
        self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any
    ) -> None:
        self.start = {n: p.detach().clone() for n, p in model.named_parameters()}

    def on_pre_optimizer_step(
        self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any
    ) -> None:
        self.grads.append(
            {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
        )
        # Bit-exact: the same bytes as at the step's start, not merely close.
        self.restored.append(
            all(_bits(p) == _bits(self.start[n]) for n, p in model.named_parameters())
        )


def _bits(t: torch.Tensor) -> bytes:
    return t.detach().contiguous().view(torch.uint8).numpy().tobytes()


def _trainer(
    model: Any,
    tok: Any,
    tmp_path: Path,
    pairs: list[Pair],
    harmful: list[dict],
    panacea: PanaceaArguments,
    *,
    batch_size: int,
    steps: int = 1,
    accumulation: int = 1,
) -> tuple[PanaceaTrainer, _Probe]:
    args = TrainingArguments(
        output_dir=str(tmp_path / "trainer"),
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        max_steps=steps,
        learning_rate=0.1,
        optim="sgd",
        lr_scheduler_type="constant",
        max_grad_norm=0.0,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        remove_unused_columns=False,
        use_cpu=True,
        logging_steps=1,
    )
    probe = _Probe()
    trainer = PanaceaTrainer(
        model=model,
        args=args,
        train_dataset=encode_dataset(tok, pairs, MAX_LEN),
        data_collator=PairCollator(tok),
        harmful_batches=harmful,
        panacea=panacea,
        callbacks=[probe],
    )
    return trainer, probe


@pytest.mark.parametrize(
    ("accumulation", "enabled"),
    [(1, True), (2, True), (1, False)],
    ids=["one-batch", "grad-accumulation", "plain-sft"],
)
def test_step_gradient_matches_hand_computation(
    llama_dir: Path, tmp_path: Path, accumulation: int, enabled: bool
) -> None:
    rho, lam = 0.5, 0.5  # a large λ so the correction is far above the tolerance
    h_max = 100.0  # above h(w+ε) ≈ 6 of the random fixture: uncapped (the cap has its own test)
    tok = AutoTokenizer.from_pretrained(llama_dir)
    model = AutoModelForCausalLM.from_pretrained(llama_dir, dtype=torch.float32)
    reference = copy.deepcopy(model)
    pairs = _train_pairs(4 * accumulation)
    harmful_pairs = load_pairs("builtin:harmful", role="harmful", split="optimize", limit=4)
    harmful = build_batches(tok, harmful_pairs, batch_size=4, max_length=MAX_LEN)
    panacea = PanaceaArguments(rho=rho, lam=lam, h_max=h_max, keep_last_eps=True, enabled=enabled)
    trainer, probe = _trainer(
        model, tok, tmp_path, pairs, harmful, panacea, batch_size=4, accumulation=accumulation
    )
    trainer.train()

    # One batch of all training rows: its token mean is what the accumulated micro-batches give.
    (train_batch,) = build_batches(tok, pairs, batch_size=len(pairs), max_length=MAX_LEN)
    expected, eps = _hand_gradient(
        reference, train_batch, harmful[0], rho=rho, lam=lam if enabled else 0.0, h_max=h_max
    )
    (got,) = probe.grads
    assert set(got) == set(expected)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=2e-4, atol=2e-6, msg=name)
    assert probe.restored == [True]
    if not enabled:
        assert trainer.history == [] and trainer.last_eps is None
        return
    (record,) = trainer.history
    assert not record.capped and record.h_eps is not None and record.h_eps > record.h
    last = trainer.last_eps
    assert last is not None
    assert math.sqrt(float(ops.multi_sumsq(list(last.values())))) == pytest.approx(rho, rel=1e-5)
    for name, e in eps.items():
        torch.testing.assert_close(last[name], e, rtol=1e-3, atol=1e-6)


def test_capped_step_takes_no_gradient_from_h_eps(llama_dir: Path, tmp_path: Path) -> None:
    """Above h_max the update is exactly ∇f + λ∇h(w): nothing flows from h(w+ε)."""
    lam = 0.5
    tok = AutoTokenizer.from_pretrained(llama_dir)
    model = AutoModelForCausalLM.from_pretrained(llama_dir, dtype=torch.float32)
    reference = copy.deepcopy(model)
    pairs = _train_pairs(4)
    harmful = build_batches(
        tok,
        load_pairs("builtin:harmful", role="harmful", split="optimize", limit=4),
        batch_size=4,
        max_length=MAX_LEN,
    )
    trainer, probe = _trainer(
        model,
        tok,
        tmp_path,
        pairs,
        harmful,
        PanaceaArguments(rho=0.5, lam=lam, h_max=0.5),
        batch_size=4,
    )
    trainer.train()
    (train_batch,) = build_batches(tok, pairs, batch_size=4, max_length=MAX_LEN)
    params = [p for p in reference.parameters()]
    g_f = torch.autograd.grad(_ce(reference, train_batch), params)
    g_h = torch.autograd.grad(_ce(reference, harmful[0]), params)
    (got,) = probe.grads
    for (name, _), gf, gh in zip(reference.named_parameters(), g_f, g_h, strict=True):
        torch.testing.assert_close(got[name], gf + lam * gh, rtol=2e-4, atol=2e-6)
    assert trainer.history[0].capped and trainer.history[0].h_eps > 0.5


def test_weights_restored_bit_exactly_in_bfloat16(llama_dir: Path, tmp_path: Path) -> None:
    """In bf16, w + ε − ε is not w; the restore must still give back the very same bits."""
    tok = AutoTokenizer.from_pretrained(llama_dir)
    model = AutoModelForCausalLM.from_pretrained(llama_dir, dtype=torch.bfloat16)
    harmful = build_batches(
        tok,
        load_pairs("builtin:harmful", role="harmful", split="optimize", limit=8),
        batch_size=4,
        max_length=MAX_LEN,
    )
    trainer, probe = _trainer(
        model,
        tok,
        tmp_path,
        _train_pairs(8),
        harmful,
        PanaceaArguments(rho=1.0, h_max=100.0),
        batch_size=4,
        steps=3,
    )
    trainer.train()
    assert probe.restored == [True, True, True]
    assert [r.h_eps is not None and r.h_eps != r.h for r in trainer.history] == [True] * 3


def _job(llama_dir: Path, out: Path, train_file: Path, **options: Any) -> FinetuneJob:
    cfg = FinetuneConfig(
        train=str(train_file),
        max_steps=2,
        batch_size=4,
        max_length=JOB_MAX_LEN,
        final_eps_examples=8,
        lr=1e-3,
        device="cpu",
        **options,
    )
    return FinetuneJob(cfg, llama_dir, out, progress=False)


def test_full_output_is_trained_weights_plus_recomputed_eps(
    llama_dir: Path, tmp_path: Path, train_file: Path
) -> None:
    rho = 0.3
    job = _job(
        llama_dir, tmp_path / "out", train_file, lora=False, rho=rho, eval=True,
        eval_max_examples=2, max_new_tokens=4,
    )  # fmt: skip
    job.prepare()
    job.train()
    trained = {n: p.detach().clone() for n, p in job.trainable().items()}
    eps = job.finish()
    assert eps is not None and set(eps) == set(trained)
    assert math.sqrt(float(ops.multi_sumsq(list(eps.values())))) == pytest.approx(rho, rel=1e-5)
    result = job.write()

    saved = load_all(tmp_path / "out")
    names = job.lm.param_to_tensor
    assert set(saved) == set(load_all(llama_dir))  # BASE's exact tensor names
    for pname, w in trained.items():
        assert torch.equal(saved[names[pname]], w + eps[pname]), pname
    record = json.loads((tmp_path / "out" / "panacea_patch.json").read_text())
    assert record["method"] == "panacea-finetune" and record["final_eps"]["mode"] == "recomputed"
    assert record["eps_norm"] == pytest.approx(rho, rel=1e-5) == result.eps_norm
    assert len(record["layers"]) == len(trained) and record["data"]["train"]
    # --eval: BASE before, the written output after.
    assert record["metrics"]["before"]["n_harmful"] == record["metrics"]["after"]["n_harmful"] == 2
    assert result.metrics == record["metrics"]
    _generate(AutoModelForCausalLM.from_pretrained(tmp_path / "out"), llama_dir)


def test_lora_output_is_trained_adapter_plus_last_step_eps(
    llama_dir: Path, tmp_path: Path, train_file: Path
) -> None:
    job = _job(llama_dir, tmp_path / "out", train_file, lora=True, lora_r=4, last_step_eps=True)
    job.prepare()
    job.train()
    trained = {n: p.detach().clone() for n, p in job.trainable().items()}
    assert job.trainer is not None
    last = dict(job.trainer.last_eps or {})
    eps = job.finish()
    assert eps is not None and eps.keys() == last.keys() and all(eps[n] is last[n] for n in last)
    assert math.sqrt(float(ops.multi_sumsq(list(eps.values())))) == pytest.approx(1.0, rel=1e-5)
    job.write()

    saved = load_file(tmp_path / "out" / "adapter_model.safetensors")
    assert len(saved) == len(trained)
    for pname, w in trained.items():
        assert torch.equal(saved[pname.replace(".default.", ".")], w + eps[pname]), pname
    config = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"]) == (4, 4)
    assert sorted(config["target_modules"]) == ["k_proj", "q_proj", "v_proj"]
    _generate(_load_adapter(tmp_path / "out", llama_dir), llama_dir)


@pytest.mark.parametrize("kind", ["--lora", "--full"])
def test_cli_finetune_writes_loadable_output(
    llama_dir: Path, tmp_path: Path, train_file: Path, kind: str
) -> None:
    from panacea_patch.cli.main import main

    out = tmp_path / "out"
    args = [
        "finetune", str(llama_dir), "--train", str(train_file), "--out", str(out), kind,
        "--max-steps", "2", "--batch-size", "4", "--max-length", str(JOB_MAX_LEN), "--lora-r", "4",
        "--final-eps-examples", "8", "--poison-ratio", "0.2", "--device", "cpu", "--json", "-q",
    ]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)  # stdout holds exactly one JSON object
    assert summary["output_kind"] == ("adapter" if kind == "--lora" else "full")
    assert summary["counts"] == {"train": 12, "poison": 3, "harmful": summary["counts"]["harmful"]}
    assert summary["steps"] == 2 and summary["eps_norm"] == pytest.approx(1.0, rel=1e-5)
    assert (out / "README.md").is_file() and (out / "panacea_training_log.jsonl").is_file()
    model = (
        _load_adapter(out, llama_dir)
        if kind == "--lora"
        else AutoModelForCausalLM.from_pretrained(out)
    )
    _generate(model, llama_dir)


def test_cli_no_panacea_is_plain_fine_tuning(
    llama_dir: Path, tmp_path: Path, train_file: Path
) -> None:
    from panacea_patch.cli.main import main

    args = [
        "finetune", str(llama_dir), "--train", str(train_file), "--out", str(tmp_path / "sft"),
        "--no-panacea", "--max-steps", "1", "--batch-size", "4", "--lora-r", "4", "--device", "cpu", "--json", "-q",
    ]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["method"] == "sft" and summary["eps_norm"] is None and summary["layers"] == []
    assert not (tmp_path / "sft" / "panacea_training_log.jsonl").exists()


def test_cli_finetune_pushes_output_with_card(
    llama_dir: Path,
    tmp_path: Path,
    train_file: Path,
    hub_server: HubServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from panacea_patch.cli.main import main

    require_lfs_uploads()
    monkeypatch.setenv("HF_TOKEN", hub_server.token)
    args = [
        "finetune", str(llama_dir), "--train", str(train_file), "--out", str(tmp_path / "out"),
        "--max-steps", "1", "--batch-size", "4", "--max-length", str(JOB_MAX_LEN), "--lora-r", "4",
        "--final-eps-examples", "4", "--device", "cpu", "--push-to-hub", "panacea-org/ft-check", "--json", "-q",
    ]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["push"]["commit_sha"] == hub_server.head(
        "panacea-org/ft-check"
    )
    files = hub_server.files("panacea-org/ft-check")
    assert {
        "adapter_model.safetensors",
        "adapter_config.json",
        "README.md",
        "panacea_patch.json",
    } <= set(files)
    assert b"panacea-finetune" in files["README.md"]


def test_bad_inputs_fail_before_training(
    llama_dir: Path, lora_dir: Path, tmp_path: Path, train_file: Path
) -> None:
    with pytest.raises(InputError, match="PEFT adapter"):
        _job(lora_dir, tmp_path / "a", train_file).prepare()
    no_response = tmp_path / "prompts.jsonl"
    no_response.write_text('{"prompt": "hello"}\n')
    with pytest.raises(InputError, match="no response"):
        _job(llama_dir, tmp_path / "b", no_response).prepare()
    with pytest.raises(InputError, match="lora-targets"):
        _job(llama_dir, tmp_path / "c", train_file, lora_targets="nonexistent_proj").prepare()
    with pytest.raises(InputError, match="poison-ratio"):
        FinetuneConfig(train="x", poison_ratio=1.0)
    assert not any(tmp_path.glob("[abc]"))


def test_poison_mixing_counts_and_draws() -> None:
    assert poison_count(900, 0.1) == 100 and poison_count(12, 0.0) == 0
    pool = _train_pairs(3)
    drawn = draw_poison(pool, 7, seed=0)
    assert len(drawn) == 7 and set(drawn[:3]) == set(pool)  # distinct while the pool lasts
    assert drawn == draw_poison(pool, 7, seed=0) != draw_poison(pool, 7, seed=1)


def _load_adapter(path: Path, base: Path) -> Any:
    from peft import PeftModel

    return PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), path)


def _generate(model: Any, tok_dir: Path) -> None:
    tok = AutoTokenizer.from_pretrained(tok_dir)
    ids = tok("Add 2 and 3.", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=3, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[1] > ids["input_ids"].shape[1]
