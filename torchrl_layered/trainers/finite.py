"""Finite-state checks: a run whose state goes NaN or infinite stops with one line instead of training on.

After each learning step the trainer calls `check_finite`; a checkpoint is never written of
non-finite state (`first_nonfinite` is also what `save_checkpoint` checks).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from torchrl_layered.hierarchy import Hierarchy


class RunStoppedError(RuntimeError):
    """A run stopped because its state went non-finite or a level refused its data; the message is one line."""


def first_nonfinite(tree: Any, prefix: str = "") -> str | None:
    """The dotted key of the first floating tensor holding a NaN or an infinity in a nested state, or None.

    Walks mappings, lists and tuples (extra states such as optimiser states included) and
    looks at floating and complex tensors only.
    """
    tensors = list(_floating_tensors(tree, prefix))
    if not tensors:
        return None
    if bool(torch.stack([t.isfinite().all() for _, t in tensors]).all()):
        return None
    return next(key for key, t in tensors if not bool(t.isfinite().all()))


def _floating_tensors(tree: Any, prefix: str):
    if isinstance(tree, torch.Tensor):
        if tree.is_floating_point() or tree.is_complex():
            yield prefix.rstrip("."), tree.detach()
    elif isinstance(tree, dict):
        for key, value in tree.items():
            yield from _floating_tensors(value, f"{prefix}{key}.")
    elif isinstance(tree, (list, tuple)):
        for i, value in enumerate(tree):
            yield from _floating_tensors(value, f"{prefix}{i}.")


def check_finite(hierarchy: Hierarchy, frames: int, last_checkpoint: Path | None) -> None:
    """Raises `RunStoppedError` naming the level and the entry if a level's parameters, buffers or extra state went non-finite."""
    for k, level in enumerate(hierarchy.levels):
        bad = first_nonfinite(level.state_dict())
        if bad is not None:
            raise RunStoppedError(
                f"level {k} ({type(level).__name__}) state went non-finite at frame {frames} ({bad}); "
                f"{stopped(last_checkpoint)}"
            )


def stopped(last_checkpoint: Path | None) -> str:
    """The end of a stopped run's message: where to continue from."""
    return f"the run stopped, last good checkpoint: {last_checkpoint if last_checkpoint is not None else 'none'}"
