"""The port path: the LayeredRL Levels page's ``MyCustomLevel``, typed as the page shows it (only
the import changed and the page's ``...`` filled), runs in a `Hierarchy` at every depth."""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np
import pytest
import torch
from gymnasium.spaces import Box, Discrete, Space
from helpers import ScriptedEnv
from torchrl.data import Bounded, Categorical
from torchrl.envs import TransformedEnv

from torchrl_layered import Hierarchy, RandomLevel
from torchrl_layered.collectors import make_collector
from torchrl_layered.compat import LayeredRLLevel as Level
from torchrl_layered.compat import space_to_spec, spec_to_space
from torchrl_layered.envs import make_env


class SpacePolicy:
    """What fills the page's ``self.policy = ...``: uniform actions in the level's action space."""

    def __init__(self, action_space: Space):
        self.action_space = action_space

    def __call__(self, obs: torch.Tensor, level_state: dict, *unused) -> torch.Tensor:
        n = obs.shape[0]
        if isinstance(self.action_space, Discrete):
            return torch.randint(0, int(self.action_space.n), (n,))
        low, high = torch.as_tensor(self.action_space.low), torch.as_tensor(self.action_space.high)
        return low + torch.rand(n, *self.action_space.shape) * (high - low)


# ----------------------------------------------------------------- the page's class, as typed
class MyCustomLevel(Level):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        # Initialize your level-specific parameters
        self.policy = None  # Will be created in initialize()

    def initialize(
        self,
        env_obs_space: Space,
        action_space: Space,
        n_env_instances: int,
        parent_predictor,
        env_obs_map=None,
        mapped_env_obs_shape=None,
        keep_params=False,
    ):
        """Initialize the level after the hierarchy is constructed."""
        super().initialize(
            env_obs_space,
            action_space,
            n_env_instances,
            parent_predictor,
            env_obs_map,
            mapped_env_obs_shape,
            keep_params,
        )
        if not keep_params:
            # Create your policy/networks here
            self.policy = SpacePolicy(action_space)  # Initialize based on action_space, etc.

    def get_input_space(self) -> Space:
        """Define what input this level expects from the level above.
        Returns None if no input is needed (e.g., for top-level).
        For middle levels, return a Box or Discrete space.
        """
        return None  # or Box(...) for levels expecting input, e.g. goals or skill vectors

    def get_action(
        self,
        mapped_env_obs: torch.Tensor,
        level_input: Optional[torch.Tensor],
        level_input_info: Optional[Dict],
        active_instances: torch.Tensor,
    ) -> Tuple[torch.Tensor, Dict]:
        # Get level state if needed
        level_state = self.get_level_state(
            mapped_env_obs, level_input, active_instances
        )
        # Compute action using your policy
        action = self.policy(mapped_env_obs[active_instances], level_state, ...)
        return action, {}

    def process_transition(
        self,
        mapped_env_obs: torch.Tensor,
        level_input: Optional[torch.Tensor],
        action: torch.Tensor,
        next_mapped_env_obs: torch.Tensor,
        terminated: torch.Tensor,
        truncated: torch.Tensor,
        active_instances: torch.Tensor,
    ) -> torch.Tensor:
        # Compute reward
        level_state = self.get_level_state(
            mapped_env_obs, level_input, active_instances
        )
        next_level_state = self.get_level_state(
            next_mapped_env_obs, level_input, active_instances
        )
        reward, _ = self.get_reward(
            mapped_env_obs,
            level_input,
            level_state,
            action,
            next_mapped_env_obs,
            next_level_state,
            terminated,
            self.cum_reward[active_instances],
            self.elapsed_env_steps[active_instances],
        )
        # Call parent to update counters and reset cum_reward
        super().process_transition(
            mapped_env_obs,
            level_input,
            action,
            next_mapped_env_obs,
            terminated,
            truncated,
            active_instances,
        )
        # Store transition in your buffer
        # self.buffer.add(...)
        # Return False to keep control, True to return to level above
        return torch.zeros(
            active_instances.shape, dtype=torch.bool, device=self.device
        )

    def learn(self):
        """Update the policy from collected experience."""
        pass


# ----------------------------------------------------------------- what the tests add
class Recorded(MyCustomLevel):
    """The page's level, recording what ``process_transition`` and ``get_reward`` saw."""

    def __init__(self, input_space: Space | None = None, **kwargs):
        self._input_space = input_space
        super().__init__(**kwargs)
        self.seen: list[dict] = []

    def get_input_space(self):
        return self._input_space

    def get_reward(self, obs, level_input, level_state, action, next_obs, next_level_state, terminated,
                   cum_env_reward, elapsed_env_steps):
        self.seen.append({"reward": cum_env_reward.clone(), "duration": elapsed_env_steps.clone(),
                          "obs": obs.clone(), "next_obs": next_obs.clone(), "input": level_input})
        return super().get_reward(obs, level_input, level_state, action, next_obs, next_level_state, terminated,
                                  cum_env_reward, elapsed_env_steps)


OPTION = Box(-1.0, 1.0, (2,), dtype=np.float32)


@pytest.mark.parametrize("depth", [0, 1, 2])
def test_the_pages_custom_level_runs_at_every_depth_of_a_hierarchy(depth):
    torch.manual_seed(0)
    env = make_env("Pendulum-v1", num_envs=3)
    ported = Recorded(None if depth == 0 else OPTION, control_interval=3)
    levels = [RandomLevel(), RandomLevel(input_spec=Bounded(-1.0, 1.0, (2,)), control_interval=2),
              RandomLevel(input_spec=Bounded(-1.0, 1.0, (2,)), control_interval=4)]
    levels[depth] = ported
    hierarchy = Hierarchy(levels, env=env)
    assert isinstance(ported.action_space, Box) and ported.n_env_instances == 3
    assert ported.input_dim == (0 if depth == 0 else 2)
    collector = make_collector(env, hierarchy, frames_per_batch=60, total_frames=120)
    for batch in collector:
        transitions = hierarchy.extend(batch)
        assert hierarchy.learn() == {}
        mine = transitions[depth]
        got = [s for s in ported.seen]
        # every transition reached process_transition once, with its summed reward and duration
        assert sum(s["reward"].numel() for s in got) == mine.numel()
        rewards = torch.cat([s["reward"] for s in got]).sort().values
        assert torch.allclose(rewards, mine["next", "reward"].reshape(-1).sort().values)
        durations = torch.cat([s["duration"] for s in got]).sort().values
        assert torch.equal(durations, mine["next", "duration"].reshape(-1).sort().values)
        ported.seen.clear()
    collector.shutdown()
    assert ported.n_total_steps == ported.n_transitions > 0
    assert not ported.cum_reward.any() and not ported.elapsed_env_steps.any()  # reset after each transition


def test_get_action_sees_every_instance_and_the_mask_of_the_acting_ones():
    calls = []

    class Spy(MyCustomLevel):
        def get_input_space(self):
            return Discrete(4)

        def get_action(self, mapped_env_obs, level_input, level_input_info, active_instances):
            calls.append((mapped_env_obs.shape, level_input.shape, active_instances.clone()))
            return super().get_action(mapped_env_obs, level_input, level_input_info, active_instances)

    env = ScriptedEnv([[(3, False)], [(5, False)], [(7, True)], [(11, False)]])  # episodes end out of step
    spy = Spy(control_interval=2)
    hierarchy = Hierarchy([RandomLevel(), spy, RandomLevel(input_spec=Bounded(-1.0, 1.0, (2,)), control_interval=3)],
                          env=env)
    assert isinstance(hierarchy.levels[0].action_spec, Categorical)
    TransformedEnv(env, hierarchy.make_transform()).rollout(12, hierarchy, break_when_any_done=False)
    assert calls and all(shape == (4, 3) and inputs == (4,) for shape, inputs, _ in calls)
    assert any(0 < mask.sum() < 4 for *_, mask in calls)  # only some instances act: the mask says which


def test_spaces_and_specs_convert_both_ways():
    box = Box(-2.0, 3.0, (2,), dtype=np.float32)
    spec = space_to_spec(box)
    assert isinstance(spec, Bounded) and spec.shape == (2,)
    assert spec_to_space(spec) == box
    assert space_to_spec(Discrete(5)).n == 5 and spec_to_space(Categorical(5)) == Discrete(5)
    with pytest.raises(TypeError, match="only Box and Discrete"):
        space_to_spec(object())
    with pytest.raises(TypeError, match="get_input_space"):
        MyCustomLevel(input_spec=Bounded(-1.0, 1.0, (2,)))
