"""Ready-made hierarchies: a planner over learned skills (SPlaTES or DADS), as in the papers' maze examples.

Both put a `PlannerLevel` (a sampling planner over a learned `RewardPredictor` whose state is
the achieved goal and context the desired goal) over a skill level that learns its skills in
that predictor's space. The settings follow the reference examples (LayeredRL
``splates_hierarchy.py`` / ``dads_hierarchy.py``); the TD-MPC2 agent and the predictor are
scaled down so that a CPU trains them (`cpu_tdmpc2_config`). Every setting can be overridden.
"""
from __future__ import annotations

from typing import Sequence

from torchrl.envs import EnvBase

from torchrl_layered.envs.make import goal_slices
from torchrl_layered.hierarchies.registry import register_hierarchy
from torchrl_layered.hierarchy import Hierarchy
from torchrl_layered.levels.dads import DADSLevel
from torchrl_layered.levels.planner import PlannerLevel
from torchrl_layered.levels.splates import SPlaTESLevel
from torchrl_layered.objectives.skill_rewards import DADSReward, SPlaTESReward
from torchrl_layered.predictors import get_default_predictor_factory
from torchrl_layered.objectives.tdmpc2_config import cpu_tdmpc2_config


#: The skill reward of `planner_over_splates`. It differs from `SPlaTESReward`'s defaults (the
#: reference's) in four places, each to learn within minutes on a CPU: a wider density
#: (``fixed_std``), 32 contrastive skills, the dense potential form of the reward (same optimum,
#: feedback at every step) and a symmetry-breaking prior over the first 8000 env steps.
SPLATES_REWARD = SPlaTESReward(fixed_std=0.5, n_skill_samples=32, potential_diff_reward=True,
                               symmetry_breaking_steps=8000)
#: The skill reward of `planner_over_dads`: `DADSReward`'s, with 32 contrastive skills and a
#: symmetry-breaking prior over the first 8000 env steps.
DADS_REWARD = DADSReward(n_skill_samples=32, symmetry_breaking_steps=8000)


def _planner_level(env: EnvBase, predictor: dict | None, known_reward: bool | None, **kwargs) -> PlannerLevel:
    # the value head stays (use_value=False planning ignores it): PlannerLevel's SoftUpdate needs a target
    sizes = dict(num_members=1, hidden_sizes=(200, 200, 200), head_sizes=(128, 128))
    sizes.update(predictor or {})
    if known_reward is None:
        known_reward = getattr(env, "goal_reward", None) is not None
    return PlannerLevel(predictor_factory=get_default_predictor_factory(env, known_reward=known_reward, **sizes),
                        **kwargs)


@register_hierarchy("planner_splates")
def planner_over_splates(
    env: EnvBase,
    *,
    skill_dim: int = 2,
    control_interval: int = 10,
    reward: dict | None = None,
    hold: bool = True,
    known_reward: bool | None = None,
    use_policy: bool = True,
    hide_goal_from_skills: bool = True,
    skill_warm_up_steps: int = 1000,
    skill_update_interval: int = 2,
    skill_learning_steps: int | None = 24_000,
    horizon: int = 15,
    num_samples: int = 256,
    num_iterations: int = 6,
    elite_ratio: float = 0.05,
    momentum: float = 0.1,
    warm_up_steps: int = 2000,
    switch_random_prob: float = 0.3,
    switch_planner_prob: float = 0.3,
    planner_update_interval: int = 2,
    planner_num_updates: int = 4,
    planner_batch_size: int = 256,
    planner_buffer_size: int = 20_000,
    predictor: dict | None = None,
    tdmpc2: dict | None = None,
    planner_level: dict | None = None,
    skill_level: dict | None = None,
) -> Hierarchy:
    """`PlannerLevel` (iCEM) over `SPlaTESLevel` skills, for a goal-based env such as ``Maze2D-Medium-v0``.

    Args:
        env: a goal-based env from `torchrl_layered.envs.make_env` (e.g. ``make_env("Maze2D-Medium-v0", 4)``).
        skill_dim, control_interval: the skills (`SPlaTESLevel`).
        reward: fields of `SPlaTESReward` that override `SPLATES_REWARD` (e.g.
            ``dict(fixed_std=0.3)``).
        hold: give the planner a hold switch besides the skill (`SkillLevel` ``hold``): learned
            skills all move, so without it the planner can reach a goal but not stay there.
        known_reward: the planner scores its options with the env's own reward at the state
            its model predicts they end in (``env.goal_reward``, e.g. Maze2D's) instead of
            learning a reward head; None: where the env defines one. A learned head was the
            planner's largest error near goals (`benchmarks/results/skills_maze/`).
        use_policy: the skills act with TD-MPC2's policy prior instead of MPPI (CPU cost).
        hide_goal_from_skills: the skill agent does not see the desired goal (task-agnostic
            skills, as in the paper; the planner above handles the task), and the planner's
            model of skill outcomes does not take it as an input either.
        skill_warm_up_steps, skill_update_interval: the skill level's learning schedule.
        skill_learning_steps: the skill level stops learning once its stored transitions cover
            this many env steps (held steps are not stored, so this comes later in env steps);
            then the planner empties its buffer (``refresh_when_child_freezes``) and learns its
            model of skill outcomes only on the skills it will plan with. None: the skills
            learn for ever.
        horizon, num_samples, num_iterations, elite_ratio, momentum: the iCEM planner
            (``num_elites = round(num_samples * elite_ratio)``).
        warm_up_steps: env steps of random skills before the planner plans and learns its
            predictor (the skill reward needs that predictor: keep it within the prior's span).
        switch_random_prob, switch_planner_prob: the planner's alternation with random skills.
        planner_update_interval, planner_num_updates, planner_batch_size, planner_buffer_size:
            the predictor's learning (``planner_num_updates`` updates every
            ``planner_update_interval`` planner transitions).
        predictor: `RewardPredictor` sizes (default 1 member, a (200, 200, 200) dynamics net, (128, 128)
            heads: where a skill ends near walls needs the depth).
        tdmpc2: entries of the skill level's TD-MPC2 config over `cpu_tdmpc2_config`.
        planner_level, skill_level: further keyword arguments of `PlannerLevel` / `SPlaTESLevel`.
    """
    planner_args = dict(
        # 0.99 per skill of ``control_interval`` env steps, as a discount per env step
        gamma=0.99 ** (1 / control_interval),
        planner="icem", horizon=horizon, num_samples=num_samples, num_iterations=num_iterations,
        num_elites=max(2, round(num_samples * elite_ratio)), planner_kwargs=dict(momentum=momentum),
        use_value=False, use_termination=False, alternate_with_noise=True, switch_random_prob=switch_random_prob,
        switch_planner_prob=switch_planner_prob, warm_up_steps=warm_up_steps, buffer_size=planner_buffer_size,
        batch_size=planner_batch_size, update_interval=planner_update_interval, num_updates=planner_num_updates,
        refresh_when_child_freezes=True,
    )
    planner_args.update(planner_level or {})
    skill_args = dict(
        control_interval=control_interval,
        reward=SPlaTESReward.resolve(SPLATES_REWARD, reward or {}, "planner_over_splates(reward=...)"),
        hold=hold, use_policy=use_policy, warm_up_steps=skill_warm_up_steps, update_interval=skill_update_interval,
        learning_steps=skill_learning_steps,
    )
    predictor = dict(predictor or {})
    if hide_goal_from_skills and getattr(env, "goal_slices", None) is not None:
        skill_args["hidden_slice"] = goal_slices(env)["desired_goal"]
        predictor.setdefault("dynamics_context", False)  # where a skill ends does not depend on the goal
    skill_args.update(skill_level or {})
    top = _planner_level(env, predictor, known_reward, **planner_args)
    low = SPlaTESLevel(skill_dim, cpu_tdmpc2_config(**(tdmpc2 or {})), **skill_args)
    return Hierarchy([top, low], env=env)


@register_hierarchy("planner_dads")
def planner_over_dads(
    env: EnvBase,
    *,
    skill_dim: int = 2,
    control_interval: int = 1,
    reward: dict | None = None,
    hold: bool = True,
    known_reward: bool | None = None,
    use_policy: bool = True,
    skill_warm_up_steps: int = 1000,
    skill_update_interval: int = 2,
    skill_learning_steps: int | None = 24_000,
    horizon: int = 10,
    num_samples: int = 256,
    num_iterations: int = 6,
    elite_ratio: float = 0.05,
    momentum: float = 0.1,
    initial_std: float = 0.5,
    warm_up_steps: int = 2000,
    switch_random_prob: float = 0.02,
    switch_planner_prob: float = 0.02,
    planner_update_interval: int = 10,
    planner_batch_size: int = 256,
    planner_buffer_size: int = 100_000,
    predictor: dict | None = None,
    tdmpc2: dict | None = None,
    planner_level: dict | None = None,
    skill_level: dict | None = None,
) -> Hierarchy:
    """`PlannerLevel` (CEM) over `DADSLevel` skills, for a goal-based env such as ``Maze2D-Medium-v0``.

    Arguments as `planner_over_splates`, but ``reward`` overrides `DADS_REWARD` (fields of
    `DADSReward`); ``initial_std`` is the CEM's initial std (a fraction of the skill range's
    half width). The hold switch holds for one step (a DADS skill lasts ``control_interval``).
    """
    planner_args = dict(
        gamma=0.99 ** (1 / control_interval),  # 0.99 per skill, as a discount per env step
        planner="cem", horizon=horizon, num_samples=num_samples, num_iterations=num_iterations,
        num_elites=max(2, round(num_samples * elite_ratio)),
        planner_kwargs=dict(momentum=momentum, initial_std=initial_std),
        use_value=False, use_termination=False, alternate_with_noise=True, switch_random_prob=switch_random_prob,
        switch_planner_prob=switch_planner_prob, warm_up_steps=warm_up_steps, buffer_size=planner_buffer_size,
        batch_size=planner_batch_size, update_interval=planner_update_interval, refresh_when_child_freezes=True,
    )
    planner_args.update(planner_level or {})
    skill_args = dict(
        control_interval=control_interval,
        reward=DADSReward.resolve(DADS_REWARD, reward or {}, "planner_over_dads(reward=...)"),
        hold=hold, use_policy=use_policy, warm_up_steps=skill_warm_up_steps, update_interval=skill_update_interval,
        learning_steps=skill_learning_steps,
    )
    skill_args.update(skill_level or {})
    top = _planner_level(env, predictor, known_reward, **planner_args)
    low = DADSLevel(skill_dim, cpu_tdmpc2_config(**(tdmpc2 or {})), **skill_args)
    return Hierarchy([top, low], env=env)


__all__: Sequence[str] = [
    "planner_over_splates", "planner_over_dads", "cpu_tdmpc2_config", "SPLATES_REWARD", "DADS_REWARD",
]
