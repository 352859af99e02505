"""Click options generated from a config dataclass, so the CLI mirrors the config exactly."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Literal, get_args, get_origin

import click


def output_options(*, verbose_help: str = "More logging on stderr.") -> Callable:
    """``--json``, ``-v/--verbose`` and ``-q/--quiet``, which the commands share."""

    def decorate(fn: Callable) -> Callable:
        fn = click.option(
            "-q", "--quiet", is_flag=True, help="No progress: neither bars nor log lines."
        )(fn)
        fn = click.option("-v", "--verbose", count=True, help=verbose_help)(fn)
        return click.option(
            "--json", "as_json", is_flag=True, help="Print one JSON object on stdout."
        )(fn)

    return decorate


config_file_option = click.option(
    "--config",
    "config_file",
    type=click.Path(),
    help="TOML or YAML file of options; flags override it.",
)


def _click_type(tp: Any) -> tuple[Any, bool]:
    """(click type, is_flag) for a field annotation."""
    args = [a for a in get_args(tp) if a is not type(None)]
    base = args[0] if get_origin(tp) is not Literal and args else tp
    if get_origin(base) is Literal:
        return click.Choice([str(a) for a in get_args(base)]), False
    if base is bool:
        return bool, True
    return {int: int, float: float, str: str}.get(base, str), False


def config_options(config_cls: Any, *, skip: frozenset[str] = frozenset()) -> Callable:
    """Decorator adding one option per config field (``--field-name``; bools get ``--no-``)."""

    def decorate(fn: Callable) -> Callable:
        for f, tp in reversed(config_cls.fields_with_types()):
            if f.name in skip:
                continue
            fn = _option(f, tp)(fn)
        return fn

    return decorate


def _option(f: dataclasses.Field, tp: Any) -> Callable:
    flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
    click_type, is_flag = _click_type(tp)
    help_text = f.metadata.get("help", "")
    if is_flag:
        return click.option(
            f"{flag}/--no-{flag[2:]}", f.name, default=f.default, show_default=True, help=help_text
        )
    return click.option(
        flag, f.name, type=click_type, default=f.default, show_default=True, help=help_text
    )


def explicit_values(ctx: click.Context, names: list[str]) -> dict[str, Any]:
    """The options the user actually typed (so they override a --config file)."""
    out = {}
    for name in names:
        src = ctx.get_parameter_source(name)
        if src is not None and src != click.core.ParameterSource.DEFAULT:
            out[name] = ctx.params[name]
    return out


def build_config(
    ctx: click.Context, config_cls: Any, config_file: str | None, *, table: str
) -> Any:
    """``config_cls`` from a config file (``[table]`` or top level), overridden by typed flags."""
    from panacea_patch.options import load_config_file

    names = [f.name for f in dataclasses.fields(config_cls)]
    values: dict[str, Any] = {}
    if config_file:
        values.update(load_config_file(config_file, table=table))
    values.update(explicit_values(ctx, names))
    return config_cls.from_mapping(values, origin=config_file or "options")
