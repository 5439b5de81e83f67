"""Every learning level acts and learns on the env's device: CPU everywhere, CUDA where there is one.

Each case collects from a batched env that writes its tensors on ``device``, feeds the
hierarchy's transitions to its levels and runs their updates; actions, parameters and
buffers must stay on that device and the metrics must be finite.
"""
from __future__ import annotations

import math

import pytest
import torch

from torchrl_layered import Hierarchy
from torchrl_layered.collectors import make_collector
from torchrl_layered.envs import make_env
from torchrl_layered.envs.make import goal_slices
from torchrl_layered.levels import PlannerLevel, TDMPC2Level
from torchrl_layered.levels.dads import DADSLevel
from torchrl_layered.hierarchies.skills import cpu_tdmpc2_config
from torchrl_layered.levels.splates import SPlaTESLevel
from torchrl_layered.predictors import IdentityEncoder, RewardPredictor, get_default_predictor_factory

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"))]


def tiny_tdmpc2(**kw):
    return cpu_tdmpc2_config(enc_dim=16, mlp_dim=32, latent_dim=16, batch_size=8, num_samples=16, num_elites=4,
                             num_pi_trajs=2, num_iterations=2, **kw)


def small_planner(factory, **kw):
    return PlannerLevel(predictor_factory=factory, horizon=3, num_samples=16, num_iterations=2, num_elites=4,
                        warm_up_steps=30, batch_size=16, **kw)


def train(env, hierarchy, frames: int) -> tuple[dict, torch.Tensor]:
    collector = make_collector(env, hierarchy, frames_per_batch=env.batch_size.numel() * 20, total_frames=frames)
    metrics, batch = {}, None
    for batch in collector:
        hierarchy.extend(batch)
        metrics.update(hierarchy.learn())
    collector.shutdown()
    return metrics, batch


def assert_on(device: str, hierarchy: Hierarchy, batch, metrics: dict, levels: int) -> None:
    assert batch["action"].device.type == device
    for level in hierarchy.levels:
        assert {p.device.type for p in level.parameters()} == {device}, type(level).__name__
    assert {name.split("/")[0] for name in metrics} == {f"level{k}" for k in range(levels)}
    assert all(math.isfinite(value) for value in metrics.values()), metrics


@pytest.mark.parametrize("device", DEVICES)
def test_a_learned_planner_on_the_device(device):
    torch.manual_seed(0)
    env = make_env("Pendulum-v1", 2, device=device)
    factory = lambda obs_spec, act_spec: RewardPredictor(  # noqa: E731
        IdentityEncoder(obs_spec.shape[-1]), act_spec.shape[-1], num_members=2, hidden_sizes=(16,), head_sizes=(16,))
    hierarchy = Hierarchy([small_planner(factory)], env=env)
    metrics, batch = train(env, hierarchy, 160)
    assert_on(device, hierarchy, batch, metrics, 1)


@pytest.mark.parametrize("device", DEVICES)
def test_tdmpc2_goal_based_with_her_on_the_device(device):
    torch.manual_seed(0)
    env = make_env("Maze2D-Open-v0", 2, max_episode_steps=20, device=device)
    slices = goal_slices(env)
    level = TDMPC2Level(tiny_tdmpc2(horizon=3), desired_goal_slice=slices["desired_goal"],
                        achieved_goal_slice=slices["achieved_goal"], use_her=True, warm_up_steps=40,
                        reward_fn=lambda achieved_goal, desired_goal: -(achieved_goal - desired_goal).norm(dim=-1))
    hierarchy = Hierarchy([level], env=env)
    metrics, batch = train(env, hierarchy, 160)
    assert_on(device, hierarchy, batch, metrics, 1)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("skill_level", [SPlaTESLevel, DADSLevel])
def test_a_planner_over_skills_on_the_device(device, skill_level):
    torch.manual_seed(0)
    env = make_env("Maze2D-Open-v0", 2, max_episode_steps=25, device=device)
    factory = get_default_predictor_factory(env, num_members=1, hidden_sizes=(16,), head_sizes=(16,))
    skill = skill_level(2, tiny_tdmpc2(), control_interval=5, warm_up_steps=20, n_skill_samples=8)
    hierarchy = Hierarchy([small_planner(factory), skill], env=env)
    metrics, batch = train(env, hierarchy, 240)
    assert_on(device, hierarchy, batch, metrics, 2)
    assert batch["levels", "0", "action"].device.type == device
