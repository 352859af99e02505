"""``panacea-patch eval``: safety and utility of one model, optionally against a reference."""

from __future__ import annotations

from typing import Any

import click

from .common import handle_errors, setup_logging
from .options import output_options

_SCORERS = ["exact", "contains", "number", "choice"]


@click.command("eval")
@click.argument("model")
@click.option("--reference", help="Reference model for the KL utility figure (e.g. the source).")
@click.option("--harmful", help="Harmful prompts (default: builtin:harmful, evaluate half).")
@click.option("--benign", help="Benign prompts (default: builtin:benign, evaluate half).")
@click.option("--task", help="Task file with fields prompt and answer, for task accuracy.")
@click.option("--scorer", type=click.Choice(_SCORERS), help="How a task answer is scored.")
@click.option("--judge", help="keyword (default), model:<id-or-path> or generative:<id-or-path>.")
@click.option(
    "--judge-labels", help="Label map for a model: judge, e.g. LABEL_1=unsafe,LABEL_0=safe."
)
@click.option("--refusal-phrases-file", type=click.Path(), help="Refusal phrases, one per line.")
@click.option("--max-new-tokens", type=int, help="Tokens generated per prompt.")
@click.option("--max-examples", type=int, help="At most this many prompts per set.")
@click.option("--batch-size", help="Generation batch size, or 'auto' (halves on out-of-memory).")
@click.option("--seed", type=int, help="Random seed.")
@click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True
)
@click.option("--base-model", help="Base model of an adapter MODEL (default: from its config).")
@click.option(
    "--gguf-file", help="GGUF file of MODEL to read (a Hub repo, or a folder with several)."
)
@click.option(
    "--samples", type=click.Path(), help="Write every prompt, output and verdict to this JSONL."
)
@output_options()
@handle_errors
def eval_cmd(
    model: str,
    reference: str | None,
    device: str,
    base_model: str | None,
    gguf_file: str | None,
    samples: str | None,
    as_json: bool,
    quiet: bool,
    verbose: int,
    **opts: Any,
) -> None:
    """Measure harmful score, refusals, incoherence, over-refusal and utility of MODEL."""
    from panacea_patch.evaluation import evaluate, write_samples
    from panacea_patch.evaluation.cli_support import (
        eval_config_from_options,
        format_report_table,
        report_json,
    )
    from panacea_patch.modeling import load_model
    from panacea_patch.source import resolve_source

    setup_logging(verbose)
    config = eval_config_from_options(progress=not quiet, **opts)
    lm = load_model(
        resolve_source(model, base_model=base_model, gguf_file=gguf_file), device=device
    )
    ref = load_model(reference, device=device).model if reference else None
    report = evaluate(lm.model, lm.tokenizer, config, reference=ref)
    if samples:
        write_samples(report, samples)
    click.echo(format_report_table(report), err=as_json)
    if as_json:
        click.echo(report_json(report))
