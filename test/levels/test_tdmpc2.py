"""`TDMPC2Level`: MPPI on a hand-made model, HER relabelling, goal-based and hierarchical use."""
from __future__ import annotations

import pytest
import torch
from torchrl.collectors import Collector
from torchrl.data import Bounded
from torchrl.envs import TransformedEnv

from torchrl_layered import Hierarchy, RandomLevel
from torchrl_layered.envs import make_env
from torchrl_layered.envs.make import goal_slices
from torchrl_layered.levels import TDMPC2Level
from torchrl_layered.modules.tdmpc2 import TDMPC2WorldModel
from torchrl_layered.tdmpc2 import get_default_tdmpc2_config


def small_config(**kw):
    cfg = get_default_tdmpc2_config()
    cfg.update(model_size=1, enc_dim=32, mlp_dim=32, latent_dim=16, num_q=2, batch_size=8, num_samples=64,
               num_elites=8, num_pi_trajs=4, iterations=3)
    cfg.update(kw)
    return cfg


class ReachModel(TDMPC2WorldModel):
    """A hand-made 1-D reach task: the latent is the position, the goal sits at +0.5."""

    def _logits(self, value):
        return torch.log(self.two_hot.encode(value) + 1e-9)

    def encode(self, obs):
        return obs[..., :1]

    def next(self, z, a):
        return z + 0.2 * a

    def reward_logits(self, z, a, zg=None):
        return self._logits(-(z + 0.2 * a - 0.5).abs())

    def termination_logit(self, z, a):
        return torch.full_like(z, -30.0)

    def q_logits(self, z, a, zg=None):
        return self._logits(torch.zeros_like(z)).expand(self.qs.num_q, *z.shape[:-1], -1)

    def pi(self, z, zg=None, deterministic=False):
        return torch.zeros_like(z), torch.zeros_like(z)


@pytest.mark.parametrize("position, direction", [(-0.8, 1.0), (1.4, -1.0)])
def test_mppi_with_a_hand_made_model_moves_towards_the_goal(position, direction):
    torch.manual_seed(0)
    env = make_env("Pendulum-v1", 1)
    level = TDMPC2Level(small_config(horizon=4), warm_up_steps=0)
    hierarchy = Hierarchy([level], env=env)
    model = ReachModel(3, 1, level.cfg)
    level.world_model = model
    hierarchy.eval()
    tenv = TransformedEnv(env, hierarchy.make_transform())
    td = tenv.reset()
    td["observation"] = torch.tensor([[position, 0.0, 0.0]])
    action = hierarchy(td)["action"]
    assert float(action.sign()) == direction
    # far from the goal the plan pushes hard (unit action 1 = torque 2 in Pendulum)
    assert abs(float(action)) > 1.0


def test_her_relabels_with_later_achieved_goals_and_the_given_reward():
    torch.manual_seed(0)
    env = make_env("Maze2D-Open-v0", 2)
    slices = goal_slices(env)

    def reward_fn(achieved_goal, desired_goal):
        return -(achieved_goal - desired_goal).norm(dim=-1)

    level = TDMPC2Level(small_config(horizon=3), desired_goal_slice=slices["desired_goal"],
                        achieved_goal_slice=slices["achieved_goal"], use_her=True, her_goals=2, reward_fn=reward_fn,
                        warm_up_steps=10**6)
    hierarchy = Hierarchy([level], env=env)
    collector = Collector(env, hierarchy, frames_per_batch=100, total_frames=100, auto_register_policy_transforms=True)
    for batch in collector:
        hierarchy.extend(batch)
    collector.shutdown()
    sample = level.sample()
    assert sample.shape == (3 * 8, 3)
    relabelled = sample[8:]
    # the model observation keeps (observation, achieved_goal) and drops the desired goal
    achieved = relabelled["next", "observation"][..., 2:4]
    assert torch.allclose(relabelled["next", "reward"].squeeze(-1), reward_fn(achieved, relabelled["goal"]))
    # every relabelled goal is an achieved goal of the same step or a later one in its sub-trajectory
    for row in range(relabelled.shape[0]):
        for t in range(3):
            later = achieved[row, t:]
            assert bool((later - relabelled["goal"][row, t]).norm(dim=-1).min() < 1e-6)


def test_goal_based_level_learns_without_errors_and_restarts_its_warm_start_each_episode():
    torch.manual_seed(0)
    env = make_env("Maze2D-Open-v0", 2, max_episode_steps=20)
    slices = goal_slices(env)
    level = TDMPC2Level(small_config(horizon=3), desired_goal_slice=slices["desired_goal"],
                        achieved_goal_slice=slices["achieved_goal"], use_her=True,
                        reward_fn=lambda achieved_goal, desired_goal: -(achieved_goal - desired_goal).norm(dim=-1),
                        warm_up_steps=40)
    hierarchy = Hierarchy([level], env=env)
    collector = Collector(env, hierarchy, frames_per_batch=40, total_frames=120, auto_register_policy_transforms=True)
    metrics = {}
    for batch in collector:
        hierarchy.extend(batch)
        metrics = hierarchy.learn() or metrics
    collector.shutdown()
    assert level.num_model_updates > 0 and all(torch.isfinite(torch.tensor(list(metrics.values()))))
    # each episode starts without a plan: the warm start is zeroed by the (partial) reset
    tenv = TransformedEnv(make_env("Maze2D-Open-v0", 2), hierarchy.make_transform())
    td = tenv.reset()
    assert not bool(td["levels", "0", "state", "planner", "has_plan"].any())
    td = hierarchy(td)
    assert bool(td["levels", "0", "state", "planner", "has_plan"].all())
    td = tenv.reset()
    assert not bool(td["levels", "0", "state", "planner", "has_plan"].any())


def test_tdmpc2_runs_as_a_higher_and_as_a_lower_level():
    torch.manual_seed(0)
    env = make_env("Pendulum-v1", 2)
    option = Bounded(-1.0, 1.0, shape=(2,))
    top = TDMPC2Level(small_config(), warm_up_steps=10)
    low = TDMPC2Level(small_config(), warm_up_steps=10, input_spec=option, control_interval=3)
    hierarchy = Hierarchy([top, RandomLevel(input_spec=option, control_interval=2)][:1] + [low], env=env)
    collector = Collector(env, hierarchy, frames_per_batch=60, total_frames=180, auto_register_policy_transforms=True)
    for batch in collector:
        transitions = hierarchy.extend(batch)
        hierarchy.learn()
    collector.shutdown()
    assert bool((transitions[0]["next", "duration"][~transitions[0]["next", "done"].squeeze(-1)] == 3).all())
    assert top.num_model_updates > 0 and low.num_model_updates > 0
    assert batch["levels", "0", "action"].abs().max() <= 1.0
