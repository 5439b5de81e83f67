"""`make_env`: batched gymnasium envs for TorchRL without phantom steps."""
from __future__ import annotations

import functools

import gymnasium as gym
from torchrl.envs import EnvBase, GymWrapper


def _make_one(name: str, kwargs: dict) -> gym.Env:
    return gym.make(name, **kwargs)


def make_env(
    name: str,
    num_envs: int = 1,
    *,
    asynchronous: bool = False,
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
        device: where the env writes its tensors.
        **gym_kwargs: passed to ``gym.make`` for each instance.
    """
    if not isinstance(num_envs, int) or num_envs < 1:
        raise ValueError(f"make_env needs num_envs >= 1; got {num_envs!r}")
    try:
        gym.spec(name)
    except gym.error.Error as err:
        raise ValueError(f"make_env: unknown gymnasium env {name!r} ({err})") from None
    fns = [functools.partial(_make_one, name, gym_kwargs) for _ in range(num_envs)]
    vector_cls = gym.vector.AsyncVectorEnv if asynchronous else gym.vector.SyncVectorEnv
    vec = vector_cls(fns, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    return GymWrapper(vec, categorical_action_encoding=True, device=device)
