"""Planning with the env's known reward (``goal_reward``): Maze2D's torch reward, `make_env`'s
``env.goal_reward``, `RewardPredictor` scoring predicted states with it, and the ready-made
skill hierarchies choosing it where the env has one."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from torchrl_layered.envs import Maze2D, make_env
from torchrl_layered.hierarchies import planner_over_dads, planner_over_splates
from torchrl_layered.predictors import get_default_predictor_factory
from torchrl_layered.predictors.encoders import FixedEncoder
from torchrl_layered.predictors.predictor import RewardPredictor


@pytest.mark.parametrize("reward_type", ["dense", "sparse"])
def test_maze_torch_reward_is_compute_reward(reward_type):
    maze = Maze2D("medium", reward_type=reward_type)
    achieved = np.random.default_rng(0).uniform(0, 8, size=(50, 2))
    desired = np.random.default_rng(1).uniform(0, 8, size=(50, 2))
    desired[:5] = achieved[:5] + 0.1  # some within the goal radius
    expected = maze.compute_reward(achieved, desired)
    got = maze.torch_reward(torch.tensor(achieved), torch.tensor(desired))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)
    assert got.shape == (50,)


def test_make_env_exposes_the_goal_reward_of_envs_that_have_one():
    env = make_env("Maze2D-Medium-v0", 2, reward_type="sparse")
    assert env.goal_reward is not None
    assert float(env.goal_reward(torch.tensor([1.5, 1.5]), torch.tensor([1.6, 1.5]))) == 1.0
    assert make_env("Pendulum-v1", 1).goal_reward is None


def test_a_predictor_with_a_goal_reward_scores_the_states_it_predicts():
    torch.manual_seed(0)
    encoder = FixedEncoder(range(0, 2), range(2, 4))
    reward = lambda state, context: -(state - context).norm(dim=-1)  # noqa: E731
    predictor = RewardPredictor(encoder, 2, num_members=1, hidden_sizes=(16,), head_sizes=(8,), goal_reward=reward,
                                use_value=False)
    s, c = predictor.encode(torch.tensor([[1.0, 2.0, 3.0, 1.0], [0.0, 0.0, 0.5, 0.5]]))
    actions = torch.rand(2, 5, 3, 2) * 2 - 1
    with torch.no_grad():
        got = predictor.returns(s, c, actions, gamma=0.9, deterministic=True, use_value=False, use_termination=False)
        # by hand: step the model, score where it lands, discount
        expected = torch.zeros(2, 5)
        state = s[:, None].expand(2, 5, 2).reshape(1, 10, 2)
        context = c[:, None].expand(2, 5, 2).reshape(1, 10, 2)
        for t in range(3):
            state, _ = predictor.model.step(state, actions[:, :, t].reshape(1, 10, 2), context, deterministic=True)
            expected += 0.9**t * reward(state, context).reshape(2, 5)
    torch.testing.assert_close(got.squeeze(-1), expected)
    # the learned head is not used: changing it changes nothing
    with torch.no_grad():
        for p in predictor.reward.parameters():
            p.add_(1.0)
        again = predictor.returns(s, c, actions, gamma=0.9, deterministic=True, use_value=False, use_termination=False)
    torch.testing.assert_close(again, got)


def test_known_reward_needs_an_env_that_defines_it():
    env = make_env("Maze2D-Medium-v0", 1)
    env.goal_reward = None  # a goal env without a torch reward
    with pytest.raises(ValueError, match=r"known_reward=True\) needs an env whose reward is known in torch"):
        get_default_predictor_factory(env, known_reward=True)
    with pytest.raises(TypeError, match="goal_reward must be callable"):
        RewardPredictor(FixedEncoder(range(0, 2), range(2, 4)), 2, goal_reward=3.0)
    # a reward per coordinate instead of per row is refused when the predictor is built
    with pytest.raises(ValueError, match=r"must return a float tensor \[3\] \(one reward per row\); got \(3, 2\)"):
        RewardPredictor(FixedEncoder(range(0, 2), range(2, 4)), 2, goal_reward=lambda s, c: -(s - c).abs())


@pytest.mark.parametrize("factory", [planner_over_splates, planner_over_dads])
def test_skill_hierarchies_plan_with_the_known_reward_and_hold_by_default(factory):
    env = make_env("Maze2D-Medium-v0", 2)
    top, skills = factory(env).levels
    assert top.predictor.goal_reward is env.goal_reward or top.predictor.goal_reward == env.goal_reward
    assert skills.hold and top.action_spec.shape == (3,)
    top, skills = factory(env, known_reward=False, hold=False).levels
    assert top.predictor.goal_reward is None
    assert not skills.hold and top.action_spec.shape == (2,)
    env.goal_reward = None  # an env without one: the reward is learned
    assert factory(env).levels[0].predictor.goal_reward is None


@pytest.mark.parametrize("factory", [planner_over_splates, planner_over_dads])
def test_skill_hierarchies_pickle_for_collector_workers_with_their_known_reward(factory):
    """Workers receive the hierarchy by pickle: the predictor factory and the env's reward travel."""
    import pickle

    torch.manual_seed(0)
    env = make_env("Maze2D-Medium-v0", 2)
    hierarchy = factory(env)
    copy = pickle.loads(pickle.dumps(hierarchy))
    achieved, desired = torch.tensor([[1.5, 1.5]]), torch.tensor([[6.5, 6.5]])
    torch.testing.assert_close(copy.levels[0].predictor.goal_reward(achieved, desired),
                               env.goal_reward(achieved, desired))
    params = dict(hierarchy.named_parameters())
    assert params.keys() == dict(copy.named_parameters()).keys()
    for key, value in copy.named_parameters():
        torch.testing.assert_close(value, params[key])
