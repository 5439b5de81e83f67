"""The hierarchy works through TorchRL's data path: collectors, batched and vector envs."""
from __future__ import annotations

import functools

import pytest
from torchrl.collectors import MultiSyncCollector
from torchrl.envs import GymEnv, ParallelEnv, SerialEnv, TransformedEnv

from helpers import assert_matches_reference, echo_hierarchy
from torchrl_layered.collectors import make_collector
from torchrl_layered.envs import make_env


def collect(collector):
    batches = [b.clone() for b in collector]
    collector.shutdown()
    return batches


def cartpole():
    return GymEnv("CartPole-v1", categorical_action_encoding=True)


def short_pendulum():
    return GymEnv("Pendulum-v1", max_episode_steps=13)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(cartpole, id="single-GymEnv-discrete"),
        pytest.param(lambda: SerialEnv(2, short_pendulum), id="SerialEnv-box"),
        pytest.param(lambda: make_env("CartPole-v1", 3), id="vector-SAME_STEP-discrete"),
        pytest.param(lambda: make_env("Pendulum-v1", 2, max_episode_steps=11), id="vector-SAME_STEP-box"),
    ],
)
def test_collector_with_auto_registered_transform_matches_reference(make):
    env = make()
    hierarchy = echo_hierarchy(env)
    n = max(env.batch_size.numel(), 1)
    collector = make_collector(env, hierarchy, frames_per_batch=n * 30, total_frames=n * 90)
    assert any(type(t).__name__ == "HierarchyTransform" for t in collector.env.transform)
    assert_matches_reference(hierarchy, collect(collector))


def test_parallel_env_matches_reference():
    env = ParallelEnv(2, cartpole)
    hierarchy = echo_hierarchy(env)
    collector = make_collector(TransformedEnv(env, hierarchy.make_transform()), hierarchy, frames_per_batch=60,
                               total_frames=120)
    assert_matches_reference(hierarchy, collect(collector))


def test_multi_sync_collector_with_two_workers_matches_reference():
    make = functools.partial(make_env, "CartPole-v1", 2)
    hierarchy = echo_hierarchy(make())
    collector = make_collector([make, make], hierarchy, collector_cls=MultiSyncCollector,
                               frames_per_batch=80, total_frames=240)
    batches = collect(collector)
    assert batches[0].numel() == 80
    assert_matches_reference(hierarchy, batches)


def test_terminal_observation_is_the_true_last_one_on_a_vector_env():
    env = make_env("CartPole-v1", 3)
    hierarchy = echo_hierarchy(env)
    collector = make_collector(env, hierarchy, frames_per_batch=300, total_frames=300)
    batch = collect(collector)[0]
    for trans in hierarchy.transitions(batch):
        final = trans[trans["next", "terminated"].squeeze(-1)]
        assert final.shape[0] > 0
        x, theta = final["next", "observation"][:, 0], final["next", "observation"][:, 2]
        # CartPole terminates past |x| 2.4 or |theta| 12 degrees (0.20944 rad); a reset observation lies within +-0.05
        assert bool(((x.abs() > 2.39) | (theta.abs() > 0.209)).all())
