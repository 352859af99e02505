"""``panacea-patch demo``: build the demo organism, attack it, patch it, print the table."""

from __future__ import annotations

import click

from .common import emit_json, handle_errors, setup_logging
from .options import output_options


@click.command("demo")
@click.option(
    "--fast", is_flag=True, help="Tiny organism and few steps (seconds; for CI and smoke tests)."
)
@click.option(
    "--poison-ratio",
    type=float,
    default=0.1,
    show_default=True,
    help="Share of harmful samples in the attack's 1000 fine-tuning samples.",
)
@click.option(
    "--variant",
    type=click.Choice(["full", "lora"]),
    default="full",
    show_default=True,
    help="Attack by full fine-tuning or by a LoRA adapter (r=32, alpha=4 on q/k/v).",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed of the organism and the patches."
)
@click.option(
    "--cache-dir",
    type=click.Path(),
    help="Where built organisms are cached "
    "(default: $PANACEA_ORGANISM_CACHE or ~/.cache/panacea-patch/organism).",
)
@click.option("--rebuild", is_flag=True, help="Retrain the organism even if it is cached.")
@output_options()
@handle_errors
def demo_cmd(
    fast: bool,
    poison_ratio: float,
    variant: str,
    seed: int,
    cache_dir: str | None,
    rebuild: bool,
    as_json: bool,
    quiet: bool,
    verbose: int,
) -> None:
    """Show the whole pipeline on a tiny model trained from scratch on CPU.

    Rows: the aligned model, the attacked model, and the attacked model patched with random
    noise, the closed form and Panacea at the same rho. HS = harmful score (% of held-out harmful
    prompts not refused), FA = accuracy on held-out arithmetic problems, KL = drift from the
    attacked model on benign prompts.
    """
    from panacea_patch.demo import run_demo

    setup_logging(verbose)
    report = run_demo(
        fast=fast,
        poison_ratio=poison_ratio,
        variant=variant,
        seed=seed,
        cache_dir=cache_dir,
        rebuild=rebuild,
        progress=not quiet,
    )
    click.echo(report.table(), err=as_json)
    if as_json:
        emit_json(report.to_dict())
