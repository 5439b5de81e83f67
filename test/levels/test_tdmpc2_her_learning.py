"""Goal-based TD-MPC2 with HER reaches goals in Maze2D-Open-v0 (budgeted learning run: marker `learning`).

Run as a script to compare HER goals drawn from the rest of the episode with the former draw
from the sampled window only (same seed and budget)::

    python3 test/levels/test_tdmpc2_her_learning.py --her episode
    python3 test/levels/test_tdmpc2_her_learning.py --her window
"""
from __future__ import annotations

import argparse
import math
import time

import pytest
import torch
from tensordict import TensorDictBase
from torchrl.envs import RewardSum

from torchrl_layered import Hierarchy
from torchrl_layered.collectors import make_collector
from torchrl_layered.envs import make_env
from torchrl_layered.envs.make import goal_slices
from torchrl_layered.levels import TDMPC2Level
from torchrl_layered.tdmpc2 import get_default_tdmpc2_config
from torchrl_layered.trainers.evaluate import evaluate

ENV = "Maze2D-Open-v0"
EPISODE_STEPS = 100
MAZE_DIAMETER = math.hypot(6.0, 6.0)  # the open layout is 6 x 6 cells of size 1


GOAL_RADIUS = 0.3


def cpu_config():
    """A TD-MPC2 small enough to train 6k steps on one CPU core in minutes (MLPs of 128, latent 32)."""
    cfg = get_default_tdmpc2_config()
    cfg.update(model_size=1, enc_dim=64, mlp_dim=128, latent_dim=32, num_q=2, batch_size=64, horizon=3,
               num_samples=128, num_iterations=3, num_elites=16, num_pi_trajs=8)
    return cfg


def maze_reward(achieved_goal: torch.Tensor, desired_goal: torch.Tensor) -> torch.Tensor:
    """Maze2D's dense reward, ``-distance / maze diagonal``, for relabelled goals."""
    return -(achieved_goal - desired_goal).norm(dim=-1) / MAZE_DIAMETER


def sparse_maze_reward(achieved_goal: torch.Tensor, desired_goal: torch.Tensor) -> torch.Tensor:
    """Maze2D's sparse reward: 1 within the goal radius, else 0."""
    return ((achieved_goal - desired_goal).norm(dim=-1) < GOAL_RADIUS).float()


class WindowHERLevel(TDMPC2Level):
    """The former relabelling, for comparison: goals only from the sampled window (``horizon`` steps)."""

    def _relabel(self, batch: TensorDictBase, data: TensorDictBase) -> TensorDictBase:
        b, h = batch.shape
        achieved = data.get(("next", "observation"))[..., self.achieved_goal_slice].float()
        t = torch.arange(h, device=achieved.device)
        later = t + (torch.rand(b, h, device=achieved.device) * (h - t)).long()
        new_goal = torch.gather(achieved, 1, later[..., None].expand(-1, -1, achieved.shape[-1]))
        relabelled = batch.clone()
        relabelled.set("goal", new_goal)
        reward = self.reward_fn(achieved_goal=achieved, desired_goal=new_goal)
        relabelled.set(("next", "reward"), reward.reshape(b, h, 1).to(achieved.dtype))
        return relabelled


def train_and_evaluate(her: str = "episode", seed: int = 0, env_steps: int = 6000, num_envs: int = 4,
                       eval_envs: int = 16, reward: str = "dense", eval_at: tuple[int, ...] = ()):
    """Trains a goal-based TD-MPC2 with HER for ``env_steps`` steps; returns ``{env steps: EvalResult}``
    at the end and after each of ``eval_at`` steps (the same evaluation episodes each time)."""
    torch.manual_seed(seed)
    env = make_env(ENV, num_envs, max_episode_steps=EPISODE_STEPS, reward_type=reward)
    env.set_seed(seed)
    slices = goal_slices(env)
    level_cls = {"episode": TDMPC2Level, "window": WindowHERLevel}[her]
    level = level_cls(cpu_config(), desired_goal_slice=slices["desired_goal"],
                      achieved_goal_slice=slices["achieved_goal"], use_her=True, her_goals=2,
                      reward_fn={"dense": maze_reward, "sparse": sparse_maze_reward}[reward],
                      warm_up_steps=500, update_interval=2)
    hierarchy = Hierarchy([level], env=env)
    eval_env = make_env(ENV, eval_envs, max_episode_steps=EPISODE_STEPS, reward_type=reward)
    eval_env = eval_env.append_transform(hierarchy.make_transform()).append_transform(RewardSum())
    collector = make_collector(env, hierarchy, frames_per_batch=200, total_frames=env_steps)
    results, steps = {}, 0
    for batch in collector:
        hierarchy.extend(batch)
        hierarchy.learn()
        steps += batch.numel()
        if steps in eval_at and steps < env_steps:
            results[steps] = evaluate(hierarchy, eval_env, seed=seed + 1000)
    collector.shutdown()
    results[steps] = evaluate(hierarchy, eval_env, seed=seed + 1000)
    return results


@pytest.mark.learning(minutes=6)
def test_goal_based_tdmpc2_with_her_reaches_goals_in_the_open_maze():
    torch.set_num_threads(1)
    (result,) = train_and_evaluate("episode", seed=0).values()
    print(f"HER open maze: success rate {result.success_rate:.4f}, final {result.final_success_rate:.4f}")
    assert result.episodes == 16
    assert result.success_rate >= 0.8, result


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--her", choices=["episode", "window"], default="episode")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--env-steps", type=int, default=6000)
    parser.add_argument("--reward", choices=["dense", "sparse"], default="dense")
    parser.add_argument("--eval-at", type=int, nargs="*", default=[])
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.time()
    results = train_and_evaluate(args.her, seed=args.seed, env_steps=args.env_steps, reward=args.reward,
                                 eval_at=tuple(args.eval_at))
    for steps, result in results.items():
        print(f"her={args.her} reward={args.reward} seed={args.seed} env_steps={steps}: success_rate="
              f"{result.success_rate:.4f} final_success_rate={result.final_success_rate:.4f} "
              f"mean_return={result.mean_return:.3f} episodes={result.episodes}")
    print(f"({time.time() - start:.0f} s)")
