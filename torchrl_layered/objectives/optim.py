"""`adam`: `torch.optim.Adam` on its fused kernels, the levels' optimiser.

The default Adam on CPU loops over the parameters in Python (torch picks foreach or fused
kernels by default only on CUDA). The small networks of a level have many small tensors, so
that loop dominates a step: fused Adam updates them all in one pass, about 3x faster per step
on CPU (a planner's 5-member ensemble: 1.04 ms per step with the loop, 0.25 ms fused;
`benchmarks/results/adam.md`). Same update rule; where torch has no fused kernel for the
parameters (a device or dtype without one), the foreach path, then the loop, is used.
"""
from __future__ import annotations

from typing import Any, Iterable

import torch


def adam(params: Iterable[torch.Tensor] | Iterable[dict[str, Any]], **kwargs: Any) -> torch.optim.Adam:
    """``torch.optim.Adam(params, **kwargs)`` with ``fused=True`` where torch supports it for ``params``."""
    params = list(params)
    for fast in ({"fused": True}, {"foreach": True}):
        try:
            return torch.optim.Adam(params, **fast, **kwargs)
        except (RuntimeError, TypeError, ValueError):
            continue
    return torch.optim.Adam(params, **kwargs)
