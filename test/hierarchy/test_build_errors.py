"""Building a hierarchy from mismatched pieces fails early with a message that names the problem."""
from __future__ import annotations

import pytest
import torch
from torchrl.data import Bounded, Categorical, Unbounded
from torchrl.envs import TransformedEnv

from torchrl_layered import ConstantLevel, Hierarchy, RandomLevel
from torchrl_layered.envs import make_env


@pytest.fixture(scope="module")
def pendulum():
    return make_env("Pendulum-v1", 2)


def test_empty_level_list(pendulum):
    with pytest.raises(ValueError, match="at least one level"):
        Hierarchy([], env=pendulum)


def test_lower_level_without_input_spec(pendulum):
    with pytest.raises(ValueError, match=r"Level 1 \(RandomLevel\) declares no input spec"):
        Hierarchy([RandomLevel(), RandomLevel()], env=pendulum)


def test_parent_that_cannot_produce_the_child_input(pendulum):
    # RandomLevel cannot sample an unbounded option
    with pytest.raises(TypeError, match=r"Level 0 \(RandomLevel\) cannot feed level 1 .* Unbounded"):
        Hierarchy([RandomLevel(), RandomLevel(input_spec=Unbounded((2,)))], env=pendulum)


def test_wrong_action_shape_for_the_env(pendulum):
    with pytest.raises(ValueError, match=r"ConstantLevel value has shape \(2,\) but its action spec needs \(1,\)"):
        Hierarchy([ConstantLevel([0.0, 0.0])], env=pendulum)


def test_constant_outside_the_action_bounds(pendulum):
    with pytest.raises(ValueError, match="outside its action spec"):
        Hierarchy([ConstantLevel([5.0])], env=pendulum)


def test_discrete_action_for_a_box_env(pendulum):
    with pytest.raises(ValueError, match="shape"):
        Hierarchy([RandomLevel(), ConstantLevel(torch.tensor(1), input_spec=Categorical(3))], env=pendulum)


def test_non_callable_observation_map(pendulum):
    with pytest.raises(TypeError, match=r"obs_maps\[0\]\[0\] must be callable"):
        Hierarchy([RandomLevel()], env=pendulum, obs_maps=[("not a map", (2,))])


def test_observation_map_with_the_wrong_declared_shape(pendulum):
    with pytest.raises(ValueError, match=r"obs_maps\[0\] maps an observation to shape \(2,\).*\(3,\)"):
        Hierarchy([RandomLevel()], env=pendulum, obs_maps=[(lambda o: o[..., :2], (3,))])


def test_one_observation_map_per_level(pendulum):
    with pytest.raises(ValueError, match="1 obs_maps for 2 levels"):
        Hierarchy([RandomLevel(), RandomLevel(input_spec=Bounded(-1, 1, (1,)))], env=pendulum, obs_maps=[None])


def test_get_action_returning_the_wrong_batch_size(pendulum):
    class Broken(RandomLevel):
        def get_action(self, td):
            return torch.zeros(td.shape[0] + 1, 1)

    hierarchy = Hierarchy([Broken()], env=pendulum)
    env = TransformedEnv(pendulum, hierarchy.make_transform())
    with pytest.raises(ValueError, match=r"Broken.get_action returned \(3, 1\) for 2 acting rows; expected \(2, 1\)"):
        hierarchy(env.reset())


def test_running_without_the_transform_explains_the_fix(pendulum):
    hierarchy = Hierarchy([RandomLevel()], env=pendulum)
    with pytest.raises(RuntimeError, match="make_transform"):
        hierarchy(pendulum.reset())


def test_same_level_twice(pendulum):
    level = RandomLevel(input_spec=Bounded(-1, 1, (1,)))
    with pytest.raises(ValueError, match="same level object twice"):
        Hierarchy([level, level], env=pendulum)


def test_non_level_entry(pendulum):
    with pytest.raises(TypeError, match="level 0 must be a torchrl_layered Level"):
        Hierarchy([torch.nn.Linear(2, 2)], env=pendulum)
