"""Target weights rebuilt from w₀ + ε while their module runs, instead of a persistent live copy.

Memory (issue 12): a persistent live copy of the target weights costs the compute dtype's bytes on
top of w₀ (stored dtype) and ε (fp32): for a bf16 checkpoint computed in fp32 that is 2× the
model's bytes, and it was what put Panacea at 6.4× the model. Here each eligible target (the
``weight`` of an ``nn.Linear`` that no other module shares) exists in the compute dtype only while
its module runs:

- before the module's forward, ``W = w₀ + ε`` is written into a fresh tensor by
  ``ops.project_apply_(ε, w₀, W, 1.0)``: the same op, and so the same bits, that the persistent
  path writes at each projection (with ``scale`` already applied to ε);
- autograd would keep W alive until the backward pass; a saved-tensor hook stores a small token
  instead and the backward rebuilds W the same way. ε does not change between a forward and the
  backward nodes that use W: the gradient hooks fold into ε only once the tensor's gradient is
  complete, that is after every node that saved W has run;
- between passes the parameter holds a zero-stride placeholder of the right shape, dtype and device
  (4 bytes), so code that asks for its shape, dtype or device keeps working.

While ε accumulates a gradient that is not yet applied (the closed form's batches), the live
weights are w₀ itself: ``at_w0`` holds those tensors, as ``restore`` did for the persistent copy.

Under gradient checkpointing (or any other saved-tensor hooks already active) no hook is pushed:
the outer hooks decide what is kept, and checkpointing keeps no W.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..kernels import ops

# ``PANACEA_LIVE_WEIGHTS=persistent`` keeps the old persistent live copy (for comparisons/tests).
ENV_VAR = "PANACEA_LIVE_WEIGHTS"


def enabled() -> bool:
    return os.environ.get(ENV_VAR, "on-demand").strip().lower() != "persistent"


def eligible_owners(
    model: torch.nn.Module, params: dict[str, torch.nn.Parameter]
) -> dict[str, torch.nn.Linear]:
    """Target tensors whose live weight can be rebuilt on demand, with the module that owns it.

    Only the ``weight`` of a plain ``nn.Linear``, owned by exactly one module, on a real device:
    its forward reads the weight once through ``F.linear``, which saves a transposed view of it.
    """
    ids = {id(p): n for n, p in params.items()}
    owners: dict[str, list[tuple[torch.nn.Module, str]]] = {}
    for _, module in model.named_modules(remove_duplicate=False):
        for attr, q in module._parameters.items():
            if q is not None and id(q) in ids:
                owners.setdefault(ids[id(q)], []).append((module, attr))
    out: dict[str, torch.nn.Linear] = {}
    for name, found in owners.items():
        p = params[name]
        if len(found) != 1:
            continue
        module, attr = found[0]
        linear = type(module) is torch.nn.Linear and attr == "weight"
        if linear and p.device.type != "meta" and p.numel() > 0:
            out[name] = module
    return out


def placeholder(p: torch.Tensor) -> torch.Tensor:
    """A zero-stride tensor with ``p``'s shape, dtype and device (one element of memory)."""
    return torch.zeros((), dtype=p.dtype, device=p.device).expand(p.shape)


@dataclass(frozen=True)
class _Token:
    name: str
    size: tuple[int, ...]
    stride: tuple[int, ...]
    offset: int


class OnDemandWeights:
    """Installs the per-module rebuild for the tensors in ``owners`` (see the module docstring).

    ``state`` provides ``params``, ``w0`` and ``eps`` dicts by tensor name. The parameters must
    already hold placeholders (``PerturbationState`` frees them as it builds w₀ and ε).
    """

    def __init__(self, state: Any, owners: dict[str, torch.nn.Linear]) -> None:
        self.state = state
        self.names = list(owners)
        self.dtypes = {n: state.params[n].dtype for n in owners}
        self.at_w0: set[str] = set(owners)
        self._live: dict[int, str] = {}  # storage address -> tensor name, while its module runs
        self._modules: dict[int, tuple[torch.nn.Module, list[str], Any]] = {}
        for name, module in owners.items():
            entry = self._modules.get(id(module))
            if entry is None:
                prev = module.__dict__.get("forward")
                entry = (module, [], prev)
                self._modules[id(module)] = entry
                module.forward = self._wrap(module, entry[1])  # type: ignore[method-assign]
            entry[1].append(name)

    # --- rebuilding -------------------------------------------------------------------------

    def materialize(self, name: str) -> torch.Tensor:
        """The live weight of ``name`` in the compute dtype: w₀ in ``at_w0``, else w₀ + ε."""
        w0, eps = self.state.w0[name], self.state.eps[name]
        dtype = self.dtypes[name]
        if name in self.at_w0:
            return w0.to(device=eps.device, dtype=dtype, copy=True)
        if w0.device != eps.device:
            w0 = w0.to(eps.device, non_blocking=True)
        out = torch.empty(eps.shape, dtype=dtype, device=eps.device)
        ops.project_apply_(eps, w0, out, 1.0)
        return out

    def _wrap(self, module: torch.nn.Module, names: list[str]) -> Callable[..., Any]:
        inner = module.forward
        params = self.state.params

        def forward(*args: Any, **kwargs: Any) -> Any:
            addresses = []
            for n in names:
                w = self.materialize(n)
                params[n].data = w
                addresses.append(w.untyped_storage().data_ptr())
                self._live[addresses[-1]] = n
            push = (
                torch.is_grad_enabled()
                and torch._C._autograd._top_saved_tensors_default_hooks(False) is None
            )
            if push:
                torch._C._autograd._push_saved_tensors_default_hooks(self._pack, self._unpack)
            try:
                return inner(*args, **kwargs)
            finally:
                if push:
                    torch._C._autograd._pop_saved_tensors_default_hooks()
                for n, address in zip(names, addresses, strict=True):
                    params[n].data = placeholder(params[n])
                    self._live.pop(address, None)

        return forward

    def _pack(self, t: torch.Tensor) -> Any:
        if not self._live or t.device.type == "meta":
            return t
        name = self._live.get(t.untyped_storage().data_ptr())
        if name is None:
            return t
        return _Token(name, tuple(t.shape), tuple(t.stride()), t.storage_offset())

    def _unpack(self, x: Any) -> torch.Tensor:
        if not isinstance(x, _Token):
            return x
        return self.materialize(x.name).as_strided(x.size, x.stride, x.offset)

    # --- lifecycle --------------------------------------------------------------------------

    def persist(self) -> None:
        """Write persistent live weights back and remove the rebuild (for evaluation)."""
        for module, names, prev in self._modules.values():
            for n in names:
                self.state.params[n].data = self.materialize(n)
            if prev is None:
                del module.forward
            else:
                module.forward = prev  # type: ignore[method-assign]
        self._modules.clear()
        self.names = []
