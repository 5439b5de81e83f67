"""`HierarchyTransform`: the env transform that carries each level's option state.

After every env step it climbs the hierarchy bottom-up: the lowest level's option (one
primitive action) always ends; where a level's held ``level_done`` is set, its parent's
option ends too; an episode end ends every option. A level whose option ended acts at the
next step. Per level it also counts the option's duration and sums its reward, so that the
level's semi-MDP transition can be read off the row where its option ends, even when the
option started in an earlier collector batch.
"""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Sequence

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey
from torchrl.data import Composite, TensorSpec, Unbounded
from torchrl.envs.transforms import TensorDictPrimer

from torchrl_layered.keys import (
    ACTING,
    ACTION,
    DURATION,
    LEVEL_DONE,
    LEVEL_STATE,
    LEVELS,
    OPTION_INDEX,
    OPTION_REWARD,
    START_OBSERVATION,
    STEPS,
    level_key,
    stacked_key,
)
from torchrl_layered.unchecked import unchecked_tensordict

if TYPE_CHECKING:
    from torchrl_layered.levels.base import LevelKeys


#: What the transform writes at each step; everything else is held by the levels.
STEP_OUTPUTS = (ACTING, DURATION, OPTION_REWARD, STEPS, OPTION_INDEX)


def _nested(key: NestedKey) -> tuple:
    return (key,) if isinstance(key, str) else tuple(key)


def _zero_spec(spec: TensorSpec) -> Unbounded:
    """An unbounded spec of the same shape and dtype: held values start at zero."""
    return Unbounded(shape=spec.shape, dtype=spec.dtype, device=spec.device)


@functools.lru_cache(maxsize=None)
def _below(num_levels: int, device: torch.device) -> torch.Tensor:
    """``below[j, k]`` is True where level ``j`` lies below level ``k`` (built once per depth and device)."""
    return torch.ones(num_levels, num_levels, dtype=torch.bool, device=device).tril(-1)


def option_ends(level_done: torch.Tensor, env_done: torch.Tensor) -> torch.Tensor:
    """Where each level's option is over after a step, ``[*B, L]``.

    The lowest level's option always ends; level k's ends when every level below it handed
    control back (``level_done``) or the episode ended.
    """
    below = _below(level_done.shape[-1], level_done.device)
    # a level below k that keeps control keeps k's option running
    return ~((~level_done).unsqueeze(-1) & below).any(-2) | env_done


class HierarchyTransform(TensorDictPrimer):
    """Carries the option state of every level of a `Hierarchy` through env steps.

    State (all reset per instance on partial resets; ``L`` levels, column 0 = top):
    ``("levels", name)`` ``[*B, L]`` for ``acting``, ``level_done``, ``steps`` (own steps
    in the current control period), ``duration`` (env steps of the current option),
    ``option_reward`` (its summed reward) and ``option_index`` (options completed in the
    episode: consecutive per trajectory, a step key for `SliceSampler`); ``("levels", "k", "action")`` and
    ``("levels", "k", "start_observation")`` for every level but the lowest, and a level's own
    entries (``get_state_spec()``) under ``("levels", "k", "state")``.

    It holds only specs (never the env or the levels), so multi-process collectors can build
    it in each worker. Build it with ``hierarchy.make_transform()``.

    Args:
        level_action_specs: the action spec of every level but the lowest, top first.
        start_observation_specs: the mapped observation spec of every level but the lowest.
        level_state_specs: per level, the spec of its own carried entries, or ``None``.
        level_keys: per level, its `LevelKeys` (where its held action, start observation and
            own entries live); the layout above if ``None``.
        reward_key: the env's reward key (a reward of shape ``[*B, 1]``).
        done_key: the env's done key.
    """

    def __init__(
        self,
        level_action_specs: Sequence[TensorSpec],
        start_observation_specs: Sequence[TensorSpec],
        *,
        level_state_specs: Sequence[Composite | None] | None = None,
        level_keys: Sequence[LevelKeys] | None = None,
        reward_key: NestedKey = "reward",
        done_key: NestedKey = "done",
        reward_dtype: torch.dtype = torch.float32,
    ):
        if len(level_action_specs) != len(start_observation_specs):
            raise ValueError(
                f"HierarchyTransform needs one action spec and one observation spec per level but the lowest; "
                f"got {len(level_action_specs)} and {len(start_observation_specs)}"
            )
        num_levels = len(level_action_specs) + 1
        primers = {
            stacked_key(ACTING): Unbounded(shape=(num_levels,), dtype=torch.bool),
            stacked_key(LEVEL_DONE): Unbounded(shape=(num_levels,), dtype=torch.bool),
            stacked_key(STEPS): Unbounded(shape=(num_levels,), dtype=torch.long),
            stacked_key(DURATION): Unbounded(shape=(num_levels,), dtype=torch.long),
            stacked_key(OPTION_REWARD): Unbounded(shape=(num_levels,), dtype=reward_dtype),
            stacked_key(OPTION_INDEX): Unbounded(shape=(num_levels,), dtype=torch.long),
        }
        if level_keys is not None and len(level_keys) != num_levels:
            raise ValueError(f"HierarchyTransform got {len(level_keys)} level_keys for {num_levels} levels")
        held = [(k.action, k.start_observation, k.state) for k in level_keys] if level_keys is not None else [
            (level_key(k, ACTION), level_key(k, START_OBSERVATION), level_key(k, LEVEL_STATE)) for k in range(num_levels)]
        for k in range(num_levels - 1):
            primers[_nested(held[k][0])] = _zero_spec(level_action_specs[k])
            primers[_nested(held[k][1])] = _zero_spec(start_observation_specs[k])
        for k, spec in enumerate(level_state_specs or []):
            if spec is not None:
                for key, leaf in spec.items(True, True):
                    primers[(*_nested(held[k][2]), *_nested(key))] = _zero_spec(leaf)
        # a new episode starts with every level acting, top-down
        defaults = {key: 1.0 if key == stacked_key(ACTING) else 0.0 for key in primers}
        super().__init__(Composite(primers), default_value=defaults, expand_specs=True)
        self.num_levels = num_levels
        self.reward_key = reward_key
        self.done_key = done_key

    def _reset(self, tensordict: TensorDictBase, tensordict_reset: TensorDictBase) -> TensorDictBase:
        tensordict_reset = super()._reset(tensordict, tensordict_reset)
        # TensorDictPrimer of TorchRL < 0.13 fills its defaults as floats: back to the specs' dtypes
        for key, spec in self.primers.items(True, True):
            value = tensordict_reset.get(key, None)
            if value is not None and value.dtype != spec.dtype:
                tensordict_reset.set(key, value.to(spec.dtype))
        return tensordict_reset

    def _step(self, tensordict: TensorDictBase, next_tensordict: TensorDictBase) -> TensorDictBase:
        # a dozen small ops per env step: each is written to allocate once and skip no-op casts
        state = tensordict.get(LEVELS)
        acting = state.get(ACTING)
        ends = option_ends(state.get(LEVEL_DONE), next_tensordict.get(self.done_key))
        reward = next_tensordict.get(self.reward_key)
        option_reward = state.get(OPTION_REWARD)
        if reward.dtype != option_reward.dtype:
            reward = reward.to(option_reward.dtype)
        # a level's own step count restarts when its parent hands it a new option
        parent_ends = ends.roll(1, -1)
        parent_ends[..., 0] = False
        next_tensordict.set(
            LEVELS,
            unchecked_tensordict(
                {
                    ACTING: ends,
                    DURATION: state.get(DURATION).masked_fill(acting, 0).add_(1),
                    OPTION_REWARD: option_reward.masked_fill(acting, 0).add_(reward),
                    STEPS: (state.get(STEPS) + acting).masked_fill_(parent_ends, 0),
                    OPTION_INDEX: state.get(OPTION_INDEX) + ends,
                },
                acting.shape[:-1],
            ),
        )
        return next_tensordict

    # The entries that change at each step are observations (written to "next"); the held
    # outputs are state only: ``step_mdp`` carries them from the root, untouched, for free.
    def _with_primers(self, spec: Composite, keys) -> Composite:
        if self.primers.shape[: spec.ndim] != spec.shape:
            # to the env's batch, read off the spec: inside a nested Compose, TorchRL 0.12 finds no parent
            self.primers = self.primers.expand((*spec.shape, *self.primers.shape))
        for key in keys:
            spec[key] = self.primers[key].clone().to(spec.device)
        return spec

    def transform_observation_spec(self, observation_spec: Composite) -> Composite:
        return self._with_primers(observation_spec, [stacked_key(name) for name in STEP_OUTPUTS])

    def transform_input_spec(self, input_spec: Composite) -> Composite:
        state_spec = input_spec["full_state_spec"]
        if state_spec is None:
            state_spec = Composite(shape=input_spec.shape, device=input_spec.device)
        input_spec["full_state_spec"] = self._with_primers(state_spec, list(self.primers.keys(True, True)))
        return input_spec
