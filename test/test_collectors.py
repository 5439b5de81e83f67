"""`make_collector`: the hierarchy's transform on the env with every TorchRL collector, old and new."""
from __future__ import annotations

import functools

import pytest
import torch
import torchrl.collectors
from torchrl.data import Bounded
from torchrl.envs import TransformedEnv

from torchrl_layered import Hierarchy, HierarchyTransform, RandomLevel
from torchrl_layered.collectors import (
    carries_hierarchy_transform,
    default_collector_cls,
    make_collector,
    registers_policy_transforms,
)
from torchrl_layered.envs import make_env

SyncDataCollector = getattr(torchrl.collectors, "SyncDataCollector", None)


def two_levels(env) -> Hierarchy:
    return Hierarchy([RandomLevel(), RandomLevel(input_spec=Bounded(-1.0, 1.0, shape=(2,)), control_interval=3)], env=env)


def count_hierarchy_transforms(env) -> int:
    found = 0
    while isinstance(env, TransformedEnv):
        stack = [env.transform]
        while stack:
            t = stack.pop()
            if isinstance(t, torchrl.envs.Compose):
                stack.extend(t)
            found += isinstance(t, HierarchyTransform)
        env = env.base_env
    return found


def run(collector, hierarchy) -> int:
    transitions = 0
    for batch in collector:
        transitions += sum(t.numel() for t in hierarchy.extend(batch))
        hierarchy.learn()
    collector.shutdown()
    return transitions


def test_the_collector_gets_the_transform_once_and_its_batches_feed_the_levels():
    env = make_env("Pendulum-v1", 2)
    hierarchy = two_levels(env)
    collector = make_collector(env, hierarchy, frames_per_batch=24, total_frames=48)
    assert type(collector) is default_collector_cls()
    assert count_hierarchy_transforms(collector.env) == 1
    assert run(collector, hierarchy) > 48  # every primitive step, plus the top level's options


def test_an_env_that_carries_the_transform_is_left_as_it_is():
    env = make_env("Pendulum-v1", 2)
    hierarchy = two_levels(env)
    env = env.append_transform(hierarchy.make_transform())
    assert carries_hierarchy_transform(env)
    collector = make_collector(env, hierarchy, frames_per_batch=24, total_frames=24)
    assert count_hierarchy_transforms(collector.env) == 1
    assert run(collector, hierarchy) > 24


def test_an_env_constructor_gets_the_transform_when_it_is_built():
    make = functools.partial(make_env, "CartPole-v1", 2)
    hierarchy = Hierarchy([RandomLevel(), RandomLevel(input_spec=Bounded(-1.0, 1.0, shape=(2,)), control_interval=2)],
                          env=make())
    collector = make_collector(make, hierarchy, frames_per_batch=20, total_frames=20)
    assert count_hierarchy_transforms(collector.env) == 1
    assert run(collector, hierarchy) > 20


@pytest.mark.skipif(SyncDataCollector is None, reason="this TorchRL has no SyncDataCollector (removed in TorchRL 0.13)")
@pytest.mark.filterwarnings("ignore:SyncDataCollector has been deprecated:DeprecationWarning")
def test_sync_data_collector_collects_for_the_hierarchy():
    env = make_env("Pendulum-v1", 2)
    hierarchy = two_levels(env)
    # as documented for TorchRL 0.12: the env wrapped by hand
    collector = SyncDataCollector(TransformedEnv(env, hierarchy.make_transform()), hierarchy, frames_per_batch=24,
                                  total_frames=48)
    assert run(collector, hierarchy) > 48
    # and through make_collector
    env = make_env("Pendulum-v1", 2)
    collector = make_collector(env, hierarchy, collector_cls=SyncDataCollector, frames_per_batch=24, total_frames=24)
    assert isinstance(collector, SyncDataCollector) and count_hierarchy_transforms(collector.env) == 1
    assert run(collector, hierarchy) > 24


def test_auto_registration_is_recognised_wherever_a_collector_declares_it():
    class Declares:
        def __init__(self, env, policy, *, auto_register_policy_transforms=None):
            pass

    class Inherits(Declares):
        def __init__(self, env, policy, **kwargs):
            super().__init__(env, policy, **kwargs)

    class Unaware:
        def __init__(self, env, policy, **kwargs):
            pass

    assert registers_policy_transforms(Declares) and registers_policy_transforms(Inherits)
    assert not registers_policy_transforms(Unaware)


def test_what_make_collector_cannot_take_is_refused():
    env = make_env("Pendulum-v1", 1)
    hierarchy = Hierarchy([RandomLevel()], env=env)
    with pytest.raises(TypeError, match="needs a torchrl_layered Hierarchy"):
        make_collector(env, RandomLevel(), frames_per_batch=10, total_frames=10)
    with pytest.raises(TypeError, match="adds the hierarchy's transform itself"):
        make_collector(env, hierarchy, frames_per_batch=10, total_frames=10, auto_register_policy_transforms=True)
    with pytest.raises(TypeError, match="needs an env"):
        make_collector(42, hierarchy, frames_per_batch=10, total_frames=10)
    assert torch.is_tensor(env.reset()["observation"])
