"""Levels without learning: baselines and plumbing (random, constant, a fixed sequence)."""
from __future__ import annotations

import torch
from tensordict import TensorDictBase
from torchrl.data import Binary, Bounded, Categorical, MultiCategorical, MultiOneHot, OneHot, TensorSpec

from torchrl_layered.levels.base import Level

_DISCRETE = (Categorical, OneHot, MultiCategorical, MultiOneHot, Binary)


class RandomLevel(Level):
    """Samples uniformly from its action spec (Box or discrete) at each of its steps.

    Args:
        input_spec: spec of the option it accepts as a lower level (it ignores the value).
        control_interval: own steps before it hands control back (``None``: episode end).
    """

    supported_action_specs = (Bounded, *_DISCRETE)

    def get_action(self, tensordict: TensorDictBase) -> torch.Tensor:
        spec = self.action_spec
        n = tensordict.shape[0]
        if isinstance(spec, Bounded):
            low, high = spec.space.low, spec.space.high
            u = torch.rand(n, *spec.shape, device=tensordict.device, dtype=low.dtype)
            return low.to(u.device) + u * (high - low).to(u.device)
        return spec.rand((n,)).to(tensordict.device)


class ConstantLevel(Level):
    """Always outputs the same action: plumbing, and a fixed option for testing a level below.

    Args:
        value: the action, shaped like the action spec.
    """

    def __init__(self, value, **kwargs):
        super().__init__(**kwargs)
        self.register_buffer("value", torch.as_tensor(value))

    def initialize(self, observation_spec: TensorSpec, action_spec: TensorSpec, parent: Level | None = None) -> None:
        super().initialize(observation_spec, action_spec, parent)
        value = self.value.to(action_spec.dtype)
        if value.shape != action_spec.shape:
            raise ValueError(
                f"ConstantLevel value has shape {tuple(value.shape)} but its action spec needs {tuple(action_spec.shape)}"
            )
        if not action_spec.is_in(value.to(action_spec.device)):
            raise ValueError(f"ConstantLevel value {value.tolist()} lies outside its action spec {action_spec}")
        self.value = value

    def get_action(self, tensordict: TensorDictBase) -> torch.Tensor:
        return self.value.to(tensordict.device).expand(tensordict.shape[0], *self.value.shape)


class ActionSequenceLevel(Level):
    """Plays a fixed sequence of actions, one entry per own step since it got control.

    The sequence restarts whenever the level gets control again (a new option from its
    parent, or a new episode). Past its end the level keeps the last entry, or starts over
    with ``cycle=True``.

    Args:
        actions: a tensor ``[T, *action_shape]``.
        cycle: wrap around instead of holding the last entry.
    """

    def __init__(self, actions, *, cycle: bool = False, **kwargs):
        super().__init__(**kwargs)
        actions = torch.as_tensor(actions)
        if actions.dim() < 1 or actions.shape[0] == 0:
            raise ValueError("ActionSequenceLevel needs a non-empty sequence [T, *action_shape]")
        self.register_buffer("actions", actions)
        self.cycle = cycle

    def initialize(self, observation_spec: TensorSpec, action_spec: TensorSpec, parent: Level | None = None) -> None:
        super().initialize(observation_spec, action_spec, parent)
        if self.actions.shape[1:] != action_spec.shape:
            raise ValueError(
                f"ActionSequenceLevel entries have shape {tuple(self.actions.shape[1:])} but its action spec "
                f"needs {tuple(action_spec.shape)}"
            )
        self.actions = self.actions.to(action_spec.dtype)

    def get_action(self, tensordict: TensorDictBase) -> torch.Tensor:
        index = tensordict.get("steps").squeeze(-1) - 1
        length = self.actions.shape[0]
        index = index.remainder(length) if self.cycle else index.clamp(max=length - 1)
        return self.actions.to(tensordict.device)[index]
