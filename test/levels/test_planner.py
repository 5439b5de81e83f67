"""`PlannerLevel`: plans through a known model to the goal, and learns a model that beats random."""
from __future__ import annotations

import pytest
import torch
from torchrl.collectors import Collector
from torchrl.data import Bounded, Categorical

from torchrl_layered import Hierarchy
from torchrl_layered.collectors import make_collector
from torchrl_layered.envs import Maze2D, make_env
from torchrl_layered.envs.make import goal_slices
from torchrl_layered.levels import PlannerLevel
from torchrl_layered.predictors import FixedEncoder, KnownModel, Predictor, get_default_predictor_factory


class MazeDynamics:
    """The true open-maze dynamics as a (picklable) model: position, velocity -> next position."""

    def __init__(self):
        self.maze = Maze2D(layout="open")

    def __call__(self, state, action, context=None):
        return self.maze.torch_dynamics(state, action)


class DistanceReward:
    """Minus the distance to the goal (the context) after the step."""

    def __init__(self, dynamics):
        self.dynamics = dynamics

    def __call__(self, state, context, action):
        return -(self.dynamics(state, action) - context).norm(dim=-1)


def known_maze_predictor(env):
    slices = goal_slices(env)
    encoder = FixedEncoder(range(slices["achieved_goal"].start, slices["achieved_goal"].stop),
                           range(slices["desired_goal"].start, slices["desired_goal"].stop))
    dynamics = MazeDynamics()
    return Predictor(encoder, KnownModel(dynamics), DistanceReward(dynamics))


def final_distances(batch):
    obs = batch["next", "observation"]
    return (obs[..., 2:4] - obs[..., 4:6]).norm(dim=-1)


@pytest.mark.parametrize("planner", ["cem", "icem", "mppi"])
def test_planning_with_the_true_maze_dynamics_reaches_the_goal(planner):
    torch.manual_seed(0)
    env = make_env("Maze2D-Open-v0", 3)
    env.set_seed(0)
    level = PlannerLevel(known_maze_predictor(env), planner=planner, learn_predictor=False, warm_up_steps=0,
                         horizon=8, num_samples=64, num_iterations=3, use_value=False)
    hierarchy = Hierarchy([level], env=env)
    hierarchy.eval()
    collector = make_collector(env, hierarchy, frames_per_batch=3 * 80, total_frames=3 * 80)
    batch = next(iter(collector))
    collector.shutdown()
    reached = batch["next", "success"].any(-1)
    assert bool(reached.all()), f"instances that reached the goal: {reached.tolist()}"


def test_a_learned_model_beats_random_actions_within_a_small_budget():
    torch.manual_seed(0)
    env = make_env("Maze2D-Open-v0", 4)
    env.set_seed(0)
    factory = get_default_predictor_factory(env, num_members=3, hidden_sizes=(64, 64), head_sizes=(64,))
    level = PlannerLevel(predictor_factory=factory, planner="icem", horizon=6, num_samples=64, num_iterations=3,
                         warm_up_steps=800, batch_size=128, update_interval=4, lr=3e-3, gamma=0.9)
    hierarchy = Hierarchy([level], env=env)
    collector = make_collector(env, hierarchy, frames_per_batch=400, total_frames=3200)
    for batch in collector:
        hierarchy.extend(batch)
        hierarchy.learn()
    collector.shutdown()
    assert level.num_gradient_updates > 100

    def evaluate(policy):
        eval_env = make_env("Maze2D-Open-v0", 4)
        eval_env.set_seed(123)
        if policy is hierarchy:
            c = make_collector(eval_env, policy, frames_per_batch=4 * 100, total_frames=4 * 100)
        else:
            c = Collector(eval_env, policy, frames_per_batch=4 * 100, total_frames=4 * 100)
        b = next(iter(c))
        c.shutdown()
        return float(b["next", "reward"].mean())

    hierarchy.eval()
    planned = evaluate(hierarchy)
    random = evaluate(None)
    assert planned > random + 0.05, f"planner {planned:.3f} vs random {random:.3f}"


def test_planner_level_refuses_discrete_actions_and_bad_settings():
    env = make_env("CartPole-v1", 1)
    with pytest.raises(TypeError, match=r"Level 0 \(PlannerLevel\) cannot feed the env, which needs a Categorical action"):
        Hierarchy([PlannerLevel(horizon=3)], env=env)
    with pytest.raises(ValueError, match="horizon >= 1"):
        PlannerLevel(horizon=0)
    with pytest.raises(ValueError, match="unknown planner 'bogus'"):
        PlannerLevel(planner="bogus")
    pendulum = make_env("Pendulum-v1", 1)
    with pytest.raises(ValueError, match="num_samples"):
        Hierarchy([PlannerLevel(num_samples=4, num_elites=8)], env=pendulum)


def test_eval_mode_plans_deterministically_and_stores_nothing():
    env = make_env("Maze2D-Open-v0", 2)
    level = PlannerLevel(known_maze_predictor(env), learn_predictor=False, warm_up_steps=0, horizon=4,
                         num_samples=32, num_iterations=2, use_value=False)
    hierarchy = Hierarchy([level], env=env)
    hierarchy.eval()
    transform = hierarchy.make_transform()
    from torchrl.envs import TransformedEnv

    tenv = TransformedEnv(env, transform)
    td = tenv.reset()
    a1 = hierarchy(td.clone())["action"]
    a2 = hierarchy(td.clone())["action"]
    assert torch.equal(a1, a2)
    hierarchy.extend(tenv.rollout(5, hierarchy))
    assert level.n_transitions == 0


def test_exploration_alternates_per_instance_after_the_warm_up():
    torch.manual_seed(0)
    level = PlannerLevel(horizon=2, num_samples=8, num_iterations=1, warm_up_steps=100, alternate_with_noise=True,
                         switch_random_prob=0.3, switch_planner_prob=0.1)
    mode = torch.zeros(64, 1, dtype=torch.bool)
    assert bool(level._random_mode(mode, deterministic=False).all())  # warm-up: random everywhere
    level.env_steps = 100
    history = []
    for _ in range(300):
        mode = level._random_mode(mode, deterministic=False)
        history.append(mode.float().mean())
    # stationary share of random phases: p_r / (p_r + p_p) = 0.75, reached per instance
    assert abs(float(torch.stack(history[100:]).mean()) - 0.75) < 0.05
    assert 0 < float(mode.float().mean()) < 1  # instances are in different phases
    assert not bool(level._random_mode(mode, deterministic=True).any())  # eval always plans


def test_warm_up_clock_reaches_multi_process_collector_workers():
    import functools

    from torchrl.collectors import MultiSyncCollector

    make = functools.partial(make_env, "Maze2D-Open-v0", 2)
    env = make()
    level = PlannerLevel(known_maze_predictor(env), learn_predictor=False, warm_up_steps=50, horizon=3,
                         num_samples=16, num_iterations=2, use_value=False)
    hierarchy = Hierarchy([level], env=env)
    collector = make_collector([make, make], hierarchy, collector_cls=MultiSyncCollector,
                               frames_per_batch=40, total_frames=80)
    random_mode = []
    for batch in collector:
        random_mode.append(bool(batch["levels", "0", "state", "random_mode"].all()))
        level.env_steps = 100  # the warm-up ends in the learner process...
        collector.update_policy_weights_()  # ...and the workers learn of it with the weights
    collector.shutdown()
    assert random_mode == [True, False]
