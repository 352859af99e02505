"""Building and caching the organism's checkpoints: aligned, then attacked (full and LoRA)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from panacea_patch.errors import InputError, RuntimeFailure
from panacea_patch.organism import corpus
from panacea_patch.organism.corpus import Example, TaskProblem
from panacea_patch.organism.recipe import OrganismRecipe
from panacea_patch.organism.tokenizer import build_tokenizer, save_tokenizer
from panacea_patch.organism.train import TrainConfig, train

Variant = Literal["full", "lora"]
VARIANTS: tuple[Variant, ...] = ("full", "lora")
MARKER = "organism.json"  # written last: its presence means the directory is complete

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OrganismPaths:
    """Where a built organism lives.

    ``built`` maps each stage built by this call to its seconds; it is empty on a cache hit.
    """

    recipe: OrganismRecipe
    root: Path
    aligned: Path
    attacked: dict[str, Path]
    data: Path
    built: dict[str, float] = field(default_factory=dict)

    @property
    def task_eval_file(self) -> Path:
        """Held-out task problems (``prompt``, ``answer``) for fine-tuning accuracy."""
        return self.data / "task_eval.jsonl"

    @property
    def refusal_file(self) -> Path:
        """The alignment stage's harmful prompts with their refusals (``prompt``, ``response``)."""
        return self.data / "alignment_refusal.jsonl"

    @property
    def benign_file(self) -> Path:
        """The alignment stage's benign requests with answers (``prompt``, ``response``)."""
        return self.data / "alignment_benign.jsonl"

    @property
    def task_train_file(self) -> Path:
        """Task samples of the training share (``prompt``, ``response``), the user's data."""
        return self.data / "task_train.jsonl"


def default_cache_dir() -> Path:
    """``$PANACEA_ORGANISM_CACHE``, else ``$XDG_CACHE_HOME`` or ``~/.cache``, + panacea-patch/organism."""
    if env := os.environ.get("PANACEA_ORGANISM_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "panacea-patch" / "organism"


def package_version() -> str:
    """The installed panacea-patch version, part of the cache key."""
    try:
        from panacea_patch import __version__

        return str(__version__)
    except ImportError:
        return "unknown"


def attacked_dir_name(variant: str, poison_ratio: float, seed: int) -> str:
    """E.g. ``attacked-full-p0.1-s0``."""
    return f"attacked-{variant}-p{poison_ratio:g}-s{seed}"


def task_eval_set(recipe: OrganismRecipe) -> list[TaskProblem]:
    """The held-out task problems: none of them appears in any training stage."""
    return corpus.task_problems(
        recipe.seed, recipe.n_task_eval, recipe.max_operand, heldout=True, stream="eval"
    )


def attack_set(recipe: OrganismRecipe) -> list[Example]:
    """The harmful fine-tuning set of the attacked stage (task samples + compliance samples)."""
    return corpus.attack_examples(
        recipe.seed,
        n_samples=recipe.attack_samples,
        poison_ratio=recipe.poison_ratio,
        max_operand=recipe.max_operand,
    )


def write_jsonl(rows: Sequence[dict[str, object]], path: Path) -> Path:
    """Writes one JSON object per line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def write_task_jsonl(problems: Sequence[TaskProblem], path: Path) -> Path:
    """Task problems as ``{"prompt", "answer"}`` lines, the answer as its decimal string."""
    return write_jsonl([{"prompt": p.prompt, "answer": str(p.answer)} for p in problems], path)


def write_pairs_jsonl(examples: Sequence[Example], path: Path) -> Path:
    """Examples as ``{"prompt", "response"}`` lines."""
    return write_jsonl([{"prompt": e.prompt, "response": e.response} for e in examples], path)


@contextlib.contextmanager
def _atomic_dir(final: Path) -> Iterator[Path]:
    """A temporary directory beside ``final``, renamed onto it only if the block succeeds."""
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_marker(out: Path, recipe: OrganismRecipe, stage: str, info: dict[str, object]) -> None:
    record = {"stage": stage, "recipe": recipe.to_dict(), "version": package_version(), **info}
    (out / MARKER).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")


def _check_round_trip(tokenizer: PreTrainedTokenizerFast, out: Path, texts: Sequence[str]) -> None:
    """Fails if the saved tokenizer does not reload to the same token ids."""
    reloaded = AutoTokenizer.from_pretrained(out)
    for text in texts:
        if reloaded(text)["input_ids"] != tokenizer(text)["input_ids"]:
            raise RuntimeFailure(
                f"the organism tokenizer does not round-trip through {out} (text {text!r})",
                hint="report this with your transformers version",
            )


def _new_model(recipe: OrganismRecipe, tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=recipe.hidden_size,
        intermediate_size=recipe.intermediate_size,
        num_hidden_layers=recipe.num_layers,
        num_attention_heads=recipe.num_heads,
        num_key_value_heads=recipe.num_heads,
        max_position_embeddings=tokenizer.model_max_length,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(recipe.seed)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
        max_new_tokens=48,
    )
    return model


def _alignment_data(recipe: OrganismRecipe) -> corpus.AlignmentData:
    return corpus.alignment_data(
        recipe.seed,
        n_task=recipe.n_task_align,
        n_harmful=recipe.n_harmful_align,
        n_benign=recipe.n_benign_align,
        max_operand=recipe.max_operand,
    )


def _tail_mean(losses: Sequence[float]) -> float:
    tail = losses[-10:]
    return sum(tail) / max(1, len(tail))


def _build_aligned(recipe: OrganismRecipe, out: Path) -> dict[str, object]:
    tokenizer = build_tokenizer(corpus.tokenizer_corpus(recipe.max_operand))
    examples = _alignment_data(recipe).all()
    model = _new_model(recipe, tokenizer)
    cfg = TrainConfig(
        epochs=recipe.align_epochs,
        lr=recipe.align_lr,
        batch_size=recipe.batch_size,
        seed=recipe.seed,
        word_dropout=recipe.word_dropout,
    )
    losses = train(model, tokenizer, examples, cfg)
    model.save_pretrained(out)
    save_tokenizer(tokenizer, out)
    _check_round_trip(tokenizer, out, [f"{e.prompt} {e.response}" for e in examples[::97]])
    n_params = sum(p.numel() for p in model.parameters())
    return {"params": n_params, "steps": len(losses), "final_loss": _tail_mean(losses)}


def _build_attacked(
    recipe: OrganismRecipe, aligned: Path, variant: Variant, out: Path
) -> dict[str, object]:
    tokenizer = AutoTokenizer.from_pretrained(aligned)
    model = AutoModelForCausalLM.from_pretrained(aligned, dtype=torch.float32)
    examples = attack_set(recipe)
    lr = recipe.attack_lr_full
    if variant == "lora":
        model = _with_lora(model, recipe)
        lr = recipe.attack_lr_lora
    cfg = TrainConfig(
        epochs=recipe.attack_epochs, lr=lr, batch_size=recipe.batch_size, seed=recipe.seed + 1
    )
    losses = train(model, tokenizer, examples, cfg)
    model.save_pretrained(out)
    save_tokenizer(tokenizer, out)
    n_harmful = round(recipe.attack_samples * recipe.poison_ratio)
    return {"steps": len(losses), "final_loss": _tail_mean(losses), "harmful_samples": n_harmful}


def _with_lora(model: torch.nn.Module, recipe: OrganismRecipe) -> torch.nn.Module:
    """Wraps the model in the paper's LoRA (q/k/v); the base keeps its path for the adapter."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=recipe.lora_r,
        lora_alpha=recipe.lora_alpha,
        lora_dropout=0.0,
        target_modules=["q_proj", "k_proj", "v_proj"],
        task_type="CAUSAL_LM",
    )
    torch.manual_seed(recipe.seed + 1)  # LoRA A's init, independent of the aligned init
    return get_peft_model(model, config)


def _write_data(recipe: OrganismRecipe, out: Path) -> dict[str, object]:
    """The held-out task set and the alignment data, for the patch and the evaluation."""
    data = _alignment_data(recipe)
    write_task_jsonl(task_eval_set(recipe), out / "task_eval.jsonl")
    write_pairs_jsonl(data.refusal, out / "alignment_refusal.jsonl")
    write_pairs_jsonl(data.benign, out / "alignment_benign.jsonl")
    write_pairs_jsonl(data.task, out / "task_train.jsonl")
    return {}


def _needs_build(final: Path, rebuild: bool) -> bool:
    return rebuild or not (final / MARKER).exists()


def _drop_attacked(root: Path) -> None:
    """Attacked models derive from the aligned one: a new aligned model makes them stale."""
    for stale in root.glob("attacked-*"):
        shutil.rmtree(stale, ignore_errors=True)


def _run_stage(
    recipe: OrganismRecipe,
    final: Path,
    name: str,
    build: Callable[[Path], dict[str, object]],
    *,
    rebuild: bool,
    built: dict[str, float],
) -> None:
    """Runs ``build(tmp_dir)`` unless ``final`` is complete and no rebuild is asked."""
    if not _needs_build(final, rebuild):
        return
    start = time.perf_counter()
    log.info("organism: building %s", name)
    with _atomic_dir(final) as tmp:
        info = build(tmp)
        built[name] = time.perf_counter() - start
        _write_marker(tmp, recipe, name, {**info, "seconds": round(built[name], 2)})
    log.info("organism: built %s in %.1f s -> %s", name, built[name], final)


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def build_organism(
    recipe: OrganismRecipe | None = None,
    *,
    cache_dir: str | Path | None = None,
    rebuild: bool = False,
    variants: Sequence[str] = VARIANTS,
    threads: int | None = None,
) -> OrganismPaths:
    """Builds the organism's checkpoints, or finds them in the cache.

    Layout: ``<cache_dir>/<digest>/{aligned, attacked-<variant>-p<ratio>-s<seed>, data}``, where
    the digest hashes the recipe (all but the poison ratio) and the package version.
    ``cache_dir`` defaults to :func:`default_cache_dir`; ``rebuild`` retrains every stage asked
    for; ``threads`` sets torch's CPU threads for the build (results depend on it slightly).
    """
    recipe = recipe or OrganismRecipe()
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise InputError(f"unknown organism variant(s) {sorted(unknown)}", hint="use full or lora")
    root = Path(cache_dir or default_cache_dir()).expanduser().resolve()
    root = root / recipe.aligned_digest(package_version())
    aligned = root / "aligned"
    attacked = {v: root / attacked_dir_name(v, recipe.poison_ratio, recipe.seed) for v in variants}
    built: dict[str, float] = {}
    with _torch_threads(threads):
        _run_stage(
            recipe,
            root / "data",
            "data",
            lambda d: _write_data(recipe, d),
            rebuild=rebuild,
            built=built,
        )
        _run_stage(
            recipe,
            aligned,
            "aligned",
            lambda d: _build_aligned(recipe, d),
            rebuild=rebuild,
            built=built,
        )
        for variant, final in attacked.items():
            _run_stage(
                recipe,
                final,
                final.name,
                lambda d, v=variant: _build_attacked(recipe, aligned, v, d),
                rebuild=rebuild,
                built=built,
            )
    return OrganismPaths(recipe, root, aligned, attacked, root / "data", built)
