"""LayeredRL's Tianshou 0.5 config shape builds the 2.x algorithm it describes; 0.5 class paths are named."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from tianshou.algorithm import DQN, SAC
from tianshou.algorithm.modelfree.sac import AutoAlpha
from torchrl.data import Bounded, Categorical, Unbounded

from torchrl_layered import Hierarchy
from torchrl_layered.collectors import make_collector
from torchrl_layered.envs import make_env
from torchrl_layered.levels import TianshouLevel
from torchrl_layered.levels.tianshou_v05 import from_v05_config
from torchrl_layered.nets import ConcatNet, Critic

from test_tianshou import fake_transitions, initialized


def concat_net(**kwargs) -> dict:
    return {"_target_": "torchrl_layered.nets.ConcatNet", "mapped_env_obs_shape": "__mapped_env_obs_shape__",
            "level_input_dim": "__level_input_dim__", "level_state_dims": "__level_state_dims__",
            "hidden_sizes": [32, 32], "device": "__device__", **kwargs}


def sac_config() -> dict:
    """The page's SAC config with its ``...`` filled as LayeredRL's own SAC learning test fills it."""
    return {
        "n_critics": 2,
        "actor": {"_target_": "tianshou.utils.net.continuous.ActorProb", "preprocess_net": concat_net(),
                  "action_shape": "__action_dim__", "device": "__device__", "unbounded": True,
                  "conditioned_sigma": True},
        "critic": {"_target_": "torchrl_layered.nets.Critic",
                   "preprocess_net": concat_net(action_shape="__action_dim__", concat=True), "device": "__device__"},
        "optims": {"actor_optim": {"_target_": "torch.optim.Adam", "lr": 0.003},
                   "critic_optim": {"_target_": "torch.optim.Adam", "lr": 0.002}},
        "policy": {"_target_": "tianshou.policy.SACPolicy", "_partial_": True, "tau": 0.005, "gamma": 0.99,
                   "alpha": 0.2, "estimation_step": 1},
        "policy_dynamic_args": {
            "actor": "__actor__",
            "actor_optim": "__actor_optim__",
            "critic1": "__critic_0__",
            "critic1_optim": "__critic_optim_0__",
            "critic2": "__critic_1__",
            "critic2_optim": "__critic_optim_1__",
            "action_space": "__action_space__",
        },
    }


def dqn_config() -> dict:
    """LayeredRL's DQN learning-test config (a ConcatNet Q-network, constant epsilon)."""
    return {
        "n_critics": 1,
        "critic": concat_net(action_shape="__action_dim__"),
        "optims": {"critic_optim": {"_target_": "torch.optim.Adam", "lr": 0.001}},
        "policy": {"_target_": "tianshou.policy.DQNPolicy", "_partial_": True, "discount_factor": 0.9,
                   "estimation_step": 1, "target_update_freq": 100, "clip_loss_grad": True},
        "policy_dynamic_args": {"model": "__critic_0__", "optim": "__critic_optim_0__"},
        "eps": 0.3,
    }


def test_the_pages_sac_config_builds_sac_with_its_settings():
    level = initialized(sac_config(), Unbounded((3,)), Bounded(-2.0, 2.0, (1,)), input_spec=Bounded(-1.0, 1.0, (2,)),
                        buffer_size=10000, batch_size=16)
    algorithm = level.algorithm
    assert isinstance(algorithm, SAC)
    assert algorithm.tau == 0.005 and algorithm.gamma == 0.99 and algorithm.alpha.value == pytest.approx(0.2)
    assert algorithm.critic is not algorithm.critic2 and isinstance(algorithm.critic, Critic)
    # the policy's input is the observation then the level input; the critic's adds the action
    assert isinstance(algorithm.policy.actor.preprocess, ConcatNet)
    assert algorithm.policy.actor.preprocess.model.model[0].in_features == 3 + 2
    assert algorithm.critic.preprocess.model.model[0].in_features == 3 + 2 + 1
    assert [g["lr"] for g in algorithm.policy_optim._optim.param_groups] == [0.003]
    assert [g["lr"] for g in algorithm.critic_optim._optim.param_groups] == [0.002]
    assert torch.all(algorithm.critic.last.model[-1].weight == 0)  # LayeredRL's critic starts at zero
    before = [p.detach().clone() for p in algorithm.critic.parameters()]
    level.observe(fake_transitions(64, 3, level.action_spec, level.get_input_spec()))
    metrics = level.learn()
    assert np.isfinite(metrics["critic1_loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before, algorithm.critic.parameters()))


def test_the_pages_dqn_config_builds_dqn_with_its_settings_below_a_discrete_parent():
    level = initialized(dqn_config(), Unbounded((4,)), Categorical(2), input_spec=Categorical(3), batch_size=16)
    algorithm = level.algorithm
    assert isinstance(algorithm, DQN)
    assert algorithm.gamma == 0.9 and algorithm.target_update_freq == 100 and algorithm.huber_loss_delta == 1.0
    assert level.tianshou_config["exploration"] == {"eps_start": 0.3, "eps_end": 0.3, "eps_decay_steps": 0}
    assert algorithm.policy.model.model.model[0].in_features == 4 + 3  # one-hot level input
    level.observe(fake_transitions(64, 4, level.action_spec, level.get_input_spec()))
    assert np.isfinite(level.learn()["loss"])


def test_the_pages_snippet_runs_in_a_hierarchy():
    level = TianshouLevel(tianshou_config=sac_config(), buffer_size=10000, batch_size=8)
    env = make_env("Pendulum-v1", 2)
    hierarchy = Hierarchy([level], env=env)
    collector = make_collector(env, hierarchy, frames_per_batch=40, total_frames=80)
    for batch in collector:
        (transitions,) = hierarchy.extend(batch)
        hierarchy.learn()
    collector.shutdown()
    assert transitions.numel() == 40 and level.num_gradient_updates > 0
    assert batch["action"].abs().max() <= 2.0


def test_layeredrl_network_paths_and_an_alpha_entry_translate():
    config = sac_config()
    for entry in (config["actor"]["preprocess_net"], config["critic"]["preprocess_net"]):
        entry["_target_"] = "layeredrl.nets.ConcatNet"
    config["critic"]["_target_"] = "layeredrl.nets.Critic"
    config["alpha"] = {"initial_log_alpha": -1.0, "optim": {"_target_": "torch.optim.Adam", "lr": 0.01},
                       "target_entropy": "auto"}
    config["policy"]["alpha"] = "__alpha__"
    level = initialized(config, Unbounded((3,)), Bounded(-1.0, 1.0, (2,)))
    alpha = level.algorithm.alpha
    assert isinstance(alpha, AutoAlpha) and alpha.value == pytest.approx(np.exp(-1.0))
    assert alpha._target_entropy == -2.0  # LayeredRL's "auto": minus the action dimension
    assert isinstance(level.algorithm.critic2, Critic)


def test_other_torch_optimisers_become_tianshou_factories():
    config = dqn_config()
    config["optims"]["critic_optim"] = {"_target_": "torch.optim.SGD", "lr": 0.05, "momentum": 0.5}
    level = initialized(config, Unbounded((4,)), Categorical(2))
    optimizer = level.algorithm.optim._optim
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.param_groups[0]["momentum"] == 0.5


@pytest.mark.parametrize("target, named", [
    ("tianshou.policy.SACPolicy", "tianshou.algorithm.SAC"),
    ("tianshou.policy.DQNPolicy", "tianshou.algorithm.DQN"),
    ("tianshou.utils.net.continuous.ActorProb", "ContinuousActorProbabilistic"),
])
def test_a_05_class_path_in_a_2x_config_names_its_replacement(target, named):
    from torchrl_layered.levels import default_sac_config

    config = default_sac_config()
    key = "actor" if "net" in target else "algorithm"
    config[key]["_target_"] = target
    with pytest.raises(ValueError, match=named.replace(".", r"\.")):
        TianshouLevel(config)


def test_what_2x_cannot_express_is_refused_with_the_reason():
    config = sac_config()
    config["policy"]["_target_"] = "tianshou.policy.PPOPolicy"
    with pytest.raises(ValueError, match="tianshou.algorithm.PPO, an on-policy algorithm"):
        TianshouLevel(config)
    config = sac_config()
    config["policy"]["reward_normalization"] = True
    with pytest.raises(ValueError, match="reward_normalization=True has no Tianshou 2.x counterpart"):
        TianshouLevel(config)
    config = sac_config()
    config["learning_rate_schedule"] = {"_target_": "x"}
    with pytest.raises(ValueError, match="learning_rate_schedule"):
        TianshouLevel(config)


def test_the_translation_leaves_the_users_config_alone():
    config = sac_config()
    original = copy.deepcopy(config)
    translated = from_v05_config(config)
    assert config == original
    assert "policy_dynamic_args" not in translated and "optims" not in translated
    assert translated["policy"]["_target_"] == "tianshou.algorithm.modelfree.sac.SACPolicy"
    assert translated["actor"]["_target_"] == "tianshou.utils.net.continuous.ContinuousActorProbabilistic"


@pytest.mark.parametrize("change, message", [
    (lambda c: c.update(policy_dynamic_args=["__actor__"]), "policy_dynamic_args must be a mapping"),
    (lambda c: c.update(optims="adam"), "optims must be a mapping"),
    (lambda c: c.update(n_critics="2"), "n_critics must be a positive int"),
    (lambda c: c.update(eps=float("nan")), "eps must be a number in"),
    (lambda c: c.update(eps="0.3"), "eps must be a number in"),
    (lambda c: c["optims"].update(critic_optim={"lr": 0.1}), "must be an optimiser entry"),
])
def test_a_malformed_05_config_is_refused_naming_the_entry(change, message):
    config = dqn_config()
    change(config)
    with pytest.raises(ValueError, match=message):
        TianshouLevel(config)


def test_concat_net_refuses_level_state_the_policy_never_sees():
    config = dqn_config()
    config["critic"]["level_state_dims"] = {"n_remaining_steps": 1}
    with pytest.raises(ValueError, match="level_state_dims must be empty"):
        initialized(config, Unbounded((4,)), Categorical(2))
