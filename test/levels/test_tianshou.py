"""`TianshouLevel`: configs and placeholders, SMDP targets, a two-level hierarchy, eval mode, learning."""
from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from tensordict import TensorDict
from torchrl.data import Bounded, Categorical, Unbounded
from tianshou.algorithm import DQN
from tianshou.utils.net.common import Net
from tianshou.utils.torch_utils import policy_within_training_step, torch_train_mode
from torchrl.envs import TransformedEnv

import torchrl_layered
from torchrl_layered import Hierarchy, RandomLevel
from torchrl_layered.collectors import make_collector
from torchrl_layered.envs import make_env
from torchrl_layered.levels import TianshouLevel, default_dqn_config, default_sac_config

CONFIGS = Path(torchrl_layered.__file__).parent / "configs" / "level"


def initialized(config, observation_spec=Unbounded((3,)), action_spec=Bounded(-2.0, 2.0, (1,)), input_spec=None,
                **kwargs) -> TianshouLevel:
    """A level built on its own: with ``input_spec``, as the child of a random parent."""
    level = TianshouLevel(config, input_spec=input_spec, **kwargs)
    parent = None
    if input_spec is not None:
        parent = RandomLevel()
        parent.initialize(observation_spec, input_spec)
    level.initialize(observation_spec, action_spec, parent=parent)
    return level


def fake_transitions(n: int, obs_dim: int, action_spec, input_spec=None, seed: int = 0) -> TensorDict:
    """Random semi-MDP transitions with durations 1..5 and some terminal ones."""
    g = torch.Generator().manual_seed(seed)
    terminated = torch.rand(n, 1, generator=g) < 0.3
    truncated = ~terminated & (torch.rand(n, 1, generator=g) < 0.2)
    data = {
        "observation": torch.randn(n, obs_dim, generator=g),
        "action": action_spec.rand((n,)),
        "next": {
            "observation": torch.randn(n, obs_dim, generator=g),
            "reward": torch.randn(n, 1, generator=g),
            "duration": torch.randint(1, 6, (n, 1), generator=g),
            "terminated": terminated,
            "truncated": truncated,
            "done": terminated | truncated,
        },
    }
    if input_spec is not None:
        data["level_input"] = input_spec.rand((n,))
    return TensorDict(data, batch_size=[n])


# --------------------------------------------------------------------------- configs
def test_placeholders_resolve_to_specs_and_built_objects():
    input_spec = Bounded(-1.0, 1.0, (2,))
    level = initialized(default_sac_config(hidden_sizes=[16]), Unbounded((3,)), Bounded(-2.0, 2.0, (1,)), input_spec)
    algorithm, policy = level.algorithm, level.policy
    # n_critics separate critics, wired into the algorithm
    critics = [level.components["__critic_0__"], level.components["__critic_1__"]]
    assert critics[0] is not critics[1]
    assert algorithm.critic is critics[0] and algorithm.critic2 is critics[1]
    assert policy is level.components["__policy__"] and policy.actor is level.components["__actor__"]
    # the action space comes from the Bounded spec; the networks see observation + level input
    assert policy.action_space == gym.spaces.Box(-2.0, 2.0, (1,), np.float32)
    assert policy.observation_space.shape == (5,)
    assert critics[0].preprocess.model.model[0].in_features == 5 + 1
    assert algorithm.alpha._target_entropy == -1.0

    dqn = initialized(default_dqn_config(hidden_sizes=[16]), Unbounded((4,)), Categorical(3), Categorical(4))
    assert dqn.policy.action_space == gym.spaces.Discrete(3)
    assert dqn.components["__model__"].model.model[0].in_features == 4 + 4  # one-hot level input
    assert dqn.components["__model__"].get_output_dim() == 3


def test_placeholders_are_filled_inside_lists_and_omegaconf_configs():
    config = OmegaConf.create(default_sac_config(hidden_sizes=[8]))
    config.actor.preprocess_net.hidden_sizes = ["__action_dim__", 8]  # a placeholder inside a list
    level = initialized(config, Unbounded((3,)), Bounded(-1.0, 1.0, (4,)))
    assert level.components["__actor__"].preprocess.model.model[0].out_features == 4


def test_unknown_placeholders_and_missing_targets_are_refused_with_the_key_path():
    config = default_sac_config()
    config["actor"]["preprocess_net"]["state_shape"] = "__obs_size__"
    with pytest.raises(ValueError, match=r"tianshou_config\.actor\.preprocess_net\.state_shape: unknown placeholder '__obs_size__'"):
        TianshouLevel(config)
    config = default_sac_config(n_critics=1)
    config["algorithm"]["critic2"] = "__critic_1__"
    with pytest.raises(ValueError, match=r"algorithm\.critic2: __critic_1__ does not exist.*set n_critics: 2"):
        TianshouLevel(config)
    config = default_sac_config()
    config["actor"]["action_shape"] = "__policy__"  # the policy is built after the actor
    with pytest.raises(ValueError, match="not built before this entry"):
        TianshouLevel(config)
    config = default_sac_config()
    del config["critic"]["_target_"]
    with pytest.raises(ValueError, match=r"tianshou_config\.critic has no '_target_'"):
        TianshouLevel(config)
    config = default_sac_config()
    del config["algorithm"]["critic_optim"]["_target_"]
    with pytest.raises(ValueError, match=r"tianshou_config\.algorithm\.critic_optim has no '_target_'.*AdamOptimizerFactory"):
        TianshouLevel(config)
    with pytest.raises(ValueError, match="no 'algorithm' entry"):
        TianshouLevel({"model": default_dqn_config()["model"]})
    config = default_sac_config()
    config["algorithm"]["n_step_return_horizon"] = 3
    with pytest.raises(ValueError, match="n_step_return_horizon = 3"):
        TianshouLevel(config)
    with pytest.raises(ValueError, match="__num_actions__ needs a discrete"):
        initialized(default_dqn_config(), Unbounded((3,)), Bounded(-1.0, 1.0, (1,)))
    epsilon = default_dqn_config()["exploration"]
    with pytest.raises(ValueError, match="SACPolicy has no epsilon-greedy exploration"):
        initialized({**default_sac_config(), "exploration": epsilon})
    with pytest.raises(ValueError, match="exploration needs exactly the keys"):
        TianshouLevel({**default_dqn_config(), "exploration": {"eps": 0.1}})


def test_on_policy_algorithms_are_refused_at_construction():
    config = {
        "algorithm": {
            "_target_": "tianshou.algorithm.PPO",
            "policy": {"_target_": "tianshou.algorithm.modelfree.reinforce.ProbabilisticActorPolicy"},
        }
    }
    with pytest.raises(ValueError, match=r"does not support on-policy algorithms \(PPO\).*off-policy"):
        TianshouLevel(config)


def test_yaml_configs_equal_the_python_defaults():
    assert OmegaConf.to_container(OmegaConf.load(CONFIGS / "sac.yaml")) == default_sac_config()
    assert OmegaConf.to_container(OmegaConf.load(CONFIGS / "dqn.yaml")) == default_dqn_config()
    level = TianshouLevel(OmegaConf.load(CONFIGS / "dqn.yaml"))
    assert level.tianshou_config == default_dqn_config()


# ------------------------------------------------------------------------ SMDP targets
def test_sac_target_discounts_with_gamma_to_the_duration():
    input_spec = Bounded(-1.0, 1.0, (2,))
    level = initialized(default_sac_config(hidden_sizes=[16], gamma=0.9), Unbounded((3,)), Bounded(-2.0, 2.0, (1,)), input_spec)
    data = fake_transitions(32, 3, level.action_spec, input_spec)
    data["raw_action"] = level.raw_action(data["action"])
    torch.manual_seed(1)
    target = level.targets(data)

    torch.manual_seed(1)  # the same sampled next actions
    algorithm = level.algorithm
    next_obs = torch.cat([data["next", "observation"], data["level_input"]], -1)
    with torch.no_grad():
        (mu, sigma), _ = level.policy.actor(next_obs)
        u = torch.distributions.Normal(mu, sigma).rsample()
        a = torch.tanh(u)
        log_prob = torch.distributions.Normal(mu, sigma).log_prob(u).sum(-1, keepdim=True)
        log_prob = log_prob - torch.log(1 - a.pow(2) + np.finfo(np.float32).eps).sum(-1, keepdim=True)
        q = torch.min(algorithm.critic_old(next_obs, a), algorithm.critic2_old(next_obs, a))
        v = q - algorithm.alpha.value * log_prob
    tau = data["next", "duration"].float()
    expected = data["next", "reward"] + 0.9**tau * (~data["next", "terminated"]).float() * v
    assert torch.allclose(target, expected, atol=1e-5)
    assert not torch.allclose(target, data["next", "reward"] + 0.9 * (~data["next", "terminated"]).float() * v)


def test_dqn_target_discounts_with_gamma_to_the_duration():
    level = initialized(default_dqn_config(hidden_sizes=[16], gamma=0.8), Unbounded((4,)), Categorical(3))
    data = fake_transitions(32, 4, level.action_spec)
    data["raw_action"] = level.raw_action(data["action"])
    target = level.targets(data)
    with torch.no_grad():  # double DQN: online argmax, target-network value
        next_obs = data["next", "observation"]
        best = level.policy.model(next_obs)[0].argmax(-1)
        q = level.algorithm.model_old(next_obs)[0].gather(-1, best[:, None])
    tau = data["next", "duration"].float()
    expected = data["next", "reward"] + 0.8**tau * (~data["next", "terminated"]).float() * q
    assert torch.allclose(target, expected, atol=1e-6)


def test_tianshou_per_option_discount_is_the_explicit_alternative():
    level = initialized(default_sac_config(hidden_sizes=[16], gamma=0.9), action_spec=Bounded(-2.0, 2.0, (1,)),
                        discount_per="option")
    data = fake_transitions(16, 3, level.action_spec)
    data["raw_action"] = level.raw_action(data["action"])
    torch.manual_seed(1)
    per_option = level.targets(data)
    level._smdp_return.discount_per = "env_step"
    torch.manual_seed(1)
    per_step = level.targets(data)
    # same bootstrap values v: r + 0.9 v versus r + 0.9 ** d v
    reward, alive = data["next", "reward"], (~data["next", "terminated"]).float()
    v = (per_option - reward) / 0.9
    d = data["next", "duration"].float()
    live = alive.bool().squeeze(-1)
    assert torch.allclose(per_step[live], (reward + 0.9**d * v)[live], atol=1e-4)


@pytest.mark.parametrize("make_config, action_spec", [
    (lambda: default_dqn_config(hidden_sizes=[16], target_update_freq=3), Categorical(3)),
    (lambda: default_sac_config(hidden_sizes=[16], alpha=0.2), Bounded(-2.0, 2.0, (1,))),
])
def test_a_round_of_updates_equals_tianshou_updates_one_by_one(make_config, action_spec):
    """`learn` enters the training step and train mode once per round: the parameters it reaches
    equal those of tianshou's own ``Algorithm.update`` called once per batch."""
    levels = []
    for _ in range(2):
        torch.manual_seed(0)
        levels.append(initialized(make_config(), Unbounded((4,)), action_spec))
    ours, theirs = levels
    data = fake_transitions(96, 4, action_spec)
    data["raw_action"] = ours.raw_action(data["action"])
    buffer = ours.to_tianshou_buffer(data)
    torch.manual_seed(1)
    with policy_within_training_step(ours.policy), torch_train_mode(ours.algorithm):
        for first in range(0, 96, 32):
            ours._update(buffer, np.arange(first, first + 32), options=True)
    torch.manual_seed(1)
    with policy_within_training_step(theirs.policy):
        for first in range(0, 96, 32):
            theirs.algorithm.update(buffer=theirs.to_tianshou_buffer(data[first:first + 32]), sample_size=0)
    mine, reference = ours.algorithm.state_dict(), theirs.algorithm.state_dict()
    tensors = [key for key, value in mine.items() if isinstance(value, torch.Tensor)]
    assert tensors
    for key in tensors:
        torch.testing.assert_close(mine[key], reference[key], msg=key)
    start = initialized(make_config(), Unbounded((4,)), action_spec).algorithm.state_dict()
    assert any(not torch.allclose(mine[key], start[key]) for key in tensors if key in start)


def _dqn_variant(**algorithm):
    config = default_dqn_config(hidden_sizes=[16], target_update_freq=3)
    config["algorithm"].update(algorithm)
    return config


DIRECT_CASES = {
    "dqn-double-huber": (lambda: default_dqn_config(hidden_sizes=[16], target_update_freq=3), Categorical(3), None),
    "dqn-nature-squared": (lambda: _dqn_variant(is_double=False, huber_loss_delta=None), Categorical(3), None),
    "dqn-no-target-with-input": (lambda: _dqn_variant(target_update_freq=0), Categorical(3), Categorical(2)),
    "sac-fixed-alpha": (lambda: default_sac_config(hidden_sizes=[16], alpha=0.2), Bounded(-2.0, 2.0, (1,)), None),
    "sac-auto-alpha-with-input": (lambda: default_sac_config(hidden_sizes=[16]), Bounded(-2.0, 2.0, (2,)),
                                  Bounded(-1.0, 1.0, (2,))),
}


@pytest.mark.parametrize("case", list(DIRECT_CASES))
@pytest.mark.parametrize("discount_per", ["env_step", "option"])
def test_direct_updates_equal_tianshou_updates(case, discount_per):
    """`tianshou_direct`'s DQN and SAC updates reach tianshou's parameters, optimiser states and
    losses bit for bit, over several rounds of semi-MDP transitions (options, terminal rows)."""
    make_config, action_spec, input_spec = DIRECT_CASES[case]
    runs = {}
    for direct in (True, False):
        torch.manual_seed(0)
        level = initialized(make_config(), Unbounded((4,)), action_spec, input_spec, direct_updates=direct,
                            batch_size=16, update_interval=1, num_updates=3, discount_per=discount_per)
        assert (level._direct_update is not None) == direct
        data = fake_transitions(64, 4, action_spec, input_spec)
        torch.manual_seed(1)
        metrics = []
        for first in range(0, 64, 16):  # four rounds of 48 updates, the buffer growing between them
            level.observe(data[first:first + 16])
            metrics.append(level.learn())
        runs[direct] = level, metrics
    (ours, our_metrics), (theirs, their_metrics) = runs[True], runs[False]
    assert our_metrics == [pytest.approx(m, rel=1e-12) for m in their_metrics] and our_metrics[0]
    mine, reference = ours.state_dict(), theirs.state_dict()
    tensors = [key for key, value in mine.items() if isinstance(value, torch.Tensor)]
    assert any("algorithm" in key for key in tensors)
    for key in tensors:
        assert torch.equal(mine[key], reference[key]), key
    for a, b in zip(ours.algorithm._optimizers, theirs.algorithm._optimizers, strict=True):
        for sa, sb in zip(a._optim.state.values(), b._optim.state.values(), strict=True):
            assert all(torch.equal(sa[k], sb[k]) for k in sa)
    start = initialized(make_config(), Unbounded((4,)), action_spec, input_spec).state_dict()
    assert any(not torch.equal(mine[key], start[key]) for key in tensors if key in start)


@pytest.mark.parametrize("make_config, action_spec, input_spec", [
    (lambda: default_dqn_config(hidden_sizes=[16], eps_start=0.5, eps_end=0.5), Categorical(3), Categorical(2)),
    (lambda: default_sac_config(hidden_sizes=[16]), Bounded(-2.0, 2.0, (2,)), Bounded(-1.0, 1.0, (2,))),
], ids=["dqn-epsilon", "sac"])
def test_direct_acting_equals_tianshou_acting(make_config, action_spec, input_spec):
    """Exploring (sampled actions, epsilon-greedy) and deterministic, the direct
    path picks tianshou's actions bit for bit from the same random state."""
    levels = []
    for direct in (True, False):
        torch.manual_seed(0)
        level = initialized(make_config(), Unbounded((4,)), action_spec, input_spec, direct_updates=direct)
        assert (level._direct_act is not None) == direct
        level.env_steps = 10_000  # past the warm-up
        levels.append(level)
    td = TensorDict({"observation": torch.randn(64, 4)}, [64])
    if input_spec is not None:
        td["level_input"] = input_spec.rand((64,))
    actions = []
    for level in levels:
        torch.manual_seed(1)
        np.random.seed(1)
        level.train()
        explored = [level.get_action(td) for _ in range(3)]
        level.eval()
        actions.append((explored, level.get_action(td)))
    (ours, our_mode), (theirs, their_mode) = actions
    for a, b in zip(ours, theirs, strict=True):
        assert torch.equal(a, b)
    assert torch.equal(our_mode, their_mode)
    assert not torch.equal(ours[0], ours[1])  # exploring draws afresh
    assert not torch.equal(ours[0], our_mode)


class SubclassedDQN(DQN):
    """A user's DQN variant: its update may differ from DQN's."""


class UsersNet(Net):
    """A user's network class: its forward may read tianshou's ``info``."""


def test_direct_updates_leave_other_algorithms_and_networks_to_tianshou():
    """A subclass of the algorithm or a network of a class of the user's keeps tianshou's own update path."""
    assert initialized(default_dqn_config(hidden_sizes=[16]), Unbounded((4,)), Categorical(3))._direct_update
    assert initialized(default_sac_config(hidden_sizes=[16]))._direct_update
    config = default_dqn_config(hidden_sizes=[16])
    config["algorithm"]["_target_"] = f"{__name__}.SubclassedDQN"
    assert initialized(config, Unbounded((4,)), Categorical(3))._direct_update is None
    config = default_sac_config(hidden_sizes=[16])
    config["actor"]["preprocess_net"]["_target_"] = f"{__name__}.UsersNet"
    assert initialized(config)._direct_update is None and initialized(config)._direct_act is None


@pytest.mark.parametrize("value", ["false", 0, None])
def test_direct_updates_must_be_a_bool(value):
    with pytest.raises(TypeError, match="direct_updates"):
        TianshouLevel(default_dqn_config(hidden_sizes=[16]), direct_updates=value)


def test_direct_acting_needs_networks_that_compute_alike_in_both_modes():
    """Tianshou acts in eval mode: a network with dropout or batch norm keeps that switch."""
    from torchrl_layered.levels.tianshou_direct import _mode_free

    assert _mode_free(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU(), torch.nn.LayerNorm(2)))
    for layer in (torch.nn.Dropout(0.1), torch.nn.BatchNorm1d(2), torch.nn.LSTM(2, 2)):
        assert not _mode_free(torch.nn.Sequential(torch.nn.Linear(2, 2), layer))


def test_the_default_configs_build_fused_adam():
    for config, action_spec in [(default_dqn_config(hidden_sizes=[16]), Categorical(3)),
                                (default_sac_config(hidden_sizes=[16]), Bounded(-2.0, 2.0, (1,)))]:
        level = initialized(config, Unbounded((4,)), action_spec)
        optimizers = [getattr(o, "_optim", o) for o in level.algorithm._optimizers] + level._module_optimizers()
        assert optimizers
        for optimizer in optimizers:
            assert optimizer.defaults.get("fused") or optimizer.defaults.get("foreach"), type(optimizer)


def test_a_users_config_naming_the_fused_factory_by_its_public_path_builds_it():
    config = default_dqn_config(hidden_sizes=[16])
    config["algorithm"]["optim"] = {"_target_": "torchrl_layered.levels.FusedAdamOptimizerFactory", "lr": 3e-4}
    level = initialized(config, Unbounded((4,)), Categorical(3))
    (optimizer,) = [o._optim for o in level.algorithm._optimizers]
    assert optimizer.defaults["fused"] or optimizer.defaults["foreach"]
    assert optimizer.defaults["lr"] == 3e-4


def test_a_level_skips_tianshous_return_kernel_warm_up_and_leaves_it_to_other_policies(monkeypatch):
    from tianshou.algorithm.algorithm_base import Policy
    from tianshou.algorithm.modelfree.dqn import DiscreteQLearningPolicy
    from tianshou.utils.net.common import Net

    calls = []
    monkeypatch.setattr(Policy, "_compile", staticmethod(lambda: calls.append(1)))
    counting = Policy.__dict__["_compile"]
    for config, action_spec in [(default_dqn_config(hidden_sizes=[8]), Categorical(3)),
                                (default_sac_config(hidden_sizes=[8]), Bounded(-2.0, 2.0, (1,)))]:
        initialized(config, Unbounded((4,)), action_spec)
    assert calls == []  # neither level warmed up tianshou's GAE / n-step kernels
    assert Policy.__dict__["_compile"] is counting  # and tianshou's own warm-up is back
    DiscreteQLearningPolicy(model=Net(state_shape=4, action_shape=3), action_space=gym.spaces.Discrete(3))
    assert calls == [1]  # a policy built outside a level warms up as tianshou does
    config = default_dqn_config(hidden_sizes=[8])
    config["algorithm"]["gamma"] = 5.0  # refused by the algorithm, built after the policy
    with pytest.raises(ValueError, match="could not build 'tianshou.algorithm.DQN'"):
        initialized(config, Unbounded((4,)), Categorical(3))
    assert Policy.__dict__["_compile"] is counting  # restored after a failed build too


def test_the_warm_up_skip_nests_in_one_thread(monkeypatch):
    from tianshou.algorithm.algorithm_base import Policy
    from torchrl_layered.levels.tianshou_config import no_return_warm_up

    calls = []
    monkeypatch.setattr(Policy, "_compile", staticmethod(lambda: calls.append(1)))
    counting = Policy.__dict__["_compile"]
    with no_return_warm_up():
        with no_return_warm_up():  # a component that builds a level of its own: no deadlock
            Policy._compile()
        Policy._compile()  # still skipped in the outer context
    assert calls == [] and Policy.__dict__["_compile"] is counting


def test_the_warm_up_skip_in_two_threads_leaves_tianshous_warm_up_in_place(monkeypatch):
    import threading

    from tianshou.algorithm.algorithm_base import Policy
    from torchrl_layered.levels.tianshou_config import no_return_warm_up

    monkeypatch.setattr(Policy, "_compile", staticmethod(lambda: None))
    tianshous = Policy.__dict__["_compile"]
    inside, release = threading.Event(), threading.Event()

    def hold():
        with no_return_warm_up():
            inside.set()
            release.wait(5)

    def build():
        with no_return_warm_up():
            pass

    holder, builder = threading.Thread(target=hold), threading.Thread(target=build)
    holder.start()
    assert inside.wait(5)
    builder.start()  # a second build while the first is inside: it waits, then swaps from tianshou's own
    release.set()
    holder.join(5)
    builder.join(5)
    assert Policy.__dict__["_compile"] is tianshous  # not the skip, which the second build could have saved


# ------------------------------------------------------------------------- hierarchy
def test_sac_on_top_of_a_random_level_learns_from_options_of_five_steps():
    torch.manual_seed(0)
    np.random.seed(0)
    env = make_env("Pendulum-v1", 3)
    top = TianshouLevel(default_sac_config(hidden_sizes=[32]), batch_size=16)
    low = RandomLevel(input_spec=Bounded(-1.0, 1.0, (2,)), control_interval=5)
    hierarchy = Hierarchy([top, low], env=env)
    collector = make_collector(env, hierarchy, frames_per_batch=60, total_frames=240)
    durations, metrics = [], {}
    for batch in collector:
        transitions = hierarchy.extend(batch)
        durations.append(transitions[0]["next", "duration"])
        metrics.update(hierarchy.learn())
    collector.shutdown()
    assert torch.cat(durations).unique().tolist() == [5]
    assert len(top.replay_buffer) == top.n_transitions == 240 // 5
    assert top.num_gradient_updates > 0 and np.isfinite(metrics["level0/critic1_loss"])
    stored = top.replay_buffer[:]
    assert stored["raw_action"].abs().max() <= 1.0  # tianshou's own [-1, 1] action, not the spec's
    mapped = torch.as_tensor(top.policy.map_action(stored["raw_action"].numpy()))
    assert torch.allclose(mapped, stored["action"], atol=1e-5)


def test_eval_mode_acts_deterministically_and_stores_nothing():
    torch.manual_seed(0)
    env = make_env("Pendulum-v1", 2)
    level = TianshouLevel(default_sac_config(hidden_sizes=[16]), batch_size=4)
    hierarchy = Hierarchy([level], env=env)
    tenv = TransformedEnv(env, hierarchy.make_transform())
    td = tenv.reset()
    explore = [hierarchy(td.clone())["action"] for _ in range(2)]
    assert not torch.equal(*explore)
    hierarchy.eval()
    a1, a2 = hierarchy(td.clone())["action"], hierarchy(td.clone())["action"]
    assert torch.equal(a1, a2)
    with torch.no_grad():  # the mode of the squashed Gaussian, scaled to [-2, 2]
        (mu, _), _ = level.policy.actor(td["observation"].float())
    assert torch.allclose(a1, 2.0 * torch.tanh(mu), atol=1e-5)
    hierarchy.extend(tenv.rollout(5, hierarchy))
    assert level.n_transitions == 0 and len(level.replay_buffer) == 0 and hierarchy.learn() == {}


def test_dqn_explores_with_the_epsilon_schedule_and_not_in_eval():
    level = initialized(default_dqn_config(eps_start=1.0, eps_end=0.1, eps_decay_steps=100), Unbounded((4,)), Categorical(2))
    td = TensorDict({"observation": torch.zeros(2000, 4), "steps": torch.ones(2000, 1, dtype=torch.long)}, [2000])
    np.random.seed(0)
    greedy = level.policy.model(td["observation"])[0].argmax(-1)
    assert level.epsilon == 1.0
    assert 0.4 < (level.get_action(td) != greedy).float().mean() < 0.6  # random half the time
    level.env_steps = 50
    assert level.epsilon == pytest.approx(0.55)
    level.env_steps = 1000
    assert level.epsilon == pytest.approx(0.1)
    assert (level.get_action(td) != greedy).float().mean() < 0.1
    level.eval()
    assert torch.equal(level.get_action(td), greedy)


def test_state_dict_round_trips_networks_optimizers_and_counters():
    torch.manual_seed(0)
    level = initialized(default_sac_config(hidden_sizes=[16]), batch_size=8)
    level.observe(fake_transitions(16, 3, level.action_spec))
    level.learn()
    level.learn()
    assert level.num_gradient_updates == 16
    state = level.state_dict()
    other = initialized(default_sac_config(hidden_sizes=[16]), batch_size=8)
    other.load_state_dict(state)
    assert other.env_steps == level.env_steps and other.num_gradient_updates == 16
    for p, q in zip(level.algorithm.parameters(), other.algorithm.parameters()):
        assert torch.equal(p, q)
    assert other.algorithm.critic_optim.state_dict()["state"][0]["step"] == 16
    assert other._module_optimizers()[0].state_dict()["state"][0]["step"] == 16  # AutoAlpha's Adam


def td3_config() -> dict:
    """TD3 written out by hand: any off-policy tianshou algorithm fits the same layout."""
    net = {"_target_": "tianshou.utils.net.common.Net", "state_shape": "__obs_dim__", "hidden_sizes": [16]}
    adam = {"_target_": "tianshou.algorithm.optim.AdamOptimizerFactory", "lr": 1e-3}
    return {
        "actor": {"_target_": "tianshou.utils.net.continuous.ContinuousActorDeterministic",
                  "preprocess_net": net, "action_shape": "__action_shape__"},
        "critic": {"_target_": "tianshou.utils.net.continuous.ContinuousCritic",
                   "preprocess_net": {**net, "action_shape": "__action_shape__", "concat": True}},
        "n_critics": 2,
        "algorithm": {
            "_target_": "tianshou.algorithm.TD3",
            "policy": {"_target_": "tianshou.algorithm.modelfree.ddpg.ContinuousDeterministicPolicy",
                       "actor": "__actor__", "action_space": "__action_space__", "exploration_noise": "default"},
            "policy_optim": adam, "critic": "__critic_0__", "critic_optim": adam,
            "critic2": "__critic_1__", "critic2_optim": adam, "gamma": 0.9,
        },
    }


def test_td3_with_exploration_noise_acts_in_bounds_and_learns_from_options():
    torch.manual_seed(0)
    np.random.seed(0)
    env = make_env("Pendulum-v1", 2)
    top = TianshouLevel(td3_config(), batch_size=8)
    hierarchy = Hierarchy([top, RandomLevel(input_spec=Bounded(-1.0, 1.0, (2,)), control_interval=3)], env=env)
    collector = make_collector(env, hierarchy, frames_per_batch=48, total_frames=96)
    for batch in collector:
        hierarchy.extend(batch)
        metrics = hierarchy.learn()
    collector.shutdown()
    assert top.num_gradient_updates > 0 and np.isfinite(metrics["level0/critic1_loss"])
    assert batch["levels", "0", "action"].abs().max() <= 1.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_level_on_cuda_acts_and_learns_there():
    level = initialized(default_sac_config(hidden_sizes=[16]), Unbounded((3,), device="cuda"),
                        Bounded(-2.0, 2.0, (1,), device="cuda"), batch_size=8)
    assert next(level.algorithm.parameters()).device.type == "cuda"
    td = TensorDict({"observation": torch.zeros(4, 3, device="cuda"),
                     "steps": torch.ones(4, 1, dtype=torch.long, device="cuda")}, [4], device="cuda")
    assert level.get_action(td).device.type == "cuda"
    level.observe(fake_transitions(16, 3, level.action_spec).to("cuda"))
    assert np.isfinite(level.learn()["critic1_loss"])


# --------------------------------------------------------------------------- learning
def train(level: TianshouLevel, name: str, steps: int = 15_000, num_envs: int = 3, seed: int = 0) -> Hierarchy:
    torch.manual_seed(seed)
    np.random.seed(seed)
    env = make_env(name, num_envs)
    env.set_seed(seed)
    hierarchy = Hierarchy([level], env=env)
    collector = make_collector(env, hierarchy, frames_per_batch=100 * num_envs, total_frames=steps)
    for batch in collector:
        hierarchy.extend(batch)
        hierarchy.learn()
    collector.shutdown()
    return hierarchy


def evaluate(hierarchy: Hierarchy, name: str, max_steps: int, num_envs: int = 5, seed: int = 1000) -> float:
    """Mean return of each eval instance's first episode, in eval mode (deterministic)."""
    env = make_env(name, num_envs)
    env.set_seed(seed)
    hierarchy.eval()
    with torch.no_grad():
        rollout = TransformedEnv(env, hierarchy.make_transform()).rollout(max_steps, hierarchy, break_when_any_done=False)
    reward, done = rollout["next", "reward"][..., 0], rollout["next", "done"][..., 0].long()
    first_episode = (done.cumsum(-1) - done) == 0
    return float((reward * first_episode).sum(-1).mean())


@pytest.mark.learning(minutes=2)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dqn_learns_cartpole_in_15k_steps(seed):
    """The reference library's acceptance run for its model-free level, on three seeds: 3 instances,
    15,000 env steps, two updates of 128 per transition, then a mean greedy return above 200."""
    hierarchy = train(TianshouLevel(default_dqn_config(), batch_size=128, num_updates=2), "CartPole-v1", seed=seed)
    score = evaluate(hierarchy, "CartPole-v1", max_steps=500, seed=1000 + seed)
    print(f"DQN CartPole seed {seed}: mean evaluation return {score:.1f}")
    assert score > 200, f"seed {seed}: mean evaluation return {score:.0f}"


@pytest.mark.learning(minutes=2)
def test_sac_learns_inverted_pendulum_in_15k_steps():
    # two updates of 128 per vector step (3 transitions)
    level = TianshouLevel(default_sac_config(), batch_size=128, update_interval=3, num_updates=2)
    hierarchy = train(level, "InvertedPendulum-v5")
    score = evaluate(hierarchy, "InvertedPendulum-v5", max_steps=1000)
    print(f"SAC InvertedPendulum: mean evaluation return {score:.1f}")
    assert score > 600, f"mean evaluation return {score:.0f}"


def test_a_tianshou_level_stops_learning_at_learning_steps_and_goes_on_acting():
    torch.manual_seed(0)
    env = make_env("CartPole-v1", 2)
    level = TianshouLevel(default_dqn_config(hidden_sizes=[16]), batch_size=8, learning_steps=40)
    hierarchy = Hierarchy([level], env=env)
    collector = make_collector(env, hierarchy, frames_per_batch=20, total_frames=80)
    updates = []
    for batch in collector:
        hierarchy.extend(batch)
        hierarchy.learn()
        updates.append(level.num_gradient_updates)
    collector.shutdown()
    # updates while fewer than 40 env steps are stored, none once they are; storing goes on
    assert updates[0] > 0 and updates[1:] == [updates[1]] * 3 and level.learning_done
    assert len(level.replay_buffer) == 80


def test_updates_with_the_lightened_forwards_equal_tianshous_own(monkeypatch):
    """`lighten_forwards` changes what the networks cost, not what an update computes."""
    import tianshou.utils.net.common as common
    import tianshou.utils.net.continuous as continuous
    from tianshou.utils.lagged_network import EvalModeModuleWrapper
    from tianshou.utils.torch_utils import torch_device

    action_spec = Bounded(-2.0, 2.0, (1,))
    levels = []
    for _ in range(2):
        torch.manual_seed(0)
        levels.append(initialized(default_sac_config(hidden_sizes=[16]), Unbounded((4,)), action_spec))
    ours, theirs = levels
    data = fake_transitions(64, 4, action_spec)
    data["raw_action"] = ours.raw_action(data["action"])
    buffer = ours.to_tianshou_buffer(data)

    def updates(level):
        torch.manual_seed(1)
        with policy_within_training_step(level.policy), torch_train_mode(level.algorithm):
            for first in range(0, 64, 16):
                level._update(buffer, np.arange(first, first + 16), options=False)

    updates(ours)
    for module in (common, continuous):
        monkeypatch.setattr(module, "torch_device", torch_device)
    for sub in theirs.algorithm.modules():
        if isinstance(sub, EvalModeModuleWrapper):
            sub.__class__ = EvalModeModuleWrapper
    updates(theirs)
    mine, reference = ours.algorithm.state_dict(), theirs.algorithm.state_dict()
    tensors = [key for key, value in mine.items() if isinstance(value, torch.Tensor)]
    assert tensors
    for key in tensors:
        torch.testing.assert_close(mine[key], reference[key], rtol=0, atol=0, msg=key)


def test_a_pickled_level_updates_and_acts_with_its_own_copy_of_the_algorithm():
    """A collector worker's copy: the direct paths follow the copy's networks, not the original's."""
    import pickle

    level = initialized(default_sac_config(hidden_sizes=[16]))
    copied = pickle.loads(pickle.dumps(level))
    assert copied._direct_update.args[0] is copied.algorithm
    assert copied._direct_act.args[0] is copied.policy
