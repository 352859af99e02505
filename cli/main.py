"""``panacea-patch``: the command line. Thin: parse, build a config, call the library, print."""

from __future__ import annotations

import logging
from typing import Any

import click

from panacea_patch import __version__
from panacea_patch.config import PatchConfig

from .common import emit_json, handle_errors, setup_logging
from .options import build_config, config_file_option, config_options, output_options

log = logging.getLogger("panacea_patch")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="panacea-patch")
def main() -> None:
    """Restore the safety of fine-tuned LLMs by weight surgery (Panacea)."""


@main.command("patch")
@click.argument("source")
@click.option("--out", "-o", type=click.Path(), help="Output directory (must not exist).")
@config_file_option
@click.option("--dry-run", is_flag=True, help="List the target tensors and exit; writes nothing.")
@output_options()
@config_options(PatchConfig)
@click.pass_context
@handle_errors
def patch_cmd(
    ctx: click.Context,
    source: str,
    out: str | None,
    config_file: str | None,
    dry_run: bool,
    as_json: bool,
    verbose: int,
    quiet: bool,
    **_: Any,
) -> None:
    """Patch the fine-tuned checkpoint SOURCE (a directory or a Hub id org/name[@rev])."""
    from panacea_patch.api import patch

    setup_logging(verbose)
    cfg = build_config(ctx, PatchConfig, config_file, table="patch")
    if out is None and not dry_run:
        raise click.UsageError("--out DIR is required (or pass --dry-run)")
    result = patch(source, out, config=cfg, dry_run=dry_run, progress=not quiet)
    if result.reports is not None:
        from panacea_patch.evaluation import format_report_table

        before, after = result.reports
        # The table goes to stderr with --json so stdout stays one JSON object.
        click.echo(format_report_table(after, before=before), err=as_json)
    if as_json:
        emit_json(result.to_dict())
    elif dry_run:
        _print_targets(result)
    else:
        _print_summary(result)


from .inspect_cmd import inspect_cmd  # noqa: E402 - registered beside patch

main.add_command(inspect_cmd, "inspect")

from .push_cmd import push_cmd  # noqa: E402 - registered beside patch

main.add_command(push_cmd, "push")

from .finetune_cmd import finetune_cmd  # noqa: E402

main.add_command(finetune_cmd, "finetune")


def _print_targets(result: Any) -> None:
    width = max(len(t["name"]) for t in result.targets)
    for t in result.targets:
        shape = "x".join(map(str, t["shape"]))
        click.echo(f"{t['name']:<{width}}  {shape:>12}  {t['numel']:>12,}")
    click.echo(
        f"{result.num_target_tensors} target tensors, {result.num_target_params:,} parameters "
        f"(kernel backend: {result.backend})"
    )
    if result.plan:
        from panacea_patch.plan import format_plan

        for line in format_plan(result.plan):
            click.echo(line)


def _print_summary(result: Any) -> None:
    click.echo(f"Wrote {result.output}")
    click.echo(
        f"method={result.method} rho={result.rho:.6g} realized |w'-w|={result.realized_norm:.6g} "
        f"targets={result.num_target_tensors} ({result.num_target_params:,} params) "
        f"in {result.seconds:.1f}s"
    )
    if result.push:
        push = result.push
        click.echo(f"Pushed {push['pr_url'] or push['commit_url']}")


# Subcommands live in their own modules; imported last because they use this module's group.
from .eval_cmd import eval_cmd  # noqa: E402

main.add_command(eval_cmd, "eval")

from .demo_cmd import demo_cmd  # noqa: E402

main.add_command(demo_cmd, "demo")

if __name__ == "__main__":  # pragma: no cover
    main()
