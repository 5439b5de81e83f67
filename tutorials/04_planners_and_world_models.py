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
# # 04 · Planners and world models
#
# 1. The sampling planners (`CEMPlanner`, `ICEMPlanner`, `MPPIPlanner`) on a known objective.
# 2. A `ProbabilisticEnsemble` learning the pendulum's dynamics with `EnsembleModelLoss`.
# 3. A `PlannerLevel` driving the maze with its true dynamics, drawn on the rendered maze.

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

from torchrl_layered import Hierarchy
from torchrl_layered.envs import Maze2D, make_env
from torchrl_layered.envs.make import goal_slices
from torchrl_layered.levels import PlannerLevel
from torchrl_layered.modules.ensemble import ProbabilisticEnsemble
from torchrl_layered.objectives import EnsembleModelLoss
from torchrl_layered.planners import CEMPlanner, ICEMPlanner, MPPIPlanner
from torchrl_layered.predictors import FixedEncoder, KnownModel, Predictor

logging.getLogger("torchrl").setLevel(logging.WARNING)  # after importing torchrl, which sets it

# %% [markdown]
# ## 1. Planning on a known objective
#
# A planner maximises `objective(actions) -> returns` over action sequences `[B, N, H, *A]`
# (B instances, N candidates, horizon H), batched over instances. Here: three 2-D point
# masses must end 10 steps later at their targets, moving at most 1 per step per axis, with
# a small effort cost. We record the best score of each call of the objective (one per
# iteration).

# %%
targets = torch.tensor([[6.0, 2.0], [-3.0, 7.0], [0.5, -9.0]])


def make_objective(log):
    def objective(actions):  # [B, N, H, 2] -> [B, N]
        end = actions.sum(dim=2)
        score = -(end - targets[:, None]).norm(dim=-1) - 0.01 * actions.pow(2).sum((-1, -2))
        log.append(score.max(dim=1).values.mean().item())
        return score
    return objective


action_spec = Bounded(-1.0, 1.0, shape=(2,))
budget = dict(horizon=10, num_samples=64 if SMALL else 256, num_iterations=8 if SMALL else 15)
plans = {}
plt.figure(figsize=(6, 3))
for planner_cls in (CEMPlanner, ICEMPlanner, MPPIPlanner):
    planner = planner_cls(action_spec, num_elites=budget["num_samples"] // 10, **budget)
    log = []
    result = planner(make_objective(log), batch_size=3, generator=torch.Generator().manual_seed(0))
    plans[planner_cls.__name__] = result.action
    plt.plot(log, "o-", label=planner_cls.__name__)
plt.xlabel("iteration")
plt.ylabel("best score (mean over instances)")
plt.legend()
plt.tight_layout()

# %%
plt.figure(figsize=(4, 4))
for (name, plan), colour in zip(plans.items(), ["tab:blue", "tab:orange", "tab:green"]):
    paths = torch.cat([torch.zeros(3, 1, 2), plan.cumsum(dim=1)], dim=1)
    for i, path in enumerate(paths):
        plt.plot(path[:, 0], path[:, 1], "-", color=colour, alpha=0.7, label=name if i == 0 else None)
plt.plot(targets[:, 0], targets[:, 1], "k*", markersize=12, label="targets")
plt.gca().set_aspect("equal")
plt.legend(fontsize="small")
plt.title("planned paths")
plt.tight_layout()

# %% [markdown]
# ## 2. Learning a dynamics model with a probabilistic ensemble
#
# `ProbabilisticEnsemble` is PETS-style: M Gaussian models of `p(s' | s, a)` (here the
# pendulum's `[cos, sin, angular velocity]` given the torque), all members in batched
# matmuls. `EnsembleModelLoss`, a TorchRL `LossModule`, is the Gaussian NLL of each member
# on its own bootstrap resample of the batch, so the members stay different where data is
# scarce. The collector's batches already have the keys the loss reads.

# %%
env = make_env("Pendulum-v1", num_envs=8)
env.set_seed(0)
collector = Collector(env, None, frames_per_batch=800, total_frames=1600 if SMALL else 4000)  # random actions
data = torch.cat([batch.reshape(-1) for batch in collector])
collector.shutdown()

model = ProbabilisticEnsemble(state_dim=3, action_dim=1, num_members=5, hidden_sizes=(128, 128))
loss_module = EnsembleModelLoss(model)
optimizer = torch.optim.Adam(loss_module.parameters(), lr=1e-3)
nll = []
for step in range(300 if SMALL else 2000):
    losses = loss_module(data[torch.randint(len(data), (256,))])
    loss = losses["loss_model"] + losses["loss_termination"]
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    nll.append(losses["model_nll"].item())
plt.figure(figsize=(5, 2.6))
plt.plot(nll)
plt.xlabel("update")
plt.ylabel("NLL (normalised)")
plt.title(f"{model.num_members} members, {len(data)} random transitions")
plt.tight_layout()

# %% [markdown]
# One step ahead the model is accurate; a planner needs it many steps ahead. Here each member
# rolls out (its mean prediction) the same random torques from the same start as a real
# episode of 150 steps. The small one-step errors compound: the members follow the real
# angular velocity for a long while, then drift away from it and from each other. That
# spread is the epistemic uncertainty a planner can use (e.g. `particle_reduction="min"` for a
# pessimistic planner) and the reason to plan over short horizons.

# %%
test_env = make_env("Pendulum-v1", num_envs=1)
test_env.set_seed(123)
with torch.no_grad():
    real = test_env.rollout(150)  # random actions
    actions = real["action"][0]
    state = real["observation"][0, :1].expand(model.num_members, 1, 3)
    imagined = [state]
    for action in actions:
        state, _, _ = model(state, action.expand(model.num_members, 1, 1))
        imagined.append(state)
imagined = torch.stack(imagined)[:, :, 0]  # [T + 1, members, 3]
truth = torch.cat([real["observation"][0, :1], real["next", "observation"][0]])

one_step, _, _ = model(real["observation"][0][None].expand(model.num_members, -1, -1),
                       actions[None].expand(model.num_members, -1, -1))
error = (one_step.mean(0) - real["next", "observation"][0]).norm(dim=-1).mean()
print(f"mean one-step error on this episode: {error:.4f}")

plt.figure(figsize=(6, 3))
plt.plot(imagined[..., 2], color="tab:orange", alpha=0.7)
plt.plot(truth[:, 2], "k--", label="real episode")
plt.plot([], color="tab:orange", label="ensemble members (open loop)")
plt.xlabel("step")
plt.ylabel("angular velocity")
plt.legend(fontsize="small")
plt.tight_layout()


# %% [markdown]
# ## 3. A `PlannerLevel` with the true dynamics
#
# A `Predictor` bundles an encoder (here `FixedEncoder`: the achieved goal is the state,
# the desired goal the context), a dynamics model (`KnownModel` wrapping the maze's exact
# `torch_dynamics`) and a reward (minus the distance to the goal). A `PlannerLevel` with
# `learn_predictor=False` plans through it: no learning, just model-predictive control.

# %%
def known_maze_predictor(env, layout):
    maze = Maze2D(layout=layout)
    slices = goal_slices(env)
    encoder = FixedEncoder(range(slices["achieved_goal"].start, slices["achieved_goal"].stop),
                           range(slices["desired_goal"].start, slices["desired_goal"].stop))
    model = KnownModel(lambda s, a, c: maze.torch_dynamics(s, a))
    reward = lambda s, c, a: -(maze.torch_dynamics(s, a) - c).norm(dim=-1)  # noqa: E731
    return Predictor(encoder, model, reward)


def plan_episodes(env_id, layout, num_envs, steps, seed, **maze_kwargs):
    env = make_env(env_id, num_envs=num_envs, **maze_kwargs)
    env.set_seed(seed)
    level = PlannerLevel(known_maze_predictor(env, layout), learn_predictor=False, warm_up_steps=0,
                         use_value=False, horizon=8, num_samples=64, num_iterations=3)
    hierarchy = Hierarchy([level], env=env)
    hierarchy.eval()
    collector = Collector(env, hierarchy, frames_per_batch=num_envs * steps, total_frames=num_envs * steps,
                          auto_register_policy_transforms=True)
    batch = next(iter(collector))
    collector.shutdown()
    return batch


def draw(ax, batch, layout, title):
    maze = Maze2D(layout=layout, render_mode="rgb_array")
    observation = batch["observation"]
    scale = maze.pixels_per_cell / maze.cell_size
    maze.reset(options={"start": observation[0, 0, :2].tolist(), "goal": observation[0, 0, 4:6].tolist()})
    ax.imshow(maze.render())
    for i in range(observation.shape[0]):
        path = torch.cat([observation[i, :, :2], batch["next", "observation"][i, -1:, :2]])
        ax.plot(path[:, 0] * scale, path[:, 1] * scale, "-", lw=1.5)
        ax.plot(observation[i, 0, 4] * scale, observation[i, 0, 5] * scale, "*", color="k", markersize=10)
    ax.set_title(title)
    ax.axis("off")


open_batch = plan_episodes("Maze2D-Open-v0", "open", num_envs=4, steps=40 if SMALL else 80, seed=0)
# from the top-left corner to the bottom-left one: the way round is long
medium_batch = plan_episodes("Maze2D-Medium-v0", "medium", num_envs=1, steps=40 if SMALL else 150, seed=0,
                             start_cells=[(1, 1)], goal_cells=[(1, 6)])
for name, batch in [("open", open_batch), ("medium", medium_batch)]:
    reached = batch["next", "success"].any(-1)
    print(f"{name}: goal reached in {reached.sum().item()} of {reached.numel()} episodes")

fig, axes = plt.subplots(1, 2, figsize=(9, 4.5))
draw(axes[0], open_batch, "open", "Maze2D-Open: straight to the goals (stars)")
draw(axes[1], medium_batch, "medium", "Maze2D-Medium: a short horizon gets stuck")
fig.tight_layout()

# %% [markdown]
# With a distance reward and an 8-step horizon the planner goes straight for the goal: in the
# open room that is right; in the medium maze it ends against the wall between it and the
# goal, because no 8-step plan gets closer. Longer horizons help only so far; this is what learned values
# (`use_value=True`) and hierarchies are for: a planner that chooses among temporally
# extended skills (tutorial 05) sees further with the same horizon.
