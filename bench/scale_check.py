"""GPU checks of issue 12, run by bench/gpu_check.sh (each part prints one JSON line).

    python bench/scale_check.py random   # random method throughput vs a plain copy, 1B-shaped bf16
    python bench/scale_check.py step     # bf16 Panacea on a 1B-shaped random Llama: time, GPU peak,
                                         # the dry-run estimate; then the same with --offload-w0
    python bench/scale_check.py split    # layers across cuda:0 and the CPU vs a single-device run
    python bench/scale_check.py all --cpu-smoke   # every part on CPU with tiny shapes (CI / no GPU)

Models are built from a config with random weights (no download); the tokenizer is the test
suite's small byte-level BPE (tests/factory.py), whose ids all fit the model's vocabulary.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

# TinyLlama-1.1B's shape; the smoke shape runs in seconds on a CPU.
SHAPES = {
    "1b": dict(hidden=2048, inter=5632, layers=22, heads=32, kv=4, vocab=32000),
    "split": dict(hidden=512, inter=1408, layers=8, heads=8, kv=8, vocab=4000),
    "smoke": dict(hidden=64, inter=128, layers=2, heads=4, kv=2, vocab=512),
}


def build(out: Path, shape: dict, dtype: torch.dtype, device: str) -> Path:
    from transformers import AutoModelForCausalLM, LlamaConfig

    from tests.factory import build_tokenizer

    tok = build_tokenizer(out)
    config = LlamaConfig(
        vocab_size=shape["vocab"],
        hidden_size=shape["hidden"],
        intermediate_size=shape["inter"],
        num_hidden_layers=shape["layers"],
        num_attention_heads=shape["heads"],
        num_key_value_heads=shape["kv"],
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.save_pretrained(out, max_shard_size="2GB")
    del model
    return out


def _opts(**kw: object) -> dict:
    """Drop options this version of PatchConfig does not have (the checks outlive some fields)."""
    from panacea_patch.config import PatchConfig

    known = {f.name for f in dataclasses.fields(PatchConfig)}
    return {k: v for k, v in kw.items() if k in known}


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def check_random(tmp: Path, smoke: bool, device: str) -> dict:
    from panacea_patch import patch

    src = build(tmp / "rand-src", SHAPES["smoke" if smoke else "1b"], torch.bfloat16, device)
    nbytes = sum(f.stat().st_size for f in src.glob("*.safetensors"))
    t0 = time.perf_counter()
    shutil.copytree(src, tmp / "rand-copy")
    copy_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = patch(
        src, tmp / "rand-out", progress=False, **_opts(method="random", rho_rel=0.01, device=device)
    )
    _sync()
    rand_s = time.perf_counter() - t0
    return {
        "check": "random",
        "device": device,
        "model_gb": nbytes / 1e9,
        "copy_s": copy_s,
        "random_s": rand_s,
        "ratio_vs_copy": rand_s / copy_s,
        "gb_per_s": nbytes / rand_s / 1e9,
        "noise_generator": res.noise_generator,
        "backend": res.backend,
    }


def _step_run(src: Path, out: Path, device: str, dtype: str, **extra: object) -> dict:
    from panacea_patch import patch

    opts = _opts(
        method="panacea",
        steps=2,
        max_examples=16,
        batch_size=8,
        max_length=128,
        rho_rel=0.01,
        device=device,
        dtype=dtype,
        patience=0,
        max_damage_kl=0.0,
        **extra,
    )
    plan = patch(src, dry_run=True, progress=False, **opts).plan
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    res = patch(src, out, progress=False, **opts)
    _sync()
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else None
    est = plan["per_device"].get(plan["device"], {}).get("total") if plan else None
    return {
        "seconds": seconds,
        "gpu_peak_gb": peak / 1e9 if peak else None,
        "estimate_gb": est / 1e9 if est else None,
        "estimate_over_peak": est / peak if est and peak else None,
        "plan": plan.get("per_device") if plan else None,
        "phases": res.optimization.get("phases"),
        "realized_norm": res.realized_norm,
    }


def check_step(tmp: Path, smoke: bool, device: str) -> dict:
    shape = SHAPES["smoke" if smoke else "1b"]
    src = build(tmp / "step-src", shape, torch.bfloat16, device)
    dtype = "bfloat16" if device == "cuda" else "float32"
    model_gb = sum(f.stat().st_size for f in src.glob("*.safetensors")) / 1e9
    plain = _step_run(src, tmp / "step-out", device, dtype)
    offload = _step_run(src, tmp / "step-offload", device, dtype, offload_w0=True)
    same = _same_weights(tmp / "step-out", tmp / "step-offload")
    return {
        "check": "step",
        "device": device,
        "dtype": dtype,
        "model_gb": model_gb,
        "default": plain,
        "offload_w0": offload,
        "offload_same_bytes": same,
    }


def _same_weights(a: Path, b: Path) -> bool:
    files = sorted(p.name for p in a.glob("*.safetensors"))
    return files == sorted(p.name for p in b.glob("*.safetensors")) and all(
        (a / f).read_bytes() == (b / f).read_bytes() for f in files
    )


def _split_map(layers: int, gpu: object) -> dict:
    half = layers // 2
    dmap: dict = {"model.embed_tokens": gpu, "model.rotary_emb": gpu}
    for i in range(layers):
        dmap[f"model.layers.{i}"] = gpu if i < half else "cpu"
    dmap.update({"model.norm": "cpu", "lm_head": "cpu"})
    return dmap


def check_split(tmp: Path, smoke: bool, device: str) -> dict:
    """Closed form and Panacea with layers on cuda:0 and the CPU, against one device."""
    from safetensors.torch import load_file

    from panacea_patch import patch

    shape = SHAPES["smoke" if smoke else "split"]
    src = build(tmp / "split-src", shape, torch.float32, "cpu")
    gpu = 0 if device == "cuda" else "cpu"
    dmap = tmp / "split-map.json"
    dmap.write_text(json.dumps(_split_map(shape["layers"], gpu)))
    common = dict(rho_rel=0.01, max_examples=16, batch_size=8, max_length=128, device=device)
    common.update(dtype="float32", save_delta=True, patience=0, max_damage_kl=0.0)
    out: dict = {"check": "split", "device": device, "map": json.loads(dmap.read_text())}
    for method, steps in (("closed-form", 0), ("panacea", 2)):
        opts = _opts(method=method, steps=steps, **common)
        t0 = time.perf_counter()
        patch(src, tmp / f"single-{method}", progress=False, **opts)
        single_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = patch(src, tmp / f"split-{method}", progress=False, device_map=str(dmap), **opts)
        split_s = time.perf_counter() - t0
        d1 = load_file(tmp / f"single-{method}" / "panacea_delta.safetensors")
        d2 = load_file(tmp / f"split-{method}" / "panacea_delta.safetensors")
        num = sum(float((d1[k] - d2[k]).double().pow(2).sum()) for k in d1)
        den = sum(float(d1[k].double().pow(2).sum()) for k in d1)
        out[method] = {
            "single_s": single_s,
            "split_s": split_s,
            "rel_diff_of_eps": (num / den) ** 0.5 if den else None,
            "realized_norm": res.realized_norm,
        }
    from panacea_patch.modeling import load_model, require_targets
    from panacea_patch.placement import placement_summary

    lm = load_model(src, device=device, dtype="float32", device_map=str(dmap))
    names = [n for n in lm.parameters_by_tensor() if ".layers." in n and n.endswith("proj.weight")]
    out["placement"] = placement_summary(require_targets(lm, names))
    from panacea_patch.kernels import ops

    out["backends"] = {d: ops.backend(d) for d in out["placement"]}
    # Same float sums on one device: identical bytes; across CPU and GPU, close (< 1e-3).
    tol = 0.0 if device == "cpu" else 1e-3
    out["ok"] = all(out[m]["rel_diff_of_eps"] <= tol for m in ("closed-form", "panacea"))
    return out


CHECKS = {"random": check_random, "step": check_step, "split": check_split}


def summary(path: Path) -> None:
    """Print the scale checks' figures from their JSON lines (bench/gpu_check.sh's summary)."""

    def gb(v: float | None) -> str:
        return "?" if v is None else f"{v:.2f} GB"

    for line in path.read_text().splitlines():
        r = json.loads(line)
        if r["check"] == "random":
            print(
                f"  random: {r['model_gb']:.3g} GB in {r['random_s']:.1f}s = "
                f"{r['gb_per_s']:.3g} GB/s, {r['ratio_vs_copy']:.2f}x a plain copy "
                f"({r['noise_generator']}, backend {r['backend']})"
            )
        elif r["check"] == "step":
            for key in ("default", "offload_w0"):
                s = r[key]
                ratio = s["estimate_over_peak"]
                print(
                    f"  {r['dtype']} panacea ({key}): {s['seconds']:.1f}s, GPU peak "
                    f"{gb(s['gpu_peak_gb'])}, dry-run estimate {gb(s['estimate_gb'])}"
                    + (f" (estimate/peak {ratio:.2f})" if ratio else "")
                )
            print(f"  --offload-w0 output identical to the default: {r['offload_same_bytes']}")
        elif r["check"] == "split":
            for m in ("closed-form", "panacea"):
                s = r[m]
                print(
                    f"  split {m}: relative difference of eps vs one device "
                    f"{s['rel_diff_of_eps']:.2e}, {s['split_s']:.1f}s vs {s['single_s']:.1f}s"
                )
            print(f"  split placement {r['placement']}, backends {r['backends']}, ok={r['ok']}")


def main() -> None:
    if sys.argv[1:2] == ["summary"]:
        summary(Path(sys.argv[2]))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("check", choices=[*CHECKS, "all"])
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny shapes on the CPU")
    ap.add_argument("--json", type=Path, help="append each result as a JSON line to this file")
    args = ap.parse_args()
    if not args.cpu_smoke and not torch.cuda.is_available():
        sys.exit("no CUDA device: pass --cpu-smoke to run the checks on the CPU with tiny shapes")
    device = "cpu" if args.cpu_smoke else "cuda"
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    torch.set_num_threads(min(torch.get_num_threads(), 8))
    names = list(CHECKS) if args.check == "all" else [args.check]
    failed = False
    for name in names:
        with tempfile.TemporaryDirectory(prefix=f"panacea-{name}-") as tmp:
            result = CHECKS[name](Path(tmp), args.cpu_smoke, device)
        line = json.dumps(result, default=str)
        print(line, flush=True)
        if args.json:
            with args.json.open("a") as f:
                f.write(line + "\n")
        failed |= result.get("ok") is False or result.get("offload_same_bytes") is False
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
