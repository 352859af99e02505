"""Peak memory of the optimized methods, as a multiple of the model's bytes (CPU).

For each (method, stored dtype, compute dtype) it runs, in fresh child processes:
  1. the real `patch` call, recording peak RSS above the post-import baseline;
  2. the same forward+backward passes on the same batches without our machinery, recording the
     peak above the loaded model: the activation (and transient gradient) memory, reported
     separately and subtracted, as the issue's targets exclude activations.

    python bench/memory_bench.py [--hidden 512 --layers 8] [--quick]

Targets (issue 3, CPU): <= 3.5 x model bytes for fp32 models, <= 4.5 x for bf16 models,
excluding activations. Issue 12: each row also shows the `--dry-run` plan's estimate of the peak
(panacea_patch/plan.py) next to the measured peak (target: within 25%), and one extra row runs
Panacea with `--offload-w0` (w0 on the host, streamed per tensor at each projection; on this CPU
stand-in the "device" is the host too, so it shows the time the streaming costs, not a saving).
`--quick` runs only the bf16 rows.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time, torch
torch.set_num_threads(2)
from panacea_patch import patch
from panacea_patch.config import PatchConfig
from panacea_patch.modeling import load_model
from panacea_patch.methods.perturb import AlignmentData

def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024

def reset_peak():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")

mode, src, out, method, dtype, warm_src, warm_out, extra = sys.argv[1:9]
opts = dict(method=method, rho_rel=0.01, steps=3, max_examples=16, batch_size=8, max_length=96,
            dtype=dtype, device="cpu", **json.loads(extra))
# A run on a tiny model first, so lazily imported code and allocator pools are not counted.
patch(warm_src, warm_out, progress=False, overwrite=True, **opts)
base = rss("VmRSS"); reset_peak()
if mode == "patch":
    started = time.perf_counter()
    patch(src, out, progress=False, **opts)
    print(json.dumps({"used": rss("VmHWM") - base, "seconds": time.perf_counter() - started}))
else:
    lm = load_model(src, device="cpu", dtype=dtype)
    data = AlignmentData.load(lm.tokenizer, PatchConfig(**opts))
    for n, p in lm.model.named_parameters():
        p.requires_grad_(".layers." in n and p.dim() == 2)
        if p.requires_grad:
            p.register_post_accumulate_grad_hook(lambda q: setattr(q, "grad", None))
    after_load = rss("VmRSS"); reset_peak()
    # The same graphs the method builds: one harmful batch per backward for the closed form;
    # harmful + refusal + benign batches in one backward for each Panacea step.
    groups = [[b] for b in data.harmful]
    if method == "panacea":
        groups += [[h, r, u] for h, r, u in zip(data.harmful, data.refusal, data.benign)]
    for group in groups:
        loss = sum(lm.model(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
                   .logits.float().logsumexp(-1).mean() for b in group)
        loss.backward()
    print(json.dumps({"activations": rss("VmHWM") - after_load}))
"""


def build(root: Path, hidden: int, layers: int, dtype: str, name: str = "model") -> Path:
    sys.path.insert(0, str(ROOT))
    import torch

    from tests.factory import _FAMILIES, build_model

    _FAMILIES["bench"] = dict(
        model_type="llama",
        hidden_size=hidden,
        intermediate_size=hidden * 11 // 4,
        num_hidden_layers=layers,
        num_attention_heads=8,
        num_key_value_heads=8,
        max_position_embeddings=256,
        tie_word_embeddings=False,
    )
    out = root / f"{name}-{dtype}"
    build_model(out, family="bench", dtype=getattr(torch, dtype))
    return out


def child(*args: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--quick", action="store_true", help="only the bf16 rows")
    args = ap.parse_args()
    rows = []
    cases = [("bfloat16", ["float32", "bfloat16"], 4.5)]
    if not args.quick:
        cases.insert(0, ("float32", ["float32"], 3.5))
    with tempfile.TemporaryDirectory(prefix="panacea-mem-") as tmp:
        root = Path(tmp)
        for stored, computes, target in cases:
            src = build(root, args.hidden, args.layers, stored)
            warm = [str(build(root, 64, 1, stored, name="warm")), str(root / "warm-out")]
            model_bytes = sum(f.stat().st_size for f in src.glob("*.safetensors"))
            runs = [(c, m, {}) for c in computes for m in ("closed-form", "panacea")]
            if stored == "bfloat16":
                runs.append(("float32", "panacea", {"offload_w0": True}))
            for compute, method, extra in runs:
                x = json.dumps(extra)
                act = child("act", str(src), "-", method, compute, *warm, x)["activations"]
                out = root / f"out-{stored}-{compute}-{method}-{len(rows)}"
                got = child("patch", str(src), str(out), method, compute, *warm, x)
                est = estimate(src, method, compute, extra)
                name = method + (" --offload-w0" if extra else "")
                rows.append((name, stored, compute, model_bytes, got, act, target, est))
    print(
        "| method | stored | compute | model MB | peak MB | activations MB | peak/model | "
        "(peak-act)/model | target | dry-run estimate MB | estimate/peak | seconds |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for method, stored, compute, mb, got, act, target, est in rows:
        used = got["used"]
        ratio = (used - act) / mb
        print(
            f"| {method} | {stored} | {compute} | {mb / 1e6:.0f} | {used / 1e6:.0f} | {act / 1e6:.0f} | "
            f"{used / mb:.2f} | {ratio:.2f} | <= {target} {'ok' if ratio <= target else 'OVER'} | "
            f"{est / 1e6:.0f} | {est / used:.2f} | {got['seconds']:.1f} |"
        )


def estimate(src: Path, method: str, compute: str, extra: dict) -> int:
    """The --dry-run plan's total bytes for the same options as the child's run."""
    sys.path.insert(0, str(ROOT))
    from panacea_patch import patch

    opts = dict(method=method, rho_rel=0.01, steps=3, max_examples=16, batch_size=8)
    opts.update(max_length=96, dtype=compute, device="cpu", **extra)
    return patch(str(src), dry_run=True, progress=False, **opts).plan["total_bytes"]


if __name__ == "__main__":
    main()
