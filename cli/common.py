"""Helpers shared by the CLI commands: logging setup, JSON output, error → exit-code mapping."""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

import click

from panacea_patch.errors import PanaceaError


def setup_logging(verbose: int) -> None:
    level = logging.WARNING - 10 * verbose
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    root = logging.getLogger("panacea_patch")
    root.handlers[:] = [handler]
    root.setLevel(max(level, logging.DEBUG))
    # Our own progress bars and messages are enough; keep transformers' quiet unless asked.
    if "transformers" not in sys.modules:
        # Not imported yet, and commands such as `patch --method random` never import it: set
        # what it reads at import instead of paying ~1 s of startup to import it here.
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()  # transformers' own bars follow the hub's setting at import
        if verbose < 2:
            os.environ["TRANSFORMERS_VERBOSITY"] = "error"
        return
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        if verbose < 2:
            hf_logging.set_verbosity_error()
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass


def emit_json(obj: Any) -> None:
    """Exactly one JSON object on stdout."""
    click.echo(json.dumps(obj, indent=2, default=str))


def handle_errors(fn: Callable) -> Callable:
    """Map library errors to exit codes: 2 for bad input, 1 for runtime failures."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        as_json = bool(kwargs.get("as_json"))
        try:
            return fn(*args, **kwargs)
        except PanaceaError as exc:
            _fail(str(exc), exc.exit_code, as_json)
        except KeyboardInterrupt:
            _fail("interrupted; nothing was written", 130, as_json)
        except BaseException as exc:
            if type(exc).__name__ == "Terminated":
                _fail("terminated; nothing was written", 143, as_json)
            raise

    return wrapper


def _fail(message: str, code: int, as_json: bool) -> None:
    click.echo(f"Error: {message}", err=True)
    if as_json:
        emit_json({"error": message, "exit_code": code})
    sys.exit(code)
