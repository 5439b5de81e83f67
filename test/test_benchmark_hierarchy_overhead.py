"""`benchmarks/hierarchy_overhead.py`: ``--floor``'s carried entries are the hierarchy's own, held unchanged;
``--levels N`` builds a random hierarchy of that depth."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from torchrl.data import Bounded
from torchrl.envs import TransformedEnv

from torchrl_layered import Hierarchy, RandomLevel
from torchrl_layered.envs import make_env
from torchrl_layered.keys import LEVELS

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _benchmark():
    sys.path.insert(0, str(BENCHMARKS))  # it imports its sibling `machine`
    try:
        spec = importlib.util.spec_from_file_location("hierarchy_overhead", BENCHMARKS / "hierarchy_overhead.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_the_carried_entries_are_the_hierarchys_and_each_step_holds_them():
    env = make_env("Pendulum-v1", 2)
    hierarchy = Hierarchy([RandomLevel(), RandomLevel(input_spec=Bounded(-1.0, 1.0, shape=(2,)), control_interval=3)],
                          env=env)
    real = TransformedEnv(env, hierarchy.make_transform())
    carried = TransformedEnv(make_env("Pendulum-v1", 2), _benchmark().CarriedEntriesOnly.of(hierarchy))
    assert carried.full_state_spec == real.full_state_spec
    assert carried.full_observation_spec == real.full_observation_spec
    td = carried.reset()
    td["levels", "duration"] = torch.tensor([[3, 1], [2, 5]])
    td["action"] = carried.full_action_spec["action"].rand()
    step = carried.step(td)
    held, written = td.get(LEVELS), step.get(("next", LEVELS))
    real_step = real.step(real.reset().set("action", td["action"]))
    assert set(written.keys()) == set(real_step.get(("next", LEVELS)).keys())
    for key in written.keys():
        assert torch.equal(written[key], held[key]), key


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_the_random_hierarchy_has_the_asked_depth_and_steps(depth):
    env = make_env("Pendulum-v1", 2)
    hierarchy = _benchmark().random_hierarchy(env, depth)
    assert len(hierarchy.levels) == depth
    rollout = TransformedEnv(env, hierarchy.make_transform()).rollout(7, hierarchy)
    assert rollout.batch_size == torch.Size([2, 7])
    acting = rollout.get(("levels", "acting"))
    assert acting.shape == (2, 7, depth)
    assert acting[..., -1].all()  # the lowest level acts at every step
    if depth > 1:  # the top acts at the first step and again only when the levels below hand control back
        assert acting[:, 0, 0].all() and not acting[..., 0].all()
