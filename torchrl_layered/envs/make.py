"""`make_env`: batched gymnasium envs for TorchRL without phantom steps."""
from __future__ import annotations

import functools

import gymnasium as gym
import numpy as np
from torchrl.envs import EnvBase, GymWrapper, TransformedEnv
from torchrl.envs.gym_like import GymLikeEnv

#: The entries of a goal-based observation, in the order `make_env` concatenates them.
GOAL_KEYS = ("observation", "achieved_goal", "desired_goal")


class FlattenGoalObservation(gym.ObservationWrapper):
    """Concatenates a goal env's ``observation``, ``achieved_goal`` and ``desired_goal`` (in that order).

    Flattening inside gymnasium keeps the observation a plain Box, so TorchRL's handling of
    final observations on auto-reset applies to it.
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        spaces = [env.observation_space[key] for key in GOAL_KEYS]
        self.slices, start = {}, 0
        for key, space in zip(GOAL_KEYS, spaces):
            size = int(np.prod(space.shape))
            self.slices[key] = slice(start, start + size)
            start += size
        low = np.concatenate([np.broadcast_to(s.low, s.shape).reshape(-1) for s in spaces]).astype(np.float32)
        high = np.concatenate([np.broadcast_to(s.high, s.shape).reshape(-1) for s in spaces]).astype(np.float32)
        self.observation_space = gym.spaces.Box(low, high, dtype=np.float32)

    def observation(self, observation):
        return np.concatenate([np.asarray(observation[key], np.float32).reshape(-1) for key in GOAL_KEYS])


class VectorGymWrapper(GymWrapper):
    """`GymWrapper` of a gymnasium vector env whose actions stay batched for a single instance too.

    TorchRL 0.12 hands a lone discrete action to the env as a Python int, which a vector env of
    one instance cannot take; later TorchRL versions pass the array, as this wrapper does.
    """

    def read_action(self, action):
        return GymLikeEnv.read_action(self, action)


def _is_goal_space(space: gym.Space) -> bool:
    return isinstance(space, gym.spaces.Dict) and set(GOAL_KEYS) <= set(space.spaces)


def _make_one(name: str, kwargs: dict, flatten_goals: bool) -> gym.Env:
    env = gym.make(name, **kwargs)
    if flatten_goals and _is_goal_space(env.observation_space):
        env = FlattenGoalObservation(env)
    return env


def make_env(
    name: str,
    num_envs: int = 1,
    *,
    asynchronous: bool = False,
    flatten_goals: bool = True,
    device: str | None = None,
    **gym_kwargs,
) -> EnvBase:
    """Builds ``num_envs`` instances of a gymnasium env as one TorchRL env of batch ``[num_envs]``.

    The instances run in a gymnasium vector env in ``SAME_STEP`` autoreset mode, so every
    collected step is real: ``GymEnv(name, num_envs=N)`` records a phantom step after each
    episode end instead. Discrete actions are integer-coded (``Categorical``).

    Args:
        name: a registered gymnasium id (e.g. ``"Pendulum-v1"``, ``"Maze2D-Medium-v0"``).
        num_envs: number of instances (the env's batch size).
        asynchronous: one subprocess per instance (``AsyncVectorEnv``) instead of in-process.
        flatten_goals: for goal-based envs (dict observations with ``achieved_goal`` and
            ``desired_goal``), concatenate ``observation``, ``achieved_goal`` and
            ``desired_goal`` into one flat ``observation``, so a level sees all of it;
            `goal_slices(env)` tells where each part lies, and ``env.goal_reward`` is the env's
            reward as a torch function of (achieved goal, desired goal) where the env defines
            one (``Maze2D.torch_reward``), else None.
        device: where the env writes its tensors.
        **gym_kwargs: passed to ``gym.make`` for each instance.
    """
    if not isinstance(num_envs, int) or num_envs < 1:
        raise ValueError(f"make_env needs num_envs >= 1; got {num_envs!r}")
    try:
        gym.spec(name)
    except gym.error.Error as err:
        raise ValueError(f"make_env: unknown gymnasium env {name!r} ({err})") from None
    fns = [functools.partial(_make_one, name, gym_kwargs, flatten_goals) for _ in range(num_envs)]
    vector_cls = gym.vector.AsyncVectorEnv if asynchronous else gym.vector.SyncVectorEnv
    vec = vector_cls(fns, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    env = VectorGymWrapper(vec, categorical_action_encoding=True, device=device)
    base = env.base_env if isinstance(env, TransformedEnv) else env
    if base.reward_spec.shape == base.batch_size:
        # TorchRL 0.12 drops the reward's trailing dimension for a single instance: [1] instead of [1, 1]
        base.reward_spec = base.reward_spec.unsqueeze(-1)
    probe = _make_one(name, gym_kwargs, flatten_goals)
    env.goal_slices = getattr(probe, "slices", None)
    # the env's reward as a torch function of (achieved goal, desired goal), where it has one
    env.goal_reward = getattr(probe.unwrapped, "torch_reward", None) if env.goal_slices is not None else None
    probe.close()
    return env


def goal_slices(env: EnvBase) -> dict[str, slice]:
    """Where ``observation``, ``achieved_goal`` and ``desired_goal`` lie in the flat observation
    of a goal-based env built by `make_env` (dict observations are flattened in that order)."""
    slices = getattr(env, "goal_slices", None)
    if slices is None:
        raise ValueError(
            "goal_slices needs a goal-based env (dict observation with achieved_goal and desired_goal) "
            "built by torchrl_layered.envs.make_env"
        )
    return slices
