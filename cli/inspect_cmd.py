"""``panacea-patch inspect``: the layer-wise safety report of a patched checkpoint."""

from __future__ import annotations

import click

from .common import emit_json, handle_errors


@click.command("inspect")
@click.argument("patched")
@click.option(
    "--reference",
    "-r",
    required=True,
    help="The checkpoint PATCHED was made from (directory or Hub id org/name[@rev]).",
)
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False),
    help="Also draw a PNG bar chart by layer and module type (needs panacea-patch[plots]).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@click.option(
    "--top",
    type=click.IntRange(min=0),
    default=10,
    show_default=True,
    help="List the N tensors with the largest share of |eps|^2 (0: none). Text output only.",
)
@handle_errors
def inspect_cmd(
    patched: str, reference: str, plot_path: str | None, as_json: bool, top: int
) -> None:
    """Show where the perturbation in PATCHED lies, per layer and module, against --reference.

    Reads only the two checkpoints, one tensor pair at a time. The harmful-gradient share is
    shown when PATCHED has a panacea_patch.json that records it.
    """
    # Imported here so `panacea-patch --help` does not pay for torch.
    from panacea_patch.inspect import format_report, inspect_patch, plot_report

    report = inspect_patch(patched, reference)
    if plot_path:
        plot_report(report, plot_path)
    if as_json:
        emit_json({**report.to_dict(), "plot": plot_path})
        return
    click.echo(format_report(report, top=top))
    if plot_path:
        click.echo(f"plot: {plot_path}")
