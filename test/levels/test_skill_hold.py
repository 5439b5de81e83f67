"""The hold switch of skill levels (``hold=True``): a parent can make the level stand still.

Checked for both skill levels: the option grows by one coordinate, held rows output the hold
action and the others the skill's, the agent never sees the switch, held steps stay out of skill
learning, the skill reward scores skills with the switch set to "move", a hold keeps the agent
in place in the maze, and bad settings are refused before anything is built.
"""
from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from torchrl.envs import TransformedEnv

from torchrl_layered import Hierarchy
from torchrl_layered.collectors import make_collector
from torchrl_layered.envs import make_env
from torchrl_layered.hierarchies.skills import cpu_tdmpc2_config, planner_over_dads, planner_over_splates
from torchrl_layered.levels import DADSLevel, PlannerLevel, SPlaTESLevel
from torchrl_layered.objectives.skill_rewards import skill_log_ratio
from torchrl_layered.predictors import get_default_predictor_factory

LEVELS = [
    pytest.param(SPlaTESLevel, dict(control_interval=4, hidden_slice=(4, 6)), id="splates"),
    pytest.param(DADSLevel, dict(control_interval=1), id="dads"),
]


def tiny_config():
    return cpu_tdmpc2_config(enc_dim=16, mlp_dim=16, latent_dim=16, batch_size=4, num_samples=16, num_elites=4,
                             num_pi_trajs=2, num_iterations=2)


def build(level_cls, num_envs=2, planner_warm_up=40, **kwargs):
    env = make_env("Maze2D-Open-v0", num_envs, max_episode_steps=25)
    factory = get_default_predictor_factory(env, num_members=1, hidden_sizes=(16,), head_sizes=(16,))
    top = PlannerLevel(predictor_factory=factory, horizon=2, num_samples=16, num_iterations=2, num_elites=4,
                       warm_up_steps=planner_warm_up, batch_size=16)
    skill = level_cls(2, tiny_config(), warm_up_steps=20, n_skill_samples=8, **kwargs)
    return env, Hierarchy([top, skill], env=env), skill


def act(skill, options, obs=None):
    n = options.shape[0]
    obs = torch.full((n, 6), 2.5) if obs is None else obs
    state = skill.get_state_spec()
    inputs = dict(observation=obs, level_input=options, steps=torch.ones(n, 1, dtype=torch.long),
                  instance=torch.arange(n))
    if state is not None:
        inputs["state"] = state.zero((n,))
    td = TensorDict(inputs, batch_size=[n])
    return skill._checked_action(td, n, td.clone())


@pytest.mark.parametrize("level_cls,kwargs", LEVELS)
def test_held_rows_output_the_hold_action_and_the_others_their_skill(level_cls, kwargs):
    torch.manual_seed(0)
    # the policy acts deterministically in eval mode (MPPI's policy samples are drawn even there, as TD-MPC2's)
    _, hierarchy, skill = build(level_cls, hold=True, use_policy=True, **kwargs)
    assert skill.get_input_spec().shape == (3,)
    assert hierarchy.levels[0].action_spec.shape == (3,)  # the parent plans over the switch too
    skill.eval()
    skills = torch.rand(6, 2) * 2 - 1
    switch = torch.tensor([-1.0, 0.0, 0.49, 0.51, 0.9, 1.0])[:, None]
    actions = act(skill, torch.cat([skills, switch], -1))
    held = switch.squeeze(-1) > 0.5
    assert torch.equal(actions[held], torch.zeros(int(held.sum()), 2))  # the middle of [-1, 1]^2
    # a moving row acts on its skill alone: the switch's value does not reach the agent
    reference = act(skill, torch.cat([skills, torch.full((6, 1), -0.7)], -1))
    assert torch.allclose(actions[~held], reference[~held])
    assert not torch.allclose(reference[~held], torch.zeros_like(reference[~held]))


@pytest.mark.parametrize("level_cls,kwargs", LEVELS)
def test_the_agent_is_built_for_the_skill_without_the_switch(level_cls, kwargs):
    _, _, plain = build(level_cls, **kwargs)
    _, _, held = build(level_cls, hold=True, **kwargs)
    assert [p.shape for p in plain.world_model.parameters()] == [p.shape for p in held.world_model.parameters()]


def test_a_given_hold_action_is_used_in_the_action_spec_units():
    torch.manual_seed(0)
    _, _, skill = build(DADSLevel, hold=True, hold_action=[0.25, -0.5])
    skill.eval()
    actions = act(skill, torch.tensor([[0.3, -0.2, 1.0], [0.3, -0.2, -1.0]]))
    assert torch.equal(actions[0], torch.tensor([0.25, -0.5]))
    assert not torch.equal(actions[1], torch.tensor([0.25, -0.5]))


@pytest.mark.parametrize("level_cls,kwargs", LEVELS)
def test_held_steps_stay_out_of_skill_learning_and_the_parent_learns_from_them(level_cls, kwargs):
    torch.manual_seed(0)
    env, hierarchy, skill = build(level_cls, hold=True, **kwargs)
    top = hierarchy.levels[0]
    collector = make_collector(env, hierarchy, frames_per_batch=100, total_frames=300)
    stored, held_steps, top_rows = 0, 0, 0
    for batch in collector:
        transitions = hierarchy.extend(batch)
        hierarchy.learn()
        held = transitions[1]["level_input"][:, 2] > 0.5
        stored += int((~held).sum())
        held_steps += int(held.sum())
        top_rows += transitions[0].numel()
        # a held step outputs the hold action
        assert torch.equal(transitions[1]["action"][held], torch.zeros(int(held.sum()), 2))
    collector.shutdown()
    assert held_steps > 0 and stored > 0  # random options hold a quarter of the time
    assert skill.n_transitions == stored == len(skill.replay_buffer)
    assert skill.replay_buffer[:]["level_input"].shape[-1] == 2  # stored without the switch
    assert top.n_transitions == top_rows and top.replay_buffer[:]["action"].shape[-1] == 3
    assert skill.num_gradient_updates > 0 and top.num_gradient_updates > 0


@pytest.mark.parametrize("level_cls,kwargs", LEVELS)
def test_the_skill_reward_scores_skills_with_the_switch_set_to_move(level_cls, kwargs):
    torch.manual_seed(0)
    _, hierarchy, skill = build(level_cls, hold=True, hold_threshold=0.2, **kwargs)
    switch = skill.loss.hold_switch
    assert switch is skill.move_switch or torch.equal(switch, skill.move_switch)
    assert torch.equal(switch, torch.tensor([-0.4]))  # the middle of the move range [-1, 0.2]
    predictor = hierarchy.levels[0].predictor
    state, context = predictor.encode(torch.rand(5, 6) * 4 + 1)
    target, _ = predictor.encode(torch.rand(5, 6) * 4 + 1)
    skills, prior = torch.rand(5, 2) * 2 - 1, torch.rand(3, 2) * 2 - 1
    ratio = skill_log_ratio(predictor, state, context, skills, target, prior, fixed_std=0.5, clip_low=-100.0,
                            clip_high=100.0, switch=switch)
    # by hand: the model's log-densities of the target under [skill, -0.4] and each [prior skill, -0.4]
    rows = torch.cat([skills[:, None], prior[None].expand(5, -1, -1)], 1)
    actions = torch.cat([rows, torch.full((5, 4, 1), -0.4)], -1).reshape(20, 3)
    with torch.no_grad():
        log_q = predictor.model.log_prob(state.repeat_interleave(4, 0), actions, target.repeat_interleave(4, 0),
                                         context.repeat_interleave(4, 0), std=0.5, normalized=True).reshape(5, 4)
    expected = log_q[:, 0] - (log_q.logsumexp(-1) - torch.log(torch.tensor(4.0)))
    assert torch.allclose(ratio, expected, atol=1e-5)


@pytest.mark.parametrize("factory", [planner_over_splates, planner_over_dads])
def test_a_hold_keeps_the_agent_where_it_is_in_the_maze(factory):
    torch.manual_seed(0)
    env = make_env("Maze2D-Medium-v0", 3)
    hierarchy = factory(env, skill_level=dict(hold=True))
    top, skill = hierarchy.levels
    hierarchy.eval()
    # the planner's options forced to "hold" (a planner that samples only the top of the switch's range)
    top.get_action = lambda td: torch.tensor([[0.3, -0.6, 1.0]]).expand(td.batch_size[0], 3)
    tenv = TransformedEnv(make_env("Maze2D-Medium-v0", 3), hierarchy.make_transform())
    rollout = tenv.rollout(3 * skill.control_interval, hierarchy)
    obs = rollout["observation"]
    assert torch.equal(obs, obs[:, :1].expand_as(obs))  # every instance stays at its start
    assert bool((rollout["action"] == 0).all())


@pytest.mark.parametrize("kwargs,message", [
    (dict(hold="yes"), "hold must be True or False"),
    (dict(hold=True, hold_threshold=1.0), r"hold_threshold must be a number in \(-1, 1\)"),
    (dict(hold=True, hold_threshold=float("nan")), r"hold_threshold must be a number in \(-1, 1\)"),
    (dict(hold=True, hold_action=[0.0, float("inf")]), "hold_action must be a finite 1-D action"),
    (dict(hold=True, hold_action=[[0.0, 0.0]]), "hold_action must be a finite 1-D action"),
])
def test_bad_hold_settings_are_refused(kwargs, message):
    for level_cls in (SPlaTESLevel, DADSLevel):
        with pytest.raises(ValueError, match=message):
            level_cls(2, tiny_config(), **kwargs)


def test_a_hold_action_of_the_wrong_size_is_refused_when_the_level_meets_its_env():
    with pytest.raises(ValueError, match=r"hold_action has shape \(3,\) but the action spec \(2,\)"):
        build(SPlaTESLevel, hold=True, hold_action=[0.0, 0.0, 0.0])
