"""Overhead of `patch --method panacea` against the raw forward+backward work it needs.

In the same run it measures:
  * baseline: the same forward+backward passes on the same batches with plain autograd (the
    closed-form pass over every harmful batch, then per step one backward through the harmful,
    refusal and benign losses), with no hooks, no ε state and no projection;
  * optimize: ``PerturbationRun.run`` (hooks, fused updates, projection, KL reference);
  * end to end: the whole `patch` call (load, data, optimize, streaming write, provenance).

    python bench/overhead.py [--model DIR] [--steps 20] [--hidden 384 --layers 6]

Target (issue 7): optimize / baseline <= 1.1. Peak RSS / model bytes is reported too.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _model(args: argparse.Namespace, tmp: Path) -> Path:
    if args.model:
        return Path(args.model)
    sys.path.insert(0, str(ROOT))
    from tests.factory import _FAMILIES, build_model

    _FAMILIES["bench"] = dict(
        model_type="llama",
        hidden_size=args.hidden,
        intermediate_size=args.hidden * 11 // 4,
        num_hidden_layers=args.layers,
        num_attention_heads=6,
        num_key_value_heads=6,
        max_position_embeddings=256,
        tie_word_embeddings=False,
    )
    return build_model(tmp / "model", family="bench")


def _baseline(lm, data, steps: int) -> float:
    from panacea_patch.objectives import response_ce

    model = lm.model
    for n, p in model.named_parameters():
        p.requires_grad_(".layers." in n and p.dim() == 2)
    start = time.perf_counter()
    for b in data.harmful:
        response_ce(model, b).backward()
    for k in range(steps):
        loss = response_ce(model, data.harmful[k % len(data.harmful)])
        loss = loss - response_ce(model, data.refusal[k % len(data.refusal)])
        loss = loss - response_ce(model, data.benign[k % len(data.benign)])
        loss.backward()
        model.zero_grad(set_to_none=True)
    return time.perf_counter() - start


_PEAK = """
import runpy, sys
try:
    {body}
finally:
    # VmHWM belongs to this process image only (a fresh mm after exec), unlike ru_maxrss of
    # children, which also counts the parent's pages copied before exec.
    hwm = next(l for l in open("/proc/self/status") if l.startswith("VmHWM"))
    print("PEAK", int(hwm.split()[1]) * 1024, file=sys.stderr)
"""


def _peak(body: str) -> int:
    proc = subprocess.run(
        [sys.executable, "-c", _PEAK.format(body=body)],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    line = next(x for x in proc.stderr.splitlines() if x.startswith("PEAK"))
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-2000:])
    return int(line.split()[1])


def _child_peak_rss(src: Path, out: Path, steps: int) -> tuple[int, int]:
    """(peak RSS of a real CLI run, peak RSS of a child that only imports the stack), bytes."""
    base = _peak("import torch, transformers, peft, panacea_patch.api, panacea_patch.job")
    argv = [
        "panacea-patch",
        "patch",
        str(src),
        "--out",
        str(out),
        "--steps",
        str(steps),
        "--max-examples",
        "64",
        "--max-length",
        "128",
        "--device",
        "cpu",
        "-q",
    ]
    body = f"sys.argv = {argv!r}\n    runpy.run_module('panacea_patch.cli', run_name='__main__')"
    return _peak(body), base


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", help="checkpoint to patch (default: a generated tiny Llama)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--hidden", type=int, default=384)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from panacea_patch import patch
    from panacea_patch.checkpoint import ShardReader
    from panacea_patch.config import PatchConfig
    from panacea_patch.methods.perturb import AlignmentData, PerturbationRun
    from panacea_patch.modeling import load_model
    from panacea_patch.source import resolve_source
    from panacea_patch.targets import select_targets

    with tempfile.TemporaryDirectory(prefix="panacea-overhead-") as tmp_s:
        tmp = Path(tmp_s)
        src_dir = _model(args, tmp)
        opts = dict(
            method="panacea",
            steps=args.steps,
            max_examples=64,
            batch_size=8,
            max_length=128,
            device="cpu",
            dtype="float32",
        )
        cfg = PatchConfig(**opts)
        src = resolve_source(src_dir)
        model_bytes = sum(f.stat().st_size for f in src.weight_files)
        with ShardReader(src) as r:
            targets = select_targets(r.infos(), config=src.config, adapter=src.kind == "adapter")
        # Warm-up (imports, allocator), then the three measurements on the same batches.
        patch(src_dir, tmp / "warm", progress=False, **{**opts, "steps": 1, "max_examples": 8})
        lm = load_model(src, device="cpu", dtype="float32")
        data = AlignmentData.load(lm.tokenizer, cfg)
        base_s = _baseline(lm, data, args.steps)
        lm = load_model(src, device="cpu", dtype="float32")
        run = PerturbationRun(lm, targets, cfg, data)
        start = time.perf_counter()
        run.run(0.01 * run.target_norm)
        opt_s = time.perf_counter() - start
        start = time.perf_counter()
        patch(src_dir, tmp / "out", progress=False, **opts)
        e2e_s = time.perf_counter() - start
        peak, base = _child_peak_rss(src_dir, tmp / "child", args.steps)
        passes = len(data.harmful) + args.steps
        print(
            f"model: {src_dir.name}, {model_bytes / 1e6:.1f} MB, {sum(t.numel for t in targets):,} target params; "
            f"K={args.steps} steps, {passes} backward passes ({len(data.harmful)} closed-form + {args.steps} steps)"
        )
        print(f"baseline fwd+bwd on the same batches: {base_s:7.2f} s")
        print(
            f"optimize (PerturbationRun.run):        {opt_s:7.2f} s   ratio {opt_s / base_s:.3f}  (target <= 1.1)"
        )
        print(f"end-to-end patch call:                 {e2e_s:7.2f} s   ratio {e2e_s / base_s:.3f}")
        print(
            f"peak RSS of a CLI patch run (child process): {peak / 1e6:.0f} MB = "
            f"{peak / model_bytes:.1f} x model bytes; above the {base / 1e6:.0f} MB that importing "
            f"the stack costs: {(peak - base) / 1e6:.0f} MB = {(peak - base) / model_bytes:.1f} x"
        )


if __name__ == "__main__":
    main()
