"""Training progress on stderr and the Trainer's logs through ``logging``, never on stdout."""

from __future__ import annotations

import logging
from typing import Any

from transformers import TrainerCallback

from ..progress import progress_bar

log = logging.getLogger("panacea_patch")

_POSTFIX = {"loss": "loss", "panacea/h": "h", "panacea/h_eps": "h_eps"}


class LogCallback(TrainerCallback):
    """A progress bar on stderr (unless ``progress=False``) and each log line at INFO level."""

    def __init__(self, *, progress: bool) -> None:
        self.progress = progress
        self.bar: Any = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.bar = progress_bar(
            total=state.max_steps, desc="fine-tuning", unit="step", enabled=self.progress
        )

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        if not logs:
            return
        log.info("step %d: %s", state.global_step, _format(logs))
        if self.bar is not None:
            shown = {
                short: f"{logs[k]:.3g}" for k, short in _POSTFIX.items() if _number(logs.get(k))
            }
            if shown:
                self.bar.set_postfix(**shown)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _format(logs: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.4g}" if _number(v) else f"{k}={v}" for k, v in logs.items())
