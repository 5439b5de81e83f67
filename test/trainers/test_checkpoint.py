"""`trainers/checkpoint.py`: durable atomic checkpoint folders checked by checksums, the latest is found, RNG and buffers round-trip."""
from __future__ import annotations

import hashlib
import json
import math
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from tensordict import TensorDict
from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer

from torchrl_layered.trainers import checkpoint
from torchrl_layered.trainers.checkpoint import (
    MANIFEST_FILE,
    CheckpointError,
    find_checkpoint,
    read_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)


def reseal(folder: Path) -> None:
    """Rewrites a checkpoint's manifest for its files as they are now (to test what lies behind the checksums)."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST_FILE)
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    manifest["files"] = {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))


def small_buffer(n: int = 7) -> TensorDictReplayBuffer:
    buffer = TensorDictReplayBuffer(storage=LazyTensorStorage(50), batch_size=4)
    buffer.extend(TensorDict({"observation": torch.arange(2.0 * n).reshape(n, 2)}, [n]))
    return buffer


def test_only_the_latest_checkpoints_are_kept_and_the_latest_is_found(tmp_path):
    for frames in (10, 20, 30):
        save_checkpoint(tmp_path / "checkpoints", frames, {"progress": {"frames": frames}}, keep=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["frames_0000000020", "frames_0000000030"]
    assert find_checkpoint(tmp_path).name == "frames_0000000030"  # a run folder
    assert find_checkpoint(tmp_path / "checkpoints").name == "frames_0000000030"
    assert read_checkpoint(tmp_path / "checkpoints" / "frames_0000000020")[1]["progress"] == {"frames": 20}


def test_a_crash_while_writing_leaves_the_previous_checkpoint_as_the_latest(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, 10, {"progress": {"frames": 10}})

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path, 20, {"progress": {"frames": 20}})
    assert find_checkpoint(tmp_path).name == "frames_0000000010"
    assert not (tmp_path / "frames_0000000020").exists()


def test_saving_the_same_frame_count_again_replaces_the_checkpoint(tmp_path):
    save_checkpoint(tmp_path, 10, {"progress": {"frames": 1}})
    save_checkpoint(tmp_path, 10, {"progress": {"frames": 2}})
    assert read_checkpoint(tmp_path)[1]["progress"] == {"frames": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["frames_0000000010"]


def test_missing_and_foreign_checkpoints_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint there"):
        find_checkpoint(tmp_path)
    folder = save_checkpoint(tmp_path, 10, {})
    (folder / "state.pt").write_bytes(b"not a checkpoint")
    reseal(folder)
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        read_checkpoint(tmp_path)
    torch.save({"something": 1}, folder / "state.pt")
    reseal(folder)
    with pytest.raises(CheckpointError, match="not a torchrl_layered.train checkpoint"):
        read_checkpoint(tmp_path)


def test_rng_states_round_trip_through_a_checkpoint(tmp_path):
    save_checkpoint(tmp_path, 1, {"rng": rng_state()})
    expected = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(read_checkpoint(tmp_path)[1]["rng"])
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], got[0]) and np.array_equal(expected[1], got[1]) and expected[2] == got[2]


def test_replay_buffers_are_saved_with_dumps_beside_the_state(tmp_path):
    folder = save_checkpoint(tmp_path, 7, {}, buffers={"level0.replay_buffer": small_buffer()})
    assert read_checkpoint(tmp_path)[1]["buffers"] == ["level0.replay_buffer"]
    loaded = TensorDictReplayBuffer(storage=LazyTensorStorage(50), batch_size=4)
    loaded.loads(folder / "buffers" / "level0.replay_buffer")
    assert len(loaded) == 7
    assert torch.equal(loaded[:7]["observation"], torch.arange(14.0).reshape(7, 2))


# ------------------------------------------------------------------ checksums
def test_a_state_file_with_flipped_bytes_is_refused_naming_it(tmp_path):
    folder = save_checkpoint(tmp_path, 10, {"hierarchy": {"w": torch.zeros(1000)}})
    data = bytearray((folder / "state.pt").read_bytes())
    data[1000:1064] = bytes(b ^ 0xFF for b in data[1000:1064])  # still unpickles, with garbage weights
    (folder / "state.pt").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=rf"{folder / 'state.pt'} does not match its sha256 in manifest.json"):
        read_checkpoint(tmp_path)


def test_a_truncated_replay_buffer_file_is_refused_naming_it(tmp_path):
    folder = save_checkpoint(tmp_path, 7, {}, buffers={"level0.replay_buffer": small_buffer()})
    largest = max((p for p in (folder / "buffers").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    largest.write_bytes(largest.read_bytes()[: largest.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=rf"{largest} does not match its sha256"):
        read_checkpoint(tmp_path)


def test_a_missing_manifest_or_a_missing_or_extra_file_is_refused_naming_it(tmp_path):
    folder = save_checkpoint(tmp_path, 7, {}, buffers={"level0.replay_buffer": small_buffer()})
    extra = folder / "buffers" / "notes.txt"
    extra.write_text("added later")
    with pytest.raises(CheckpointError, match=rf"{extra} is not listed in .*manifest.json"):
        read_checkpoint(folder)
    extra.unlink()
    victim = next(p for p in (folder / "buffers").rglob("*") if p.is_file())
    victim.unlink()
    with pytest.raises(CheckpointError, match=rf"{victim} is missing; the checkpoint is incomplete"):
        read_checkpoint(folder)
    (folder / MANIFEST_FILE).unlink()
    with pytest.raises(CheckpointError, match=rf"{folder / MANIFEST_FILE} is missing"):
        read_checkpoint(folder)


# ------------------------------------------------------------------ durable writes
@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="names file descriptors through /proc")
def test_every_file_and_folder_is_fsynced_before_the_rename_into_place(tmp_path, monkeypatch):
    events = []
    fsync, rename = os.fsync, os.rename

    def recording_fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        fsync(fd)

    def recording_rename(src, dst):
        events.append(("rename", str(src)))
        rename(src, dst)

    monkeypatch.setattr(checkpoint.os, "fsync", recording_fsync)
    monkeypatch.setattr(checkpoint.os, "rename", recording_rename)
    folder = save_checkpoint(tmp_path, 7, {"w": torch.ones(3)}, buffers={"level0.replay_buffer": small_buffer()})
    tmp = str(tmp_path / ".frames_0000000007.tmp")
    renamed = events.index(("rename", tmp))
    synced = {path for kind, path in events[:renamed] if kind == "fsync"}
    written = {str(p).replace(str(folder), tmp) for p in [folder, *folder.rglob("*")]}
    assert written - synced == set()  # every file and folder, the manifest among them
    assert ("fsync", str(tmp_path)) in events[renamed:]  # the rename itself


def test_leftovers_of_an_interrupted_save_are_cleaned_up(tmp_path):
    save_checkpoint(tmp_path, 10, {"progress": {"frames": 10}})
    (tmp_path / ".frames_0000000020.tmp").mkdir()  # a save that never finished
    (tmp_path / ".frames_0000000020.tmp" / "state.pt").write_bytes(b"half")
    save_checkpoint(tmp_path, 30, {"progress": {"frames": 30}})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames_0000000010", "frames_0000000030"]
    # a crash while replacing frames_30 by a new save at 30 frames: a reader finds the old one and
    # touches nothing (the run may still be saving); the next save puts it back
    (tmp_path / "frames_0000000030").rename(tmp_path / ".frames_0000000030.old")
    (tmp_path / ".frames_0000000030.tmp").mkdir()
    leftovers = sorted(p.name for p in tmp_path.iterdir())
    assert find_checkpoint(tmp_path).name == ".frames_0000000030.old"
    assert read_checkpoint(tmp_path)[1]["progress"] == {"frames": 30}
    assert sorted(p.name for p in tmp_path.iterdir()) == leftovers
    save_checkpoint(tmp_path, 40, {"progress": {"frames": 40}}, keep=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames_0000000010", "frames_0000000030", "frames_0000000040"]


def test_checkpoints_are_ordered_by_frame_number_past_ten_billion_frames(tmp_path):
    for frames in (9_999_999_990, 10_000_000_000):
        save_checkpoint(tmp_path, frames, {"progress": {"frames": frames}}, keep=1)
    assert [p.name for p in tmp_path.iterdir()] == ["frames_10000000000"]  # the newest survives pruning
    save_checkpoint(tmp_path, 9_999_999_990, {"progress": {"frames": 9_999_999_990}}, keep=2)
    assert find_checkpoint(tmp_path).name == "frames_10000000000"


# ------------------------------------------------------------------ non-finite state
def test_non_finite_state_is_never_written_and_pruning_keeps_the_good_checkpoints(tmp_path):
    for frames in (10, 20):
        save_checkpoint(tmp_path, frames, {"hierarchy": {"w": torch.ones(2)}}, keep=2)
    bad = {"hierarchy": {"module.0._extra_state": {"optimizer": {"state": {0: {"exp_avg": torch.tensor([1.0, math.nan])}}}}}}
    with pytest.raises(CheckpointError, match=r"refusing to write non-finite state \(hierarchy.module.0._extra_state.optimizer.state.0.exp_avg\)"):
        save_checkpoint(tmp_path, 30, bad, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames_0000000010", "frames_0000000020"]
    # a folder that is not a complete checkpoint is neither counted nor deleted by pruning
    (tmp_path / "frames_0000000025").mkdir()
    (tmp_path / "frames_0000000025" / "state.pt").write_bytes(b"no manifest")
    save_checkpoint(tmp_path, 30, {"hierarchy": {"w": torch.ones(2)}}, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames_0000000020", "frames_0000000025", "frames_0000000030"]
