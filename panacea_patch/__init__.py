"""panacea-patch: restore the safety of fine-tuned LLMs by weight surgery (Panacea)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["PatchConfig", "PatchResult", "__version__", "patch"]

if TYPE_CHECKING:
    from .api import patch
    from .config import PatchConfig
    from .result import PatchResult


def __getattr__(name: str) -> Any:
    # Lazy, so `import panacea_patch` (and `--help`) does not pay for torch and transformers.
    if name == "patch":
        from .api import patch

        return patch
    if name == "PatchResult":
        from .result import PatchResult

        return PatchResult
    if name == "PatchConfig":
        from .config import PatchConfig

        return PatchConfig
    raise AttributeError(f"module 'panacea_patch' has no attribute {name!r}")
