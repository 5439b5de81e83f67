"""`make_env`: batched gymnasium envs without phantom steps."""
from __future__ import annotations

import pytest
import torch
from torchrl.data import Categorical

from torchrl_layered.envs import make_env


def test_batch_size_and_discrete_encoding():
    env = make_env("CartPole-v1", 3)
    assert env.batch_size == (3,)
    assert isinstance(env.action_spec_unbatched, Categorical) and env.action_spec_unbatched.shape == ()


def test_every_step_after_an_episode_end_is_real():
    env = make_env("CartPole-v1", 2)
    rollout = env.rollout(300, break_when_any_done=False)
    done = rollout["next", "done"].squeeze(-1)
    assert done.any()
    # CartPole pays 1 per real step; a phantom step would pay 0
    assert bool((rollout["next", "reward"] == 1).all())


def test_unknown_env_and_bad_width_are_refused():
    with pytest.raises(ValueError, match="unknown gymnasium env 'NoSuchEnv-v0'"):
        make_env("NoSuchEnv-v0", 2)
    with pytest.raises(ValueError, match="num_envs >= 1"):
        make_env("CartPole-v1", 0)


def test_gym_kwargs_reach_each_instance():
    env = make_env("Pendulum-v1", 2, max_episode_steps=7)
    rollout = env.rollout(7, break_when_any_done=False)
    assert bool(rollout["next", "truncated"][:, -1].all()) and not bool(rollout["next", "truncated"][:, :-1].any())
    assert torch.isfinite(rollout["next", "reward"]).all()
