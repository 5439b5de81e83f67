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
# # 03 · Writing a custom level
#
# A level subclasses `Level` and overrides a few hooks; the base class does the masking
# (a level computes only the rows where it has control), holds outputs between its
# decisions, and keeps the bookkeeping. The hooks, in the order a hierarchy calls them:
#
# | hook | when | what |
# |---|---|---|
# | `get_input_spec()` | building, before `initialize` | the spec of the option the level accepts from its parent (`None`: top only) |
# | `initialize(observation_spec, action_spec, parent)` | building | build networks; `parent` gives the parent level |
# | `get_action(td)` | each step it acts | the action for the acting rows (`td` holds `observation`, `level_input`, `steps`) |
# | `is_done(td)` | each step it acts | hand control back to the parent once this step's option below ends |
# | `get_reward(transitions)` | `hierarchy.extend` | the level's reward for its semi-MDP transitions |
# | `extend(transitions)` | `hierarchy.extend` | store them (in training mode only) |
# | `learn()` | `hierarchy.learn` | update, return a dict of metrics |
#
# Everything is a TensorDict with a batch dimension: write the hooks vectorised, never as a
# loop over env instances.
#
# The example: a **waypoint level** for the maze. Its parent gives it a target position;
# it steers there with a linear model of how its actions move the agent, hands control
# back when it is close (or after `control_interval` steps), rewards itself by how close it
# got, and *learns* the model from its transitions. Its first guess of the model is rotated
# by 90°, so before learning it circles instead of going straight.

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

from tensordict import TensorDictBase
from torchrl.collectors import Collector
from torchrl.data import Bounded, LazyTensorStorage, TensorDictReplayBuffer, TensorSpec

from torchrl_layered import Hierarchy, Level, RandomLevel
from torchrl_layered.envs import make_env

logging.getLogger("torchrl").setLevel(logging.WARNING)  # after importing torchrl, which sets it


# %%
class WaypointLevel(Level):
    """Steers towards the position its parent chose, with a learned linear model of its actions.

    Args:
        low, high: the corners of the region where waypoints lie.
        radius: hand control back once closer than this to the waypoint.
        lr: step size of the model fit.
    """

    def __init__(self, low, high, *, radius=0.2, lr=0.05, **kwargs):
        super().__init__(input_spec=Bounded(low, high, shape=(2,)), **kwargs)
        self.radius, self.lr = radius, lr

    # get_input_spec(): the base class returns the input_spec given above; override it when the
    # spec is computed (it must not depend on initialize, which comes later).

    def initialize(self, observation_spec: TensorSpec, action_spec: TensorSpec, parent=None) -> None:
        super().initialize(observation_spec, action_spec, parent)
        turn = torch.tensor([[0.0, 1.0], [-1.0, 0.0]])  # a wrong first guess: rotated by 90 degrees
        self.model = torch.nn.Parameter(0.1 * turn)  # displacement = action @ model
        self.optimizer = torch.optim.Adam([self.model], lr=self.lr)
        # the base class's buffer slot: `store` and `sample_buffer` use it
        self.replay_buffer = TensorDictReplayBuffer(storage=LazyTensorStorage(20_000), batch_size=256)

    def get_action(self, td: TensorDictBase) -> torch.Tensor:
        wanted = td["level_input"] - td["observation"][:, :2]  # rows: the instances where it acts
        action = wanted @ torch.linalg.inv(self.model.detach())
        low, high = self.action_spec.space.low, self.action_spec.space.high
        return action.clamp(low, high)

    def is_done(self, td: TensorDictBase) -> torch.Tensor:
        close = (td["level_input"] - td["observation"][:, :2]).norm(dim=-1, keepdim=True) < self.radius
        return close | (td["steps"] >= self.control_interval)

    def get_reward(self, transitions: TensorDictBase) -> torch.Tensor:
        position = transitions["next", "observation"][:, :2]
        return -(transitions["level_input"] - position).norm(dim=-1, keepdim=True)

    def extend(self, transitions: TensorDictBase) -> None:
        self.store(transitions.select("observation", "action", ("next", "observation"), ("next", "reward")))

    def learn(self) -> dict[str, float]:
        if len(self.replay_buffer) < 64:
            return {}
        for _ in range(20):
            data = self.sample_buffer()
            moved = data["next", "observation"][:, :2] - data["observation"][:, :2]
            loss = ((data["action"] @ self.model - moved) ** 2).sum(-1).mean()
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
        angle = math.degrees(math.atan2(self.model[0, 1].item(), self.model[0, 0].item()))
        return {"model_error": loss.item(), "model_angle_deg": angle}

    def named_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"model": self.optimizer}  # the base class checkpoints their states


# %% [markdown]
# Stack it under a `RandomLevel` that draws waypoints in the room (its action spec is the
# waypoint level's input spec, filled in by the `Hierarchy`).

# %%
env = make_env("Maze2D-Open-v0", num_envs=4)
env.set_seed(0)
waypoints = WaypointLevel(low=1.3, high=4.7, control_interval=30)
hierarchy = Hierarchy([RandomLevel(), waypoints], env=env)
print("the top level's action spec is the waypoint level's input spec:", hierarchy.action_specs[0])


# %% [markdown]
# Before learning: one batch, and the path of one instance with its waypoints.

# %%
def collect(frames):
    collector = Collector(env, hierarchy, frames_per_batch=frames, total_frames=frames,
                          auto_register_policy_transforms=True)
    batch = next(iter(collector))
    collector.shutdown()
    return batch


def draw(ax, batch, title):
    path = batch["next", "observation"][0, :, :2]
    targets = batch["levels", "0", "action"][0]
    ax.plot(path[:, 0], path[:, 1], "-", lw=1)
    ax.plot(targets[:, 0], targets[:, 1], "x", color="tab:red", label="waypoints")
    ax.set(xlim=(1, 5), ylim=(5, 1), aspect="equal", title=title)


before = collect(4 * 100)
transitions = hierarchy.transitions(before)
print("top-level option durations (steps until the waypoint level handed back):",
      transitions[0]["next", "duration"].squeeze(-1).tolist()[:12])

# %% [markdown]
# Train: collect, `extend` (each level gets its own transitions, rewarded by its
# `get_reward`), `learn`.

# %%
rewards, angles = [], []
for _ in range(3 if SMALL else 10):
    batch = collect(4 * 100)
    data = hierarchy.extend(batch)
    metrics = hierarchy.learn()
    rewards.append(data[1]["next", "reward"].mean().item())
    angles.append(metrics["level1/model_angle_deg"])
print(f"learned model: {waypoints.model.detach().numpy().round(3).tolist()} (true: 0.1 x identity)")
after = collect(4 * 100)

fig, axes = plt.subplots(1, 3, figsize=(11, 3.3))
draw(axes[0], before, "before learning")
draw(axes[1], after, "after learning")
axes[2].plot(range(1, len(rewards) + 1), rewards, "o-")
axes[2].set(xlabel="batch", ylabel="mean level-1 reward", title="distance to waypoint (negated)")
fig.tight_layout()

# %% [markdown]
# In eval mode (`hierarchy.eval()`) `extend` stores nothing: the base class's `observe`
# skips it, so evaluation never changes what a level learns. A level can also carry
# per-instance state between its steps (`get_state_spec`, as the `PlannerLevel` does for its
# warm starts), and its `state_dict` round-trips through checkpoints: the optimisers named
# in `named_optimizers` are saved with it, and other counters go in `get_extra_state`. A level
# that learns on a schedule calls `set_update_schedule(warm_up_steps=..., update_interval=...,
# num_updates=...)` in its constructor and asks `updates_due()` in `learn` how many gradient
# steps to take, as the library's learning levels do.
