"""Streaming I/O benchmark: `patch --method random` against a plain copy of the same files.

Generates a sharded bf16 Llama-shaped checkpoint (about 2 GB in 4 shards by default), then in the
same run:
  1. copies its files (the baseline: the least any patcher must do),
  2. runs `panacea-patch patch --method random` on it in a child process,
and prints the time ratio (patch / copy) and the child's peak RSS divided by the largest shard.

    python bench/io_bench.py [--gb 2.0] [--shards 4] [--keep DIR]

Targets (issues 2 and 12): ratio <= 2.0, peak RSS <= 1.5 x largest shard + 300 MB. The child runs
with torch's default thread count; the noise generator it used is printed (CPU: torch-mt19937 +
numpy-philox4x64, see kernels/cpu_noise.py).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import child_rss
import torch
from safetensors.torch import save_file

HIDDEN, INTER = 2048, 5632


def layer_tensors(i: int) -> dict[str, tuple[int, int]]:
    p = f"model.layers.{i}."
    return {
        p + "self_attn.q_proj.weight": (HIDDEN, HIDDEN),
        p + "self_attn.k_proj.weight": (HIDDEN, HIDDEN),
        p + "self_attn.v_proj.weight": (HIDDEN, HIDDEN),
        p + "self_attn.o_proj.weight": (HIDDEN, HIDDEN),
        p + "mlp.gate_proj.weight": (INTER, HIDDEN),
        p + "mlp.up_proj.weight": (INTER, HIDDEN),
        p + "mlp.down_proj.weight": (HIDDEN, INTER),
        p + "input_layernorm.weight": (HIDDEN,),
        p + "post_attention_layernorm.weight": (HIDDEN,),
    }


def generate(root: Path, gb: float, shards: int) -> tuple[int, int]:
    """Write the checkpoint; returns (number of layers, largest shard in bytes)."""
    per_layer = sum(torch.Size(s).numel() for s in layer_tensors(0).values()) * 2  # bf16 bytes
    layers = max(shards, round(gb * 1e9 / per_layer))
    groups = [list(range(layers))[i::shards] for i in range(shards)]
    weight_map: dict[str, str] = {}
    gen = torch.Generator().manual_seed(0)
    for k, group in enumerate(sorted(groups)):
        name = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        tensors = {}
        for i in group:
            for tname, shape in layer_tensors(i).items():
                tensors[tname] = (torch.randn(shape, generator=gen) * 0.02).to(torch.bfloat16)
        if k == 0:
            tensors["model.embed_tokens.weight"] = torch.zeros(32000, HIDDEN, dtype=torch.bfloat16)
            tensors["model.norm.weight"] = torch.ones(HIDDEN, dtype=torch.bfloat16)
        save_file(tensors, root / name, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(tensors, name))
        del tensors
    (root / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map})
    )
    config = {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": HIDDEN,
        "intermediate_size": INTER,
        "num_hidden_layers": layers,
        "num_attention_heads": 16,
        "num_key_value_heads": 16,
        "vocab_size": 32000,
        "torch_dtype": "bfloat16",
    }
    (root / "config.json").write_text(json.dumps(config))
    largest = max(f.stat().st_size for f in root.glob("*.safetensors"))
    return layers, largest


def plain_copy(src: Path, dst: Path) -> float:
    dst.mkdir()
    start = time.perf_counter()
    for f in sorted(src.iterdir()):
        shutil.copyfile(f, dst / f.name)
    os.sync()
    return time.perf_counter() - start


def run_patch(src: Path, out: Path) -> tuple[float, float, float, dict]:
    """(seconds, peak RSS in bytes, CPU seconds, --json result) of a real CLI run in a child."""
    rss_file = out.with_name(out.name + ".rss")
    args = ["patch", str(src), "--out", str(out), "--method", "random", "--rho", "1.0"]
    cmd = child_rss.cli_command([*args, "--seed", "0", "--quiet", "--json"], rss_file)
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    os.sync()
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"patch failed:\n{proc.stderr}")
    peak = child_rss.read_peak_bytes(rss_file)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # CPU time of the only child
    return seconds, peak, usage.ru_utime + usage.ru_stime, json.loads(proc.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--gb", type=float, default=2.0, help="checkpoint size in GB (bf16)")
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--keep", type=Path, default=None, help="work in this directory and keep it")
    args = ap.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="panacea-io-bench-"))
    src = root / "src"
    src.mkdir(parents=True, exist_ok=True)
    try:
        layers, largest = generate(src, args.gb, args.shards)
        total = sum(f.stat().st_size for f in src.glob("*.safetensors"))
        # Warm the page cache identically for both contenders.
        copy_s = plain_copy(src, root / "copy")
        copy_s = min(copy_s, plain_copy(src, root / "copy2"))
        shutil.rmtree(root / "copy"), shutil.rmtree(root / "copy2")
        load = os.getloadavg()[0]
        patch_s, peak, cpu_s, result = run_patch(src, root / "patched")
        bound = 1.5 * largest + 300e6
        print(
            f"checkpoint: {total / 1e9:.2f} GB bf16, {layers} layers, {args.shards} shards, "
            f"largest shard {largest / 1e9:.2f} GB"
        )
        print(f"plain copy:     {copy_s:8.2f} s  ({total / copy_s / 1e9:.2f} GB/s)")
        print(f"patch --random: {patch_s:8.2f} s  ({total / patch_s / 1e9:.2f} GB/s)")
        print(
            f"patch CPU time: {cpu_s:.2f} s (user + sys, all threads); load average before the "
            f"patch {load:.2f}, after {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"
        )
        print(
            f"noise generator: {result.get('noise_generator')}, torch threads: {torch.get_num_threads()}"
        )
        print(f"time ratio patch/copy: {patch_s / copy_s:.2f}  (target <= 2.0)")
        print(
            f"peak RSS: {peak / 1e9:.2f} GB = {peak / largest:.2f} x largest shard; "
            f"bound 1.5 x shard + 300 MB = {bound / 1e9:.2f} GB -> "
            f"{'within' if peak <= bound else 'OVER'}"
        )
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
