"""``panacea-patch finetune``: the paper's in-fine-tuning Panacea (fine-tune, then ship w + ε)."""

from __future__ import annotations

from typing import Any

import click

from panacea_patch.training.config import FinetuneConfig

from .common import emit_json, handle_errors, setup_logging
from .options import build_config, config_file_option, config_options, output_options

_EPILOG = """\b
The defaults are the paper's settings (Panacea, arXiv 2501.18100): rho=1, lambda=0.001,
lr 2e-5, LoRA r=32 alpha=4 on q/k/v, 20 epochs, batch size 10, h capped at 5.

\b
Each step the update gradient is grad f(w) - lambda*(grad h(w+eps) - grad h(w)), with
eps = rho*grad h(w)/|grad h(w)| on one harmful batch; after training eps is recomputed on
--final-eps-examples harmful examples (or, with --last-step-eps, the last step's is kept) and
the output is w + eps.

\b
Examples:
  panacea-patch finetune org/base --train data.jsonl --out out/
  panacea-patch finetune org/base --train data.jsonl --out sft/ --no-panacea --poison-ratio 0.1
"""


@click.command("finetune", epilog=_EPILOG)
@click.argument("base")
@click.option(
    "--out", "-o", type=click.Path(), required=True, help="Output directory (must not exist)."
)
@click.option(
    "--lora/--full",
    "lora",
    default=True,
    show_default=True,
    help="Ship a PEFT LoRA adapter (paper: r=32, alpha=4 on q/k/v) or the full model.",
)
@config_file_option
@output_options(verbose_help="More logging on stderr (-v: every step's figures).")
@config_options(FinetuneConfig, skip=frozenset({"lora"}))
@click.pass_context
@handle_errors
def finetune_cmd(
    ctx: click.Context,
    base: str,
    out: str,
    config_file: str | None,
    as_json: bool,
    verbose: int,
    quiet: bool,
    **_: Any,
) -> None:
    """Fine-tune BASE (a directory or a Hub id org/name[@rev]) on --train data with Panacea."""
    from panacea_patch.training import finetune

    setup_logging(verbose)
    cfg = build_config(ctx, FinetuneConfig, config_file, table="finetune")
    result = finetune(base, out, config=cfg, progress=not quiet)
    if as_json:
        emit_json(result.to_dict())
    else:
        _print_summary(result)


def _print_summary(result: Any) -> None:
    click.echo(f"Wrote {result.output} ({result.output_kind})")
    line = f"method={result.method} steps={result.steps} train_loss={_fmt(result.train_loss)}"
    last = result.last_steps
    if last:
        line += f" h={_fmt(last.get('panacea/h'))} h(w+eps)={_fmt(last.get('panacea/h_eps'))}"
    if result.eps_norm is not None:
        line += f" |eps|={_fmt(result.eps_norm)} ({result.final_eps.get('mode')})"
    click.echo(f"{line} in {result.seconds:.1f}s")
    metrics = result.metrics or {}
    for key in ("harmful_score", "task_accuracy"):
        before = (metrics.get("before") or {}).get(key)
        after = (metrics.get("after") or {}).get(key)
        if before is not None or after is not None:
            click.echo(f"{key}: BASE {_fmt(before)} -> output {_fmt(after)}")
    if result.push:
        click.echo(f"Pushed {result.push.get('pr_url') or result.push.get('commit_url')}")


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) else "-"
