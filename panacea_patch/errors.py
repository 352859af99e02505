"""Exceptions that carry a fix for the user, and the exit code the CLI maps them to."""

from __future__ import annotations


class PanaceaError(Exception):
    """Base error. ``str(err)`` names the problem and, when known, the fix."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message.rstrip(".")
        self.hint = hint
        super().__init__(self.__str__())

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}. Fix: {self.hint}"
        return f"{self.message}."


class InputError(PanaceaError):
    """Bad usage or bad input: the user can fix it by changing what they pass (exit 2)."""

    exit_code = 2


class RuntimeFailure(PanaceaError):
    """The run itself failed (NaN, network, out of memory...) (exit 1)."""

    exit_code = 1
