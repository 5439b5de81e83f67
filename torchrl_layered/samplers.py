"""Sub-trajectory sampling from a replay buffer whose trajectories are stored in pieces.

A level stores each semi-MDP transition when its option ends, so the steps of one episode lie
scattered over the storage, interleaved with other episodes (and with the pieces that ended in
other collector batches). TorchRL 0.14 samples such data with
``SliceSampler(fragmented=True, traj_key=..., step_key=...)``; `FragmentedSliceSampler` does the
same on older TorchRL, and `fragmented_slice_sampler` picks whichever is there.
"""
from __future__ import annotations

import inspect
from typing import Any

import torch
from tensordict.utils import NestedKey
from torchrl.data import SliceSampler
from torchrl.data.replay_buffers.samplers import Sampler
from torchrl.data.replay_buffers.storages import Storage


def _last(key: NestedKey, name: str) -> NestedKey:
    return name if isinstance(key, str) else (*key[:-1], name)


class FragmentedSliceSampler(Sampler):
    """Samples ``slice_len`` consecutive steps of one trajectory, wherever the steps are stored.

    Stored items are grouped by ``traj_key`` and ordered by ``step_key`` (integers, one per
    item); a missing step splits a trajectory into separate runs. A sample of ``batch_size``
    items is ``batch_size // slice_len`` slices, one after the other: each picks a run of at
    least ``slice_len`` steps uniformly at random, then a start in it uniformly. The draws are
    those of TorchRL's ``SliceSampler(fragmented=True, strict_length=True)`` (TorchRL 0.14),
    so both give the same indices for the same random state.

    Like that sampler it marks the last step of each slice truncated (``truncated_key`` and its
    ``done`` sibling) in the sample, and raises a ``RuntimeError`` that names the trajectory runs
    while no run is long enough.

    Args:
        slice_len: the number of steps per slice.
        traj_key: the trajectory id of each item.
        step_key: the step number of each item within its trajectory.
        truncated_key: where the sample marks slice ends, or ``None`` for no marks.
    """

    def __init__(self, slice_len: int, traj_key: NestedKey, step_key: NestedKey,
                 truncated_key: NestedKey | None = ("next", "truncated")):
        if not isinstance(slice_len, int) or slice_len < 1:
            raise ValueError(f"FragmentedSliceSampler needs slice_len >= 1; got {slice_len!r}")
        self.slice_len = slice_len
        self.traj_key = traj_key
        self.step_key = step_key
        self.truncated_key = truncated_key
        self._writes = 0
        self._runs_cache = None

    # ------------------------------------------------------------ writes
    def _changed(self) -> None:
        self._writes += 1
        self._runs_cache = None

    def add(self, index: int) -> None:
        self._changed()

    def extend(self, index: torch.Tensor) -> None:
        self._changed()

    def mark_update(self, index, *args, **kwargs) -> None:
        self._changed()

    def _empty(self) -> None:
        self._changed()

    # ------------------------------------------------------------ runs
    def runs(self, storage: Storage) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(slots, run_offsets, run_lengths)``: the storage slots sorted by (trajectory, step),
        where each run of consecutive steps starts in that order, and how long it is."""
        n = len(storage)
        key = (id(storage), n, self._writes)
        if self._runs_cache is not None and self._runs_cache[0] == key:
            return self._runs_cache[1]
        stored = storage.get(slice(0, n))  # views, no copy
        traj, step = stored.get(self.traj_key), stored.get(self.step_key)
        if traj.numel() != n or step.numel() != n:
            raise RuntimeError(
                f"FragmentedSliceSampler needs one trajectory id ({self.traj_key!r}) and one step number "
                f"({self.step_key!r}) per stored item; got {tuple(traj.shape)} and {tuple(step.shape)} for {n} items"
            )
        traj, step = traj.reshape(-1), step.reshape(-1)
        order = torch.argsort(step, stable=True)
        order = order[torch.argsort(traj[order], stable=True)]
        sorted_traj, sorted_step = traj[order], step[order]
        new_run = torch.ones(n, dtype=torch.bool, device=order.device)
        new_run[1:] = (sorted_traj[1:] != sorted_traj[:-1]) | (sorted_step[1:] != sorted_step[:-1] + 1)
        offsets = new_run.nonzero().squeeze(-1)
        lengths = torch.diff(offsets, append=offsets.new_tensor([n]))
        self._runs_cache = (key, (order, offsets, lengths))
        return order, offsets, lengths

    # ------------------------------------------------------------ sampling
    def sample(self, storage: Storage, batch_size: int) -> tuple[torch.Tensor, dict]:
        if len(storage) == 0:
            raise RuntimeError("Cannot sample from an empty storage.")
        if batch_size % self.slice_len:
            raise RuntimeError(
                f"The batch-size must be divisible by the slice length, got batch_size={batch_size} "
                f"and slice_len={self.slice_len}."
            )
        num_slices, length = batch_size // self.slice_len, self.slice_len
        slots, offsets, lengths = self.runs(storage)
        eligible = lengths >= length
        if not eligible.any():
            raise RuntimeError(
                "Did not find a single fragmented trajectory run with sufficient length "
                f"(length range: {lengths.min()} - {lengths.max()} / required={length})."
            )
        offsets, lengths = offsets[eligible], lengths[eligible]
        run = torch.randint(lengths.shape[0], (num_slices,), device=lengths.device, generator=self._rng)
        starts = torch.rand(num_slices, device=lengths.device, generator=self._rng) * (lengths[run] - length + 1)
        first = offsets[run] + starts.floor().to(offsets.dtype)
        index = slots[first.unsqueeze(1) + torch.arange(length, device=first.device)].reshape(-1)
        info: dict[Any, torch.Tensor] = {}
        if self.truncated_key is not None:
            truncated = torch.zeros((index.shape[0], 1), dtype=torch.bool, device=index.device)
            truncated.view(num_slices, length)[:, -1] = True
            done_key = _last(self.truncated_key, "done")
            done = storage[index].get(done_key, None)
            info[self.truncated_key] = truncated
            info[done_key] = truncated.clone() if done is None else done | truncated.to(done.device)
        return index, info

    # ------------------------------------------------------------ state (nothing but the storage)
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._changed()

    def dumps(self, path) -> None:
        pass

    def loads(self, path) -> None:
        self._changed()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(slice_len={self.slice_len}, traj_key={self.traj_key!r}, "
                f"step_key={self.step_key!r})")


def torchrl_samples_fragments() -> bool:
    """Whether TorchRL's `SliceSampler` takes ``fragmented=True`` (TorchRL 0.14 and later)."""
    return "fragmented" in inspect.signature(SliceSampler.__init__).parameters


def fragmented_slice_sampler(slice_len: int, traj_key: NestedKey, step_key: NestedKey) -> Sampler:
    """A sampler of ``slice_len``-step sub-trajectories from trajectories stored in pieces: TorchRL's
    ``SliceSampler(fragmented=True, strict_length=True)`` where it exists, `FragmentedSliceSampler` otherwise."""
    if torchrl_samples_fragments():
        return SliceSampler(slice_len=slice_len, traj_key=traj_key, step_key=step_key, fragmented=True,
                            strict_length=True)
    return FragmentedSliceSampler(slice_len, traj_key, step_key)
