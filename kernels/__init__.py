"""Fused kernels for the layerwise perturbation update (shipped as ``panacea_patch.kernels``).

Use them through the dispatch point only::

    from panacea_patch.kernels import ops

    sumsq = ops.pgd_step_(eps, grad, step)

``ops`` picks the Triton kernels on CUDA and the pure-torch references (``reference``) elsewhere;
see ``ops`` for the ``PANACEA_KERNELS`` override. Importing this package does not import Triton.
"""

from __future__ import annotations

from . import ops, reference

__all__ = ["ops", "reference"]
