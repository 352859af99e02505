"""``PatchResult``: what one patch run did, shared by the job and the Python API."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class PatchResult:
    """What a patch run did. ``to_dict()`` is the CLI's ``--json`` output."""

    output: str | None
    method: str
    rho: float | None
    realized_norm: float | None
    num_target_tensors: int
    num_target_params: int
    seconds: float
    dry_run: bool = False
    rho_rel: float | None = None
    target_weight_norm: float | None = None
    seed: int = 0
    source: dict[str, Any] = field(default_factory=dict)
    targets: list[dict[str, Any]] = field(default_factory=list)
    layers: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    optimization: dict[str, Any] = field(default_factory=dict)
    push: dict[str, Any] | None = None
    backend: str = ""
    # The random method's noise source ("torch-mt19937+numpy-philox4x64" on CPU,
    # "triton-philox4x32" on GPU): the same seed reproduces the bytes on the same backend only.
    noise_generator: str | None = None
    # Problems found during the run that did not stop it (also logged and in panacea_patch.json).
    warnings: list[str] = field(default_factory=list)
    # The damage guard's figures (held-out benign KL, refusal loss before/after, the limit,
    # whether it tripped, a rho that would fit); None for methods that load no model.
    guard: dict[str, Any] | None = None
    # How the default rho was chosen (None when --rho or --max-kl set it).
    rho_rule: str | None = None
    # --dry-run's plan (panacea_patch/plan.py): bytes per device, passes and tokens, device map.
    plan: dict[str, Any] | None = None
    # (before, after) EvalReport objects when --eval ran; summarized in ``metrics``, not in JSON.
    reports: Any = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("reports")
        return data
