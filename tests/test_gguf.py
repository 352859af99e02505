"""GGUF sources: a tiny Llama written with the gguf package's own writer, patched through the CLI.

The fixture file is built the way llama.cpp's converter writes a Llama (q/k rows permuted for its
rope layout, tied embeddings without an ``output.weight``, a byte-level BPE tokenizer and a chat
template in the ``tokenizer.*`` keys), from a random transformers model whose weights we know.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from panacea_patch.errors import InputError
from tests.helpers import load_all, read_json_stdout, run_cli

gguf = pytest.importorskip("gguf")

from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM  # noqa: E402

from panacea_patch.gguf import convert_gguf, read_gguf_header  # noqa: E402
from panacea_patch.source import resolve_source  # noqa: E402

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
WORDS = ["the", "is", "of", "capital", "France", "Paris", "help", "you", "can", "I", "how"]
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
N_HEAD, N_KV, HIDDEN, LAYERS = 4, 2, 64, 2
# Small budgets: the tiny model has no vocabulary for the built-in data worth more.
# An untrained fixture has no refusals to restore: the guard's refusal check is off.
FAST = ["--max-examples", "8", "--batch-size", "8", "--max-length", "256", "-q"]
FAST += ["--min-refusal-drop", "0"]


def _bytes_to_unicode() -> dict[int, str]:
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), 256)]
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


def _vocab_and_merges() -> tuple[list[str], list[str]]:
    """Byte-level BPE: the 256 byte symbols, then merges that spell a few words (with Ġ = space)."""
    tokens = [*SPECIALS, *sorted(set(_bytes_to_unicode().values()))]
    merges: list[str] = []
    for word in WORDS:
        parts = list("Ġ" + word)
        while len(parts) > 1:
            merge = f"{parts[0]} {parts[1]}"
            if merge not in merges:
                merges.append(merge)
            if parts[0] + parts[1] not in tokens:
                tokens.append(parts[0] + parts[1])
            parts = [parts[0] + parts[1], *parts[2:]]
    return tokens, merges


def _permute(w: np.ndarray, n_head: int, n_head_kv: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf.py LlamaModel.permute (transformers undoes it on load)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def write_tiny_gguf(
    path: Path, *, quant: str | None = None, seed: int = 0, arch: str = "llama"
) -> LlamaForCausalLM:
    """Write a tiny tied-embedding Llama to ``path``; returns the model it was made from.

    ``quant="Q8_0"`` stores every matrix as Q8_0 blocks (norms stay F32, as llama.cpp does).
    """
    tokens, merges = _vocab_and_merges()
    config = LlamaConfig(
        vocab_size=len(tokens),
        hidden_size=HIDDEN,
        intermediate_size=2 * HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=N_HEAD,
        num_key_value_heads=N_KV,
        head_dim=HIDDEN // N_HEAD,
        max_position_embeddings=512,
        rope_theta=10000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    qtype = getattr(gguf.GGMLQuantizationType, quant) if quant else None
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name("tiny llama")
    w.add_context_length(512)
    w.add_embedding_length(HIDDEN)
    w.add_block_count(LAYERS)
    w.add_feed_forward_length(2 * HIDDEN)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_KV)
    w.add_rope_dimension_count(HIDDEN // N_HEAD)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(len(tokens))
    w.add_file_type(
        getattr(gguf.LlamaFileType, f"MOSTLY_{quant}") if quant else gguf.LlamaFileType.ALL_F32
    )
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([3] * len(SPECIALS) + [1] * (len(tokens) - len(SPECIALS)))
    w.add_token_merges(merges)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_pad_token_id(2)
    w.add_add_bos_token(False)
    w.add_chat_template(CHAT_TEMPLATE)

    def add(name: str, arr: np.ndarray) -> None:
        if qtype is not None and arr.ndim == 2:
            q = gguf.quants.quantize(arr, qtype)
            w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=qtype)
        else:
            w.add_tensor(name, arr)

    add("token_embd.weight", sd["model.embed_tokens.weight"])  # tied: no output.weight
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        add(f"blk.{i}.attn_norm.weight", sd[p + "input_layernorm.weight"])
        add(f"blk.{i}.attn_q.weight", _permute(sd[p + "self_attn.q_proj.weight"], N_HEAD, N_HEAD))
        add(f"blk.{i}.attn_k.weight", _permute(sd[p + "self_attn.k_proj.weight"], N_HEAD, N_KV))
        add(f"blk.{i}.attn_v.weight", sd[p + "self_attn.v_proj.weight"])
        add(f"blk.{i}.attn_output.weight", sd[p + "self_attn.o_proj.weight"])
        add(f"blk.{i}.ffn_norm.weight", sd[p + "post_attention_layernorm.weight"])
        add(f"blk.{i}.ffn_gate.weight", sd[p + "mlp.gate_proj.weight"])
        add(f"blk.{i}.ffn_up.weight", sd[p + "mlp.up_proj.weight"])
        add(f"blk.{i}.ffn_down.weight", sd[p + "mlp.down_proj.weight"])
    add("output_norm.weight", sd["model.norm.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two files of the same model: F32 (exact) and Q8_0 (dequantized on load)."""
    root = tmp_path_factory.mktemp("gguf")
    f32, q8 = root / "tiny-f32.gguf", root / "tiny-q8.gguf"
    model = write_tiny_gguf(f32)
    write_tiny_gguf(q8, quant="Q8_0")
    return {"f32": f32, "q8": q8, "model": model}


@pytest.fixture(autouse=True)
def gguf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("PANACEA_PATCH_CACHE", str(cache))
    return cache


def _ids(tokenizer) -> torch.Tensor:
    chat = [{"role": "user", "content": "What is the capital of France?"}]
    ids = tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt")
    return ids if torch.is_tensor(ids) else ids["input_ids"]


def _logits(model_dir: Path, ids: torch.Tensor) -> torch.Tensor:
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(ids).logits


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cli(*args: str) -> subprocess.CompletedProcess:
    return run_cli(*args, env={**os.environ, "PYTHONWARNINGS": "ignore"})


# ------------------------------------------------------------------------------- the converter


def test_f32_file_converts_exactly_with_tied_embeddings_and_tokenizer(tiny: dict, tmp_path: Path):
    out = tmp_path / "hf"
    info = convert_gguf(tiny["f32"], out)
    assert (info.quantization, info.dequantized, info.dtype) == ("F32", False, "float32")
    assert info.architecture == "llama" and info.sha256 == _sha(tiny["f32"])
    assert info.size == tiny["f32"].stat().st_size
    # The weights are the model the file was written from, q/k un-permuted; lm_head stays tied.
    expected = tiny["model"].state_dict()
    written = load_all(out)
    for name, tensor in written.items():
        assert tensor.dtype == torch.float32
        assert torch.equal(tensor, expected[name]), name
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config and config["tie_word_embeddings"] is True
    reloaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    assert reloaded.lm_head.weight.data_ptr() == reloaded.model.embed_tokens.weight.data_ptr()
    tokenizer = AutoTokenizer.from_pretrained(out)
    ids = _ids(tokenizer)
    assert tokenizer.decode(ids[0]).startswith("<|im_start|>user\nWhat is the capital")
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, tiny["model"](ids).logits)
    assert (out / "generation_config.json").exists()
    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".panacea-tmp")]


def test_quantized_file_defaults_to_bf16_and_says_so(
    tiny: dict, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    with caplog.at_level(logging.INFO, logger="panacea_patch.gguf"):
        info = convert_gguf(tiny["q8"], tmp_path / "bf16")
    assert (info.quantization, info.dequantized, info.dtype) == ("Q8_0", True, "bfloat16")
    assert "dequantized Q8_0 weights are written in bfloat16" in caplog.text
    assert {t.dtype for t in load_all(tmp_path / "bf16").values()} == {torch.bfloat16}
    fp32 = convert_gguf(tiny["q8"], tmp_path / "fp32", dtype="float32")
    assert fp32.dtype == "float32" and fp32.sha256 == info.sha256
    # Dequantized Q8_0 is close to the weights it was made from, not equal.
    ids = _ids(AutoTokenizer.from_pretrained(tmp_path / "fp32"))
    with torch.no_grad():
        reference = tiny["model"](ids).logits
    for d in ("fp32", "bf16"):
        diff = (_logits(tmp_path / d, ids) - reference).abs().max().item()
        assert 0 < diff < 0.05, (d, diff)


def test_header_names_the_quantization(tiny: dict):
    header = read_gguf_header(tiny["q8"])
    assert header.quantization == "Q8_0" and header.tensor_types == {"Q8_0": 15, "F32": 5}
    assert read_gguf_header(tiny["f32"]).native_dtype == "float32"


# ------------------------------------------------------------------------ patch through the CLI


def test_patch_a_gguf_file_random(tiny: dict, tmp_path: Path, gguf_cache: Path):
    out = tmp_path / "out"
    proc = _cli(
        "patch", str(tiny["f32"]), "--out", str(out), "--method", "random", "--rho", "0.01",
        "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    data = read_json_stdout(proc)
    assert data["realized_norm"] == pytest.approx(0.01, rel=1e-3)
    record = json.loads((out / "panacea_patch.json").read_text())
    gguf_rec = record["source"]["gguf"]
    assert gguf_rec == data["source"]["gguf"]
    assert gguf_rec["sha256"] == _sha(tiny["f32"]) and gguf_rec["quantization"] == "F32"
    assert gguf_rec["dequantized"] is False and gguf_rec["dtype"] == "float32"
    # A normal checkpoint: the converted config, tokenizer, chat template and generation config.
    for name in (
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ):
        assert (out / name).exists(), name
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template
    ids = _ids(tokenizer)
    with torch.no_grad():
        source = tiny["model"](ids).logits
    diff = (_logits(out, ids) - source).abs().max().item()
    assert 0 < diff < 0.05
    # The converted checkpoint is cached by sha256 and dtype, and reused.
    (entry,) = (gguf_cache / "gguf").iterdir()
    assert entry.name == f"{gguf_rec['sha256'][:16]}-float32"
    stamp = (entry / "model.safetensors").stat().st_mtime_ns
    again = resolve_source(tiny["f32"])
    assert again.path == entry and again.gguf == gguf_rec
    assert (entry / "model.safetensors").stat().st_mtime_ns == stamp


def test_patch_a_quantized_gguf_optimized_in_float32(tiny: dict, tmp_path: Path):
    out = tmp_path / "out"
    proc = _cli(
        "patch", str(tiny["q8"]), "--out", str(out), "--method", "panacea", "--rho", "0.05",
        "--steps", "2", "--dtype", "float32", "--json", *FAST,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    data = read_json_stdout(proc)
    gguf_rec = data["source"]["gguf"]
    assert gguf_rec["quantization"] == "Q8_0" and gguf_rec["dequantized"] is True
    assert gguf_rec["dtype"] == "float32" and gguf_rec["sha256"] == _sha(tiny["q8"])
    assert {t.dtype for t in load_all(out).values()} == {torch.float32}
    assert data["realized_norm"] == pytest.approx(0.05, rel=1e-2)
    ids = _ids(AutoTokenizer.from_pretrained(out))
    source = _logits(Path(data["source"]["path"]), ids)  # the dequantized source
    diff = (_logits(out, ids) - source).abs().max().item()
    assert 0 < diff < 0.5


def test_a_directory_with_one_gguf_and_eval_and_inspect(tiny: dict, tmp_path: Path):
    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copy(tiny["f32"], folder / "model.gguf")
    (folder / "README.md").write_text("a GGUF release\n")
    out = tmp_path / "out"
    proc = _cli(
        "patch", str(folder), "--out", str(out), "--method", "random", "--rho", "0.01", "--json"
    )
    assert proc.returncode == 0, proc.stderr
    assert read_json_stdout(proc)["source"]["gguf"]["sha256"] == _sha(tiny["f32"])
    assert "a GGUF release" not in (out / "README.md").read_text()  # aux files: the converted dir
    # inspect compares the patched output against the GGUF it came from.
    proc = _cli("inspect", str(out), "--reference", str(folder / "model.gguf"), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["total"]["realized_norm"] == pytest.approx(0.01, rel=1e-3)
    # eval reads a GGUF source the same way.
    proc = _cli(
        "eval", str(tiny["f32"]), "--max-examples", "2", "--max-new-tokens", "2", "--json", "-q"
    )
    assert proc.returncode == 0, proc.stderr


# ---------------------------------------------------------------------------------- bad input


def _bad_magic(tmp_path: Path, tiny: dict) -> tuple[list[str], str]:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGML" + tiny["f32"].read_bytes()[4:])
    return [str(bad)], "bad magic"


def _truncated(tmp_path: Path, tiny: dict) -> tuple[list[str], str]:
    cut = tmp_path / "cut.gguf"
    data = tiny["f32"].read_bytes()
    cut.write_bytes(data[: len(data) - 5000])  # the header is intact, the last tensor is not
    return [str(cut)], "is not a readable GGUF file"


def _unsupported(tmp_path: Path, tiny: dict) -> tuple[list[str], str]:
    path = tmp_path / "rwkv.gguf"
    w = gguf.GGUFWriter(str(path), "rwkv6")
    w.add_tensor("token_embd.weight", np.zeros((8, 32), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return [str(path)], "'rwkv6' model, which transformers cannot read from GGUF"


def _several(tmp_path: Path, tiny: dict) -> tuple[list[str], str]:
    folder = tmp_path / "several"
    folder.mkdir()
    shutil.copy(tiny["f32"], folder / "a.gguf")
    shutil.copy(tiny["q8"], folder / "b.gguf")
    return [str(folder)], "holds 2 .gguf files: a.gguf, b.gguf"


def _missing_name(tmp_path: Path, tiny: dict) -> tuple[list[str], str]:
    folder = tmp_path / "one"
    folder.mkdir()
    shutil.copy(tiny["f32"], folder / "a.gguf")
    return [
        str(folder),
        "--gguf-file",
        "c.gguf",
    ], "has no file 'c.gguf' (.gguf files there: a.gguf)"


@pytest.mark.parametrize(
    "case",
    [_bad_magic, _truncated, _unsupported, _several, _missing_name],
    ids=lambda f: f.__name__,
)
def test_bad_gguf_sources_are_input_errors(case, tiny: dict, tmp_path: Path, gguf_cache: Path):
    args, message = case(tmp_path, tiny)
    out = tmp_path / "out"
    proc = _cli("patch", *args, "--out", str(out), "--method", "random", "--rho", "0.01")
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Fix:" in proc.stderr
    assert not out.exists()
    assert not gguf_cache.exists() or not any((gguf_cache / "gguf").iterdir())


def test_several_gguf_files_with_a_name_pick_that_one(tiny: dict, tmp_path: Path):
    _several(tmp_path, tiny)
    src = resolve_source(tmp_path / "several", gguf_file="b.gguf")
    assert src.gguf is not None and src.gguf["quantization"] == "Q8_0"


def test_without_the_gguf_package_the_error_says_what_to_install(tiny: dict, tmp_path: Path):
    code = (
        "import sys; sys.modules['gguf'] = None\n"  # as if the optional package were not installed
        "from panacea_patch.cli.main import main\n"
        "sys.argv = ['panacea-patch', *sys.argv[1:]]\n"
        "main()\n"
    )
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-c", code, "patch", str(tiny["f32"]), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    assert "reading GGUF files needs the gguf package" in proc.stderr
    assert "Fix: pip install 'panacea-patch[gguf]'" in proc.stderr
    assert not out.exists()


# ---------------------------------------------------------------------------------------- Hub


def test_hub_repo_with_gguf_file(tiny: dict, tmp_path: Path, hub_server) -> None:
    repo = "someone/tiny-GGUF"
    hub_server.create_repo(repo)
    sha = hub_server.seed_files(
        repo,
        {
            "tiny-f32.gguf": tiny["f32"].read_bytes(),
            "tiny-q8.gguf": tiny["q8"].read_bytes(),
            "README.md": "---\nlicense: apache-2.0\n---\n",
        },
    )
    out = tmp_path / "out"
    proc = _cli(
        "patch", repo, "--gguf-file", "tiny-q8.gguf", "--out", str(out), "--method", "random",
        "--rho", "0.01", "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    source = read_json_stdout(proc)["source"]
    assert source["repo_id"] == repo and source["commit_sha"] == sha
    assert source["gguf"]["sha256"] == _sha(tiny["q8"]) and source["gguf"]["quantization"] == "Q8_0"
    # Only the named GGUF was downloaded.
    snapshots = list(Path(os.environ["HF_HOME"]).rglob("*.gguf"))
    assert [p.name for p in snapshots] == ["tiny-q8.gguf"]
    # The same file as org/name/FILE.gguf, and a name the repo does not have.
    again = resolve_source(f"{repo}/tiny-q8.gguf")
    assert again.repo_id == repo and again.commit_sha == sha
    assert again.gguf is not None and again.gguf["sha256"] == source["gguf"]["sha256"]
    with pytest.raises(InputError, match=r"has no file 'nope\.gguf'"):
        resolve_source(repo, gguf_file="nope.gguf")
