"""Reduced precision: imagined rollouts, and a TD-MPC2 update's forward, under ``torch.autocast``.

A plan only ranks candidate action sequences, so its rollouts tolerate bfloat16 matmuls, which
run several times faster where the hardware has bfloat16 matrix units (GPUs with tensor cores;
Intel CPUs with AMX, Sapphire Rapids and later). The estimates come back as float32 and the
parameters stay float32. An update (TD-MPC2's ``update_dtype``) runs its loss's forward under
autocast and its backward and optimiser step as usual, as mixed-precision training does: the
parameters and their gradients stay float32. On CPUs without such units bfloat16 is slower, so
float32 is the default.
"""
from __future__ import annotations

import contextlib

import torch

#: Accepted names, and the autocast type each one means (None: no autocast).
AUTOCAST_DTYPES = {"float32": None, "bfloat16": torch.bfloat16}


def autocast_dtype(name: str, owner: str, setting: str = "planning_dtype") -> torch.dtype | None:
    """The autocast type of a ``planning_dtype`` (or other ``setting``) value; a ValueError naming ``owner`` otherwise."""
    if not isinstance(name, str) or name not in AUTOCAST_DTYPES:
        raise ValueError(f"{owner}: {setting} must be one of {sorted(AUTOCAST_DTYPES)}; got {name!r}")
    return AUTOCAST_DTYPES[name]


def autocast_to(dtype: torch.dtype | None, device: torch.device) -> contextlib.AbstractContextManager:
    """``torch.autocast`` to ``dtype`` on ``device``'s type, or a no-op context for None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)
