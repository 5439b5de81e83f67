"""The hierarchy works through TorchRL's data path: collectors, batched and vector envs."""
from __future__ import annotations

import functools

import pytest
import torch
from torchrl.collectors import MultiSyncCollector
from torchrl.data import Bounded
from torchrl.envs import GymEnv, ParallelEnv, SerialEnv, TransformedEnv

from helpers import EchoLevel, assert_same_transitions, echo_action, reference_transitions
from torchrl_layered import Hierarchy
from torchrl_layered.collectors import make_collector
from torchrl_layered.envs import make_env

INTERVALS = [None, 3, 2]


def echo_hierarchy(env):
    levels = [
        EchoLevel(k, control_interval=ci, input_spec=Bounded(-1.0, 1.0, shape=(k,)) if k else None)
        for k, ci in enumerate(INTERVALS)
    ]
    return Hierarchy(levels, env=env)


def rows(values, has_input):
    out = []
    for j in range(values[0].shape[0]):
        out.append(tuple(
            None if v is None else tuple(float(x) for x in v[j].reshape(-1)) for v in values
        ))
    return out


def assert_matches_reference(hierarchy, batches):
    """Rebuilds each instance's stream from the batches and checks every level's transitions."""
    time = batches[0].shape[-1]
    data = torch.cat([b.reshape(-1, time) for b in batches], dim=1)
    specs = hierarchy.action_specs

    def act(k, obs, level_input):
        li = None if level_input is None else level_input.unsqueeze(0)
        return echo_action(k, obs.unsqueeze(0), li, specs[k])[0]

    got = [[] for _ in INTERVALS]
    for batch in batches:
        for k, t in enumerate(hierarchy.transitions(batch)):
            got[k] += rows([t["observation"], t.get("level_input", None), t["action"], t["next", "reward"],
                            t["next", "duration"], t["next", "observation"], t["next", "terminated"],
                            t["next", "truncated"]], k > 0)
    expected = [[] for _ in INTERVALS]
    for i in range(data.shape[0]):
        d = data[i]
        stream = [
            (d["observation"][t], float(d["next", "reward"][t]), d["next", "observation"][t],
             bool(d["next", "terminated"][t]), bool(d["next", "truncated"][t]))
            for t in range(d.shape[0])
        ]
        for k, trans in enumerate(reference_transitions(stream, INTERVALS, act)):
            for start, li, a, r, dur, end, term, trunc in trans:
                expected[k] += rows([start[None], None if li is None else li[None], a[None], torch.tensor([[r]]),
                                     torch.tensor([[dur]]), end[None], torch.tensor([[term]]),
                                     torch.tensor([[trunc]])], k > 0)
    episode_ends = int(data["next", "done"].sum())
    assert episode_ends > 0, "the test needs episode ends"
    for k in range(len(INTERVALS)):
        assert_same_transitions(got[k], expected[k], f"level {k}")


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
        # CartPole terminates outside these bounds; a reset observation lies within +-0.05
        assert bool(((x.abs() > 2.4) | (theta.abs() > 0.2095)).all())
