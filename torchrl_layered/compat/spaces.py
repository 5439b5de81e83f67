"""Gymnasium spaces and TorchRL specs, converted both ways (what a LayeredRL level declares vs. what we carry)."""
from __future__ import annotations

import numpy as np
import torch
from gymnasium import spaces
from torchrl.data import Bounded, Categorical, TensorSpec, Unbounded


def space_to_spec(space: spaces.Space | None) -> TensorSpec | None:
    """A ``Box`` as a float32 `Bounded` (or `Unbounded` if it has no finite bounds), a ``Discrete`` as a `Categorical`."""
    if space is None:
        return None
    if isinstance(space, spaces.Discrete):
        if space.start != 0:
            raise TypeError(f"a Discrete space must start at 0 to become a Categorical spec; got start={space.start}")
        return Categorical(int(space.n))
    if isinstance(space, spaces.Box):
        low, high = torch.as_tensor(space.low, dtype=torch.float32), torch.as_tensor(space.high, dtype=torch.float32)
        if not (torch.isfinite(low).all() and torch.isfinite(high).all()):
            return Unbounded(shape=space.shape, dtype=torch.float32)
        return Bounded(low, high, shape=space.shape, dtype=torch.float32)
    raise TypeError(f"only Box and Discrete spaces map to TorchRL specs; got {type(space).__name__}")


def spec_to_space(spec: TensorSpec) -> spaces.Space:
    """The gymnasium space of an (unbatched) spec: ``Discrete`` for a `Categorical`, else a float ``Box``."""
    if isinstance(spec, Categorical):
        return spaces.Discrete(int(spec.n))
    if isinstance(spec, Bounded):
        low = spec.space.low.expand(spec.shape).cpu().numpy().astype(np.float32)
        high = spec.space.high.expand(spec.shape).cpu().numpy().astype(np.float32)
        return spaces.Box(low, high, dtype=np.float32)
    return spaces.Box(-np.inf, np.inf, shape=tuple(spec.shape), dtype=np.float32)
