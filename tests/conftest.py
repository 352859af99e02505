"""Shared, session-scoped fixtures: real tiny checkpoints built offline."""

from __future__ import annotations

import os

# Must precede any import of the kernels: @triton.jit reads it at decoration time.
os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
# Read by huggingface_hub at import: the local Hub test server speaks the plain LFS protocol.
os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path

import pytest
import torch

from tests import factory
from tests.hub_server import hub_server as hub_server

# Tiny models run ~30x faster on one thread than on two contended ones.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def fixtures_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fixtures")


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(fixtures_root: Path) -> Path:
    out = fixtures_root / "tokenizer"
    factory.build_tokenizer(out)
    return out


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_tokenizer_dir: Path):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(tiny_tokenizer_dir)


def _model(fixtures_root: Path, tok_dir: Path, name: str, **kwargs) -> Path:
    out = fixtures_root / name
    if not (out / "config.json").exists():
        factory.build_model(out, tokenizer_dir=tok_dir, **kwargs)
    return out


@pytest.fixture(scope="session")
def llama_dir(fixtures_root: Path, tiny_tokenizer_dir: Path) -> Path:
    """Tiny Llama, untied embeddings, fp32, one safetensors file."""
    return _model(fixtures_root, tiny_tokenizer_dir, "llama", family="llama")


@pytest.fixture(scope="session")
def llama_sharded_bf16_dir(fixtures_root: Path, tiny_tokenizer_dir: Path) -> Path:
    """Tiny Llama in bf16, sharded with a model.safetensors.index.json."""
    return _model(
        fixtures_root,
        tiny_tokenizer_dir,
        "llama-bf16-sharded",
        family="llama",
        dtype=torch.bfloat16,
        max_shard_size="30KB",
    )


@pytest.fixture(scope="session")
def qwen2_dir(fixtures_root: Path, tiny_tokenizer_dir: Path) -> Path:
    """Tiny Qwen2 with tied embeddings, fp32."""
    return _model(fixtures_root, tiny_tokenizer_dir, "qwen2", family="qwen2")


@pytest.fixture(scope="session")
def neox_dir(fixtures_root: Path, tiny_tokenizer_dir: Path) -> Path:
    """Tiny GPT-NeoX (fused QKV, different module names), fp32, sharded."""
    return _model(
        fixtures_root, tiny_tokenizer_dir, "neox", family="gpt_neox", max_shard_size="40KB"
    )


@pytest.fixture(scope="session")
def lora_dir(fixtures_root: Path, llama_dir: Path) -> Path:
    """PEFT LoRA adapter (q/k/v) on the tiny Llama."""
    out = fixtures_root / "llama-lora"
    if not (out / "adapter_config.json").exists():
        factory.build_lora_adapter(out, base_dir=llama_dir)
    return out


@pytest.fixture(scope="session")
def lora_small_b_dir(fixtures_root: Path, llama_dir: Path) -> Path:
    """A LoRA adapter whose B matrices are 1% of ``lora_dir``'s (a short fine-tune's)."""
    out = fixtures_root / "llama-lora-small-b"
    if not (out / "adapter_config.json").exists():
        factory.build_lora_adapter(out, base_dir=llama_dir, b_scale=0.01)
    return out


@pytest.fixture(params=["llama_dir", "llama_sharded_bf16_dir", "qwen2_dir", "neox_dir"])
def any_model_dir(request: pytest.FixtureRequest) -> Path:
    return request.getfixturevalue(request.param)
