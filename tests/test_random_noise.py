"""The random method's CPU noise (issue 12): same seed and backend give the same bytes.

For any chunk size, tensor split and thread count; different seeds differ; ‖ε‖ = ρ exactly. CPU and
GPU draw different streams (the Triton kernels are tested in test_kernels.py).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from panacea_patch.kernels import cpu_noise, ops
from panacea_patch.kernels import reference as ref

from panacea_patch import patch
from panacea_patch.provenance import PROVENANCE_FILE
from tests import factory
from tests.helpers import load_all, read_json_stdout, run_cli, tensor_bytes

SEED = 1234
# Not block-aligned, above 2**32 (both words of a counter in use), several blocks long.
OFFSET = 2**32 + 3 * cpu_noise.BLOCK - 1000
N = 5 * cpu_noise.BLOCK + 777


@pytest.fixture
def threads() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _weights(d: Path) -> dict[str, bytes]:
    return {k: tensor_bytes(v) for k, v in load_all(d).items()}


# --------------------------------------------------------------------------------------------
# The stream itself
# --------------------------------------------------------------------------------------------


def test_stream_does_not_depend_on_chunk_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fails if how a range is cut into calls or tasks changes the values it gets."""
    whole = cpu_noise.normal(SEED, OFFSET, N)
    for a, b in [(0, 1), (1, 1000), (999, cpu_noise.BLOCK + 5), (4000, N)]:
        assert torch.equal(cpu_noise.normal(SEED, OFFSET + a, b - a), whole[a:b]), (a, b)
    for task_blocks in (1, 3):
        monkeypatch.setattr(cpu_noise, "TASK_BLOCKS", task_blocks)
        assert torch.equal(cpu_noise.normal(SEED, OFFSET, N), whole)
    # apply_ on a tensor equals apply_ on its parts at the matching counters, byte for byte.
    w0 = (torch.randn(N, generator=torch.Generator().manual_seed(1)) * 0.02).to(torch.bfloat16)
    out = torch.empty_like(w0)
    ops.randn_apply_(w0, out, 0.01, SEED, OFFSET)
    parts = torch.empty_like(w0)
    for a, b in [(0, 1234), (1234, 3 * cpu_noise.BLOCK + 1), (3 * cpu_noise.BLOCK + 1, N)]:
        ops.randn_apply_(w0[a:b], parts[a:b], 0.01, SEED, OFFSET + a)
    assert tensor_bytes(out) == tensor_bytes(parts)
    # The norm pass agrees with the values the apply pass draws.
    split = cpu_noise.sumsq(1000, SEED, OFFSET) + cpu_noise.sumsq(N - 1000, SEED, OFFSET + 1000)
    assert split == pytest.approx(cpu_noise.sumsq(N, SEED, OFFSET), rel=1e-9)
    assert cpu_noise.sumsq(N, SEED, OFFSET) == pytest.approx(
        float((whole.double() ** 2).sum()), rel=1e-6
    )


def test_stream_does_not_depend_on_thread_count(threads: None) -> None:
    w0 = torch.randn(N, generator=torch.Generator().manual_seed(2)).to(torch.bfloat16)
    got = []
    for n in (1, 2):
        torch.set_num_threads(n)
        out = torch.empty_like(w0)
        ops.randn_apply_(w0, out, 0.05, SEED, OFFSET)
        got.append(
            (
                tensor_bytes(cpu_noise.normal(SEED, OFFSET, N)),
                cpu_noise.sumsq(N, SEED, OFFSET),
                tensor_bytes(out),
            )
        )
    assert got[0] == got[1]


def test_stream_is_standard_normal_and_seeded() -> None:
    z = cpu_noise.normal(SEED, 0, 400_000).double()
    assert abs(z.mean().item()) < 0.01
    assert abs(z.var().item() - 1.0) < 0.01
    # Tails as a normal's: P(|z| > 3) = 0.0027.
    assert abs((z.abs() > 3).double().mean().item() - 0.0027) < 0.0006
    # Each block is radius * direction: its squared norm is the chi-square radius drawn for it.
    block = cpu_noise.normal(SEED, 5 * cpu_noise.BLOCK, cpu_noise.BLOCK)
    radius_sq = cpu_noise.sumsq(cpu_noise.BLOCK, SEED, 5 * cpu_noise.BLOCK)
    assert float((block.double() ** 2).sum()) == pytest.approx(radius_sq, rel=1e-5)
    assert torch.equal(cpu_noise.normal(SEED, 10, 5000), cpu_noise.normal(SEED, 10, 5000))
    other = cpu_noise.normal(SEED + 1, 10, 5000)
    assert (other != cpu_noise.normal(SEED, 10, 5000)).float().mean() > 0.99
    # Neighbouring blocks are not copies of each other.
    a = cpu_noise.normal(SEED, 0, 1000)
    b = cpu_noise.normal(SEED, cpu_noise.BLOCK, 1000)
    assert abs(torch.corrcoef(torch.stack([a, b]))[0, 1].item()) < 0.15


def test_scaled_noise_has_norm_rho_exactly() -> None:
    rho = 0.37
    scale = rho / math.sqrt(float(ops.randn_sumsq(N, SEED, OFFSET)))
    out = torch.empty(N)
    ops.randn_apply_(torch.zeros(N), out, scale, SEED, OFFSET)
    assert float(out.double().norm()) == pytest.approx(rho, rel=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_apply_measures_what_it_writes(dtype: torch.dtype) -> None:
    w0 = (torch.randn(N, generator=torch.Generator().manual_seed(3)) * 0.02).to(dtype)
    plain, measured = torch.empty_like(w0), torch.empty_like(w0)
    assert ops.randn_apply_(w0, plain, 0.01, SEED, OFFSET) is None
    eps_sq, w_sq = ops.randn_apply_(w0, measured, 0.01, SEED, OFFSET, norms=True)
    assert tensor_bytes(plain) == tensor_bytes(measured)  # measuring never changes the bytes
    assert eps_sq == pytest.approx(float(((measured.double() - w0.double()) ** 2).sum()), rel=1e-5)
    assert w_sq == pytest.approx(float((w0.double() ** 2).sum()), rel=1e-5)
    # In place (out is w0) gives the same bytes and the same sums.
    inplace = w0.clone()
    assert ops.randn_apply_(inplace, inplace, 0.01, SEED, OFFSET, norms=True) == (eps_sq, w_sq)
    assert tensor_bytes(inplace) == tensor_bytes(plain)


def test_reference_is_cpu_noise_and_provenance_names_it() -> None:
    assert ops.noise_generator("cpu") == cpu_noise.GENERATOR == "torch-mt19937+numpy-philox4x64"
    total = ref.randn_sumsq(N, SEED, OFFSET)
    assert total.dtype == torch.float64 and float(total) == cpu_noise.sumsq(N, SEED, OFFSET)


# --------------------------------------------------------------------------------------------
# Through patch
# --------------------------------------------------------------------------------------------


def test_patch_bytes_do_not_depend_on_chunks_or_threads(
    llama_sharded_bf16_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, threads: None
) -> None:
    # Small blocks so each fixture tensor spans many blocks and tensors cut blocks.
    monkeypatch.setattr(cpu_noise, "BLOCK", 64)
    outs = {}
    for name, task_blocks, n_threads, seed in [
        ("a", 1, 1, 7),
        ("b", 5, 2, 7),
        ("c", 32, 2, 7),
        ("other-seed", 5, 2, 8),
    ]:
        monkeypatch.setattr(cpu_noise, "TASK_BLOCKS", task_blocks)
        torch.set_num_threads(n_threads)
        result = patch(
            llama_sharded_bf16_dir,
            tmp_path / name,
            method="random",
            rho=0.5,
            seed=seed,
            progress=False,
        )
        assert result.noise_generator == cpu_noise.GENERATOR
        outs[name] = _weights(tmp_path / name)
    assert outs["a"] == outs["b"] == outs["c"]
    changed = [k for k in outs["a"] if outs["a"][k] != outs["other-seed"][k]]
    assert len(changed) == result.num_target_tensors


def test_patch_bytes_do_not_depend_on_shard_layout(llama_dir: Path, tmp_path: Path) -> None:
    sharded = factory.build_model(tmp_path / "sharded", family="llama", max_shard_size="20KB")
    assert _weights(sharded) == _weights(llama_dir), "the same weights in another layout"
    assert len(list(sharded.glob("*.safetensors"))) > 1
    for name, src in (("one", llama_dir), ("many", sharded)):
        patch(src, tmp_path / name, method="random", rho=0.5, seed=3, progress=False)
    assert _weights(tmp_path / "one") == _weights(tmp_path / "many")


def test_patch_norm_is_rho_and_provenance_names_generator(llama_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = run_cli(
        "patch", str(llama_dir), "--out", str(out), "--method", "random", "--rho", "0.5", "--json"
    )
    assert proc.returncode == 0, proc.stderr
    data = read_json_stdout(proc)
    assert data["noise_generator"] == cpu_noise.GENERATOR
    assert data["warnings"] == []
    a, b = load_all(llama_dir), load_all(out)
    targets = {layer["name"] for layer in data["layers"]}
    eps = math.sqrt(sum(float(((b[n].double() - a[n].double()) ** 2).sum()) for n in targets))
    assert eps == pytest.approx(0.5, rel=1e-5)  # fp32 weights: only w + ε's rounding
    record = json.loads((out / PROVENANCE_FILE).read_text())
    assert record["noise_generator"] == cpu_noise.GENERATOR
