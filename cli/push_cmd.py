"""``panacea-patch push DIR REPO``: publish an existing patch output to the Hugging Face Hub."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from .common import emit_json, handle_errors, setup_logging
from .options import output_options


@click.command("push")
@click.argument("directory", metavar="DIR", type=click.Path(file_okay=False, path_type=Path))
@click.argument("repo", metavar="REPO")
@click.option("--private", is_flag=True, help="Create the repo as private (if it does not exist).")
@click.option(
    "--revision", metavar="BRANCH", help="Branch to push to (created from main if missing)."
)
@click.option(
    "--create-pr", is_flag=True, help="Open a pull request against main instead of committing."
)
@click.option("--commit-message", metavar="MSG", help="Commit title (default: method and rho).")
@click.option(
    "--overwrite-readme",
    is_flag=True,
    help="Replace a README.md that panacea-patch did not write with the model card.",
)
@output_options()
@handle_errors
def push_cmd(
    directory: Path,
    repo: str,
    private: bool,
    revision: str | None,
    create_pr: bool,
    commit_message: str | None,
    overwrite_readme: bool,
    as_json: bool,
    verbose: int,
    quiet: bool,
) -> None:
    """Push the patch output DIR to the Hub model repo REPO (org/name), with its model card.

    The card (README.md) is refreshed from DIR/panacea_patch.json first. The token comes from
    HF_TOKEN or `hf auth login`; HF_ENDPOINT selects another Hub. Running the same command again
    after a failure completes the upload without sending finished files again.
    """
    from panacea_patch.publish import publish

    setup_logging(verbose)
    result = publish(
        directory,
        repo,
        private=private,
        revision=revision,
        create_pr=create_pr,
        commit_message=commit_message,
        overwrite_readme=overwrite_readme,
        progress=not quiet,
    )
    if as_json:
        emit_json(dataclasses.asdict(result))
    elif result.pr_url:
        click.echo(f"Opened pull request {result.pr_url}")
    else:
        click.echo(f"Pushed {result.commit_url}")
