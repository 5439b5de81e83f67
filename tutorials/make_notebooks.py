"""Builds the tutorial notebooks from the cells below and executes them, so their saved outputs are real.

    python tutorials/make_notebooks.py                 # build and run every notebook (minutes on a CPU)
    python tutorials/make_notebooks.py 03              # only the notebooks whose name starts with 03
    python tutorials/make_notebooks.py --small         # the quick budget the tests use (TUTORIAL_SMALL=1)
    python tutorials/make_notebooks.py --no-execute    # write the cells only

Edit a notebook here, not in Jupyter, and rebuild it: the tests execute the saved ``.ipynb``.
"""
from __future__ import annotations

import argparse
import os
import sys
import textwrap
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent

SETUP = """\
import logging
import os

# The tests set TUTORIAL_SMALL=1 to run this notebook on a small budget.
SMALL = os.environ.get("TUTORIAL_SMALL", "0") == "1"

import matplotlib.pyplot as plt
import torch

torch.manual_seed(0)
torch.set_num_threads(1)  # small networks run fastest on one thread
"""


def md(text: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_markdown_cell(textwrap.dedent(text).strip())


def code(text: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_code_cell(textwrap.dedent(text).strip())


def setup(imports: str) -> nbformat.NotebookNode:
    """The first code cell: the small-budget switch, common imports, then the notebook's own imports."""
    quiet = 'logging.getLogger("torchrl").setLevel(logging.WARNING)  # after importing torchrl, which sets it'
    return nbformat.v4.new_code_cell(SETUP + "\n" + textwrap.dedent(imports).strip() + "\n\n" + quiet)


# --------------------------------------------------------------------------- 01
PIPELINE = [
    md("""
    # 01 · A level inside a plain TorchRL pipeline

    Every level of `torchrl_layered` is a TensorDict module and every loss a TorchRL
    `LossModule`, so you can use them without a hierarchy, in the pipeline you already have.
    This notebook

    1. runs a level as the policy of a TorchRL env and `Collector`,
    2. fills a TorchRL `ReplayBuffer` and trains the `PlannerLevel`'s world model
       (`RewardPredictor`: an ensemble dynamics model plus a reward head) with its loss,
       `RewardPredictorLoss`, in a hand-written loop,
    3. plans with that model: a `PlannerLevel` with the learned predictor swings a pendulum up.
    """),
    setup("""
    from torchrl.collectors import Collector
    from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer
    from torchrl.envs import RewardSum

    from torchrl_layered.envs import make_env
    from torchrl_layered.levels import PlannerLevel, RandomLevel
    from torchrl_layered.objectives.predictor import RewardPredictorLoss
    from torchrl_layered.predictors import IdentityEncoder, RewardPredictor
    """),
    md("""
    ## 1. A level is a policy

    `make_env` builds a batched gymnasium env (here 4 pendulums) as one TorchRL env. A level
    needs the specs of what it sees and what it produces: a `Hierarchy` passes them in, and
    on its own you call `initialize` yourself. It then reads `observation` and writes
    `action` (and `level_done`, which only matters inside a hierarchy).
    """),
    code("""
    env = make_env("Pendulum-v1", num_envs=4)
    env.set_seed(0)
    observation_spec = env.observation_spec_unbatched["observation"]
    action_spec = env.full_action_spec_unbatched["action"]

    random_level = RandomLevel()
    random_level.initialize(observation_spec, action_spec)
    print("in_keys:", random_level.in_keys, " out_keys:", random_level.out_keys)
    env.rollout(3, random_level)
    """),
    md("""
    ## 2. Collect into a replay buffer

    An ordinary TorchRL `Collector` with the level as its policy; the flattened batches go
    into a `TensorDictReplayBuffer` on a `LazyTensorStorage`.
    """),
    code("""
    FRAMES = 800 if SMALL else 2000
    collector = Collector(env, random_level, frames_per_batch=400, total_frames=FRAMES,
                          auto_register_policy_transforms=True)
    buffer = TensorDictReplayBuffer(storage=LazyTensorStorage(10_000), batch_size=256)
    for batch in collector:
        buffer.extend(batch.reshape(-1))
    collector.shutdown()
    keys = sorted(key if isinstance(key, str) else ".".join(key) for key in buffer[:1].keys(True, True))
    print(f"{len(buffer)} transitions with keys {keys}")
    """),
    md("""
    ## 3. Train the world model with its loss

    `RewardPredictor` bundles an encoder (here the identity: the model predicts the raw
    observation), a `ProbabilisticEnsemble` of dynamics models and a reward head.
    `RewardPredictorLoss` is a TorchRL `LossModule`: it reads `observation`, `action`,
    `("next", "observation")`, `("next", "reward")`, ... and returns a TensorDict of
    `loss_*` terms, which the loop sums. (With a value head, `use_value=True`, you would also
    step `torchrl.objectives.SoftUpdate(loss, tau=...)` after each update.)
    """),
    code("""
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
    """),
    md("""
    ## 4. Plan with the learned model

    A `PlannerLevel` given that predictor (and `learn_predictor=False`: we trained it
    ourselves) scores candidate action sequences with the model's predicted rewards and takes
    the first action of the best plan (iCEM). In eval mode it plans deterministically. It is
    still just a policy for `env.rollout`.
    """),
    code("""
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
    """),
    md("""
    Next: [02](02_building_and_training_a_hierarchy.ipynb) stacks levels into a hierarchy,
    where the `PlannerLevel` learns its model by itself from its own transitions.
    """),
]

# --------------------------------------------------------------------------- 02
HIERARCHY = [
    md("""
    # 02 · Building and training a hierarchy

    A `Hierarchy` is a stack of levels, top (most abstract) first. Level `k` writes an action
    that level `k+1` receives as its `level_input` (its *option*); the lowest level writes
    the env's action. A level acts only when the level below hands control back, so upper
    levels act on a slower clock and learn from *semi-MDP transitions*: one transition per
    option, with the option's summed reward and its duration.

    This notebook builds a two-level random hierarchy to see the plumbing (the option-state
    transform, the transitions of each level) and then trains a planner that chooses
    5-step velocity options in a 2-D maze, with the `extend` / `learn` loop.
    """),
    setup("""
    from torchrl.collectors import Collector
    from torchrl.data import Bounded
    from torchrl.envs import Compose, RewardSum

    from torchrl_layered import Hierarchy, Level
    from torchrl_layered.envs import make_env
    from torchrl_layered.levels import PlannerLevel, RandomLevel
    from torchrl_layered.predictors import get_default_predictor_factory
    from torchrl_layered.trainers import evaluate
    """),
    md("""
    ## 1. A random hierarchy and its transitions

    `Maze2D-Open-v0` is a point mass in an open room that must reach a goal; its observation
    is `[position, achieved goal, desired goal]`. The top `RandomLevel` draws a 2-D option
    that the level below accepts (its `input_spec`); the low level hands control back after
    `control_interval=5` of its steps.
    """),
    code("""
    env = make_env("Maze2D-Open-v0", num_envs=4)
    env.set_seed(0)
    option_spec = Bounded(-1.0, 1.0, shape=(2,))
    hierarchy = Hierarchy([RandomLevel(), RandomLevel(input_spec=option_spec, control_interval=5)], env=env)
    print(hierarchy.levels)
    hierarchy.make_transform()
    """),
    md("""
    `hierarchy.make_transform()` is a `HierarchyTransform`, a `TensorDictPrimer` that carries
    the option state of every env instance between steps (which level acts, held outputs,
    step counters, option rewards). A `Collector` adds it itself with
    `auto_register_policy_transforms=True`. In the batch, `("levels", "acting")` says which
    level acted at each step:
    """),
    code("""
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
    """),
    code("""
    transitions = hierarchy.transitions(batch)
    for k, data in enumerate(transitions):
        durations = data["next", "duration"].squeeze(-1)
        print(f"level {k}: {data.shape[0]:3d} transitions, durations {sorted(set(durations.tolist()))}, "
              f"keys {sorted(k if isinstance(k, str) else '.'.join(k) for k in data.keys(True, True))}")
    top = transitions[0]
    print("first top-level option reward (summed over its steps):", top["next", "reward"][0].item())
    """),
    md("""
    The top level has one transition per option (duration 5, shorter where an episode ended
    inside it); the bottom level one per env step. `hierarchy.extend(batch)` hands each level
    exactly these transitions (through its `get_reward` and `extend` hooks), and
    `hierarchy.learn()` runs every level's update.

    ## 2. A planner over options

    Now the top level is a `PlannerLevel` that learns a world model of its options: where the
    agent ends up after 5 steps of a chosen velocity. `get_default_predictor_factory(env)`
    makes its model predict the achieved goal given the desired goal (the Maze2D observation
    layout). The level below just plays the option as the env action: a custom level of three
    lines (tutorial 03 shows every hook).
    """),
    code("""
    class FollowOption(Level):
        \"\"\"Plays its parent's option (a velocity) as the env action.\"\"\"

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
    """),
    md("""
    The training loop is the whole algorithm: collect, `extend`, `learn`. Every few batches
    `evaluate` runs one episode per eval instance with the hierarchy in eval mode (no
    exploration, nothing stored) on its own env.
    """),
    code("""
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
    print(f"the planner made {planner.num_model_updates} model updates from {planner.n_transitions} option transitions")

    fig, axes = plt.subplots(1, 2, figsize=(9, 3))
    axes[0].plot([f for f, _ in curve], [r.mean_return for _, r in curve], "o-")
    axes[0].set(xlabel="env steps", ylabel="eval return")
    axes[1].plot([f for f, _ in curve], [r.success_rate for _, r in curve], "o-", color="tab:green")
    axes[1].set(xlabel="env steps", ylabel="eval success rate", ylim=(-0.05, 1.05))
    fig.tight_layout()
    """),
    md("""
    The same loop, with logging, periodic evaluation, checkpoints and a plot, is the training
    app: `python -m torchrl_layered.train hierarchy=planner env=maze2d_open`. From Python:
    """),
    code("""
    from tempfile import mkdtemp

    from torchrl_layered.trainers import compose_config, train

    overrides = ["hierarchy=random", "env=maze2d_open", "collector.total_frames=800", "eval.interval_frames=400",
                 "progress_bar=false"]
    result = train(compose_config(overrides), mkdtemp())
    """),
]

# --------------------------------------------------------------------------- 03
CUSTOM = [
    md("""
    # 03 · Writing a custom level

    A level subclasses `Level` and overrides a few hooks; the base class does the masking
    (a level computes only the rows where it has control), holds outputs between its
    decisions, and keeps the bookkeeping. The hooks, in the order a hierarchy calls them:

    | hook | when | what |
    |---|---|---|
    | `get_input_spec()` | building, before `initialize` | the spec of the option the level accepts from its parent (`None`: top only) |
    | `initialize(observation_spec, action_spec, parent)` | building | build networks; `parent` gives the parent level |
    | `get_action(td)` | each step it acts | the action for the acting rows (`td` holds `observation`, `level_input`, `steps`) |
    | `is_done(td)` | each step it acts | hand control back to the parent once this step's option below ends |
    | `get_reward(transitions)` | `hierarchy.extend` | the level's reward for its semi-MDP transitions |
    | `extend(transitions)` | `hierarchy.extend` | store them (in training mode only) |
    | `learn()` | `hierarchy.learn` | update, return a dict of metrics |

    Everything is a TensorDict with a batch dimension: write the hooks vectorised, never as a
    loop over env instances.

    The example: a **waypoint level** for the maze. Its parent gives it a target position;
    it steers there with a linear model of how its actions move the agent, hands control
    back when it is close (or after `control_interval` steps), rewards itself by how close it
    got, and *learns* the model from its transitions. Its first guess of the model is rotated
    by 90°, so before learning it circles instead of going straight.
    """),
    setup("""
    import math

    from tensordict import TensorDictBase
    from torchrl.collectors import Collector
    from torchrl.data import Bounded, LazyTensorStorage, TensorDictReplayBuffer, TensorSpec

    from torchrl_layered import Hierarchy, Level, RandomLevel
    from torchrl_layered.envs import make_env
    """),
    code("""
    class WaypointLevel(Level):
        \"\"\"Steers towards the position its parent chose, with a learned linear model of its actions.

        Args:
            low, high: the corners of the region where waypoints lie.
            radius: hand control back once closer than this to the waypoint.
            lr: step size of the model fit.
        \"\"\"

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
            self.buffer = TensorDictReplayBuffer(storage=LazyTensorStorage(20_000), batch_size=256)

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
            self.buffer.extend(transitions.select("observation", "action", ("next", "observation"), ("next", "reward")))

        def learn(self) -> dict[str, float]:
            if len(self.buffer) < 64:
                return {}
            for _ in range(20):
                data = self.buffer.sample()
                moved = data["next", "observation"][:, :2] - data["observation"][:, :2]
                loss = ((data["action"] @ self.model - moved) ** 2).sum(-1).mean()
                self.optimizer.zero_grad()
                loss.backward()
                self.optimizer.step()
            angle = math.degrees(math.atan2(self.model[0, 1].item(), self.model[0, 0].item()))
            return {"model_error": loss.item(), "model_angle_deg": angle}
    """),
    md("""
    Stack it under a `RandomLevel` that draws waypoints in the room (its action spec is the
    waypoint level's input spec, filled in by the `Hierarchy`).
    """),
    code("""
    env = make_env("Maze2D-Open-v0", num_envs=4)
    env.set_seed(0)
    waypoints = WaypointLevel(low=1.3, high=4.7, control_interval=30)
    hierarchy = Hierarchy([RandomLevel(), waypoints], env=env)
    print("the top level's action spec is the waypoint level's input spec:", hierarchy.action_specs[0])
    """),
    md("""
    Before learning: one batch, and the path of one instance with its waypoints.
    """),
    code("""
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
    """),
    md("""
    Train: collect, `extend` (each level gets its own transitions, rewarded by its
    `get_reward`), `learn`.
    """),
    code("""
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
    """),
    md("""
    In eval mode (`hierarchy.eval()`) `extend` stores nothing: the base class's `observe`
    skips it, so evaluation never changes what a level learns. A level can also carry
    per-instance state between its steps (`get_state_spec`, as the `PlannerLevel` does for its
    warm starts), and its `state_dict` round-trips through checkpoints: put counters and
    optimiser states in `get_extra_state`.
    """),
]

# --------------------------------------------------------------------------- 04
PLANNING = [
    md("""
    # 04 · Planners and world models

    1. The sampling planners (`CEMPlanner`, `ICEMPlanner`, `MPPIPlanner`) on a known objective.
    2. A `ProbabilisticEnsemble` learning the pendulum's dynamics with `EnsembleModelLoss`.
    3. A `PlannerLevel` driving the maze with its true dynamics, drawn on the rendered maze.
    """),
    setup("""
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
    """),
    md("""
    ## 1. Planning on a known objective

    A planner maximises `objective(actions) -> returns` over action sequences `[B, N, H, *A]`
    (B instances, N candidates, horizon H), batched over instances. Here: three 2-D point
    masses must end 10 steps later at their targets, moving at most 1 per step per axis, with
    a small effort cost. We record the best score of each call of the objective (one per
    iteration).
    """),
    code("""
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
    """),
    code("""
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
    """),
    md("""
    ## 2. Learning a dynamics model with a probabilistic ensemble

    `ProbabilisticEnsemble` is PETS-style: M Gaussian models of `p(s' | s, a)` (here the
    pendulum's `[cos, sin, angular velocity]` given the torque), all members in batched
    matmuls. `EnsembleModelLoss`, a TorchRL `LossModule`, is the Gaussian NLL of each member
    on its own bootstrap resample of the batch, so the members stay different where data is
    scarce. The collector's batches already have the keys the loss reads.
    """),
    code("""
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
    """),
    md("""
    One step ahead the model is accurate; a planner needs it many steps ahead. Here each member
    rolls out (its mean prediction) the same random torques from the same start as a real
    episode of 150 steps. The small one-step errors compound: the members follow the real
    angular velocity for a long while, then drift away from it and from each other. That
    spread is the epistemic uncertainty a planner can use (e.g. `particle_reduction="min"` for a
    pessimistic planner) and the reason to plan over short horizons.
    """),
    code("""
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
    """),
    md("""
    ## 3. A `PlannerLevel` with the true dynamics

    A `Predictor` bundles an encoder (here `FixedEncoder`: the achieved goal is the state,
    the desired goal the context), a dynamics model (`KnownModel` wrapping the maze's exact
    `torch_dynamics`) and a reward (minus the distance to the goal). A `PlannerLevel` with
    `learn_predictor=False` plans through it: no learning, just model-predictive control.
    """),
    code("""
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
    """),
    md("""
    With a distance reward and an 8-step horizon the planner goes straight for the goal: in the
    open room that is right; in the medium maze it ends against the wall between it and the
    goal, because no 8-step plan gets closer. Longer horizons help only so far; this is what learned values
    (`use_value=True`) and hierarchies are for: a planner that chooses among temporally
    extended skills (tutorial 05) sees further with the same horizon.
    """),
]


# --------------------------------------------------------------------------- 05
SKILLS = [
    md("""
    # 05 · Skills: SPlaTES under a planner on Maze2D

    Tutorial 04 ended with a planner stuck behind a wall: with a distance reward, no short plan
    of single velocities gets closer to the goal. A planner that chooses among *skills* of 10
    steps sees ten times further with the same horizon. SPlaTES (Gürtler & Martius, "Long-Horizon
    Planning with Predictable Skills", RLC 2025) learns such skills without any task reward.
    A skill `z` in `[-1, 1]^2` is rewarded where it ends, with the contrastive log-density of
    its end under the planner's own learned model of skill outcomes `q`:

    $$\\Phi = \\log q(s_{end} \\mid s_{start}, z) - \\log \\frac{1}{L + 1}\\Big(q(s_{end} \\mid s_{start}, z) + \\sum_{i=1}^{L} q(s_{end} \\mid s_{start}, z_i)\\Big)$$

    with `z_i` drawn from the skill prior. `Phi` is high where the skill ends where the planner
    expects it (predictable) and not where it expects other skills to end (diverse); as it
    measures the way from the start, skills also learn to go somewhere (temporally extended).
    The planner learns `q` from the skills' outcomes and plans through it towards the goal.

    This notebook

    1. builds the ready hierarchy `planner_over_splates` on `Maze2D-Medium-v0`,
    2. trains it with a TorchRL `Collector` and the `extend` / `learn` loop,
    3. looks at what the skills do, at the start and after training,
    4. lets the planner drive the learned skills to goals, in eval mode.
    """),
    setup("""
    import math

    from torchrl.collectors import Collector

    from torchrl_layered.envs import Maze2D, make_env
    from torchrl_layered.levels.skill_hierarchies import planner_over_splates
    """),
    md("""
    ## 1. The hierarchy

    `planner_over_splates(env)` puts a `PlannerLevel` (iCEM with 256 samples, 6 iterations and
    a horizon of 15 skills) over a `SPlaTESLevel` (2-D skills of 10 env steps, learned by a small
    TD-MPC2 agent that acts with its policy prior). The planner's `RewardPredictor` encodes an
    observation into a state (the achieved goal, i.e. the position) and a context (the desired
    goal); it learns where a skill ends from where it starts, and the reward on the way. The
    skill agent does not see the desired goal: the skills are task-agnostic, the planner
    handles the task. Every setting is a keyword, e.g.
    `planner_over_splates(env, horizon=10, tdmpc2=dict(mlp_dim=256))`.
    """),
    code("""
    env = make_env("Maze2D-Medium-v0", num_envs=4)
    env.set_seed(0)
    hierarchy = planner_over_splates(env)
    planner, skills = hierarchy.levels
    print(f"{type(planner).__name__} over {type(skills).__name__}: skills of {skills.control_interval} steps "
          f"in {skills.get_input_spec().shape[-1]} dimensions")
    print(f"the planner plans with random skills for its first {planner.warm_up_steps} env steps, "
          f"the skill agent acts at random for its first {skills.warm_up_steps}")
    """),
    md("""
    ## 2. Training

    The loop is the one of every hierarchy: the collector runs the hierarchy as its policy
    (it adds the option-state transform itself), `extend` hands each level its own semi-MDP
    transitions, `learn` runs each level's update schedule. The planner's transitions are
    (start observation, skill, observation 10 steps later): we keep them to look at the skills.
    `level1/intrinsic_reward` is the skill agent's mean SPlaTES reward per step in its sampled
    batches.
    """),
    code("""
    frames_per_batch = 400
    total_frames = 2_400 if SMALL else 16_000
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

    plt.figure(figsize=(5, 3))
    plt.plot(*zip(*curve))
    plt.xlabel("env steps")
    plt.ylabel("SPlaTES reward per step")
    plt.title("the skills become predictable and diverse")
    plt.tight_layout()
    """),
    md("""
    ## 3. What the skills do

    Each planner transition says where a skill went from where it started (colour: the skill's
    angle in skill space). Early on the skill agent acts at random, so where a skill goes has
    nothing to do with the skill. After training it does: the numbers are the mean length of
    a skill's displacement and the share of its variance that a linear map of the skill
    explains (R², 0 = the skill says nothing about where the agent goes). The points on the
    axes are skills that slid along a wall: late in training the planner keeps the agent near
    goals in the maze's corners, where most directions are blocked.
    """),
    code("""
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
        ax.set_title(f"{title}\\n|move| {move.norm(dim=-1).mean():.2f}, R² {linear_r2(skill, move):.2f}", fontsize=9)
        ax.set_xlabel("x displacement over a skill")
        ax.set_aspect("equal")
    axes[0].set_ylabel("y displacement")
    fig.tight_layout()
    """),
    md("""
    ## 4. Planning over the skills

    In eval mode the planner plans deterministically (no random skills) and the skill agent acts
    with the mean of its policy. Each line is one episode from a corner of the maze to the goal
    (star of its colour) in another corner; most ways need detours around walls. Reaching the
    goal is one thing, staying there another: every learned skill moves the agent (a skill that
    stands still is as predictable as any, but no more diverse), so the planner may circle
    around a goal it has reached.
    """),
    code("""
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
    eval_env = make_env("Maze2D-Medium-v0", num_envs=4)
    eval_env.set_seed(1)
    hierarchy.eval()
    collector = Collector(eval_env, hierarchy, frames_per_batch=4 * steps, total_frames=4 * steps,
                          auto_register_policy_transforms=True)
    episodes = next(iter(collector))
    collector.shutdown()
    hierarchy.train()

    success = episodes["next", "success"]
    closest = episodes["next", "dist_to_goal"].min(-1).values
    print("closest approach to the goal in each episode:", [round(float(d), 2) for d in closest])
    print(f"goal reached (within {Maze2D().goal_radius}) in {int(success.any(-1).sum())} of {len(success)} episodes, "
          f"still there at the last step in {int(success[:, -1].sum())}")
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    draw(ax, episodes)
    ax.set_title("the planner over learned skills")
    fig.tight_layout()
    """),
    md("""
    A few minutes of training on a CPU give usable skills; the planner needs a model of them
    that is also right near walls, which takes longer. `benchmarks/splates_maze.py` trains the
    same hierarchy with periodic evaluations on 16 episodes and records how often the goal is
    reached (`benchmarks/results/`); the training app runs it with
    `python -m torchrl_layered.train hierarchy=planner_splates env=Maze2D-Medium-v0`.
    `planner_over_dads` is the same hierarchy with DADS skills, which are rewarded at every
    step instead of at their end.
    """),
]


NOTEBOOKS = {
    "01_a_level_in_a_torchrl_pipeline": PIPELINE,
    "02_building_and_training_a_hierarchy": HIERARCHY,
    "03_writing_a_custom_level": CUSTOM,
    "04_planners_and_world_models": PLANNING,
    "05_skills_under_a_planner": SKILLS,
}


def build(cells: list) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def execute(nb: nbformat.NotebookNode, workdir: Path, small: bool, timeout: int = 1200) -> None:
    """Runs ``nb`` in place in a fresh kernel started in ``workdir``."""
    previous = os.environ.get("TUTORIAL_SMALL")
    os.environ["TUTORIAL_SMALL"] = "1" if small else "0"
    try:
        NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}).execute()
    finally:
        if previous is None:
            os.environ.pop("TUTORIAL_SMALL", None)
        else:
            os.environ["TUTORIAL_SMALL"] = previous


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="prefixes of the notebooks to build (default: all)")
    parser.add_argument("--small", action="store_true", help="run with TUTORIAL_SMALL=1")
    parser.add_argument("--no-execute", action="store_true", help="write the cells without running them")
    args = parser.parse_args()
    for name, cells in NOTEBOOKS.items():
        if args.names and not any(name.startswith(prefix) for prefix in args.names):
            continue
        nb = build(cells)
        start = time.perf_counter()
        if not args.no_execute:
            execute(nb, HERE, args.small)
        nbformat.write(nb, HERE / f"{name}.ipynb")
        print(f"{name}.ipynb: {time.perf_counter() - start:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
