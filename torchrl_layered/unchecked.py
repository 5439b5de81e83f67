"""`unchecked_tensordict`: a TensorDict of entries the caller built, without per-entry checks.

The hierarchy builds a few small TensorDicts at every env step from tensors it made itself
with the right leading shape; checking each entry again costs more than the arithmetic around
it. Anything that comes from a user goes through ``TensorDict(...)`` and its checks instead.
"""
from __future__ import annotations

from typing import Mapping

import torch
from tensordict import TensorDict

_NEW_UNSAFE = getattr(TensorDict, "_new_unsafe", None)


def unchecked_tensordict(entries: Mapping[str, torch.Tensor], batch_size: torch.Size) -> TensorDict:
    """``TensorDict(entries, batch_size)`` without validating the entries (they must fit ``batch_size``)."""
    if _NEW_UNSAFE is None:  # a tensordict without the unchecked constructor: the checked one
        return TensorDict(dict(entries), batch_size=batch_size)
    return _NEW_UNSAFE(dict(entries), batch_size=torch.Size(batch_size))
