"""Running the efficacy bench: build organisms, patch them, evaluate, and store one row each."""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from efficacy_spec import EVAL_SETTINGS, METHODS, METRICS, Spec, _since, log, patch_options


class RowStore:
    """Append-only JSONL of evaluated rows, indexed by key."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: dict[str, dict[str, Any]] = {}
        if path.exists():
            for line in path.read_text().splitlines():
                if line.strip():
                    row = json.loads(line)
                    self.rows[row["key"]] = row

    def get(self, spec: Spec) -> dict[str, Any] | None:
        return self.rows.get(spec.key())

    def add(self, row: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        self.rows[row["key"]] = row


def eval_config(paths: Any) -> Any:
    """The demo's evaluation config (see EVAL_SETTINGS) on this organism's task file."""
    from panacea_patch.evaluation import EvalConfig

    return EvalConfig(
        harmful=EVAL_SETTINGS["harmful"],
        harmful_split=EVAL_SETTINGS["harmful_split"],
        benign=EVAL_SETTINGS["benign"],
        benign_split=EVAL_SETTINGS["benign_split"],
        judge=EVAL_SETTINGS["judge"],
        task=str(paths.task_eval_file),
        scorer=EVAL_SETTINGS["scorer"],
        max_new_tokens=EVAL_SETTINGS["max_new_tokens"],
        max_examples=EVAL_SETTINGS["max_examples"],
        batch_size=64,
        progress=False,
    )


def attack_displacement(paths: Any, variant: str) -> float:
    """‖w_attacked − w_aligned‖ / ‖w_aligned‖ over the decoder blocks' 2-D weights.

    For LoRA the displacement is the merged update (alpha/r)·B·A of each adapted module. This is
    the distance the patch would have to undo, in the same units as ``rho_rel`` of a full patch.
    """
    from safetensors.torch import load_file

    base = load_file(str(paths.aligned / "model.safetensors"))
    names = [k for k, v in base.items() if v.ndim == 2 and ".layers." in k]
    den = math.sqrt(sum(float(base[k].double().pow(2).sum()) for k in names))
    src = paths.attacked[variant]
    if variant == "full":
        new = load_file(str(src / "model.safetensors"))
        num = sum(float((new[k].double() - base[k].double()).pow(2).sum()) for k in names)
        return math.sqrt(num) / den
    cfg = json.loads((src / "adapter_config.json").read_text())
    scale = cfg["lora_alpha"] / cfg["r"]
    ad = load_file(str(src / "adapter_model.safetensors"))
    num = 0.0
    for a_name, a in ad.items():
        if ".lora_A." not in a_name:
            continue
        b = ad[a_name.replace(".lora_A.", ".lora_B.")]
        num += float((scale * b.double() @ a.double()).pow(2).sum())
    return math.sqrt(num) / den


def revert_distance(paths: Any, variant: str) -> float:
    """The smallest ``rho_rel`` whose ε could restore the aligned model exactly.

    Full: ‖w_aligned − w_attacked‖ / ‖w_attacked‖ over the patch's default targets (decoder 2-D
    weights). LoRA: the targets are the adapter's A and B; ε = −B zeroes the update, so the
    distance is ‖B‖ / ‖(A, B)‖. A patch never sees the aligned weights, so this is only a scale.
    """
    from safetensors.torch import load_file

    src = paths.attacked[variant]
    if variant == "full":
        base = load_file(str(paths.aligned / "model.safetensors"))
        new = load_file(str(src / "model.safetensors"))
        names = [k for k, v in new.items() if v.ndim == 2 and ".layers." in k]
        num = sum(float((new[k].double() - base[k].double()).pow(2).sum()) for k in names)
        den = sum(float(new[k].double().pow(2).sum()) for k in names)
    else:
        ad = load_file(str(src / "adapter_model.safetensors"))
        num = sum(float(v.double().pow(2).sum()) for k, v in ad.items() if ".lora_B." in k)
        den = sum(float(v.double().pow(2).sum()) for v in ad.values())
    return math.sqrt(num / den)


class Cell:
    """One (seed, ratio, variant): the organism paths and a lazily loaded evaluator."""

    def __init__(self, paths: Any, variant: str) -> None:
        self.paths = paths
        self.variant = variant
        self.attacked = paths.attacked[variant]
        self._reference: Any = None

    def evaluate(self, model_dir: Path) -> dict[str, Any]:
        """The row metrics of ``model_dir``."""
        data = self.report(model_dir).to_dict()
        return {short: data.get(long) for short, long in METRICS.items()}

    def report(self, model_dir: Path) -> Any:
        """The full EvalReport of ``model_dir`` (with per-prompt samples)."""
        from panacea_patch.evaluation import evaluate
        from panacea_patch.modeling import load_model

        if self._reference is None:  # KL is against the attacked model, loaded once per cell
            self._reference = load_model(self.attacked, device="cpu", dtype="float32").model
        lm = load_model(model_dir, device="cpu", dtype="float32")
        return evaluate(lm.model, lm.tokenizer, eval_config(self.paths), reference=self._reference)


class Runner:
    """Evaluates missing rows, appending each to the store as soon as it is done."""

    def __init__(self, store: RowStore, cache_dir: Path, variants: Sequence[str]) -> None:
        self.store = store
        self.cache_dir = cache_dir
        self.variants = tuple(variants)
        self.done = 0
        self.computed = 0
        self.started = time.perf_counter()
        self._cells: dict[tuple[int, float, str], Cell] = {}

    def cell(self, seed: int, ratio: float, variant: str) -> Cell:
        from panacea_patch.organism import OrganismRecipe, build_organism

        key = (seed, ratio, variant)
        if key not in self._cells:
            recipe = OrganismRecipe(seed=seed, poison_ratio=ratio)
            start = time.perf_counter()
            # All variants at once: the aligned model is shared, each attack ~10 s.
            paths = build_organism(
                recipe, cache_dir=self.cache_dir, variants=self.variants, threads=1
            )
            if paths.built:
                built = ", ".join(f"{k} {v:.0f}s" for k, v in paths.built.items())
                log(f"organism seed {seed} p {ratio:g}: built {built} ({_since(start)})")
            for v in self.variants:
                self._cells[(seed, ratio, v)] = Cell(paths, v)
        return self._cells[key]

    def ensure(
        self, spec: Spec, rho: float | None = None, target_norm: float | None = None
    ) -> dict[str, Any]:
        """The row for ``spec``, computed now if the store lacks it.

        ``rho`` (with panacea's ``target_norm``, for ρ_rel) patches at that absolute budget.
        """
        self.done += 1
        row = self.store.get(spec)
        if row is not None:
            return row
        cell = self.cell(spec.seed, spec.poison_ratio, spec.variant)
        row = {"key": spec.key(), **dataclasses.asdict(spec), "spec": spec.full()}
        if spec.method == "diagnostics":
            row.update(self._diagnose(spec, cell))
            self.store.add(row)
            self.computed += 1
            log(f"[diagnostics] seed {spec.seed} p {spec.poison_ratio:g} {spec.variant} done")
            return row
        with tempfile.TemporaryDirectory(prefix="panacea-eff-") as tmp:
            if spec.method == "aligned":
                model_dir = cell.paths.aligned
            elif spec.method == "none":
                model_dir = cell.attacked
                row["attack_rel"] = attack_displacement(cell.paths, spec.variant)
            else:
                model_dir = Path(tmp) / "out"
                row.update(self._patch(spec, cell, model_dir, rho, target_norm))
            start = time.perf_counter()
            row.update(cell.evaluate(model_dir))
            row["eval_seconds"] = time.perf_counter() - start
        row["torch_threads"] = torch.get_num_threads()
        self.store.add(row)
        self.computed += 1
        rel = row.get("rho_rel_realized")
        rho_txt = "" if rel is None else f" rho_rel {rel:.3g}"
        log(
            f"[{spec.part}] seed {spec.seed} p {spec.poison_ratio:g} {spec.variant} "
            f"{spec.method}{'' if spec.data == 'organism' else ' (builtin data)'}{rho_txt}: "
            f"HS {row['hs']:.1f} FA {row['fa']:.1f} over-refusal {row['over_refusal']:.1f} "
            f"incoherent {row['incoherent']:.1f} ({self.computed} computed, {_since(self.started)})"
        )
        return row

    def _diagnose(self, spec: Spec, cell: Cell) -> dict[str, Any]:
        """Evidence for the analysis of the targets: unknown words, reversal distance.

        - ``unk``: share of <unk> tokens (organism tokenizer) in each data set's prompts and
          responses: what the model cannot read.
        - ``refusal_by_unk``: held-out refusal rate of the aligned model and of default panacea,
          by the share of <unk> tokens in the prompt.
        - ``overlap``: held-out prompts refused by both / only one / neither.
        - ``revert_rel``: the budget (relative to the patch's target weights) that would move
          the attacked model exactly back to the aligned one.
        """
        from panacea_patch import patch
        from panacea_patch.data import load_pairs
        from panacea_patch.modeling import load_model

        tokenizer = load_model(cell.paths.aligned, device="cpu", dtype="float32").tokenizer
        unk_id = tokenizer.unk_token_id

        def unk_share(text: str) -> float:
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            return sum(i == unk_id for i in ids) / max(len(ids), 1)

        sets = {
            "built-in harmful, evaluate half": ("builtin:harmful", "harmful", "evaluate"),
            "built-in refusal": ("builtin:refusal", "refusal", None),
            "built-in benign, evaluate half": ("builtin:benign", "benign", "evaluate"),
            "organism alignment refusals": (str(cell.paths.refusal_file), "refusal", None),
            "organism task data": (str(cell.paths.task_train_file), "benign", None),
        }
        unk = {}
        for name, (src, role, split) in sets.items():
            pairs = load_pairs(src, role=role, split=split) if split else load_pairs(src, role=role)
            unk[name] = {
                "n": len(pairs),
                "prompt": statistics.fmean(unk_share(p.prompt) for p in pairs),
                "response": statistics.fmean(unk_share(p.response) for p in pairs if p.response)
                if any(p.response for p in pairs)
                else None,
            }

        def refused(report: Any) -> dict[str, bool]:
            return {s.prompt: bool(s.refused) for s in report.samples if str(s.set) == "harmful"}

        aligned = refused(cell.report(cell.paths.aligned))
        with tempfile.TemporaryDirectory(prefix="panacea-eff-") as tmp:
            out = Path(tmp) / "out"
            options = patch_options(cell.paths, "organism")
            patch(cell.attacked, out, method="panacea", seed=spec.seed, progress=False, **options)
            patched = refused(cell.report(out))
        by_unk: dict[str, dict[str, Any]] = {}
        for prompt, ok in aligned.items():
            share = unk_share(prompt)
            bucket = "none" if share == 0 else "< 25%" if share < 0.25 else ">= 25%"
            entry = by_unk.setdefault(bucket, {"n": 0, "aligned": 0, "panacea": 0})
            entry["n"] += 1
            entry["aligned"] += ok
            entry["panacea"] += patched[prompt]
        overlap = {
            "both": sum(a and patched[p] for p, a in aligned.items()),
            "aligned only": sum(a and not patched[p] for p, a in aligned.items()),
            "panacea only": sum(patched[p] and not a for p, a in aligned.items()),
            "neither": sum(not a and not patched[p] for p, a in aligned.items()),
        }
        return {
            "unk": unk,
            "refusal_by_unk": by_unk,
            "overlap": overlap,
            "revert_rel": revert_distance(cell.paths, spec.variant),
        }

    def _patch(
        self, spec: Spec, cell: Cell, out: Path, rho: float | None, target_norm: float | None
    ) -> dict[str, Any]:
        from panacea_patch import patch

        options = {**patch_options(cell.paths, spec.data), **spec.budget()}
        if rho is not None:  # a baseline at panacea's ρ (absolute; rho_rel/max_kl off)
            options.update(rho=rho, rho_rel=None, max_kl=None)
        if options.get("rho") is not None or options.get("rho_rel") is not None:
            # A given ρ is measured as it is, a broken model included (the closed form breaks
            # the organism): the damage guard would write nothing and leave the cell empty.
            options["force"] = True
        result = patch(
            cell.attacked, out, method=spec.method, seed=spec.seed, progress=False, **options
        )
        # An absolute --rho leaves target_weight_norm unset: use the norm panacea reported.
        norm = result.target_weight_norm or target_norm
        return {
            "rho": result.rho,
            "rho_rel_realized": result.rho / norm if result.rho and norm else None,
            "realized_norm": result.realized_norm,
            "target_weight_norm": norm,
            "patch_seconds": result.seconds,
        }

    # Parts ------------------------------------------------------------------------------------

    def grid(self, seeds: Sequence[int], ratios: Sequence[float]) -> None:
        for seed in seeds:
            for ratio in ratios:
                for variant in self.variants:
                    self._cell_rows("grid", seed, ratio, variant, "organism", METHODS)

    def builtin(self, seeds: Sequence[int], ratio: float) -> None:
        for seed in seeds:
            for variant in self.variants:
                self._cell_rows("builtin", seed, ratio, variant, "builtin", ("panacea",))

    def _cell_rows(
        self, part: str, seed: int, ratio: float, variant: str, data: str, methods: Iterable[str]
    ) -> None:
        base = {"part": part, "seed": seed, "poison_ratio": ratio, "variant": variant}
        self.ensure(Spec(**base, method="aligned"))
        self.ensure(Spec(**base, method="none"))
        pan = self.ensure(Spec(**base, method="panacea", data=data))
        for method in methods:
            if method in ("random", "closed-form"):
                self.ensure(
                    Spec(**base, method=method, data=data),
                    rho=pan["rho"],
                    target_norm=pan["target_weight_norm"],
                )

    def diagnostics(self, seed: int, ratio: float) -> None:
        for variant in self.variants:
            self.ensure(Spec("diagnostics", seed, ratio, variant, "diagnostics"))

    def sweep(self, seed: int, ratio: float, rho_rels: Sequence[float]) -> None:
        for variant in self.variants:
            base = {"part": "sweep", "seed": seed, "poison_ratio": ratio, "variant": variant}
            self.ensure(Spec(**base, method="aligned"))
            self.ensure(Spec(**base, method="none"))
            for rel in rho_rels:
                for method in ("panacea", "random"):
                    self.ensure(Spec(**base, method=method, rho_rel=rel))
