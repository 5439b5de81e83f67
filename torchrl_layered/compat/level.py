"""`LayeredRLLevel`: custom levels written against LayeredRL's level interface, run by a `Hierarchy`.

A LayeredRL level speaks gymnasium spaces and per-instance masks: ``initialize(env_obs_space,
action_space, n_env_instances, parent_predictor, ...)``, ``get_input_space()``,
``get_action(mapped_env_obs, level_input, level_input_info, active_instances)``,
``process_transition(...)``, ``get_level_state``, ``get_reward`` and ``learn``, with the
``cum_reward`` / ``elapsed_env_steps`` counters. Subclass `LayeredRLLevel` instead of
LayeredRL's ``Level`` and the class runs unchanged at any depth of a torchrl_layered
`Hierarchy`: this adapter does the TensorDict plumbing.

What differs, and why:

- ``get_action`` sees every instance's mapped observation and level input (``[n, ...]``)
  with the mask of those acting, and returns actions for the acting ones, as the page's
  example indexes them (``mapped_env_obs[active_instances]``).
- ``process_transition`` is called with the level's exact semi-MDP transitions when a
  collector batch reaches ``hierarchy.extend(batch)``, instance by instance in time order,
  with ``cum_reward`` and ``elapsed_env_steps`` holding each option's summed reward and
  duration. Its return value resets ``n_steps_in_control`` as in LayeredRL, but does not
  hand control back: here a level decides that when it acts (`Level.is_done`), before the
  option's end observation exists, so a ported level that must return control to a parent
  does so with ``control_interval=`` (or by overriding ``is_done``).
- The observation map is applied by the hierarchy: ``initialize`` gets the mapped space as
  ``env_obs_space``, ``env_obs_map=None`` and its shape as ``mapped_env_obs_shape``.
"""
from __future__ import annotations

from typing import Any

import torch
from gymnasium import spaces
from tensordict import TensorDictBase
from torchrl.data import TensorSpec

from torchrl_layered.keys import INSTANCE, NEXT_DURATION
from torchrl_layered.compat.spaces import space_to_spec, spec_to_space
from torchrl_layered.levels.base import Level


class LayeredRLLevel(Level):
    """Base class for levels written as on LayeredRL's Levels page (see the module docstring).

    Args:
        device, writer, log_interval: LayeredRL's base arguments; ``device`` is kept as a
            hint (the hierarchy moves levels to the env's device), the others are stored.
        **kwargs: `Level`'s (``control_interval``, ``on_nonfinite``).
    """

    def __init__(self, device: torch.device | str | None = None, writer: Any = None, log_interval: int = 1000,
                 **kwargs):
        if "input_spec" in kwargs:
            raise TypeError("LayeredRLLevel declares its input with get_input_space(), not input_spec=")
        super().__init__(**kwargs)
        self.writer, self.log_interval = writer, log_interval
        self.env_obs_space: spaces.Space | None = None
        self.action_space: spaces.Space | None = None
        self.input_space: spaces.Space | None = None
        self.parent_predictor = None
        self.optimizers: list[torch.optim.Optimizer] = []
        self.action_info: dict = {}
        self.n_total_steps = 0
        self._n_new_transitions = 0
        self.set_n_env_instances(1)

    # ------------------------------------------------------------ LayeredRL interface
    def get_input_space(self) -> spaces.Space | None:
        """The space of the input this level expects from its parent (None: top level only)."""
        return None

    def get_input_spec(self) -> TensorSpec | None:
        return space_to_spec(self.get_input_space())

    def initialize(self, env_obs_space: spaces.Space, action_space: spaces.Space, n_env_instances: int,
                   parent_predictor, env_obs_map=None, mapped_env_obs_shape=None, keep_params: bool = False) -> None:
        """LayeredRL's set-up: stores the spaces and sizes and allocates the per-instance counters."""
        self.env_obs_space, self.action_space = env_obs_space, action_space
        self.parent_predictor = parent_predictor
        self.env_obs_map = env_obs_map if env_obs_map is not None else (lambda obs: obs)
        self.mapped_env_obs_shape = mapped_env_obs_shape
        self.action_dim = spaces.flatdim(action_space)
        self.input_space = self.get_input_space()
        self.input_dim = spaces.flatdim(self.input_space) if self.input_space is not None else 0
        self.set_n_env_instances(n_env_instances)

    def set_n_env_instances(self, n: int) -> None:
        """(Re)allocates the per-instance counters for ``n`` env instances."""
        self.n_env_instances = n
        self.cum_reward = torch.zeros(n)
        self.elapsed_env_steps = torch.zeros(n, dtype=torch.long)
        self.n_steps_in_control = torch.zeros(n, dtype=torch.long)

    def get_level_state(self, mapped_env_obs, level_input, active_instances) -> dict:
        """Extra per-instance state to act on; none by default."""
        return {}

    def get_level_state_dims(self) -> dict[str, int]:
        return {}

    def get_reward(self, obs, level_input, level_state, action, next_obs, next_level_state, terminated,
                   cum_env_reward, elapsed_env_steps):
        """The level's reward for a transition and an info dict; by default the option's summed env reward."""
        return cum_env_reward, {}

    def process_transition(self, mapped_env_obs, level_input, action, next_mapped_env_obs, terminated, truncated,
                           active_instances) -> torch.Tensor:
        """LayeredRL's base step: resets the active instances' counters, counts the transitions; returns all False."""
        n = int(active_instances.sum())
        self.cum_reward[active_instances] = 0.0
        self.elapsed_env_steps[active_instances] = 0
        self.n_steps_in_control[active_instances] += 1
        self._n_new_transitions += n
        self.n_total_steps += n
        return torch.zeros(active_instances.shape, dtype=torch.bool, device=active_instances.device)

    def soft_reset(self) -> None:
        self.set_n_env_instances(self.n_env_instances)
        self._n_new_transitions = 0
        self.action_info = {}

    def reset(self) -> None:
        self.soft_reset()

    # ------------------------------------------------------------ the adapter
    def attach(self, observation_spec: TensorSpec, action_spec: TensorSpec, parent: Level | None = None,
               num_instances: int = 1) -> None:
        Level.initialize(self, observation_spec, action_spec, parent)
        self.initialize(spec_to_space(observation_spec), spec_to_space(action_spec), num_instances,
                        getattr(parent, "predictor", None), None, tuple(observation_spec.shape), False)

    def _act(self, acting: TensorDictBase, everyone: TensorDictBase) -> torch.Tensor:
        n = everyone.batch_size[0]
        if n != self.n_env_instances:
            self.set_n_env_instances(n)
        active = torch.zeros(n, dtype=torch.bool, device=everyone.device)
        active[acting.get(INSTANCE)] = True
        action, info = self.get_action(everyone.get("observation"), everyone.get("level_input", None), None, active)
        self.action_info = info
        return torch.as_tensor(action, device=everyone.device)

    def _transition_reward(self, transitions: TensorDictBase) -> torch.Tensor:
        return transitions.get(("next", "reward"))  # process_transition computes the level's own reward

    def extend(self, transitions: TensorDictBase) -> None:
        """Feeds the transitions to ``process_transition``, each instance's in time order."""
        instance = transitions.get(INSTANCE).reshape(-1)
        n = int(instance.max()) + 1
        if n > self.n_env_instances:
            self.set_n_env_instances(n)
        # the j-th transition of each instance goes in the j-th call (the batch lists them instance by instance)
        first = torch.ones_like(instance, dtype=torch.bool)
        first[1:] = instance[1:] != instance[:-1]
        starts = torch.nonzero(first).squeeze(-1)
        rank = torch.arange(instance.numel(), device=instance.device) - starts[torch.cumsum(first.long(), 0) - 1]
        for j in range(int(rank.max()) + 1):
            rows = torch.nonzero(rank == j).squeeze(-1)
            step = transitions[rows]
            active = torch.zeros(self.n_env_instances, dtype=torch.bool, device=instance.device)
            active[instance[rows]] = True
            self.cum_reward[instance[rows]] = step.get(("next", "reward")).reshape(-1).to(self.cum_reward.dtype)
            self.elapsed_env_steps[instance[rows]] = step.get(NEXT_DURATION).reshape(-1)
            terminated = step.get(("next", "terminated")).reshape(-1)
            truncated = step.get(("next", "truncated")).reshape(-1)
            done = self.process_transition(
                step.get("observation"), step.get("level_input", None), step.get("action"),
                step.get(("next", "observation")), terminated, truncated, active,
            )
            done = torch.as_tensor(done, dtype=torch.bool, device=instance.device).reshape(-1)
            if done.numel() == self.n_env_instances != rows.numel():  # a mask over instances, as the page returns
                done = done[instance[rows]]
            ended = done | terminated | truncated
            self.n_steps_in_control[instance[rows][ended]] = 0

    def learn(self) -> dict[str, float]:
        return {}
