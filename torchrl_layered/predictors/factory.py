"""Predictor factories: how a planner level builds its predictor once it knows its specs."""
from __future__ import annotations

import inspect
from typing import Callable

from torchrl.data import TensorSpec
from torchrl.envs import EnvBase

from torchrl_layered.envs.make import goal_slices
from torchrl_layered.predictors.encoders import FixedEncoder, IdentityEncoder
from torchrl_layered.predictors.predictor import Predictor, RewardPredictor

#: Builds a predictor for a level: ``factory(observation_spec, action_spec, input_dim=0) -> Predictor``;
#: ``input_dim`` (passed only below a parent) is the size of the level input to condition on.
PredictorFactory = Callable[..., Predictor]


def default_predictor_factory(observation_spec: TensorSpec, action_spec: TensorSpec, input_dim: int = 0,
                              **predictor_kwargs) -> RewardPredictor:
    """A learned `RewardPredictor` on the raw observation (identity encoder; ``predictor_kwargs`` size it)."""
    return RewardPredictor(IdentityEncoder(observation_spec.shape[-1]), action_spec.shape[-1], input_dim=input_dim,
                           **predictor_kwargs)


def build_predictor(factory: PredictorFactory, observation_spec: TensorSpec, action_spec: TensorSpec,
                    input_dim: int) -> Predictor:
    """Calls ``factory``, passing ``input_dim`` only below a parent (so two-argument factories serve top levels)."""
    if not input_dim:
        return factory(observation_spec, action_spec)
    try:
        inspect.signature(factory).bind(observation_spec, action_spec, input_dim=input_dim)
    except TypeError:
        raise TypeError(
            f"A planner level below a parent conditions its predictor on the level input ({input_dim} features), but "
            f"predictor_factory {getattr(factory, '__name__', factory)!r} takes no input_dim: give it a parameter "
            "input_dim and pass it to RewardPredictor(..., input_dim=input_dim)"
        ) from None
    return factory(observation_spec, action_spec, input_dim=input_dim)


def get_default_predictor_factory(env: EnvBase, *, known_reward: bool = False,
                                  **predictor_kwargs) -> Callable[..., RewardPredictor]:
    """A factory of learned `RewardPredictor`s whose state is the achieved goal and context the desired goal.

    The planner then predicts where the agent's goal-relevant coordinates go under its
    options, conditioned on the goal; a skill level below learns skills that are predictable
    and diverse in exactly that space.

    Args:
        env: a goal-based env from ``make_env`` (dict observation flattened into ``observation``).
        known_reward: plan with the env's own reward of (achieved, desired goal) at the predicted
            states (``env.goal_reward``, `RewardPredictor`'s ``goal_reward``) instead of a learned
            reward head; the env must define one (``Maze2D`` does).
        **predictor_kwargs: passed to `RewardPredictor` (e.g. ``num_members``, ``hidden_sizes``).
    """
    slices = goal_slices(env)
    if known_reward:
        goal_reward = getattr(env, "goal_reward", None)
        if goal_reward is None:
            raise ValueError("get_default_predictor_factory(known_reward=True) needs an env whose reward is known in "
                             "torch (env.goal_reward, set by make_env for envs with a torch_reward such as Maze2D); "
                             "use known_reward=False to learn the reward")
        predictor_kwargs["goal_reward"] = goal_reward
    return GoalSpacePredictorFactory(slices["achieved_goal"], slices["desired_goal"], predictor_kwargs)


class GoalSpacePredictorFactory:
    """Builds `RewardPredictor`s on the achieved goal (state) and desired goal (context) slices.

    A class rather than a closure, so that a level holding it pickles: collector workers
    receive the hierarchy by pickle (`torchrl_layered.collectors.make_collector`).
    """

    def __init__(self, achieved: slice, desired: slice, predictor_kwargs: dict):
        self.achieved, self.desired, self.predictor_kwargs = achieved, desired, dict(predictor_kwargs)

    def __call__(self, observation_spec: TensorSpec, action_spec: TensorSpec, input_dim: int = 0) -> RewardPredictor:
        encoder = FixedEncoder(range(self.achieved.start, self.achieved.stop), range(self.desired.start, self.desired.stop))
        return RewardPredictor(encoder, action_spec.shape[-1], input_dim=input_dim, **self.predictor_kwargs)
