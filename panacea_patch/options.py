"""The options ``patch`` and ``finetune`` share, declared once: ``opt`` and the shared fields.

Both config dataclasses (:class:`panacea_patch.config.PatchConfig` and
:class:`panacea_patch.training.config.FinetuneConfig`) declare a shared option as
``device: Device = shared("device")``: the default, the description and the group live here, so
the two commands, their generated CLI flags (``cli/options.py``) and ``examples/*.toml`` cannot
drift apart. ``{what}`` in a description names the model the command reads ("the source" for
``patch``, "BASE" for ``finetune``).
"""

from __future__ import annotations

import dataclasses
import textwrap
from dataclasses import field
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

from .errors import InputError

Device = Literal["auto", "cpu", "cuda"]
_Config = TypeVar("_Config", bound="ConfigFields")


def opt(default: Any, help: str, *, group: str = "general", flag: str | None = None) -> Any:
    """A config field with its description (shown by ``--help`` and in examples/*.toml)."""
    meta = {"help": help, "group": group}
    if flag:
        meta["flag"] = flag
    return field(default=default, metadata=meta)


# name -> (default, description, group); the annotation stays in each config class.
SHARED: dict[str, tuple[Any, str, str]] = {
    # --- method
    "h_max": (5.0, "Cap on the harmful loss h: no gradient flows above it (paper: 5).", "method"),
    # --- data
    "harmful": (
        "builtin:harmful",
        "Harmful (prompt, harmful response) pairs for h, the loss Panacea raises: a "
        ".jsonl/.json/.csv/.parquet file, hf:org/name[:config][@split], or builtin:harmful. Its "
        "'optimize' half is used; --eval scores the 'evaluate' half.",
        "data",
    ),
    "prompt_field": (None, "Field name of the prompt in data files.", "data"),
    "response_field": (None, "Field name of the response in data files.", "data"),
    "max_length": (256, "Maximum tokens per example (prompt + response).", "data"),
    # --- compute
    "device": ("auto", "Compute device: auto (cuda if available), cpu or cuda.", "compute"),
    "gradient_checkpointing": (False, "Trade compute for activation memory.", "compute"),
    # --- checkpoint
    "revision": (None, "Hub revision (branch, tag or commit) of {what}.", "checkpoint"),
    "allow_pickle": (
        False,
        "Accept pickle (*.bin) weights for {what}. Only for sources you trust.",
        "checkpoint",
    ),
    "trust_remote_code": (
        False,
        "Allow model code from {what} to run. Only for sources you trust.",
        "checkpoint",
    ),
    "overwrite": (False, "Replace an existing output directory.", "checkpoint"),
    # --- evaluation
    "eval": (
        False,
        "Evaluate safety and utility of {what} before and of the output after.",
        "eval",
    ),
    "judge": ("keyword", "Safety judge: keyword, model:<id>, generative:<id>.", "eval"),
    "max_new_tokens": (48, "Tokens generated per prompt during evaluation.", "eval"),
    # --- Hub
    "push_to_hub": (None, "Push the output to this Hub repo (org/name).", "hub"),
    "private": (False, "Create the Hub repo as private.", "hub"),
    "hub_revision": (None, "Branch to push to (created if missing).", "hub"),
    "create_pr": (False, "Open a pull request instead of pushing to the branch.", "hub"),
    "commit_message": (None, "Commit message for the push.", "hub"),
    # --- output
    "progress_interval": (
        None,
        "When stderr is not a terminal, write a progress line at most every this many seconds "
        "(default: $PANACEA_PATCH_PROGRESS_INTERVAL, else 30). On a terminal progress bars are "
        "drawn instead; -q silences both.",
        "output",
    ),
}


def shared(name: str, *, what: str = "the source") -> Any:
    """The field of the shared option ``name`` (declare it under the same name)."""
    default, text, group = SHARED[name]
    meta = {"help": text.format(what=what), "group": group, "shared": name}
    return field(default=default, metadata=meta)


class ConfigFields:
    """What both config dataclasses do with their fields: dicts, typed fields, config files."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def fields_with_types(cls) -> list[tuple[dataclasses.Field, Any]]:
        """(field, resolved annotation) pairs, as ``cli.options.config_options`` expects."""
        hints = get_type_hints(cls)
        return [(f, hints[f.name]) for f in dataclasses.fields(cls)]  # type: ignore[arg-type]

    @classmethod
    def from_mapping(
        cls: type[_Config], values: dict[str, Any], *, origin: str = "config"
    ) -> _Config:
        """Build from a dict (config file), rejecting unknown keys with the valid ones named."""
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        clean = {k.replace("-", "_"): v for k, v in values.items()}
        unknown = sorted(set(clean) - known)
        if unknown:
            raise InputError(
                f"{origin}: unknown option(s) {', '.join(unknown)}",
                hint=f"valid options are: {', '.join(sorted(known))}",
            )
        for f, tp in cls.fields_with_types():
            if f.name in clean:
                clean[f.name] = _coerce(clean[f.name], tp, f.name, origin)
        return cls(**clean)


def _coerce(value: Any, tp: Any, name: str, origin: str) -> Any:
    """Light type checking for config-file values, with messages naming the option."""
    args = [a for a in get_args(tp) if a is not type(None)]
    if value is None:
        return None
    if get_origin(tp) is Literal or (args and get_origin(args[0]) is Literal):
        choices = get_args(tp) if get_origin(tp) is Literal else get_args(args[0])
        if value not in choices:
            raise InputError(
                f"{origin}: {name} must be one of {', '.join(map(str, choices))}, got {value!r}"
            )
        return value
    base = args[0] if args else tp
    if base is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if base is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if base is bool and isinstance(value, bool):
        return value
    if base is str and isinstance(value, str):
        return value
    raise InputError(f"{origin}: {name} must be a {base.__name__}, got {value!r}")


def load_config_file(path: str | Path, *, table: str = "patch") -> dict[str, Any]:
    """Read a TOML or YAML config file into a dict (validated later by ``from_mapping``).

    The options may sit at top level or under a ``[table]`` (``[patch]``, ``[finetune]``).
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"config file {p} does not exist", hint="check the --config path")
    text = p.read_text()
    try:
        if p.suffix == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib  # type: ignore[no-redef]
            data = tomllib.loads(text)
        elif p.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            raise InputError(f"config file {p} must end in .toml, .yaml or .yml")
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"cannot parse config file {p}: {exc}") from None
    if not isinstance(data, dict):
        raise InputError(f"config file {p} must hold a table of options")
    return data.get(table, data) if isinstance(data.get(table), dict) else data


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


def example_toml(config_cls: Any, command: str, model: str) -> str:
    """The text of ``examples/<command>.toml``: every option, its default and its description.

    Options whose default is None are written commented out (TOML has no null).
    """
    lines = [
        f"# panacea-patch configuration: every option of `panacea-patch {command}`, with its"
        " default.",
        f"# Use with: panacea-patch {command} {model} --out DIR --config examples/{command}.toml",
        "# Command-line flags override values from this file. YAML files with the same keys work too.",
        "",
    ]
    group = None
    for f in dataclasses.fields(config_cls):
        if f.metadata["group"] != group:
            group = f.metadata["group"]
            lines += ["", f"# --- {group} " + "-" * (60 - len(group))]
        for chunk in textwrap.wrap(f.metadata["help"], 94) or [""]:
            lines.append(f"# {chunk}")
        if f.default is None:
            lines.append(f"# {f.name} =   (not set by default)")
        else:
            lines.append(f"{f.name} = {_toml_value(f.default)}")
    return "\n".join(lines).strip() + "\n"


def hub_options(cfg: Any) -> dict[str, Any]:
    """The shared Hub options of a config, as ``publish`` and ``push_folder`` take them."""
    return {
        "private": cfg.private,
        "revision": cfg.hub_revision,
        "create_pr": cfg.create_pr,
        "commit_message": cfg.commit_message,
    }


def eval_config(cfg: Any, *, progress: bool, **extra: Any) -> Any:
    """The :class:`~panacea_patch.evaluation.EvalConfig` of a config's shared eval options."""
    from .evaluation import EvalConfig

    return EvalConfig(
        judge=cfg.judge,
        max_new_tokens=cfg.max_new_tokens,
        seed=cfg.seed,
        progress=progress,
        allow_pickle=cfg.allow_pickle,
        **extra,
    )
