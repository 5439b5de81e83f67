"""`Hierarchy`: a stack of levels, top first, as one TorchRL policy."""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictSequential
from tensordict.utils import NestedKey
from torchrl.data import Composite, TensorSpec, Unbounded
from torchrl.envs import EnvBase

from torchrl_layered.keys import (
    ACTING,
    ACTION,
    LEVEL_DONE,
    LEVEL_STATE,
    START_OBSERVATION,
    STEPS,
    level_key,
    stacked_key,
)
from torchrl_layered.hierarchy.transform import HierarchyTransform
from torchrl_layered.hierarchy.transitions import check_option_state, level_transitions, next_key
from torchrl_layered.levels.base import Level

ObsMap = tuple[Callable[[torch.Tensor], torch.Tensor], Sequence[int]]


def _leaf(spec: TensorSpec, key: NestedKey, what: str) -> TensorSpec:
    if isinstance(spec, Composite):
        if key in spec.keys(True, True):
            return spec[key]
        leaves = list(spec.keys(True, True))
        if len(leaves) == 1 and what != "observation":
            return spec[leaves[0]]
        raise KeyError(f"Hierarchy: the env has no {what} entry {key!r}; its {what} keys are {leaves}")
    return spec


class Hierarchy(TensorDictSequential):
    """Levels stacked top (most abstract) first; the lowest level writes the env action.

    Each level's action spec comes from the env (lowest level) or from the input spec the
    level below declares (``get_input_spec()``), and each level gets its parent at build time.
    Level ``k`` keeps its option state under ``("levels", "k", ...)``; the
    `HierarchyTransform` from `make_transform` carries it between steps. The levels' networks
    and counters go to the env's device; ``hierarchy.to(device)`` moves them elsewhere.

    Args:
        levels: the levels, top first.
        env: the (batched) env, or ``None`` when the specs are given instead.
        obs_maps: per level ``None`` or ``(callable, mapped_shape)``: the callable maps the env
            observation ``[*B, *obs_shape]`` to what the level sees ``[*B, *mapped_shape]``.
        observation_spec, action_spec, reward_spec: unbatched specs, if no env is given.
        observation_key, action_key, reward_key: the env's keys.

    Example:
        >>> env = make_env("Pendulum-v1", num_envs=4)
        >>> hierarchy = Hierarchy([RandomLevel(), RandomLevel(input_spec=spec, control_interval=5)], env=env)
        >>> env = TransformedEnv(env, hierarchy.make_transform())
    """

    def __init__(
        self,
        levels: Sequence[Level],
        env: EnvBase | None = None,
        obs_maps: Sequence[ObsMap | None] | None = None,
        *,
        observation_spec: TensorSpec | None = None,
        action_spec: TensorSpec | None = None,
        reward_spec: TensorSpec | None = None,
        observation_key: NestedKey = "observation",
        action_key: NestedKey = "action",
        reward_key: NestedKey = "reward",
    ):
        levels = list(levels) if levels is not None else []
        if not levels:
            raise ValueError("Hierarchy needs at least one level (top first); got an empty list")
        for i, level in enumerate(levels):
            if not isinstance(level, Level):
                raise TypeError(f"Hierarchy level {i} must be a torchrl_layered Level; got {type(level).__name__}")
        if len({id(level) for level in levels}) != len(levels):
            raise ValueError("Hierarchy got the same level object twice; build one instance per level")
        if env is not None:
            observation_spec = env.observation_spec_unbatched
            action_spec = env.full_action_spec_unbatched
            reward_spec = env.full_reward_spec_unbatched
        if observation_spec is None or action_spec is None:
            raise ValueError("Hierarchy needs an env, or observation_spec and action_spec")
        observation_spec = _leaf(observation_spec, observation_key, "observation")
        action_spec = _leaf(action_spec, action_key, "action")
        reward_spec = Unbounded(shape=(1,)) if reward_spec is None else _leaf(reward_spec, reward_key, "reward")
        if reward_spec.shape != (1,):
            raise ValueError(f"Hierarchy needs a scalar reward of shape (1,) per instance; got {tuple(reward_spec.shape)}")

        n = len(levels)
        obs_maps = self._check_obs_maps(obs_maps, n)
        observation_specs = [self._mapped_spec(observation_spec, obs_maps[i], i) for i in range(n)]
        action_specs = self._action_specs(levels, action_spec)

        num_instances = env.batch_size.numel() if env is not None else 1
        for i, level in enumerate(levels):
            level.obs_map = obs_maps[i][0] if obs_maps[i] is not None else None
            level.attach(observation_specs[i], action_specs[i], parent=levels[i - 1] if i else None,
                         num_instances=num_instances)
            level.is_top = i == 0
            level.always_acts = i == n - 1
            level.state_index = i
            level.set_keys(
                observation=observation_key,
                level_input=level_key(i - 1, ACTION) if i else "level_input",
                action=action_key if i == n - 1 else level_key(i, ACTION),
                level_done=stacked_key(LEVEL_DONE),
                acting=stacked_key(ACTING),
                steps=stacked_key(STEPS),
                start_observation=level_key(i, START_OBSERVATION),
                state=level_key(i, LEVEL_STATE),
            )
        super().__init__(*levels)
        if observation_spec.device is not None:
            self.to(observation_spec.device)  # the levels compute where the env writes its data
        self.observation_specs = observation_specs
        self.action_specs = action_specs
        self.reward_spec = reward_spec
        self.observation_key = observation_key
        self.action_key = action_key
        self.reward_key = reward_key

    # ---------------------------------------------------------------- building
    @staticmethod
    def _check_obs_maps(obs_maps, n: int) -> list[ObsMap | None]:
        if obs_maps is None:
            return [None] * n
        obs_maps = list(obs_maps)
        if len(obs_maps) != n:
            raise ValueError(f"Hierarchy got {len(obs_maps)} obs_maps for {n} levels; give one per level (None = identity)")
        for i, entry in enumerate(obs_maps):
            if entry is None:
                continue
            if not (isinstance(entry, (tuple, list)) and len(entry) == 2):
                raise TypeError(f"obs_maps[{i}] must be None or (callable, mapped_shape); got {type(entry).__name__}")
            if not callable(entry[0]):
                raise TypeError(f"obs_maps[{i}][0] must be callable (the map); got a {type(entry[0]).__name__}")
        return obs_maps

    @staticmethod
    def _mapped_spec(spec: TensorSpec, obs_map: ObsMap | None, i: int) -> TensorSpec:
        if obs_map is None:
            return spec.clone()
        fn, shape = obs_map
        shape = torch.Size(shape)
        sample = fn(spec.zero().unsqueeze(0))
        if not isinstance(sample, torch.Tensor) or sample.shape[1:] != shape:
            got = tuple(sample.shape[1:]) if isinstance(sample, torch.Tensor) else type(sample).__name__
            raise ValueError(f"obs_maps[{i}] maps an observation to shape {got}, but its declared mapped shape is {tuple(shape)}")
        return Unbounded(shape=shape, dtype=sample.dtype, device=spec.device)

    @staticmethod
    def _action_specs(levels: Sequence[Level], env_action_spec: TensorSpec) -> list[TensorSpec]:
        n = len(levels)
        specs = [None] * n
        specs[n - 1] = env_action_spec
        for i in range(n - 1):
            below, level = levels[i + 1], levels[i]
            spec = below.get_input_spec()
            if spec is None:
                raise ValueError(
                    f"Level {i + 1} ({type(below).__name__}) declares no input spec (get_input_spec() is None), so it "
                    f"cannot sit below level {i} ({type(level).__name__}); pass input_spec=... to it or make it the top level"
                )
            if isinstance(spec, Composite):
                raise TypeError(f"Level {i + 1} ({type(below).__name__}) must declare a single-tensor input spec, not a Composite")
            specs[i] = spec
        for i, (level, spec) in enumerate(zip(levels, specs)):
            if not isinstance(spec, level.supported_action_specs):
                kinds = ", ".join(t.__name__ for t in level.supported_action_specs)
                source = "the env" if i == n - 1 else f"level {i + 1} ({type(levels[i + 1]).__name__})"
                raise TypeError(
                    f"Level {i} ({type(level).__name__}) cannot feed {source}, which needs a {type(spec).__name__} "
                    f"action of shape {tuple(spec.shape)}; {type(level).__name__} produces {kinds}"
                )
        return specs

    @property
    def levels(self) -> list[Level]:
        return list(self.module)

    def make_transform(self) -> HierarchyTransform:
        """The env transform that carries the option state: ``TransformedEnv(env, h.make_transform())``."""
        return HierarchyTransform(
            self.action_specs[:-1],
            self.observation_specs[:-1],
            level_state_specs=[level.get_state_spec() for level in self.module],
            level_keys=[level.tensor_keys for level in self.module],
            reward_key=self.reward_key,
            reward_dtype=self.reward_spec.dtype,
        )

    def make_tensordict_primer(self) -> HierarchyTransform:
        """Lets ``Collector(..., auto_register_policy_transforms=True)`` add the transform itself
        (TorchRL 0.13 and later; `torchrl_layered.collectors.make_collector` works with older ones too)."""
        return self.make_transform()

    # ---------------------------------------------------------------- running
    def forward(self, tensordict: TensorDictBase, *args, **kwargs) -> TensorDictBase:
        if tensordict.get(stacked_key(ACTING), None) is None:
            raise RuntimeError(
                "Hierarchy found no option state in the tensordict: wrap the env with "
                "TransformedEnv(env, hierarchy.make_transform()), pass auto_register_policy_transforms=True "
                "to the Collector (TorchRL 0.13 and later), or build it with "
                "torchrl_layered.collectors.make_collector(env, hierarchy, ...)"
            )
        if args or kwargs:
            return super().forward(tensordict, *args, **kwargs)
        # a level that no instance hands control to this step holds its outputs: skip it
        # (one read of the acting flags for the whole stack, not one per level)
        acting = {}
        for i, level in enumerate(self.module):
            if not level.always_acts:
                key = level.tensor_keys.acting
                if key not in acting:
                    flags = tensordict.get(key)
                    acting[key] = flags.reshape(-1, flags.shape[-1]).any(0).tolist()
                if not acting[key][level.state_index]:
                    continue
            try:
                tensordict = level(tensordict)
            except Exception as error:
                error.add_note(f"Failed while executing level {i} ({type(level).__name__}).")
                raise
        return tensordict

    def transitions(self, batch: TensorDictBase) -> list[TensorDictBase]:
        """One TensorDict per level (0 = top) of the semi-MDP transitions completed in ``batch``.

        Each level's entries are read where its ``tensor_keys`` say (`Level.set_keys`), the
        keys its acting writes: remapping a level's keys moves both.

        A batch collected without the hierarchy's transform, or by a hierarchy of another
        depth, is refused with an `InvalidDataError` that says what is missing.
        """
        levels = self.levels
        keys = [level.tensor_keys for level in levels]
        held = [key for k in keys[:-1] for key in (k.action, k.start_observation)]
        read = {keys[0].observation, next_key(keys[0].observation), keys[-1].action}
        check_option_state(batch, len(levels), [*read, *held])
        return [
            level_transitions(
                batch,
                i,
                action_key=k.action,
                level_input_key=None if level.is_top else k.level_input,
                start_observation_key=None if level.always_acts else k.start_observation,
                observation_key=k.observation,
                obs_map=level.obs_map,
                state_key=k.state,
            )
            for i, (level, k) in enumerate(zip(levels, keys))
        ]

    def extend(self, batch: TensorDictBase) -> list[TensorDictBase]:
        """Feeds every level its semi-MDP transitions from ``batch``; returns them.

        Every level checks its transitions before any level stores, so a refused batch
        (`InvalidDataError`) leaves the whole hierarchy as it was. A level whose child stops
        learning in this batch empties its buffer where it asks to (``refresh_when_child_freezes``).
        """
        transitions = self.transitions(batch)
        accepted = [level.accept(data.clone(False)) for level, data in zip(self.module, transitions)]
        learning = [not level.learning_done for level in self.module]
        for level, data in zip(self.module, accepted):
            level.record(data)
        levels = list(self.module)
        for parent, child, was_learning in zip(levels, levels[1:], learning[1:]):
            if was_learning and child.learning_done and parent.refresh_when_child_freezes and parent.replay_buffer is not None:
                parent.replay_buffer.empty()
        return transitions

    def learn(self) -> dict[str, float]:
        """Runs every level's update schedule; metrics are named ``level{k}/{name}``."""
        metrics = {}
        for i, level in enumerate(self.module):
            if level.training:
                metrics.update({f"level{i}/{name}": value for name, value in (level.learn() or {}).items()})
        return metrics
