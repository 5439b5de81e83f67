"""`get_default_predictor_factory`: the predictor a planner uses on a goal-based env."""
from __future__ import annotations

from typing import Callable

from torchrl.data import TensorSpec
from torchrl.envs import EnvBase

from torchrl_layered.envs.make import goal_slices
from torchrl_layered.modules.encoders import FixedEncoder
from torchrl_layered.modules.predictor import RewardPredictor


def get_default_predictor_factory(env: EnvBase, **predictor_kwargs) -> Callable[..., RewardPredictor]:
    """A factory of learned `RewardPredictor`s whose state is the achieved goal and context the desired goal.

    The planner then predicts where the agent's goal-relevant coordinates go under its
    options, conditioned on the goal; a skill level below learns skills that are predictable
    and diverse in exactly that space.

    Args:
        env: a goal-based env from ``make_env`` (dict observation flattened into ``observation``).
        **predictor_kwargs: passed to `RewardPredictor` (e.g. ``num_members``, ``hidden_sizes``).
    """
    slices = goal_slices(env)
    achieved, desired = slices["achieved_goal"], slices["desired_goal"]

    def factory(observation_spec: TensorSpec, action_spec: TensorSpec, input_dim: int = 0) -> RewardPredictor:
        encoder = FixedEncoder(range(achieved.start, achieved.stop), range(desired.start, desired.stop))
        return RewardPredictor(encoder, action_spec.shape[-1], input_dim=input_dim, **predictor_kwargs)

    return factory
