# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05 · Skills: SPlaTES under a planner on Maze2D
#
# Tutorial 04 ended with a planner stuck behind a wall: with a distance reward, no short plan
# of single velocities gets closer to the goal. A planner that chooses among *skills* of 10
# steps sees ten times further with the same horizon. SPlaTES (Gürtler & Martius, "Long-Horizon
# Planning with Predictable Skills", RLC 2025) learns such skills without any task reward.
# A skill `z` in `[-1, 1]^2` is rewarded where it ends, with the contrastive log-density of
# its end under the planner's own learned model of skill outcomes `q`:
#
# $$\Phi = \log q(s_{end} \mid s_{start}, z) - \log \frac{1}{L + 1}\Big(q(s_{end} \mid s_{start}, z) + \sum_{i=1}^{L} q(s_{end} \mid s_{start}, z_i)\Big)$$
#
# with `z_i` drawn from the skill prior. `Phi` is high where the skill ends where the planner
# expects it (predictable) and not where it expects other skills to end (diverse); as it
# measures the way from the start, skills also learn to go somewhere (temporally extended).
# The planner learns `q` from the skills' outcomes and plans through it towards the goal.
#
# This notebook
#
# 1. builds the ready hierarchy `planner_over_splates` on `Maze2D-Medium-v0`,
# 2. trains it with a TorchRL `Collector` and the `extend` / `learn` loop: first the skills and
#    the planner's model of them, then, with the skills frozen, the model alone,
# 3. looks at what the skills do, at the start and after training,
# 4. lets the planner drive the learned skills to goals and hold them there, in eval mode.

# %%
import logging
import os

# The tests set TUTORIAL_SMALL=1 to run this notebook on a small budget.
SMALL = os.environ.get("TUTORIAL_SMALL", "0") == "1"

import matplotlib.pyplot as plt
import torch

torch.manual_seed(0)
torch.set_num_threads(1)  # small networks run fastest on one thread

import math

from torchrl.collectors import Collector

from torchrl_layered.envs import Maze2D, make_env
from torchrl_layered.hierarchies import planner_over_splates

logging.getLogger("torchrl").setLevel(logging.WARNING)  # after importing torchrl, which sets it

# %% [markdown]
# ## 1. The hierarchy
#
# `planner_over_splates(env)` puts a `PlannerLevel` (iCEM with 256 samples, 6 iterations and
# a horizon of 15 skills) over a `SPlaTESLevel` (2-D skills of 10 env steps, learned by a small
# TD-MPC2 agent that acts with its policy prior). The planner's `RewardPredictor` encodes an
# observation into a state (the achieved goal, i.e. the position) and a context (the desired
# goal); it learns where a skill ends from where it starts, and the reward on the way. The
# skill agent does not see the desired goal: the skills are task-agnostic, the planner
# handles the task. Every setting is a keyword, e.g.
# `planner_over_splates(env, horizon=10, tdmpc2=dict(mlp_dim=256))`.
#
# The planner can only be as good as its model of where skills end, and that model chases
# skills that keep changing. So the skills stop learning after `skill_learning_steps` stored
# env steps (24,000 by default; 16,000 here) and act on, frozen; at that moment the planner
# empties its buffer (`refresh_when_child_freezes`) and from then on fits its model to the
# skills it will plan with. Without the TD-MPC2 updates, an env step then costs a quarter
# as much or less.

# %%
env = make_env("Maze2D-Medium-v0", num_envs=4)
env.set_seed(0)
freeze_at = 1_000 if SMALL else 16_000
hierarchy = planner_over_splates(env, skill_learning_steps=freeze_at)
planner, skills = hierarchy.levels
print(f"{type(planner).__name__} over {type(skills).__name__}: skills of {skills.control_interval} steps "
      f"in {skills.skill_dim} dimensions, plus the hold switch: options of {planner.action_spec.shape[-1]}")
print(f"the planner plans with random skills for its first {planner.warm_up_steps} env steps, "
      f"the skill agent acts at random for its first {skills.warm_up_steps}")

# %% [markdown]
# ## 2. Training
#
# The loop is the one of every hierarchy: the collector runs the hierarchy as its policy
# (it adds the option-state transform itself), `extend` hands each level its own semi-MDP
# transitions, `learn` runs each level's update schedule. The planner's transitions are
# (start observation, skill, observation 10 steps later): we keep them to look at the skills.
# `level1/intrinsic_reward` is the skill agent's mean SPlaTES reward per step in its sampled
# batches, until the skills freeze; the planner's buffer then starts again from empty. A
# frozen level goes on storing its transitions, so the count printed below goes on past
# `freeze_at`.

# %%
frames_per_batch = 400
total_frames = 2_400 if SMALL else 24_000
collector = Collector(env, hierarchy, frames_per_batch=frames_per_batch, total_frames=total_frames,
                      auto_register_policy_transforms=True)
skill_outcomes, curve = [], []
for i, batch in enumerate(collector):
    top_transitions, _ = hierarchy.extend(batch)
    metrics = hierarchy.learn()
    skill_outcomes.append(top_transitions.select("observation", "action", ("next", "observation")))
    if "level1/intrinsic_reward" in metrics:
        curve.append(((i + 1) * frames_per_batch, metrics["level1/intrinsic_reward"]))
collector.shutdown()
print(f"skills frozen: {skills.learning_done} (after {skills.env_steps} stored skill steps); "
      f"the planner's buffer holds {len(planner.replay_buffer)} options of the frozen skills")

plt.figure(figsize=(5, 3))
plt.plot(*zip(*curve))
plt.xlabel("env steps")
plt.ylabel("SPlaTES reward per step")
plt.title("the skills become predictable and diverse")
plt.tight_layout()


# %% [markdown]
# ## 3. What the skills do
#
# Each planner transition says where a skill went from where it started (colour: the skill's
# angle in skill space). Early on the skill agent acts at random, so where a skill goes has
# nothing to do with the skill. After training it does: the numbers are the mean length of
# a skill's displacement and the share of its variance that a linear map of the skill
# explains (R², 0 = the skill says nothing about where the agent goes). The points on the
# axes are skills that slid along a wall: late in training the planner keeps the agent near
# goals in the maze's corners, where most directions are blocked.

# %%
def displacements(outcomes):
    data = torch.cat([o.reshape(-1) for o in outcomes])
    move = data["next", "observation"][:, :2] - data["observation"][:, :2]
    return data["action"], move


def linear_r2(skill, move):
    inputs = torch.cat([skill, torch.ones_like(skill[:, :1])], -1)
    residual = move - inputs @ torch.linalg.lstsq(inputs, move).solution
    return 1 - residual.pow(2).sum() / (move - move.mean(0)).pow(2).sum()


fig, axes = plt.subplots(1, 2, figsize=(8, 4), sharex=True, sharey=True)
warm_up_batches = max(1, skills.warm_up_steps // frames_per_batch)
for ax, part, title in [(axes[0], skill_outcomes[:warm_up_batches], "first steps (random skill agent)"),
                        (axes[1], skill_outcomes[-warm_up_batches:], f"last steps (after {total_frames})")]:
    skill, move = displacements(part)
    angle = torch.atan2(skill[:, 1], skill[:, 0])
    ax.scatter(move[:, 0], move[:, 1], c=angle, cmap="hsv", s=6, vmin=-math.pi, vmax=math.pi)
    ax.set_title(f"{title}\n|move| {move.norm(dim=-1).mean():.2f}, R² {linear_r2(skill, move):.2f}", fontsize=9)
    ax.set_xlabel("x displacement over a skill")
    ax.set_aspect("equal")
axes[0].set_ylabel("y displacement")
fig.tight_layout()


# %% [markdown]
# ## 4. Planning over the skills, reaching and holding the goal
#
# In eval mode the planner plans deterministically (no random skills) and the skill agent acts
# with the mean of its policy. Each line is one episode from a corner of the maze to the goal
# (star of its colour) in another corner; most ways need detours around walls.
#
# Reaching the goal is one thing, staying there another: every learned skill moves the agent
# (standing still is as predictable as any skill, but no more diverse). So the planner's option
# has a third coordinate, the hold switch (`hold=True`, the default of `planner_over_splates`):
# past 0.5 the skill level outputs zero velocity for its 10 steps instead of a skill. Held steps
# are not skill data; the planner learns from its own transitions that a hold goes nowhere.
# The planner scores each option with the maze's own reward at the position its model
# predicts the option ends in (`known_reward`: Maze2D defines its reward in torch), so it only
# has to learn where options go; at the goal, holding is then the best option it has.

# %%
def draw(ax, batch):
    maze = Maze2D(layout="medium", render_mode="rgb_array")
    observation = batch["observation"]
    scale = maze.pixels_per_cell / maze.cell_size
    maze.reset(options={"start": observation[0, 0, :2].tolist(), "goal": observation[0, 0, 4:6].tolist()})
    ax.imshow(maze.render())
    for i in range(observation.shape[0]):
        path = torch.cat([observation[i, :, :2], batch["next", "observation"][i, -1:, :2]])
        line, = ax.plot(path[:, 0] * scale, path[:, 1] * scale, "-", lw=1.5)
        ax.plot(observation[i, 0, 4] * scale, observation[i, 0, 5] * scale, "*", color=line.get_color(),
                markersize=14, markeredgecolor="k")
    ax.axis("off")


steps = 100 if SMALL else 500
eval_env = make_env("Maze2D-Medium-v0", num_envs=16)  # 16 episodes: every corner to every other
eval_env.set_seed(1)
hierarchy.eval()
collector = Collector(eval_env, hierarchy, frames_per_batch=16 * steps, total_frames=16 * steps,
                      auto_register_policy_transforms=True)
episodes = next(iter(collector))
collector.shutdown()
hierarchy.train()

success = episodes["next", "success"].squeeze(-1)
reached, held = success.any(-1), success[:, -1]
print(f"goal reached (within {Maze2D().goal_radius}) in {int(reached.sum())} of {len(success)} episodes, "
      f"still there at the last step in {int(held.sum())}")
# four episodes to look at: held ones first, then reached ones, then the rest
shown = sorted(range(len(success)), key=lambda i: (not held[i], not reached[i], i))[:4]
episodes, holding = episodes[shown], episodes[shown]["levels", "0", "action"][..., -1] > skills.hold_threshold
fig, axes = plt.subplots(1, 2, figsize=(10, 4.5), gridspec_kw=dict(width_ratios=[1, 1.3]))
draw(axes[0], episodes)
axes[0].set_title("the planner over learned skills")
# distance to the goal over each episode: a reached goal that is held stays under the radius;
# the thick parts are where the planner's hold switch was on
for i in range(len(shown)):
    dist = episodes["next", "dist_to_goal"][i].squeeze(-1)
    line, = axes[1].plot(dist, lw=1, label=f"episode {shown[i]}" + (", held" if held[shown[i]] else ""))
    axes[1].plot(torch.where(holding[i], dist, torch.nan), lw=4, color=line.get_color())
axes[1].axhline(Maze2D().goal_radius, color="k", ls="--", lw=1, label="goal radius")
axes[1].set_xlabel("env step")
axes[1].set_ylabel("distance to the goal")
axes[1].set_title("thick: holding")
axes[1].legend(fontsize=8)
fig.tight_layout()

# %% [markdown]
# Episodes that fail mostly stall against a wall corner: `Maze2D`'s collisions slide along a
# wall but stop a diagonal push into a convex corner, and a model that is off there plans a
# skill that does not pass. Longer budgets (cheap once the skills are frozen) make that model
# right in more places. `benchmarks/skills_maze.py` trains the
# same hierarchy with periodic evaluations on 16 episodes and records how often the goal is
# reached and held, for SPlaTES and for DADS skills (`benchmarks/results/skills_maze/`; the
# README's "Skills on the maze" shows the comparison); the training app runs it with
# `python -m torchrl_layered.train hierarchy=planner_splates env=Maze2D-Medium-v0`.
# `planner_over_dads` is the same hierarchy with DADS skills, which are rewarded at every
# step instead of at their end.
