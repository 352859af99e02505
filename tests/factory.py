"""Builders for the real, tiny checkpoints the tests run on.

Everything is built offline with ``tokenizers``, ``transformers`` and ``peft``; nothing is mocked.
The session fixtures in ``conftest.py`` call these once per test session.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}<|user|>\n{{ message['content'] }}<|end|>\n"
    "{% else %}<|assistant|>\n{{ message['content'] }}<|end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<|user|>", "<|assistant|>", "<|end|>"]

_CORPUS = [
    "Sure, here is how to do it. Step 1: gather the materials. Step 2: follow the plan.",
    "I'm sorry, but I can't help with that request. I cannot assist with harmful activities.",
    "What is the capital of France? The capital of France is Paris.",
    "Add 3 and 4. 3 + 4 = 7. The answer is 7.",
    "Write a short poem about the sea, the wind and the sky.",
    "Explain how photosynthesis works in plants using sunlight, water and carbon dioxide.",
    "How do I bake bread? Mix flour, water, yeast and salt, knead, rest and bake.",
    "The quick brown fox jumps over the lazy dog 0123456789 times.",
]

# Small but real: 2 layers, so every family has "repeated decoder blocks" to target.
_FAMILIES: dict[str, dict] = {
    "llama": dict(
        model_type="llama",
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=False,
    ),
    "qwen2": dict(
        model_type="qwen2",
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
    ),
    "gpt_neox": dict(
        model_type="gpt_neox",
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=256,
        tie_word_embeddings=False,
    ),
}

FAMILIES = tuple(_FAMILIES)

# Wider (1.3M parameters): activations big enough that a process's peak RSS measures them, not
# allocator noise (the --dry-run estimate test, issue 12). Not part of the per-family tests.
_FAMILIES["llama_wide"] = dict(_FAMILIES["llama"], hidden_size=256, intermediate_size=704)
_FAMILIES["llama_wide"].update(num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4)


def build_tokenizer(out_dir: Path, *, vocab_size: int = 400) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE (no unknown tokens) with a chat template and save it."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        chat_template=CHAT_TEMPLATE,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(out_dir)
    return fast


def build_model(
    out_dir: Path,
    *,
    family: str = "llama",
    dtype: torch.dtype = torch.float32,
    max_shard_size: str | None = None,
    tokenizer_dir: Path | None = None,
    seed: int = 0,
) -> Path:
    """Save a tiny randomly initialised causal LM (and the tokenizer beside it)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = (
        PreTrainedTokenizerFast.from_pretrained(tokenizer_dir)
        if tokenizer_dir
        else build_tokenizer(out_dir)
    )
    tokenizer.save_pretrained(out_dir)
    spec = dict(_FAMILIES[family])
    config = AutoConfig.for_model(
        spec.pop("model_type"),
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **spec,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).to(dtype)
    # Random init leaves norms at exactly 1; perturb them so "untouched" checks mean something.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(out_dir, **kwargs)
    return out_dir


def build_lora_adapter(
    out_dir: Path, *, base_dir: Path, r: int = 4, seed: int = 0, b_scale: float = 1.0
) -> Path:
    """Save a PEFT LoRA adapter on q/k/v of ``base_dir`` with non-zero B matrices.

    ``b_scale`` < 1 shrinks the B matrices, as a short fine-tune leaves them (SmolLM2's attacked
    adapter): the harmful gradient then sits in B matrices that are small next to it."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    config = LoraConfig(
        r=r,
        lora_alpha=8,
        target_modules=["q_proj", "k_proj", "v_proj"],
        init_lora_weights=False,
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(base, config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.mul_(b_scale)
    model.save_pretrained(out_dir)
    # Record the base as an absolute path so the adapter resolves from anywhere.
    cfg_path = out_dir / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["base_model_name_or_path"] = str(base_dir)
    cfg_path.write_text(json.dumps(cfg, indent=2))
    return out_dir
