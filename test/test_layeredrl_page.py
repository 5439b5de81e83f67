"""The LayeredRL Levels page's snippets, typed as a user coming from LayeredRL would.

Only ``layeredrl`` became ``torchrl_layered`` and the page's ``...`` got small values; each
level then runs in a `Hierarchy` with a TorchRL `Collector`. The page's custom level is
ported in test/test_compat.py, the Tianshou config in test/levels/test_tianshou_v05.py.
"""
from __future__ import annotations

from functools import partial

import pytest
import torch
from torchrl.collectors import Collector

from torchrl_layered import Hierarchy
from torchrl_layered.collectors import make_collector
from torchrl_layered.envs import make_env


def run(levels, env, frames: int = 40) -> list:
    """Builds the hierarchy, collects ``frames`` env steps, stores and learns; returns the transitions per level."""
    hierarchy = Hierarchy(levels, env=env)
    collector = make_collector(env, hierarchy, frames_per_batch=frames, total_frames=frames)
    stored = []
    for batch in collector:
        stored = hierarchy.extend(batch)
        hierarchy.learn()
    collector.shutdown()
    return stored


def test_the_tdmpc2_snippet():
    from torchrl_layered.levels import TDMPC2Level
    from torchrl_layered.tdmpc2 import get_default_tdmpc2_config

    tdmpc2_config = get_default_tdmpc2_config()
    tdmpc2_config["discount_factor"] = [0.95]
    level = TDMPC2Level(tdmpc2_config=tdmpc2_config)

    assert level.cfg["gamma"] == 0.95
    (transitions,) = run([level], make_env("Pendulum-v1", 2))
    assert transitions.numel() == 40 and level.n_transitions == 40


@pytest.mark.parametrize("name", ["DADSLevel", "SPlaTESLevel"])
def test_the_skill_level_snippets_below_a_planner(name):
    import torchrl_layered.levels as levels
    from torchrl_layered.levels import PlannerLevel
    from torchrl_layered.predictors import get_default_predictor_factory

    skill_level = getattr(levels, name)(
        skill_space_dim=3,  # dimension of skill vector
    )
    assert skill_level.skill_dim == 3 and skill_level.get_input_spec().shape == (3,)
    env = make_env("Maze2D-Open-v0", 2)
    top = PlannerLevel(predictor_factory=get_default_predictor_factory(env), horizon=2, num_samples=16,
                       num_iterations=1, warm_up_steps=10)
    top_transitions, skill_transitions = run([top, skill_level], env)
    assert top.action_spec.shape == (3,) and skill_transitions.numel() == 40


def test_the_planner_snippet():
    from torchrl_layered.levels import PlannerLevel
    from torchrl_layered.planners import CEMPlanner, ICEMPlanner
    from torchrl_layered.predictors import get_default_predictor_factory

    env = make_env("Maze2D-Medium-v0", 2)
    momentum, clip, horizon = 0.1, True, 15

    predictor_factory = get_default_predictor_factory(env)
    cem_params = {
        "n_samples": 256,
        "n_iterations": 6,
        "elite_ratio": 0.05,
        "momentum": momentum,
        "clip": clip,
        "return_mode": "mean",
    }
    planner_factory = partial(
        CEMPlanner,
        cem_params=cem_params,
    )
    planner_level = PlannerLevel(
        partial_planner=planner_factory,
        predictor_factory=predictor_factory,
        initial_guess=torch.zeros(2),
        horizon=horizon,
    )

    planner_level.warm_up_steps = 0  # plan from the first step
    (transitions,) = run([planner_level], env, frames=4)
    planner = planner_level.planner
    # LayeredRL's CEMPlanner is iCEM unless use_icem=False; its cem_params are the budget
    assert isinstance(planner, ICEMPlanner)
    assert (planner.num_samples, planner.num_iterations, planner.num_elites) == (256, 6, 13)
    assert planner.momentum == 0.1 and planner.result_mode == "mean" and planner.horizon == 15
    assert torch.equal(planner.centre, torch.zeros(2)) and transitions.numel() == 4
    plain = PlannerLevel(partial_planner=partial(CEMPlanner, cem_params=cem_params, use_icem=False))
    assert plain.planner_cls is CEMPlanner


@pytest.mark.parametrize("call, message", [
    (lambda L: L.PlannerLevel(partial_planer=None), r"unknown argument 'partial_planer' \(did you mean 'partial_planner'\?\)"),
    (lambda L: L.SPlaTESLevel(skill_dims=2), r"unknown argument 'skill_dims' \(did you mean 'skill_dim'\?\)"),
    (lambda L: L.TDMPC2Level(tdmpc_config={}), r"unknown argument 'tdmpc_config' \(did you mean 'tdmpc2_config'\?\)"),
    (lambda L: L.DADSLevel(skill_space_dim=2, skill_dim=3), r"got both skill_space_dim= and skill_dim="),
    (lambda L: L.RandomLevel(controll_interval=3), r"did you mean 'control_interval'"),
    (lambda L: L.TDMPC2Level(goal_based=True), r"'goal_based' \(goal mode follows from desired_goal_slice="),
])
def test_a_wrong_name_fails_naming_the_right_one(call, message):
    import torchrl_layered.levels as levels

    with pytest.raises(TypeError, match=message):
        call(levels)


def test_cem_params_are_checked():
    from torchrl_layered.levels import PlannerLevel
    from torchrl_layered.planners import CEMPlanner

    with pytest.raises(ValueError, match=r"cem_params has unknown keys \['n_elites'\]"):
        PlannerLevel(partial_planner=partial(CEMPlanner, cem_params={"n_elites": 4}))
    with pytest.raises(ValueError, match="return_mode 'random' is not supported"):
        PlannerLevel(partial_planner=partial(CEMPlanner, cem_params={"return_mode": "random"}))
