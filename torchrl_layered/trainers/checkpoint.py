"""Checkpoints of a training run: written durably and atomically, checked against their checksums when read.

A checkpoint is a folder ``checkpoints/frames_<N>/`` holding ``state.pt`` (the hierarchy's
``state_dict``, whose level extra states carry optimisers and counters; the collector's frame
counter; the run's counters and curves; the RNG states), optionally ``buffers/`` (the levels'
TorchRL replay buffers saved with ``dumps``) and, written last, ``manifest.json``: the sha256
of every other file. It is written under a hidden temporary name, every file and folder is
fsynced, and only then is it renamed into place, so a crash mid-write never leaves a half
checkpoint where `find_checkpoint` looks; a flipped or truncated byte is refused on reading.
Non-finite state is never written, and pruning only ever deletes older complete checkpoints.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchrl.data import ReplayBuffer

from torchrl_layered.hierarchy import Hierarchy
from torchrl_layered.trainers.finite import first_nonfinite

#: Written into every checkpoint; a file without it is not one of ours.
FORMAT = "torchrl_layered.train/1"
STATE_FILE = "state.pt"
#: The checksums of a checkpoint's files, written last: a folder without it is incomplete.
MANIFEST_FILE = "manifest.json"
BUFFERS_DIR = "buffers"
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


# ------------------------------------------------------------------ names
def checkpoint_name(frames: int) -> str:
    """The folder name of the checkpoint at ``frames`` (zero-padded; wider past 10^10 frames)."""
    return f"{PREFIX}{frames:010d}"


def checkpoint_frames(path: Path) -> int | None:
    """The frame count in a checkpoint folder's name, or None if the name is not a checkpoint's."""
    digits = path.name[len(PREFIX):]
    return int(digits) if path.name.startswith(PREFIX) and digits.isdigit() else None


# ------------------------------------------------------------------ files
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    """Flushes a file's or a folder's contents to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _files(folder: Path) -> list[str]:
    """The files under ``folder`` (its manifest aside), as sorted relative POSIX paths."""
    manifest = folder / MANIFEST_FILE
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p != manifest)


def _seal(folder: Path, finite: bool) -> None:
    """Fsyncs every file and folder under ``folder``, then writes (and fsyncs) the manifest of their checksums."""
    files = _files(folder)
    for name in files:
        _fsync(folder / name)
    manifest = {"format": FORMAT, "finite": finite, "files": {name: _sha256(folder / name) for name in files}}
    with open(folder / MANIFEST_FILE, "w") as file:
        json.dump(manifest, file, indent=1)
        file.flush()
        os.fsync(file.fileno())
    for sub in sorted({p for p in folder.rglob("*") if p.is_dir()}, reverse=True):
        _fsync(sub)
    _fsync(folder)


def _read_manifest(folder: Path) -> dict[str, Any]:
    file = folder / MANIFEST_FILE
    if not file.is_file():
        raise CheckpointError(
            f"resume: {file} is missing; {folder} is an incomplete checkpoint, or one written before checksums"
        )
    try:
        manifest = json.loads(file.read_text())
        files = manifest["files"]
        if not isinstance(files, dict):
            raise TypeError("files is not a mapping")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"resume: {file} is corrupt ({err}); the checkpoint cannot be checked") from None
    return manifest


def verify_checkpoint(folder: Path) -> dict[str, Any]:
    """Checks every file of a checkpoint against its manifest; returns the manifest.

    Raises:
        CheckpointError: naming the file: the manifest is missing or corrupt, a file is
            missing, one is there that the manifest does not list, or a checksum differs.
    """
    manifest = _read_manifest(folder)
    expected, present = manifest["files"], set(_files(folder))
    for name in sorted(expected):
        if name not in present:
            raise CheckpointError(f"resume: {folder / name} is missing; the checkpoint is incomplete")
    extra = sorted(present - set(expected))
    if extra:
        raise CheckpointError(
            f"resume: {folder / extra[0]} is not listed in {folder / MANIFEST_FILE}; the checkpoint was changed after it was written"
        )
    for name in sorted(expected):
        if _sha256(folder / name) != expected[name]:
            raise CheckpointError(
                f"resume: {folder / name} does not match its sha256 in {MANIFEST_FILE}; the file is corrupt or truncated"
            )
    return manifest


def _is_good(folder: Path) -> bool:
    """A complete checkpoint of finite state, by its manifest (checksums are checked when it is read)."""
    try:
        return bool(_read_manifest(folder).get("finite"))
    except CheckpointError:
        return False


# ------------------------------------------------------------------ write
def clean_interrupted_saves(directory: Path) -> None:
    """Removes what an interrupted `save_checkpoint` left in ``directory``.

    A ``.frames_<N>.tmp`` folder is a checkpoint that was never renamed into place: removed.
    A ``.frames_<N>.old`` folder is a complete checkpoint being replaced by a new one at the
    same frame count: put back if the new one never arrived, removed otherwise.
    """
    if not directory.is_dir():
        return
    for path in sorted(directory.iterdir()):
        if not path.name.startswith(f".{PREFIX}"):
            continue
        if path.name.endswith(".old") and not (directory / path.name[1:-4]).exists():
            path.rename(directory / path.name[1:-4])
        elif path.name.endswith((".tmp", ".old")):
            shutil.rmtree(path)


def save_checkpoint(
    directory: Path,
    frames: int,
    state: dict[str, Any],
    buffers: dict[str, ReplayBuffer] | None = None,
    keep: int = 2,
) -> Path:
    """Writes ``state`` (and ``buffers``) to ``directory/frames_<frames>/`` durably and atomically; returns that folder.

    Only the ``keep`` latest good checkpoints in ``directory`` are kept; a folder that is not a
    complete checkpoint is never counted as one, nor deleted.

    Raises:
        CheckpointError: ``state`` holds a NaN or infinite floating tensor (named); nothing is written.
    """
    bad = first_nonfinite(state)
    if bad is not None:
        raise CheckpointError(f"checkpoint: refusing to write non-finite state ({bad}) to {directory}")
    directory.mkdir(parents=True, exist_ok=True)
    clean_interrupted_saves(directory)
    name = checkpoint_name(frames)
    tmp = directory / f".{name}.tmp"
    tmp.mkdir()
    payload = {"format": FORMAT, **state, "buffers": sorted(buffers or {})}
    torch.save(payload, tmp / STATE_FILE)
    for buffer_name, buffer in (buffers or {}).items():
        (tmp / BUFFERS_DIR).mkdir(exist_ok=True)
        buffer.dumps(tmp / BUFFERS_DIR / buffer_name)
    _seal(tmp, finite=True)
    final = directory / name
    if final.exists():  # the same frame count again: swap, then drop the old one
        old = directory / f".{name}.old"
        os.rename(final, old)
        os.rename(tmp, final)
        _fsync(directory)
        shutil.rmtree(old)
    else:
        os.rename(tmp, final)
    _fsync(directory)
    for stale in [p for p in _checkpoint_folders(directory) if _is_good(p)][:-keep]:
        shutil.rmtree(stale)
    return final


def _checkpoint_folders(directory: Path, *, orphans: bool = False) -> list[Path]:
    """The ``frames_<N>`` folders holding a state file, oldest (fewest frames) first.

    With ``orphans``, also a ``.frames_<N>.old`` whose replacement never arrived (a save
    interrupted mid-swap): a reader can use it without touching the folder.
    """
    if not directory.is_dir():
        return []

    def frames(path: Path) -> int | None:
        if orphans and path.name.startswith(".") and path.name.endswith(".old"):
            if not (directory / path.name[1:-4]).exists():
                return checkpoint_frames(directory / path.name[1:-4])
        return checkpoint_frames(path)

    found = [p for p in directory.iterdir() if frames(p) is not None and (p / STATE_FILE).is_file()]
    return sorted(found, key=frames)


# ------------------------------------------------------------------ read
def find_checkpoint(path: str | Path) -> Path:
    """The checkpoint folder meant by ``path``: a checkpoint, or the latest in a ``checkpoints/`` or run folder."""
    path = Path(path)
    if (path / STATE_FILE).is_file():
        return path
    if path.is_file() and path.name == STATE_FILE:
        return path.parent
    for candidate in (path, path / "checkpoints"):  # read only: a run that is still saving there is left alone
        found = _checkpoint_folders(candidate, orphans=True)
        if found:
            return found[-1]
    raise CheckpointError(
        f"resume={path}: no checkpoint there; give a checkpoint folder (holding {STATE_FILE}), "
        "a checkpoints/ folder or a run folder"
    )


def read_checkpoint(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """Finds a checkpoint, checks its files against their checksums and loads it (on the CPU).

    Raises:
        CheckpointError: naming the file: missing, corrupt, truncated or not ours.
    """
    folder = find_checkpoint(path)
    verify_checkpoint(folder)
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
    """Loads the hierarchy's state (strictly) and, if the checkpoint has them, the levels' replay buffers.

    The buffer files are checked against the manifest again right before loading.
    """
    try:
        hierarchy.load_state_dict(state["hierarchy"])
    except (RuntimeError, KeyError, ValueError, TypeError) as err:
        first = str(err).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:3])
        raise CheckpointError(f"resume: the checkpoint in {folder} does not fit this hierarchy: {detail}") from None
    buffers = hierarchy_buffers(hierarchy)
    if state.get("buffers"):
        verify_checkpoint(folder)
    for name in state.get("buffers", []):
        if name not in buffers:
            raise CheckpointError(
                f"resume: the checkpoint in {folder} has a replay buffer {name!r} this hierarchy lacks"
            )
        try:
            buffers[name].loads(folder / BUFFERS_DIR / name)
        except Exception as err:  # noqa: BLE001
            raise CheckpointError(f"resume: cannot load replay buffer {name!r} from {folder} ({err})") from None
