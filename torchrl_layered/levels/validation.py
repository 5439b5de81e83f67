"""Checks on what a level receives, made before anything is stored or counted.

A level's door is `Level.observe`: its semi-MDP transitions are checked there against the
level's specs (keys, shapes, dtypes) and for finite values, so that a batch of another env,
a NaN reward or an inf observation never reaches a buffer, a counter or a model.
"""
from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Literal

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey

from torchrl_layered.errors import InvalidDataError
from torchrl_layered.keys import NEXT_DURATION

if TYPE_CHECKING:
    from torchrl_layered.levels.base import Level

#: What a level does with transitions holding non-finite values: refuse them all, or drop those rows.
NonFinitePolicy = Literal["raise", "drop"]
NONFINITE_POLICIES = ("raise", "drop")

__all__ = ["InvalidDataError", "NONFINITE_POLICIES", "NonFinitePolicy", "as_slice", "checked_transitions"]


def as_slice(value: slice | tuple[int, int] | list[int] | None, name: str) -> slice | None:
    """A level argument naming observation entries: a ``slice`` or a ``(start, stop)`` pair of ints (or ``None``)."""
    if value is None or isinstance(value, slice):
        return value
    if (isinstance(value, (tuple, list)) and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        return slice(*value)
    raise TypeError(f"{name} must be a slice, a (start, stop) pair of ints or None; got {value!r}")


def _name(level: Level) -> str:
    where = f" (level {level.state_index})" if level.state_index is not None else ""
    return f"{type(level).__name__}{where}"


def _check_entry(level: Level, transitions: TensorDictBase, key: NestedKey, spec) -> None:
    value = transitions.get(key, None)
    if value is None:
        raise InvalidDataError(
            f"{_name(level)}: its transitions lack {key!r}; build them with Hierarchy.transitions(batch) "
            "from a batch collected with the hierarchy's transform"
        )
    if spec is None:
        return
    expected = tuple(transitions.batch_size) + tuple(spec.shape)
    if tuple(value.shape) != expected:
        raise InvalidDataError(
            f"{_name(level)}: {key!r} has shape {tuple(value.shape)}, but the level's spec needs {expected} "
            f"({transitions.numel()} rows of {tuple(spec.shape)}); is the batch from another env or hierarchy?"
        )
    if value.dtype != spec.dtype:
        raise InvalidDataError(
            f"{_name(level)}: {key!r} has dtype {value.dtype}, but the level's spec says {spec.dtype}; "
            "is the batch from another env or hierarchy?"
        )


def checked_transitions(level: Level, transitions: TensorDictBase) -> TensorDictBase:
    """``transitions`` once they fit ``level``'s specs and hold only finite values.

    Shapes and dtypes are checked against the level's observation, action and input specs;
    a mismatch raises `InvalidDataError`. Rows with a non-finite observation, level input,
    action or reward raise too (naming the key and the number of rows), or are dropped with
    a warning when the level was built with ``on_nonfinite="drop"``.
    """
    specs = {
        "observation": level.observation_spec,
        ("next", "observation"): level.observation_spec,
        "action": level.action_spec,
        ("next", "reward"): None,
        NEXT_DURATION: None,
        ("next", "terminated"): None,
        ("next", "done"): None,
    }
    if not level.is_top:
        specs["level_input"] = level.get_input_spec()
    for key, spec in specs.items():
        _check_entry(level, transitions, key, spec)
    reward = transitions.get(("next", "reward"))
    if not reward.is_floating_point() or tuple(reward.shape) != (transitions.numel(), 1):
        raise InvalidDataError(
            f"{_name(level)}: ('next', 'reward') must be a float tensor of shape {(transitions.numel(), 1)}; "
            f"got {reward.dtype} {tuple(reward.shape)}"
        )
    bad = torch.zeros(transitions.numel(), dtype=torch.bool, device=reward.device)
    found = []
    for key in specs:
        value = transitions.get(key)
        if not value.is_floating_point():
            continue
        rows = ~torch.isfinite(value.reshape(value.shape[0], -1)).all(-1)
        count = int(rows.sum())
        if count:
            found.append(f"{count} with a non-finite {key!r}")
            bad |= rows.to(bad.device)
    if not found:
        return transitions
    message = f"{_name(level)}: {int(bad.sum())} of {transitions.numel()} transitions are bad ({', '.join(found)})"
    if level.on_nonfinite == "raise":
        raise InvalidDataError(
            f"{message}; nothing was stored. Fix the env or its wrappers, or build the level with "
            "on_nonfinite='drop' to drop such rows with a warning"
        )
    warnings.warn(f"{message}; dropped them", RuntimeWarning, stacklevel=3)
    return transitions[~bad]
