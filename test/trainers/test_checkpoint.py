"""`trainers/checkpoint.py`: atomic checkpoint folders, the latest is found, RNG and buffers round-trip."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from tensordict import TensorDict
from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer

from torchrl_layered.trainers.checkpoint import (
    CheckpointError,
    find_checkpoint,
    read_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)


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
    (tmp_path / "state.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        read_checkpoint(tmp_path)
    torch.save({"something": 1}, tmp_path / "state.pt")
    with pytest.raises(CheckpointError, match="not a torchrl_layered.train checkpoint"):
        read_checkpoint(tmp_path)


def test_rng_states_round_trip_through_a_checkpoint(tmp_path):
    save_checkpoint(tmp_path, 1, {"rng": rng_state()})
    expected = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(read_checkpoint(tmp_path)[1]["rng"])
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], got[0]) and np.array_equal(expected[1], got[1]) and expected[2] == got[2]


def test_replay_buffers_are_saved_with_dumps_beside_the_state(tmp_path):
    buffer = TensorDictReplayBuffer(storage=LazyTensorStorage(50), batch_size=4)
    buffer.extend(TensorDict({"observation": torch.arange(14.0).reshape(7, 2)}, [7]))
    folder = save_checkpoint(tmp_path, 7, {}, buffers={"level0.replay_buffer": buffer})
    assert read_checkpoint(tmp_path)[1]["buffers"] == ["level0.replay_buffer"]
    loaded = TensorDictReplayBuffer(storage=LazyTensorStorage(50), batch_size=4)
    loaded.loads(folder / "buffers" / "level0.replay_buffer")
    assert len(loaded) == 7
    assert torch.equal(loaded[:7]["observation"], torch.arange(14.0).reshape(7, 2))
