"""Random, constant and action-sequence levels."""
from __future__ import annotations

import torch
from torchrl.data import Bounded, Categorical

from torchrl_layered import ActionSequenceLevel, ConstantLevel, Hierarchy, RandomLevel
from torchrl_layered.collectors import make_collector
from torchrl_layered.envs import make_env


def run(hierarchy, env, steps):
    n = env.batch_size.numel()
    collector = make_collector(env, hierarchy, frames_per_batch=n * steps, total_frames=n * steps)
    batch = next(iter(collector))
    collector.shutdown()
    return batch


def test_random_level_samples_inside_box_and_discrete_specs_at_any_depth():
    env = make_env("Pendulum-v1", 3)
    option = Categorical(4)
    hierarchy = Hierarchy([RandomLevel(), RandomLevel(input_spec=option, control_interval=2)], env=env)
    batch = run(hierarchy, env, 40)
    action = batch["action"]
    assert action.abs().max() <= 2.0 and action.std() > 0.5
    options = batch["levels", "0", "action"]
    assert options.dtype == torch.long and set(options.unique().tolist()) == {0, 1, 2, 3}


def test_constant_level_feeds_its_value_to_the_level_below():
    env = make_env("Pendulum-v1", 2)
    skill = Bounded(-1.0, 1.0, shape=(2,))
    hierarchy = Hierarchy([ConstantLevel([0.5, -0.25]), ConstantLevel([1.5], input_spec=skill)], env=env)
    batch = run(hierarchy, env, 5)
    assert torch.equal(batch["levels", "0", "action"], torch.tensor([0.5, -0.25]).expand(2, 5, 2))
    assert torch.equal(batch["action"], torch.full((2, 5, 1), 1.5))


def test_action_sequence_restarts_with_each_new_option_and_holds_its_last_entry():
    env = make_env("Pendulum-v1", 1)
    top = ActionSequenceLevel([[1.0], [2.0]])
    low = ActionSequenceLevel([[0.1], [0.2], [0.3]], input_spec=Bounded(-5, 5, (1,)), control_interval=4)
    hierarchy = Hierarchy([top, low], env=env)
    batch = run(hierarchy, env, 12)
    assert batch["levels", "0", "action"][0, :, 0].tolist() == [1.0] * 4 + [2.0] * 8
    low_actions = [round(x, 3) for x in batch["action"][0, :, 0].tolist()]
    assert low_actions == [0.1, 0.2, 0.3, 0.3] * 3


def test_action_sequence_can_cycle():
    env = make_env("Pendulum-v1", 1)
    hierarchy = Hierarchy([ActionSequenceLevel([[0.1], [0.2]], cycle=True)], env=env)
    batch = run(hierarchy, env, 5)
    assert [round(x, 3) for x in batch["action"][0, :, 0].tolist()] == [0.1, 0.2, 0.1, 0.2, 0.1]
