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
# # 02 · Building and training a hierarchy
#
# A `Hierarchy` is a stack of levels, top (most abstract) first. Level `k` writes an action
# that level `k+1` receives as its `level_input` (its *option*); the lowest level writes
# the env's action. A level acts only when the level below hands control back, so upper
# levels act on a slower clock and learn from *semi-MDP transitions*: one transition per
# option, with the option's summed reward and its duration.
#
# This notebook builds a two-level random hierarchy to see the plumbing (the option-state
# transform, the transitions of each level) and then trains a planner that chooses
# 5-step velocity options in a 2-D maze, with the `extend` / `learn` loop.

# %%
import logging
import os

# The tests set TUTORIAL_SMALL=1 to run this notebook on a small budget.
SMALL = os.environ.get("TUTORIAL_SMALL", "0") == "1"

import matplotlib.pyplot as plt
import torch

torch.manual_seed(0)
torch.set_num_threads(1)  # small networks run fastest on one thread

from torchrl.collectors import Collector
from torchrl.data import Bounded
from torchrl.envs import Compose, RewardSum

from torchrl_layered import Hierarchy, Level
from torchrl_layered.envs import make_env
from torchrl_layered.levels import PlannerLevel, RandomLevel
from torchrl_layered.predictors import get_default_predictor_factory
from torchrl_layered.trainers import evaluate

logging.getLogger("torchrl").setLevel(logging.WARNING)  # after importing torchrl, which sets it

# %% [markdown]
# ## 1. A random hierarchy and its transitions
#
# `Maze2D-Open-v0` is a point mass in an open room that must reach a goal; its observation
# is `[position, achieved goal, desired goal]`. The top `RandomLevel` draws a 2-D option
# that the level below accepts (its `input_spec`); the low level hands control back after
# `control_interval=5` of its steps.

# %%
env = make_env("Maze2D-Open-v0", num_envs=4)
env.set_seed(0)
option_spec = Bounded(-1.0, 1.0, shape=(2,))
hierarchy = Hierarchy([RandomLevel(), RandomLevel(input_spec=option_spec, control_interval=5)], env=env)
print(hierarchy.levels)
hierarchy.make_transform()

# %% [markdown]
# `hierarchy.make_transform()` is a `HierarchyTransform`, a `TensorDictPrimer` that carries
# the option state of every env instance between steps (which level acts, held outputs,
# step counters, option rewards). A `Collector` adds it itself with
# `auto_register_policy_transforms=True`. In the batch, `("levels", "acting")` says which
# level acted at each step:

# %%
collector = Collector(env, hierarchy, frames_per_batch=4 * 50, total_frames=4 * 50,
                      auto_register_policy_transforms=True)
batch = next(iter(collector))
collector.shutdown()
acting = batch["levels", "acting"][0, :30].int().T  # instance 0, first 30 steps
plt.figure(figsize=(8, 1.4))
plt.imshow(acting, aspect="auto", cmap="Greys", interpolation="nearest")
plt.yticks([0, 1], ["level 0 (top)", "level 1"])
plt.xlabel("env step")
plt.title("who acts when (black = acts)")
plt.tight_layout()

# %%
transitions = hierarchy.transitions(batch)
for k, data in enumerate(transitions):
    durations = data["next", "duration"].squeeze(-1)
    print(f"level {k}: {data.shape[0]:3d} transitions, durations {sorted(set(durations.tolist()))}, "
          f"keys {sorted(k if isinstance(k, str) else '.'.join(k) for k in data.keys(True, True))}")
top = transitions[0]
print("first top-level option reward (summed over its steps):", top["next", "reward"][0].item())


# %% [markdown]
# The top level has one transition per option (duration 5, shorter where an episode ended
# inside it); the bottom level one per env step. `hierarchy.extend(batch)` hands each level
# exactly these transitions (through its `get_reward` and `extend` hooks), and
# `hierarchy.learn()` runs every level's update.
#
# ## 2. A planner over options
#
# Now the top level is a `PlannerLevel` that learns a world model of its options: where the
# agent ends up after 5 steps of a chosen velocity. `get_default_predictor_factory(env)`
# makes its model predict the achieved goal given the desired goal (the Maze2D observation
# layout). The level below just plays the option as the env action: a custom level of three
# lines (tutorial 03 shows every hook).

# %%
class FollowOption(Level):
    """Plays its parent's option (a velocity) as the env action."""

    def get_action(self, tensordict):
        return tensordict["level_input"]


env = make_env("Maze2D-Open-v0", num_envs=4)
env.set_seed(0)
velocity = env.full_action_spec_unbatched["action"]
factory = get_default_predictor_factory(env, num_members=5, hidden_sizes=(64, 64), head_sizes=(64,))
planner = PlannerLevel(predictor_factory=factory, horizon=6, num_samples=64, num_iterations=3,
                       warm_up_steps=400, batch_size=128, lr=3e-3, gamma=0.9)
hierarchy = Hierarchy([planner, FollowOption(input_spec=velocity, control_interval=5)], env=env)

train_env = env.append_transform(Compose(hierarchy.make_transform(), RewardSum()))
eval_env = make_env("Maze2D-Open-v0", num_envs=8).append_transform(Compose(hierarchy.make_transform(), RewardSum()))

# %% [markdown]
# The training loop is the whole algorithm: collect, `extend`, `learn`. Every few batches
# `evaluate` runs one episode per eval instance with the hierarchy in eval mode (no
# exploration, nothing stored) on its own env.

# %%
TOTAL = 1200 if SMALL else 4000
collector = Collector(train_env, hierarchy, frames_per_batch=400, total_frames=TOTAL,
                      trust_policy=True, auto_register_policy_transforms=False)
frames, curve = 0, [(0, evaluate(hierarchy, eval_env, seed=5))]
for i, batch in enumerate(collector):
    frames += batch.numel()
    hierarchy.extend(batch)
    metrics = hierarchy.learn()
    if (i + 1) % 3 == 0 or frames == TOTAL:
        curve.append((frames, evaluate(hierarchy, eval_env, seed=5)))
        print(f"{frames:5d} frames: eval return {curve[-1][1].mean_return:7.2f}, "
              f"success {curve[-1][1].success_rate:.2f}, model NLL {metrics.get('level0/model_nll', float('nan')):.2f}")
collector.shutdown()
print(f"the planner made {planner.num_gradient_updates} model updates from {planner.n_transitions} option transitions")

fig, axes = plt.subplots(1, 2, figsize=(9, 3))
axes[0].plot([f for f, _ in curve], [r.mean_return for _, r in curve], "o-")
axes[0].set(xlabel="env steps", ylabel="eval return")
axes[1].plot([f for f, _ in curve], [r.success_rate for _, r in curve], "o-", color="tab:green")
axes[1].set(xlabel="env steps", ylabel="eval success rate", ylim=(-0.05, 1.05))
fig.tight_layout()

# %% [markdown]
# The same loop, with logging, periodic evaluation, checkpoints and a plot, is the training
# app: `python -m torchrl_layered.train hierarchy=planner env=maze2d_open`. From Python:

# %%
from tempfile import mkdtemp

from torchrl_layered.trainers import compose_config, train

overrides = ["hierarchy=random", "env=maze2d_open", "collector.total_frames=800", "eval.interval_frames=400",
             "progress_bar=false"]
result = train(compose_config(overrides), mkdtemp())
