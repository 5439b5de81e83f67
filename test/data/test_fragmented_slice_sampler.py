"""`FragmentedSliceSampler`: sub-trajectories of trajectories stored in pieces, on every TorchRL."""
from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from torchrl.data import LazyTensorStorage, SliceSampler, TensorDictReplayBuffer

from torchrl_layered.samplers import FragmentedSliceSampler, fragmented_slice_sampler, torchrl_samples_fragments

TRAJ, STEP = ("collector", "traj_ids"), "option_index"


def pieces(runs: list[tuple[int, list[int]]]) -> TensorDict:
    """Items of trajectory ``traj`` at ``steps``, in the order given (pieces interleaved)."""
    traj = torch.cat([torch.full((len(steps),), t) for t, steps in runs])
    step = torch.cat([torch.tensor(steps) for _, steps in runs])
    n = traj.numel()
    return TensorDict({
        "collector": {"traj_ids": traj}, STEP: step, "observation": torch.stack([traj, step], -1).float(),
        "next": {"done": torch.zeros(n, 1, dtype=torch.bool), "terminated": torch.zeros(n, 1, dtype=torch.bool)},
    }, batch_size=[n])


# trajectory 0 in three pieces, 1 with a gap after step 2, 2 too short to sample, 3 in two pieces
DATA = [(0, [0, 1, 2]), (1, [0, 1, 2]), (0, [3, 4]), (2, [0, 1]), (3, [5, 6]), (1, [4, 5, 6, 7]),
        (0, [5, 6, 7, 8]), (3, [7, 8, 9])]


def buffer(sampler, data=DATA, size=100, horizon=3, batch=4):
    rb = TensorDictReplayBuffer(storage=LazyTensorStorage(size), sampler=sampler, batch_size=batch * horizon)
    rb.extend(pieces(data))
    return rb


def test_slices_are_consecutive_steps_of_one_trajectory_and_cover_every_start():
    torch.manual_seed(0)
    rb = buffer(FragmentedSliceSampler(3, TRAJ, STEP), batch=64)
    starts = set()
    for _ in range(20):
        sample = rb.sample().reshape(-1, 3)
        obs = sample["observation"].long()
        assert (obs[:, :, 0] == obs[:, :1, 0]).all()  # one trajectory per slice
        assert (obs[:, 1:, 1] - obs[:, :-1, 1] == 1).all()  # consecutive steps, across pieces
        assert sample["next", "truncated"][:, -1].all() and not sample["next", "truncated"][:, :-1].any()
        assert sample["next", "done"][:, -1].all()
        assert torch.equal(rb[sample["index"].reshape(-1)]["observation"], sample["observation"].reshape(-1, 2))
        starts |= {tuple(x) for x in obs[:, 0].tolist()}
    # every start of 3 consecutive stored steps, never across trajectory 1's gap nor in trajectory 2
    expected = {(0, s) for s in range(7)} | {(1, 0)} | {(1, s) for s in range(4, 6)} | {(3, s) for s in range(5, 8)}
    assert starts == expected


def test_no_run_long_enough_raises_naming_the_trajectory_runs_then_new_data_is_seen():
    rb = buffer(FragmentedSliceSampler(3, TRAJ, STEP), data=[(0, [0, 1]), (1, [0, 1]), (0, [3])])
    with pytest.raises(RuntimeError, match="trajectory run"):
        rb.sample()
    rb.extend(pieces([(0, [2])]))  # fills trajectory 0's gap
    obs = rb.sample()["observation"].long().reshape(-1, 3, 2)
    assert (obs[:, :, 0] == 0).all() and set(obs[:, 0, 1].tolist()) <= {0, 1}


def test_overwritten_steps_split_a_trajectory():
    # a ring buffer of 6: the first three items are overwritten by the last three
    rb = buffer(FragmentedSliceSampler(2, TRAJ, STEP), data=[(0, [0, 1, 2]), (1, [0, 1, 2]), (0, [3, 4, 5])], size=6,
                horizon=2, batch=32)
    obs = rb.sample()["observation"].long().reshape(-1, 2, 2)
    assert set(map(tuple, obs[:, 0].tolist())) == {(0, 3), (0, 4), (1, 0), (1, 1)}


@pytest.mark.skipif(not torchrl_samples_fragments(), reason="this TorchRL's SliceSampler has no fragmented mode")
def test_draws_the_same_slices_as_torchrls_fragmented_slice_sampler():
    ours = buffer(FragmentedSliceSampler(3, TRAJ, STEP), batch=16)
    theirs = buffer(SliceSampler(slice_len=3, traj_key=TRAJ, step_key=STEP, fragmented=True, strict_length=True),
                    batch=16)
    for seed in range(5):
        torch.manual_seed(seed)
        a = ours.sample()
        torch.manual_seed(seed)
        b = theirs.sample()
        assert torch.equal(a["index"].reshape(-1), b["index"].reshape(-1))
        for key in ("observation", ("next", "truncated"), ("next", "done")):
            assert torch.equal(a[key], b[key]), key


def test_the_factory_takes_torchrls_sampler_where_it_has_a_fragmented_mode():
    sampler = fragmented_slice_sampler(3, TRAJ, STEP)
    if torchrl_samples_fragments():
        assert isinstance(sampler, SliceSampler) and sampler.fragmented
    else:
        assert isinstance(sampler, FragmentedSliceSampler)
    obs = buffer(sampler).sample()["observation"].long().reshape(-1, 3, 2)
    assert (obs[:, 1:, 1] - obs[:, :-1, 1] == 1).all()


def test_a_buffer_with_the_sampler_dumps_and_loads(tmp_path):
    rb = buffer(FragmentedSliceSampler(3, TRAJ, STEP))
    rb.dumps(tmp_path)
    other = TensorDictReplayBuffer(storage=LazyTensorStorage(100), sampler=FragmentedSliceSampler(3, TRAJ, STEP),
                                   batch_size=12)
    other.loads(tmp_path)
    assert len(other) == len(rb)
    obs = other.sample()["observation"].long().reshape(-1, 3, 2)
    assert (obs[:, 1:, 1] - obs[:, :-1, 1] == 1).all()
