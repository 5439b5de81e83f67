"""`HierarchyTransform`: the env transform that carries each level's option state.

After every env step it climbs the hierarchy bottom-up: the lowest level's option (one
primitive action) always ends; where a level's held ``level_done`` is set, its parent's
option ends too; an episode end ends every option. A level whose option ended acts at the
next step. Per level it also counts the option's duration and sums its reward, so that the
level's semi-MDP transition can be read off the row where its option ends, even when the
option started in an earlier collector batch.
"""
from __future__ import annotations

from typing import Sequence

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey
from torchrl.data import Composite, TensorSpec, Unbounded
from torchrl.envs.transforms import TensorDictPrimer

from torchrl_layered.hierarchy.keys import (
    ACTING,
    ACTION,
    DURATION,
    LEVEL_DONE,
    OPTION_REWARD,
    START_OBSERVATION,
    STEPS,
    level_key,
)


def _state_spec(spec: TensorSpec) -> Unbounded:
    """An unbounded spec of the same shape and dtype: held values start at zero."""
    return Unbounded(shape=spec.shape, dtype=spec.dtype, device=spec.device)


class HierarchyTransform(TensorDictPrimer):
    """Carries per-instance option state of every level of a `Hierarchy` through env steps.

    It holds only specs (never the env or the levels), so multi-process collectors can build
    it in each worker. Build it with ``hierarchy.make_transform()``.

    Args:
        level_action_specs: the action spec of every level but the lowest (which writes the
            env action and holds nothing), top first.
        start_observation_specs: the mapped observation spec of every level, top first.
        reward_spec: the env's (unbatched) reward spec.
        reward_key: the env's reward key.
        done_key: the env's done key.
    """

    def __init__(
        self,
        level_action_specs: Sequence[TensorSpec],
        start_observation_specs: Sequence[TensorSpec],
        reward_spec: TensorSpec,
        *,
        reward_key: NestedKey = "reward",
        done_key: NestedKey = "done",
    ):
        num_levels = len(start_observation_specs)
        if len(level_action_specs) != num_levels - 1:
            raise ValueError(
                f"HierarchyTransform needs one action spec per level but the lowest: got {len(level_action_specs)} "
                f"for {num_levels} levels"
            )
        flag = Unbounded(shape=(1,), dtype=torch.bool)
        count = Unbounded(shape=(1,), dtype=torch.long)
        primers, defaults = {}, {}
        for k in range(num_levels):
            level_specs = {
                LEVEL_DONE: flag,
                ACTING: flag,
                STEPS: count,
                DURATION: count,
                OPTION_REWARD: _state_spec(reward_spec),
                START_OBSERVATION: _state_spec(start_observation_specs[k]),
            }
            if k < num_levels - 1:
                level_specs[ACTION] = _state_spec(level_action_specs[k])
            for name, spec in level_specs.items():
                primers[level_key(k, name)] = spec.clone()
                # a new episode starts with every level acting, top-down
                defaults[level_key(k, name)] = 1.0 if name == ACTING else 0.0
        super().__init__(Composite(primers), default_value=defaults, expand_specs=True)
        self.num_levels = num_levels
        self.reward_key = reward_key
        self.done_key = done_key

    def _step(self, tensordict: TensorDictBase, next_tensordict: TensorDictBase) -> TensorDictBase:
        n = self.num_levels
        reward = next_tensordict.get(self.reward_key)
        env_done = next_tensordict.get(self.done_key)
        # bottom-up climb: ends[k] is True where level k's current option is over
        ends = [None] * n
        ends[n - 1] = torch.ones_like(env_done)
        for k in range(n - 2, -1, -1):
            ends[k] = (ends[k + 1] & tensordict.get(level_key(k + 1, LEVEL_DONE))) | env_done
        for k in range(n):
            acting = tensordict.get(level_key(k, ACTING))
            next_tensordict.set(level_key(k, ACTING), ends[k])
            next_tensordict.set(level_key(k, DURATION), tensordict.get(level_key(k, DURATION)).masked_fill(acting, 0) + 1)
            option_reward = tensordict.get(level_key(k, OPTION_REWARD))
            next_tensordict.set(
                level_key(k, OPTION_REWARD), option_reward.masked_fill(acting, 0) + reward.to(option_reward.dtype)
            )
            steps = tensordict.get(level_key(k, STEPS))
            # a level's own step count restarts when its parent hands it a new option
            next_tensordict.set(level_key(k, STEPS), steps if k == 0 else steps.masked_fill(ends[k - 1], 0))
            for name in (LEVEL_DONE, START_OBSERVATION) + ((ACTION,) if k < n - 1 else ()):
                next_tensordict.set(level_key(k, name), tensordict.get(level_key(k, name)))
        return next_tensordict
