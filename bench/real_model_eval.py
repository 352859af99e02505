"""The real-model bench's measurements: patch runs as the CLI, model evaluations, cost, report.

Patches run as ``panacea-patch patch`` in a child process, so its wall time and peak RSS are
those of the command a user types, with nothing of the bench's own in memory.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import time
from pathlib import Path
from typing import Any

import child_rss
import torch

# Prompts per generation batch. On the 2-core machine, 128 generates 1.31x faster than 32 with
# the same greedy answers (`python bench/eval_batch_bench.py --threads 1`: 128 benign prompts,
# 48 tokens, 56.4 s vs 73.6 s, every answer identical); prompts are sorted by length, so the
# padding stays small.
EVAL_BATCH = 128


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def save_json(path: Path, value: Any) -> None:
    """Write ``value`` as JSON atomically (a half-written cache entry would poison reruns)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value, indent=1, default=str))
    os.replace(tmp, path)


class PatchFailed(RuntimeError):
    """The patch command refused to write (the damage guard tripped): a measured outcome."""

    def __init__(self, message: str, code: int, command: str) -> None:
        super().__init__(message)
        self.code, self.command = code, command


def run_cli_patch(source: Path, out: Path, options: list[str], log_file: Path) -> dict[str, Any]:
    """``panacea-patch patch SOURCE --out OUT --json OPTIONS``; the JSON plus wall time and RSS.

    Raises ``RuntimeError`` with the log's tail when the command fails.
    """
    rss_file = out.with_name(out.name + ".rss")
    cmd = child_rss.cli_command(["patch", str(source), "--out", str(out), "--json"], rss_file)
    cmd += ["--overwrite", *options]
    started = time.perf_counter()
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("w") as err:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        tail = log_file.read_text()[-2000:]
        command = "panacea-patch patch SOURCE --out OUT " + " ".join(options)
        if proc.returncode == 1 and "damage guard" in tail:
            raise PatchFailed(tail.strip().splitlines()[-1], proc.returncode, command)
        raise RuntimeError(f"patch failed (exit {proc.returncode}):\n{tail}")
    row = json.loads(proc.stdout)
    row.pop("targets", None)
    row["bench_seconds"] = round(seconds, 1)
    peak, row["bench_threads"] = child_rss.read_peak_and_threads(rss_file)
    row["bench_peak_rss_mb"] = round(peak / 2**20, 1)
    row["bench_command"] = "panacea-patch patch SOURCE --out OUT " + " ".join(options)
    return row


def _short(text: str, n: int = 90) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def evaluate_model(
    model_dir: Path,
    reference_dir: Path,
    data_dir: Path,
    *,
    half: str = "eval",
    quick: bool = False,
    kl_cache: Path | None = None,
) -> dict[str, Any]:
    """Safety, drift and capability of one checkpoint on one half of every set.

    ``half="eval"``: the evaluation halves, for the reported tables; ``"dev"``: the halves that
    calibration may look at (the built-in sets' optimize halves, the dev QA and task rows);
    ``"check"``: the check part of ``calibration_files`` and the dev QA rows (always quick).
    ``quick`` (calibration only): no KL, perplexity or task; the patch's own
    figures stand in for the drift. ``kl_cache``: a JSON file holding the reference's greedy
    continuations of the benign prompts (written on first use), so that the models compared
    with one reference do not each generate them again.
    """
    from panacea_patch.evaluation import EvalConfig, evaluate
    from panacea_patch.modeling import load_model

    lm = load_model(model_dir, device="cpu", dtype="float32")
    common = dict(progress=False, batch_size=EVAL_BATCH)
    split = "evaluate" if half == "eval" else "optimize"
    sets: dict[str, Any] = {}
    if half == "check":
        # The check part of data.calibration_files: held out of calibration patches.
        split, quick = "evaluate", True
        sets = {r: str(data_dir / f"calibration_{r}.jsonl") for r in ("harmful", "benign")}
        half = "dev"
    cfg = EvalConfig(
        max_new_tokens=48,
        harmful_split=split,
        benign_split=split,
        perplexity=not quick,
        **sets,
        **common,
    )
    safety = evaluate(lm.model, lm.tokenizer, cfg)
    row = safety.to_dict()
    if not quick:
        row.update(_kl(lm, reference_dir, split, cfg.max_new_tokens, cache=kl_cache))
    samples = safety.to_dict(samples=True).get("samples", [])
    row["samples"] = {
        "harmful": [_short(s["output"]) for s in samples if s["set"] == "harmful"][:4],
        "benign": [
            (_short(s["prompt"], 60), _short(s["output"])) for s in samples if s["set"] == "benign"
        ][:4],
    }
    # Every benign prompt the model refused, for reading what over-refusal looks like.
    row["over_refused"] = [
        (s["prompt"], _short(s["output"], 160))
        for s in samples
        if s["set"] == "benign" and s["refused"]
    ]
    for name, scorer, tokens in (("qa", "contains", 32), ("task", "exact", 8))[: 1 if quick else 2]:
        cfg = EvalConfig(
            harmful=None,
            benign=None,
            task=str(data_dir / f"{name}_{half}.jsonl"),
            scorer=scorer,
            max_new_tokens=tokens,
            **common,
        )
        row[f"{name}_accuracy"] = evaluate(lm.model, lm.tokenizer, cfg).task_accuracy
    return row


def _kl(lm: Any, reference_dir: Path, split: str, tokens: int, *, cache: Path | None) -> dict:
    """The evaluation's KL figure (``kl_to_reference``), with the continuations cached."""
    from panacea_patch.data import load_pairs
    from panacea_patch.evaluation import kl_to_reference, reference_continuations
    from panacea_patch.modeling import load_model

    ref = load_model(reference_dir, device="cpu", dtype="float32").model
    prompts = [p.prompt for p in load_pairs("builtin:benign", role="benign", split=split)]
    stored = json.loads(cache.read_text()) if cache is not None and cache.exists() else None
    # The prompts are stored with their continuations: a cache written for another benign split
    # (or by an older bench that stored a bare list) is regenerated, never silently reused.
    if isinstance(stored, dict) and stored.get("prompts") == prompts:
        conts = stored["continuations"]
    else:
        conts = reference_continuations(
            ref, lm.tokenizer, prompts, max_new_tokens=tokens, batch_size=EVAL_BATCH
        )
        if cache is not None:
            save_json(cache, {"prompts": prompts, "continuations": conts})
    result = kl_to_reference(
        lm.model,
        ref,
        lm.tokenizer,
        prompts,
        max_new_tokens=tokens,
        batch_size=EVAL_BATCH,
        continuations=conts,
    )
    return {"kl": result.mean, "kl_tokens": result.tokens}


def _plain_response_ce(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    """The old run's pass: every row whole (no shared prefix), logits over the response span."""
    import torch.nn.functional as F

    labels = batch["labels"][:, 1:]
    positions = labels != -100
    cols = positions.any(0).nonzero().flatten()
    keep = torch.arange(int(cols[0]), int(cols[-1]) + 1)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    logits = model(**inputs, logits_to_keep=keep).logits
    return F.cross_entropy(logits[positions[:, keep]].float(), labels[positions])


def cost_before_after(source: Path, after: dict[str, Any], *, sample_passes: int = 3) -> dict:
    """Tokens of the old default run (whole responses, 60 steps, no early stop) vs this one.

    The old run's tokens are counted exactly from its batches. Its wall time is estimated from
    ``sample_passes`` timed forward+backward passes on its own batches (seconds per token times
    its tokens); the new run's time is measured.
    """
    from panacea_patch.config import PatchConfig
    from panacea_patch.methods.perturb import AlignmentData
    from panacea_patch.modeling import load_model

    lm = load_model(source, device="cpu", dtype="float32")
    old_cfg = PatchConfig(response_tokens=0, patience=0, steps=60, max_damage_kl=0)
    old = AlignmentData.load(lm.tokenizer, old_cfg)
    tokens = old.tokens()
    steps = old_cfg.steps

    def cycled(batches: list[dict]) -> int:
        return sum(int(batches[k % len(batches)]["input_ids"].numel()) for k in range(steps))

    old_tokens = tokens["harmful"] + sum(cycled(getattr(old, r)) for r in ("harmful", "refusal"))
    old_tokens += cycled(old.benign[:steps])
    timed, timed_tokens = 0.0, 0
    for batch in old.harmful[:sample_passes]:
        started = time.perf_counter()
        _plain_response_ce(lm.model, batch).backward()
        timed += time.perf_counter() - started
        timed_tokens += int(batch["input_ids"].numel())
    lm.model.zero_grad(set_to_none=True)
    phases = after.get("optimization", {}).get("phases", {})
    new_tokens = sum(p["tokens"] for k, p in phases.items() if k in ("closed_form", "ascent"))
    new_passes = sum(p["passes"] for k, p in phases.items() if k in ("closed_form", "ascent"))
    old_passes = len(old.harmful) + 3 * steps
    return {
        "before": {
            "passes": old_passes,
            "tokens": old_tokens,
            "seconds_estimated": round(old_tokens * timed / timed_tokens, 1),
        },
        "after": {
            "passes": new_passes,
            "tokens": new_tokens,
            "seconds": after.get("bench_seconds"),
            "phases": phases,
        },
        "token_ratio": round(old_tokens / max(new_tokens, 1), 2),
        "threads": torch.get_num_threads(),
        "env_threads": os.environ.get("OMP_NUM_THREADS"),
    }
