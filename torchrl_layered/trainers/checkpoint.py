"""Checkpoints of a training run: written atomically, read back with clear errors.

A checkpoint is a folder ``checkpoints/frames_<N>/`` holding ``state.pt`` (the hierarchy's
``state_dict``, whose level extra states carry optimisers and counters; the collector's frame
counter; the run's counters and curves; the RNG states) and, optionally, ``buffers/``: the
levels' TorchRL replay buffers saved with ``dumps``. It is written under a hidden temporary
name and renamed into place, so a crash mid-write never leaves a half checkpoint where
`find_checkpoint` looks.
"""
from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchrl.data import ReplayBuffer

from torchrl_layered.hierarchy import Hierarchy

#: Written into every checkpoint; a file without it is not one of ours.
FORMAT = "torchrl_layered.train/1"
STATE_FILE = "state.pt"
PREFIX = "frames_"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: missing, corrupt, or written by a different run."""


# ------------------------------------------------------------------ buffers
def hierarchy_buffers(hierarchy: Hierarchy) -> dict[str, ReplayBuffer]:
    """The TorchRL replay buffers the levels hold as attributes, named ``level{k}.{attribute}``."""
    buffers = {}
    for k, level in enumerate(hierarchy.levels):
        for attribute, value in vars(level).items():
            if isinstance(value, ReplayBuffer):
                buffers[f"level{k}.{attribute}"] = value
    return buffers


# ------------------------------------------------------------------ rng
def rng_state() -> dict[str, Any]:
    """The torch, CUDA, numpy and python RNG states, in types ``torch.load(weights_only=True)`` accepts."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restores what `rng_state` returned."""
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(_as_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuples(value):
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


# ------------------------------------------------------------------ write
def save_checkpoint(
    directory: Path,
    frames: int,
    state: dict[str, Any],
    buffers: dict[str, ReplayBuffer] | None = None,
    keep: int = 2,
) -> Path:
    """Writes ``state`` (and ``buffers``) to ``directory/frames_<frames>/`` atomically; returns that folder.

    Only the ``keep`` latest complete checkpoints in ``directory`` are kept.
    """
    directory.mkdir(parents=True, exist_ok=True)
    name = f"{PREFIX}{frames:010d}"
    tmp = directory / f".{name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    payload = {"format": FORMAT, **state, "buffers": sorted(buffers or {})}
    torch.save(payload, tmp / STATE_FILE)
    for buffer_name, buffer in (buffers or {}).items():
        (tmp / "buffers").mkdir(exist_ok=True)
        buffer.dumps(tmp / "buffers" / buffer_name)
    final = directory / name
    if final.exists():  # the same frame count again: swap, then drop the old one
        old = directory / f".{name}.old"
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old)
    else:
        tmp.rename(final)
    for stale in _complete_checkpoints(directory)[:-keep]:
        shutil.rmtree(stale)
    return final


def _complete_checkpoints(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.name.startswith(PREFIX) and (p / STATE_FILE).is_file())


# ------------------------------------------------------------------ read
def find_checkpoint(path: str | Path) -> Path:
    """The checkpoint folder meant by ``path``: a checkpoint, or the latest in a ``checkpoints/`` or run folder."""
    path = Path(path)
    if (path / STATE_FILE).is_file():
        return path
    if path.is_file() and path.name == STATE_FILE:
        return path.parent
    for candidate in (path, path / "checkpoints"):
        found = _complete_checkpoints(candidate)
        if found:
            return found[-1]
    raise CheckpointError(
        f"resume={path}: no checkpoint there; give a checkpoint folder (holding {STATE_FILE}), "
        "a checkpoints/ folder or a run folder"
    )


def read_checkpoint(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """Finds and loads a checkpoint (on the CPU); raises `CheckpointError` if it is unreadable or not ours."""
    folder = find_checkpoint(path)
    file = folder / STATE_FILE
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure to unpickle means the same thing to the user
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"resume: cannot read {file} ({reason}); the file is corrupt or truncated") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"resume: {file} is not a torchrl_layered.train checkpoint (format {FORMAT!r})")
    return folder, state


def restore_hierarchy(folder: Path, state: dict[str, Any], hierarchy: Hierarchy) -> None:
    """Loads the hierarchy's state (strictly) and, if the checkpoint has them, the levels' replay buffers."""
    try:
        hierarchy.load_state_dict(state["hierarchy"])
    except (RuntimeError, KeyError, ValueError, TypeError) as err:
        first = str(err).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:3])
        raise CheckpointError(f"resume: the checkpoint in {folder} does not fit this hierarchy: {detail}") from None
    buffers = hierarchy_buffers(hierarchy)
    for name in state.get("buffers", []):
        if name not in buffers:
            raise CheckpointError(
                f"resume: the checkpoint in {folder} has a replay buffer {name!r} this hierarchy lacks"
            )
        try:
            buffers[name].loads(folder / "buffers" / name)
        except Exception as err:  # noqa: BLE001
            raise CheckpointError(f"resume: cannot load replay buffer {name!r} from {folder} ({err})") from None
