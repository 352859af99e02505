"""Greedy, batched, left-padded generation.

Decoding is pure greedy (``do_sample=False``, one beam) whatever the checkpoint's
``generation_config.json`` says: sampling settings and penalties there (temperature,
repetition penalty, n-gram blocking, minimum length) are neutralized so that every model is
measured the same way and the result is deterministic. Only the end-of-sequence ids are taken
from the checkpoint (the union of the generation config's and the tokenizer's).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import GenerationConfig

from panacea_patch.data import encode_prompt, resolve_pad_token_id
from panacea_patch.errors import InputError
from panacea_patch.evaluation.batching import BatchSize, run_batched


def model_device(model: Any) -> torch.device:
    """The device of the model's first parameter (where inputs must go)."""
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    return next(model.parameters()).device


def eos_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """End-of-sequence ids from the model's generation config and the tokenizer, deduplicated."""
    ids: list[int] = []
    gen_cfg = getattr(model, "generation_config", None)
    for value in (getattr(gen_cfg, "eos_token_id", None), tokenizer.eos_token_id):
        if value is None:
            continue
        for item in value if isinstance(value, list | tuple) else [value]:
            if int(item) not in ids:
                ids.append(int(item))
    return ids


def encode_texts(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text, with the tokenizer's special tokens but never a doubled BOS.

    A chat template usually writes the BOS into the text already; adding special tokens on top
    would put a second one in front.
    """
    bos = tokenizer.bos_token_id
    out = []
    for text in texts:
        ids = list(tokenizer(text, add_special_tokens=True)["input_ids"])
        if bos is not None and len(ids) >= 2 and ids[0] == bos and ids[1] == bos:
            ids = ids[1:]
        out.append(ids)
    return out


def left_pad(
    seqs: Sequence[Sequence[int]], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` with every sequence right-aligned."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        if seq:
            ids[row, width - len(seq) :] = torch.tensor(list(seq), dtype=torch.long)
            mask[row, width - len(seq) :] = 1
    return ids.to(device), mask.to(device)


def greedy_config(max_new_tokens: int, eos_ids: Sequence[int], pad_id: int) -> GenerationConfig:
    """A generation config for pure greedy decoding (see the module docstring)."""
    return GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        temperature=1.0,
        top_k=50,
        top_p=1.0,
        repetition_penalty=1.0,
        no_repeat_ngram_size=0,
        min_new_tokens=0,
        eos_token_id=list(eos_ids) or None,
        pad_token_id=pad_id,
    )


def _cut_at_eos(ids: list[int], eos_ids: Sequence[int]) -> list[int]:
    # Keeps the eos itself: the KL metric scores the model's prediction of it too.
    for pos, tok in enumerate(ids):
        if tok in eos_ids:
            return ids[: pos + 1]
    return ids


def generate_token_ids(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    max_new_tokens: int,
    batch_size: BatchSize = "auto",
    progress: bool = False,
    desc: str = "generate",
) -> tuple[list[list[int]], list[list[int]]]:
    """Greedy continuations of raw ``texts`` (no prompt formatting applied).

    Returns ``(prompt_ids, new_ids)`` per text, in input order; see :func:`generate_from_ids`.
    """
    prompt_ids = encode_texts(tokenizer, texts)
    new_ids = generate_from_ids(
        model,
        tokenizer,
        prompt_ids,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        progress=progress,
        desc=desc,
    )
    return prompt_ids, new_ids


def generate_from_ids(
    model: Any,
    tokenizer: Any,
    prompt_ids: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    batch_size: BatchSize = "auto",
    progress: bool = False,
    desc: str = "generate",
) -> list[list[int]]:
    """Greedy continuation ids of each tokenized prompt, in input order.

    Each continuation stops after the first end-of-sequence token (included) or at
    ``max_new_tokens``. Prompts are processed longest first, so an out-of-memory error shows up on
    the first batch and padding stays small.
    """
    if max_new_tokens < 1:
        raise InputError(
            f"max_new_tokens must be at least 1, got {max_new_tokens}",
            hint="pass a positive integer",
        )
    if any(len(ids) == 0 for ids in prompt_ids):
        raise InputError("a prompt tokenizes to nothing", hint="remove empty prompts")
    eos_ids = eos_token_ids(model, tokenizer)
    pad_id = resolve_pad_token_id(tokenizer)
    config = greedy_config(max_new_tokens, eos_ids, pad_id)
    device = model_device(model)
    order = sorted(range(len(prompt_ids)), key=lambda i: (-len(prompt_ids[i]), i))

    def run(indices: list[int]) -> list[list[int]]:
        input_ids, attention_mask = left_pad([prompt_ids[i] for i in indices], pad_id, device)
        with torch.inference_mode():
            out = model.generate(
                input_ids=input_ids, attention_mask=attention_mask, generation_config=config
            )
        new = out[:, input_ids.shape[1] :].tolist()
        return [_cut_at_eos(row, eos_ids) for row in new]

    generated = run_batched(run, order, batch_size, desc=desc, progress=progress)
    new_ids: list[list[int]] = [[] for _ in prompt_ids]
    for index, ids in zip(order, generated, strict=True):
        new_ids[index] = ids
    return new_ids


def decode_new(tokenizer: Any, ids: Sequence[int], eos_ids: Sequence[int]) -> str:
    """Text of generated ids without the trailing eos and special tokens, stripped."""
    body = list(ids[:-1]) if ids and ids[-1] in eos_ids else list(ids)
    return str(tokenizer.decode(body, skip_special_tokens=True)).strip()


def generate_texts(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    max_new_tokens: int,
    batch_size: BatchSize = "auto",
    progress: bool = False,
    desc: str = "generate",
) -> list[str]:
    """Greedy answers to raw, already formatted ``texts``, in input order."""
    prompt_ids = encode_texts(tokenizer, texts)
    return _decoded(model, tokenizer, prompt_ids, max_new_tokens, batch_size, progress, desc)


def encode_prompts(tokenizer: Any, prompts: Sequence[str]) -> list[list[int]]:
    """Generation-prompt token ids of user ``prompts`` through the project's one formatter
    (chat template or Alpaca fallback, no doubled BOS), as the optimization losses see them."""
    return [encode_prompt(tokenizer, prompt) for prompt in prompts]


def generate_answers(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    batch_size: BatchSize = "auto",
    progress: bool = False,
    desc: str = "generate",
) -> list[str]:
    """Greedy answers of ``model`` to user ``prompts``, formatted with ``format_prompt``.

    Batched and left-padded; ``batch_size="auto"`` starts at 64 and halves on out-of-memory.
    Deterministic: pure greedy decoding, see the module docstring.
    """
    prompt_ids = encode_prompts(tokenizer, prompts)
    return _decoded(model, tokenizer, prompt_ids, max_new_tokens, batch_size, progress, desc)


def _decoded(
    model: Any,
    tokenizer: Any,
    prompt_ids: Sequence[Sequence[int]],
    max_new_tokens: int,
    batch_size: BatchSize,
    progress: bool,
    desc: str,
) -> list[str]:
    """Generate from token ids and decode each continuation to text."""
    new_ids = generate_from_ids(
        model,
        tokenizer,
        prompt_ids,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        progress=progress,
        desc=desc,
    )
    eos_ids = eos_token_ids(model, tokenizer)
    return [decode_new(tokenizer, ids, eos_ids) for ids in new_ids]
