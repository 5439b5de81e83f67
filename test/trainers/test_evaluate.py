"""`trainers/evaluate.py`: one episode per instance in eval mode, training state untouched."""
from __future__ import annotations

import torch
from torchrl.envs import RewardSum

from torchrl_layered import ConstantLevel, Hierarchy, RandomLevel
from torchrl_layered.envs import make_env
from torchrl_layered.trainers import evaluate


def eval_env(name: str, n: int, hierarchy: Hierarchy, steps: int):
    env = make_env(name, n, max_episode_steps=steps)
    return env.append_transform(hierarchy.make_transform()).append_transform(RewardSum())


def test_evaluation_runs_one_episode_per_instance_and_reports_success_on_maze2d():
    hierarchy = Hierarchy([RandomLevel()], env=make_env("Maze2D-Open-v0", 1))
    result = evaluate(hierarchy, eval_env("Maze2D-Open-v0", 3, hierarchy, 15), seed=0)
    assert result.episodes == 3
    assert result.mean_return < 0 and result.success_rate is not None and 0.0 <= result.success_rate <= 1.0


def test_evaluation_restores_train_mode_and_leaves_the_rng_and_the_level_alone():
    hierarchy = Hierarchy([RandomLevel()], env=make_env("Pendulum-v1", 1))
    env = eval_env("Pendulum-v1", 2, hierarchy, 12)
    torch.manual_seed(0)
    expected = torch.rand(2)
    torch.manual_seed(0)
    result = evaluate(hierarchy, env, seed=1)
    assert torch.equal(torch.rand(2), expected)
    assert hierarchy.training and hierarchy.levels[0].n_transitions == 0
    assert result.episodes == 2 and result.success_rate is None


def test_evaluations_with_the_same_seed_start_from_the_same_states():
    hierarchy = Hierarchy([ConstantLevel([0.5])], env=make_env("Pendulum-v1", 1))
    env = eval_env("Pendulum-v1", 2, hierarchy, 12)
    first, second, other = (evaluate(hierarchy, env, seed=s).mean_return for s in (1, 1, 2))
    assert first == second != other


def test_an_unfinished_evaluation_reports_no_episodes():
    hierarchy = Hierarchy([RandomLevel()], env=make_env("Pendulum-v1", 1))
    result = evaluate(hierarchy, eval_env("Pendulum-v1", 2, hierarchy, 50), max_steps=5)
    assert result.episodes == 0 and result.mean_return != result.mean_return  # NaN


def test_success_counts_episodes_that_reach_the_goal_and_final_success_those_that_stay():
    # a constant push to the right from the left of an open room: the agent passes the goal
    # (1.5 cells right of the start) and ends against the far wall
    env = make_env("Maze2D-Open-v0", 1, max_episode_steps=60, start_cells=[(1, 3)], goal_cells=[(3, 3)])
    hierarchy = Hierarchy([ConstantLevel([1.0, 0.0])], env=env)
    eval_env_ = env.append_transform(hierarchy.make_transform()).append_transform(RewardSum())
    result = evaluate(hierarchy, eval_env_, seed=0)
    assert result.episodes == 1 and result.success_rate == 1.0 and result.final_success_rate == 0.0
    stay = Hierarchy([ConstantLevel([0.0, 0.0])], env=env)
    result = evaluate(stay, env.append_transform(stay.make_transform()).append_transform(RewardSum()), seed=0)
    assert result.success_rate == 0.0 and result.final_success_rate == 0.0
