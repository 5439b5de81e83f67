"""Skill-reward settings: one typed object per reward, shared by level, loss and ready-made hierarchy."""
from __future__ import annotations

import dataclasses

import pytest

from torchrl_layered import Hierarchy
from torchrl_layered.envs import make_env
from torchrl_layered.hierarchies.skills import (
    DADS_REWARD,
    SPLATES_REWARD,
    cpu_tdmpc2_config,
    planner_over_dads,
    planner_over_splates,
)
from torchrl_layered.levels import DADSLevel, PlannerLevel, SPlaTESLevel
from torchrl_layered.objectives.skill_rewards import DADSReward, SkillReward, SPlaTESReward
from torchrl_layered.predictors import get_default_predictor_factory


def tiny_config():
    return cpu_tdmpc2_config(enc_dim=16, mlp_dim=16, latent_dim=16, batch_size=4, num_samples=16, num_elites=4,
                             num_pi_trajs=2, num_iterations=2)


def build(skill_level):
    env = make_env("Maze2D-Open-v0", 2)
    factory = get_default_predictor_factory(env, num_members=1, hidden_sizes=(16,), head_sizes=(16,))
    top = PlannerLevel(predictor_factory=factory, horizon=2, num_samples=8, num_iterations=1, num_elites=2)
    Hierarchy([top, skill_level], env=env)
    return skill_level


@pytest.mark.parametrize("level_cls,settings_cls", [(SPlaTESLevel, SPlaTESReward), (DADSLevel, DADSReward)])
def test_the_level_and_its_loss_share_one_settings_object(level_cls, settings_cls):
    level = build(level_cls(2, tiny_config(), control_interval=2, fixed_std=0.25,
                            reward=settings_cls(n_skill_samples=7, fixed_std=0.9)))
    assert level.loss.settings is level.reward
    # a keyword argument wins over the object; the object's other fields stay
    assert level.reward == dataclasses.replace(settings_cls(), n_skill_samples=7, fixed_std=0.25)
    # the loss reads its behaviour from the settings
    assert level.loss.prior_skills("cpu").shape == (7, 2)
    assert level.loss.reward_norm.momentum == settings_cls().norm_momentum


def test_defaults_are_declared_once_on_the_settings_classes():
    level = SPlaTESLevel(2, tiny_config())
    assert level.reward == SPlaTESReward()
    assert DADSLevel(2, tiny_config(), reward={"reward_scale": 2.0}).reward == DADSReward(reward_scale=2.0)
    # what both rewards share is declared on the base class, SPlaTES overrides only the density's width
    shared = {f.name for f in dataclasses.fields(SkillReward)}
    assert shared <= set(SPlaTESReward.names()) and shared <= set(DADSReward.names())
    assert SPlaTESReward().fixed_std != SkillReward().fixed_std == DADSReward().fixed_std


@pytest.mark.parametrize("kwargs,message", [
    (dict(n_skill_samples=0), "n_skill_samples must be an int >= 1"),
    (dict(fixed_std=-0.5), "fixed_std must be finite and > 0"),
    (dict(fixed_std=float("nan")), "fixed_std must be a finite number"),
    (dict(reward_clipping_low=5.0, reward_clipping_high=1.0), "need reward_clipping_low < reward_clipping_high"),
    (dict(norm_momentum=0.0), "norm_momentum must lie in (0, 1]"),
    (dict(symmetry_breaking_steps=-1), "symmetry_breaking_steps must be an int >= 0"),
    (dict(reward_offset=float("inf")), "reward_offset must be a finite number"),
    (dict(converter_coef=float("nan")), "converter_coef must be a finite number"),
    (dict(reward_clipping_low="low"), "reward_clipping_low must be a finite number"),
    (dict(potential_diff_reward=1), "potential_diff_reward must be true or false"),
])
def test_bad_settings_are_refused_naming_the_setting(kwargs, message):
    with pytest.raises(ValueError, match=r"SPlaTESReward: " + message.replace("(", r"\(").replace(")", r"\)")):
        SPlaTESLevel(2, tiny_config(), **kwargs)


def test_a_mistyped_or_foreign_setting_is_refused_with_the_right_name():
    with pytest.raises(TypeError, match=r"'fixed_sdt' \(did you mean 'fixed_std'\?\)"):
        SPlaTESLevel(2, tiny_config(), fixed_sdt=0.3)
    with pytest.raises(TypeError, match=r"DADSLevel got unknown argument 'potential_diff_reward'"):
        DADSLevel(2, tiny_config(), potential_diff_reward=True)
    with pytest.raises(TypeError, match=r"unknown reward setting\(s\) \['potential_diff_reward'\]"):
        DADSLevel(2, tiny_config(), reward={"potential_diff_reward": True})
    with pytest.raises(TypeError, match=r"reward= must be a DADSReward or a dict; got SPlaTESReward"):
        DADSLevel(2, tiny_config(), reward=SPlaTESReward())


def test_the_ready_made_hierarchies_take_their_reward_from_one_constant():
    env = make_env("Maze2D-Medium-v0", 1)
    small = dict(predictor=dict(hidden_sizes=(16,), head_sizes=(16,)), tdmpc2=dict(mlp_dim=16, latent_dim=16,
                                                                                   enc_dim=16))
    skills = planner_over_splates(env, **small).levels[1]
    assert skills.reward == SPLATES_REWARD and skills.loss.settings == SPLATES_REWARD
    skills = planner_over_splates(env, reward=dict(fixed_std=0.3), **small).levels[1]
    assert skills.reward == dataclasses.replace(SPLATES_REWARD, fixed_std=0.3)
    assert planner_over_dads(env, **small).levels[1].reward == DADS_REWARD
    with pytest.raises(TypeError, match=r"planner_over_dads\(reward=\.\.\.\): unknown reward setting\(s\) \['converter_coef'\]"):
        planner_over_dads(env, reward=dict(converter_coef=2.0), **small)


def test_the_ready_made_hierarchies_stop_the_skills_learning_where_told():
    env = make_env("Maze2D-Medium-v0", 1)
    small = dict(predictor=dict(hidden_sizes=(16,), head_sizes=(16,)), tdmpc2=dict(mlp_dim=16, latent_dim=16,
                                                                                   enc_dim=16))
    top, skills = planner_over_splates(env, **small).levels
    # by default the skills stop after 24k stored env steps, and the planner then starts its buffer afresh
    assert skills.learning_steps == 24_000 and not skills.learning_done and top.learning_steps is None
    assert top.refresh_when_child_freezes and top.replay_buffer.storage.max_size == 20_000
    assert planner_over_dads(env, **small).levels[0].refresh_when_child_freezes
    assert planner_over_splates(env, skill_learning_steps=None, **small).levels[1].learning_steps is None
    assert planner_over_dads(env, skill_learning_steps=5000, **small).levels[1].learning_steps == 5000
    with pytest.raises(ValueError, match=r"needs an int learning_steps >= 1000 \(its warm_up_steps\) or None"):
        planner_over_dads(env, skill_learning_steps=10, **small)
