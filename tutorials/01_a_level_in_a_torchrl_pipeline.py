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
# # 01 · A level inside a plain TorchRL pipeline
#
# Every level of `torchrl_layered` is a TensorDict module and every loss a TorchRL
# `LossModule`, so you can use them without a hierarchy, in the pipeline you already have.
# This notebook
#
# 1. runs a level as the policy of a TorchRL env and `Collector`,
# 2. fills a TorchRL `ReplayBuffer` and trains the `PlannerLevel`'s world model
#    (`RewardPredictor`: an ensemble dynamics model plus a reward head) with its loss,
#    `RewardPredictorLoss`, in a hand-written loop,
# 3. plans with that model: a `PlannerLevel` with the learned predictor swings a pendulum up.

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
from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer
from torchrl.envs import RewardSum

from torchrl_layered.envs import make_env
from torchrl_layered.levels import PlannerLevel, RandomLevel
from torchrl_layered.objectives.predictor import RewardPredictorLoss
from torchrl_layered.predictors import IdentityEncoder, RewardPredictor

logging.getLogger("torchrl").setLevel(logging.WARNING)  # after importing torchrl, which sets it

# %% [markdown]
# ## 1. A level is a policy
#
# `make_env` builds a batched gymnasium env (here 4 pendulums) as one TorchRL env. A level
# needs the specs of what it sees and what it produces: a `Hierarchy` passes them in, and
# on its own you call `initialize` yourself. It then reads `observation` and writes
# `action` (and `level_done`, which only matters inside a hierarchy).

# %%
env = make_env("Pendulum-v1", num_envs=4)
env.set_seed(0)
observation_spec = env.observation_spec_unbatched["observation"]
action_spec = env.full_action_spec_unbatched["action"]

random_level = RandomLevel()
random_level.initialize(observation_spec, action_spec)
print("in_keys:", random_level.in_keys, " out_keys:", random_level.out_keys)
env.rollout(3, random_level)

# %% [markdown]
# ## 2. Collect into a replay buffer
#
# An ordinary TorchRL `Collector` with the level as its policy; the flattened batches go
# into a `TensorDictReplayBuffer` on a `LazyTensorStorage`.

# %%
FRAMES = 800 if SMALL else 2000
collector = Collector(env, random_level, frames_per_batch=400, total_frames=FRAMES,
                      auto_register_policy_transforms=True)
buffer = TensorDictReplayBuffer(storage=LazyTensorStorage(10_000), batch_size=256)
for batch in collector:
    buffer.extend(batch.reshape(-1))
collector.shutdown()
keys = sorted(key if isinstance(key, str) else ".".join(key) for key in buffer[:1].keys(True, True))
print(f"{len(buffer)} transitions with keys {keys}")

# %% [markdown]
# ## 3. Train the world model with its loss
#
# `RewardPredictor` bundles an encoder (here the identity: the model predicts the raw
# observation), a `ProbabilisticEnsemble` of dynamics models and a reward head.
# `RewardPredictorLoss` is a TorchRL `LossModule`: it reads `observation`, `action`,
# `("next", "observation")`, `("next", "reward")`, ... and returns a TensorDict of
# `loss_*` terms, which the loop sums. (With a value head, `use_value=True`, you would also
# step `torchrl.objectives.SoftUpdate(loss, tau=...)` after each update.)

# %%
predictor = RewardPredictor(IdentityEncoder(3), action_dim=1, num_members=5,
                            hidden_sizes=(128, 128), head_sizes=(128, 128), use_value=False)
loss_module = RewardPredictorLoss(predictor)
optimizer = torch.optim.Adam(loss_module.parameters(), lr=1e-3)

history = []
for step in range(300 if SMALL else 1500):
    losses = loss_module(buffer.sample())
    loss = sum(value for key, value in losses.items() if key.startswith("loss_"))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    history.append({key: value.item() for key, value in losses.detach().items()})

fig, axes = plt.subplots(1, 2, figsize=(9, 3))
axes[0].plot([h["model_nll"] for h in history])
axes[0].set(title="dynamics: Gaussian NLL", xlabel="update")
axes[1].semilogy([h["loss_reward"] for h in history])
axes[1].set(title="reward: squared error", xlabel="update")
fig.tight_layout()

# %% [markdown]
# ## 4. Plan with the learned model
#
# A `PlannerLevel` given that predictor (and `learn_predictor=False`: we trained it
# ourselves) scores candidate action sequences with the model's predicted rewards and takes
# the first action of the best plan (iCEM). In eval mode it plans deterministically. It is
# still just a policy for `env.rollout`.

# %%
planner_level = PlannerLevel(predictor, learn_predictor=False, warm_up_steps=0, use_value=False,
                             horizon=15, num_samples=64, num_iterations=3)
planner_level.initialize(observation_spec, action_spec)
planner_level.eval()

eval_env = make_env("Pendulum-v1", num_envs=4).append_transform(RewardSum())
STEPS = 40 if SMALL else 200  # a full episode is 200 steps


@torch.no_grad()
def run(policy):
    eval_env.set_seed(1)
    return eval_env.rollout(STEPS, policy)


planned, random_run = run(planner_level), run(random_level)
for name, rollout in [("planner", planned), ("random", random_run)]:
    returns = rollout["next", "episode_reward"][:, -1].squeeze(-1)
    print(f"{name:8s} returns over {STEPS} steps: {[round(r) for r in returns.tolist()]}")

angle = torch.atan2(planned["observation"][..., 1], planned["observation"][..., 0])
plt.figure(figsize=(6, 3))
plt.plot(angle.T.abs(), alpha=0.8)
plt.axhline(0, color="k", lw=0.5)
plt.xlabel("step")
plt.ylabel("|angle| (0 = upright)")
plt.title("the planner swings the pendulums up with the learned model")
plt.tight_layout()

# %% [markdown]
# Next: [02](02_building_and_training_a_hierarchy.ipynb) stacks levels into a hierarchy,
# where the `PlannerLevel` learns its model by itself from its own transitions.
