"""The standard hierarchies: one learning level (planner, TD-MPC2, SAC, DQN) or a random baseline.

Each is registered by name (`register_hierarchy`) for the training app's ``hierarchy=NAME``;
its keyword arguments and their defaults are the app's ``hierarchy.kwargs``.
"""
from __future__ import annotations

from functools import partial
from typing import Sequence

from torchrl.data import Bounded, Categorical
from torchrl.envs import EnvBase

from torchrl_layered.hierarchies.registry import register_hierarchy
from torchrl_layered.hierarchy import Hierarchy
from torchrl_layered.levels import PlannerLevel, RandomLevel, TDMPC2Level
from torchrl_layered.predictors import default_predictor_factory, get_default_predictor_factory
from torchrl_layered.objectives.tdmpc2_config import cpu_tdmpc2_config

# ------------------------------------------------------------------ hierarchies
@register_hierarchy("random")
def random_hierarchy(env: EnvBase, *, option_dim: int = 2, control_interval: int = 10) -> Hierarchy:
    """A random option chosen every ``control_interval`` steps over a random low level: a baseline."""
    option = Bounded(-1.0, 1.0, shape=(option_dim,), device=env.device)
    return Hierarchy([RandomLevel(), RandomLevel(input_spec=option, control_interval=control_interval)], env=env)


@register_hierarchy("planner")
def planner_hierarchy(
    env: EnvBase,
    *,
    planner: str = "icem",
    horizon: int = 10,
    num_samples: int = 64,
    num_iterations: int = 3,
    num_members: int = 5,
    hidden_sizes: Sequence[int] = (128, 128),
    head_sizes: Sequence[int] = (128, 128),
    activation: str = "SiLU",
    gamma: float = 0.99,
    warm_up_steps: int = 800,
    alternate_with_noise: bool = False,
    batch_size: int = 256,
    update_interval: int = 2,
    num_updates: int = 1,
    lr: float = 1e-3,
    buffer_size: int = 100_000,
    compile: bool = False,
    planning_dtype: str = "float32",
) -> Hierarchy:
    """One `PlannerLevel`: a sampling planner over a learned ensemble world model (model-based RL).

    On a goal-based env (Maze2D) the predictor models the achieved goal conditioned on the
    desired goal (`get_default_predictor_factory`); elsewhere it models the raw observation.
    The level's arguments are those of `PlannerLevel`; ``num_members``, ``hidden_sizes`` and
    ``head_sizes`` size its `RewardPredictor`, and ``activation`` (a ``torch.nn`` name: "SiLU",
    or "ReLU" as LayeredRL's nets) is its nets' activation.
    """
    sizes = dict(num_members=num_members, hidden_sizes=tuple(hidden_sizes), head_sizes=tuple(head_sizes),
                 activation=activation)
    if getattr(env, "goal_slices", None) is not None:
        factory = get_default_predictor_factory(env, **sizes)
    else:
        factory = partial(default_predictor_factory, **sizes)
    level = PlannerLevel(
        predictor_factory=factory,
        planner=planner,
        horizon=horizon,
        num_samples=num_samples,
        num_iterations=num_iterations,
        gamma=gamma,
        warm_up_steps=warm_up_steps,
        alternate_with_noise=alternate_with_noise,
        batch_size=batch_size,
        update_interval=update_interval,
        num_updates=num_updates,
        lr=lr,
        buffer_size=buffer_size,
        compile=compile,
        planning_dtype=planning_dtype,
    )
    return Hierarchy([level], env=env)


#: The TD-MPC2 config of `tdmpc2_hierarchy`: `cpu_tdmpc2_config` with a wider encoder and latent,
#: a larger learning rate and one more MPPI iteration (a single level has the CPU to itself).
TDMPC2_HIERARCHY_CONFIG = cpu_tdmpc2_config(enc_dim=128, latent_dim=64, lr=1e-3, num_iterations=4)


@register_hierarchy("tdmpc2")
def tdmpc2_hierarchy(
    env: EnvBase,
    *,
    config: dict | None = None,
    warm_up_steps: int = 1000,
    update_interval: int = 2,
    num_updates: int = 1,
    use_policy: bool = False,
) -> Hierarchy:
    """One `TDMPC2Level`, sized for a CPU; ``config`` entries override `TDMPC2_HIERARCHY_CONFIG`.

    On a goal-based env (Maze2D) the desired goal conditions reward, Q and policy, with
    hindsight relabelling on the env's own reward (minus the distance, scaled like Maze2D's).
    """
    cfg = {**TDMPC2_HIERARCHY_CONFIG, **(config or {})}
    goal = {}
    slices = getattr(env, "goal_slices", None)
    if slices is not None:
        goal = dict(desired_goal_slice=slices["desired_goal"], achieved_goal_slice=slices["achieved_goal"],
                    use_her=True, reward_fn=negative_distance)
    level = TDMPC2Level(cfg, warm_up_steps=warm_up_steps, update_interval=update_interval, num_updates=num_updates,
                        use_policy=use_policy, **goal)
    return Hierarchy([level], env=env)


def negative_distance(achieved_goal, desired_goal):
    """A goal reward for hindsight relabelling: minus the Euclidean distance."""
    return -(achieved_goal - desired_goal).norm(dim=-1)


@register_hierarchy("sac")
def sac_hierarchy(env: EnvBase, *, hidden_sizes: Sequence[int] = (64, 64), lr: float = 1e-3, batch_size: int = 128,
                  update_interval: int = 3, num_updates: int = 2, warm_up_steps: int = 0) -> Hierarchy:
    """One `TianshouLevel` running Tianshou's SAC (continuous actions)."""
    from torchrl_layered.levels import default_sac_config

    _require_action_spec(env, Bounded, "SAC")
    return _tianshou_hierarchy(env, default_sac_config(hidden_sizes=list(hidden_sizes), lr=lr), batch_size=batch_size,
                               update_interval=update_interval, num_updates=num_updates, warm_up_steps=warm_up_steps)


@register_hierarchy("dqn")
def dqn_hierarchy(env: EnvBase, *, hidden_sizes: Sequence[int] = (64, 64), lr: float = 1e-3, batch_size: int = 128,
                  update_interval: int = 1, num_updates: int = 2, warm_up_steps: int = 0) -> Hierarchy:
    """One `TianshouLevel` running Tianshou's (double) DQN with an epsilon schedule (discrete actions).

    Two updates of ``batch_size`` per transition, the setting that solved CartPole-v1 in 15,000
    env steps in 19 of 20 unseeded runs (`benchmarks/dqn_cartpole.py`).
    """
    from torchrl_layered.levels import default_dqn_config

    _require_action_spec(env, Categorical, "DQN")
    return _tianshou_hierarchy(env, default_dqn_config(hidden_sizes=list(hidden_sizes), lr=lr), batch_size=batch_size,
                               update_interval=update_interval, num_updates=num_updates, warm_up_steps=warm_up_steps)


def _tianshou_hierarchy(env: EnvBase, config: dict, **level_kwargs) -> Hierarchy:
    from torchrl_layered.levels import TianshouLevel

    return Hierarchy([TianshouLevel(config, **level_kwargs)], env=env)


def _require_action_spec(env: EnvBase, kind: type, algorithm: str) -> None:
    spec = env.action_spec_unbatched
    if not isinstance(spec, kind):
        raise TypeError(f"{algorithm} cannot feed the env, which needs a {type(spec).__name__} action; "
                        f"{algorithm} produces {kind.__name__} actions")
