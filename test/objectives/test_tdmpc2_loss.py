"""`TDMPC2Loss`: key contract, each term learning on a fixed batch, the TD target, a plain TorchRL pipeline."""
from __future__ import annotations

import math

import pytest
import torch
from tensordict import TensorDict
from torchrl.collectors import Collector
from torchrl.data import LazyTensorStorage, SliceSampler, TensorDictReplayBuffer
from torchrl.envs import GymEnv
from torchrl.objectives import SoftUpdate

from torchrl_layered.modules.tdmpc2 import TDMPC2WorldModel
from torchrl_layered.objectives import TDMPC2Loss
from torchrl_layered.objectives.tdmpc2 import make_tdmpc2_optimizer, make_tdmpc2_policy_optimizer, tdmpc2_update
from torchrl_layered.tdmpc2 import get_default_tdmpc2_config, resolve_tdmpc2_config

TERMS = ["loss_consistency", "loss_reward", "loss_value", "loss_termination", "loss_policy"]


def small_config(**kw):
    cfg = get_default_tdmpc2_config()
    cfg.update(model_size=1, enc_dim=32, mlp_dim=32, latent_dim=16, num_q=3)
    cfg.update(kw)
    return resolve_tdmpc2_config(cfg)


def fixed_batch(b=16, t=3, obs_dim=4, act_dim=2):
    g = torch.Generator().manual_seed(0)
    obs = torch.randn(b, t, obs_dim, generator=g)
    terminated = torch.zeros(b, t, 1, dtype=torch.bool)
    terminated[:4, -1] = True
    return TensorDict({
        "observation": obs,
        "action": torch.rand(b, t, act_dim, generator=g) * 2 - 1,
        "next": {"observation": obs + 0.1, "reward": torch.randn(b, t, 1, generator=g), "terminated": terminated},
    }, batch_size=[b, t])


def test_loss_returns_the_named_terms_as_scalars():
    cfg = small_config()
    loss = TDMPC2Loss(TDMPC2WorldModel(4, 2, cfg), cfg)
    out = loss(fixed_batch())
    assert set(TERMS) <= set(out.keys())
    assert all(out[k].shape == () and torch.isfinite(out[k]) for k in TERMS)
    assert out["loss_policy"].requires_grad and out["loss_value"].requires_grad


def test_every_term_decreases_on_a_fixed_batch():
    torch.manual_seed(0)
    cfg = small_config()
    world_model = TDMPC2WorldModel(4, 2, cfg)
    loss = TDMPC2Loss(world_model, cfg)
    optim = make_tdmpc2_optimizer(loss)
    batch = fixed_batch()
    world_model.eval()  # no dropout: the same batch gives the same loss
    first = loss(batch)
    for _ in range(150):
        out = loss(batch)
        total = sum(out[k] for k in TERMS[:-1])
        optim.zero_grad()
        total.backward()
        optim.step()
    last = loss(batch)
    for k in TERMS[:-1]:
        assert last[k] < first[k], f"{k}: {float(first[k]):.4f} -> {float(last[k]):.4f}"
    # the policy term, with the world model held fixed, falls as the policy learns
    policy_optim = torch.optim.Adam(world_model.policy.parameters(), lr=3e-3)
    start = float(loss(batch)["loss_policy"].detach())
    for _ in range(100):
        out = loss(batch)
        policy_optim.zero_grad()
        out["loss_policy"].backward()
        policy_optim.step()
    assert float(loss(batch)["loss_policy"].detach()) < start


def test_value_target_matches_hand_computation_with_termination():
    cfg = small_config(gamma=0.9)
    world_model = TDMPC2WorldModel(4, 2, cfg)
    loss = TDMPC2Loss(world_model, cfg)
    # every target Q predicts 5.0: a large logit on the two bins around symlog(5)
    target = loss.target_qvalue_network_params
    encoded = world_model.two_hot.encode(torch.tensor([[5.0]]))[0]
    with torch.no_grad():
        target["out", "weight"].zero_()
        target["out", "bias"].copy_(torch.log(encoded + 1e-9).expand_as(target["out", "bias"]))
    next_z = torch.softmax(torch.randn(6, 16), -1)
    reward = torch.tensor([[1.0], [-2.0], [0.5], [0.0], [3.0], [-1.0]])
    terminated = torch.tensor([[0.0], [1.0], [0.0], [1.0], [0.0], [0.0]])
    got = loss.value_target(next_z, reward, terminated)
    want = reward + 0.9 * (1 - terminated) * 5.0
    assert torch.allclose(got, want, atol=1e-3)


def test_config_is_plain_and_editable():
    cfg = get_default_tdmpc2_config()
    cfg["discount_factor"] = [0.95]
    resolved = resolve_tdmpc2_config(cfg)
    assert resolved["gamma"] == 0.95 and resolved["latent_dim"] == 512 and resolved["num_q"] == 5
    assert resolve_tdmpc2_config(model_size=1)["latent_dim"] == 128
    # the official TD-MPC2 / LayeredRL names are accepted and renamed; one name for each entry after
    resolved = resolve_tdmpc2_config({"discount_factor": 0.9, "iterations": 2})
    assert resolved["gamma"] == 0.9 and resolved["num_iterations"] == 2
    assert "discount_factor" not in resolved and "iterations" not in resolved
    for bad, message in [({"discount_factor": [0.9, 0.8]}, "one value"), ({"model_size": 7}, "model_size"),
                         ({"gamma": 0.9, "discount_factor": [0.8]}, "keep gamma"), ({"temperature": 0.0}, "temperature"),
                         ({"temperature": float("inf")}, "temperature"),
                         ({"horizon": 0}, "horizon"), ({"nonsense": 1}, "unknown"),
                         ({"num_pi_trajs": 449}, "num_pi_trajs"), ({"num_pi_trajs": -1}, "num_pi_trajs"),
                         ({"num_elites": 513}, "num_elites must lie in"), ({"num_elites": 0}, "num_elites must lie in")]:
        try:
            resolve_tdmpc2_config(bad)
        except ValueError as err:
            assert message in str(err)
        else:
            raise AssertionError(f"{bad} was accepted")
    assert resolve_tdmpc2_config({"num_pi_trajs": 448})["num_pi_trajs"] == 448  # 64 sampled: the elites
    with pytest.raises(TypeError, match="num_samples must be an int"):
        resolve_tdmpc2_config({"num_samples": 512.0})


def test_loss_in_a_plain_torchrl_pipeline_with_slice_sampler():
    torch.manual_seed(0)
    env = GymEnv("Pendulum-v1")
    cfg = small_config(horizon=3, batch_size=8)
    world_model = TDMPC2WorldModel(3, 1, cfg)
    loss = TDMPC2Loss(world_model, cfg, action_spec=env.action_spec)
    updater = SoftUpdate(loss, tau=cfg["tau"])
    optim, policy_optim = make_tdmpc2_optimizer(loss), make_tdmpc2_policy_optimizer(loss)
    policy_before = [p.detach().clone() for p in world_model.policy.parameters()]
    buffer = TensorDictReplayBuffer(
        storage=LazyTensorStorage(10_000),
        sampler=SliceSampler(slice_len=cfg["horizon"], traj_key=("collector", "traj_ids"), strict_length=True),
        batch_size=cfg["batch_size"] * cfg["horizon"],
    )
    collector = Collector(env, None, frames_per_batch=100, total_frames=300)
    target_before = loss.target_qvalue_network_params.clone()
    consistency = []
    for batch in collector:
        buffer.extend(batch)
        for _ in range(10):
            sample = buffer.sample().reshape(cfg["batch_size"], cfg["horizon"])
            out = loss(sample)
            assert tdmpc2_update(out, optim, policy_optim, cfg["grad_clip_norm"]) is not None
            updater.step()
            consistency.append(float(out["loss_consistency"].detach()))
    collector.shutdown()
    assert all(torch.isfinite(torch.tensor(consistency)))
    assert sum(consistency[-5:]) < sum(consistency[:5])
    moved = (loss.target_qvalue_network_params - target_before).abs().sum()
    assert float(sum(moved.values(True, True)).detach()) > 0
    assert any(not torch.equal(a, b) for a, b in zip(policy_before, world_model.policy.parameters()))


# ------------------------------------------------------------ the official formulas, by hand
def constant_policy(world_model, mean, raw_log_std):
    """The policy head outputs ``mean`` and ``raw_log_std`` whatever the latent (zero weights)."""
    last = world_model.policy[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor([*mean, *raw_log_std]))


def hand_log_std(raw, cfg):
    return cfg["log_std_min"] + 0.5 * (cfg["log_std_max"] - cfg["log_std_min"]) * (math.tanh(raw) + 1)


def hand_log_pi(eps, mean, raw_log_std, cfg):
    """Official TD-MPC2 (`gaussian_logprob(eps, log_std) * action_dim`, then `squash`), scalar by scalar."""
    a = len(mean)
    log_std = [hand_log_std(r, cfg) for r in raw_log_std]
    gaussian = sum(-0.5 * e * e - s for e, s in zip(eps, log_std)) - 0.5 * math.log(2 * math.pi)
    actions = [math.tanh(m + e * math.exp(s)) for m, e, s in zip(mean, eps, log_std)]
    return gaussian * a - sum(math.log(max(1 - x * x, 0.0) + 1e-6) for x in actions), actions


def test_policy_log_pi_is_the_official_action_size_scaled_term():
    cfg = small_config()
    world_model = TDMPC2WorldModel(4, 2, cfg)
    mean, raw = [0.5, -1.0], [0.0, 1.0]
    constant_policy(world_model, mean, raw)
    z = torch.softmax(torch.randn(1, 16), -1)
    action, log_pi = world_model.pi(z, deterministic=True)
    want, want_action = hand_log_pi([0.0, 0.0], mean, raw, cfg)
    assert torch.allclose(action, torch.tensor([want_action]), atol=1e-6)
    assert abs(float(log_pi) - want) < 1e-4
    # with noise: the Gaussian part (not the tanh correction) is twice the plain log-density
    torch.manual_seed(3)
    eps = torch.randn(1, 2)[0].tolist()
    torch.manual_seed(3)
    action, log_pi = world_model.pi(z)
    want, want_action = hand_log_pi(eps, mean, raw, cfg)
    assert torch.allclose(action, torch.tensor([want_action]), atol=1e-5)
    assert abs(float(log_pi) - want) < 1e-3


def test_value_scale_is_the_official_running_percentile_range_clamped_before_the_lerp():
    cfg = small_config(tau=0.5)
    loss = TDMPC2Loss(TDMPC2WorldModel(4, 2, cfg), cfg)
    assert float(loss.value_scale) == 1.0
    # [0, 1, 2, 10]: 5th percentile at position 0.15 -> 0.15, 95th at 2.85 -> 2 + 0.85 * 8 = 8.8
    loss.update_value_scale(torch.tensor([[10.0], [0.0], [2.0], [1.0]]))
    assert abs(float(loss.value_scale) - (1.0 + 0.5 * (8.65 - 1.0))) < 1e-5
    # a range below 1 counts as 1: the scale goes back towards 1, never below
    loss.value_scale.fill_(3.0)
    loss.update_value_scale(torch.tensor([0.0, 0.1, 0.2]))
    assert abs(float(loss.value_scale) - 2.0) < 1e-6
    for _ in range(50):
        loss.update_value_scale(torch.zeros(8))
    assert float(loss.value_scale) >= 1.0


def test_policy_loss_matches_the_official_formula_over_all_horizon_plus_one_latents():
    cfg = small_config(entropy_coef=0.1, tau=0.25, rho=0.5, horizon=3)
    world_model = TDMPC2WorldModel(4, 2, cfg)
    loss = TDMPC2Loss(world_model, cfg)
    mean, raw = [0.3, -0.2], [-0.5, 0.2]
    constant_policy(world_model, mean, raw)
    # every Q predicts the same value q: logits on the bins around symlog(5)
    logits = torch.log(world_model.two_hot.encode(torch.tensor([[5.0]]))[0] + 1e-9)
    with torch.no_grad():
        loss.qvalue_network_params["out", "weight"].zero_()
        loss.qvalue_network_params["out", "bias"].copy_(logits.expand_as(loss.qvalue_network_params["out", "bias"]))
    q = float(world_model.two_hot.decode(logits[None]))
    calls = []
    pi = world_model.pi
    world_model.pi = lambda *args, **kw: calls.append(pi(*args, **kw)) or calls[-1]
    loss.value_scale.fill_(3.0)
    out = loss(fixed_batch(b=5, t=3))
    actions = calls[-1][0]
    assert actions.shape == (4, 5, 2)  # the policy is trained on z_0 .. z_3
    # the scale moves first (Q is constant: a range of 0, clamped to 1), then divides
    scale = 3.0 + 0.25 * (1.0 - 3.0)
    assert abs(float(out["value_scale"]) - scale) < 1e-6
    want = 0.0
    for t in range(4):
        terms = []
        for b in range(5):
            log_std = [hand_log_std(r, cfg) for r in raw]
            eps = [(math.atanh(float(actions[t, b, i])) - mean[i]) / math.exp(log_std[i]) for i in range(2)]
            log_pi, _ = hand_log_pi(eps, mean, raw, cfg)
            terms.append(0.1 * log_pi - q / scale)
        want += 0.5 ** t * sum(terms) / 5
    want /= 4
    assert abs(float(out["loss_policy"]) - want) < 1e-3, (float(out["loss_policy"]), want)


def test_target_q_has_no_dropout_in_train_mode():
    torch.manual_seed(0)
    cfg = small_config(dropout=0.5, num_q=2)
    world_model = TDMPC2WorldModel(4, 2, cfg)
    loss = TDMPC2Loss(world_model, cfg)
    with torch.no_grad():
        for params in (loss.qvalue_network_params, loss.target_qvalue_network_params):
            params["out", "weight"].normal_()
    loss.train()
    z, a = torch.softmax(torch.randn(32, 16), -1), torch.rand(32, 2) * 2 - 1
    online = [loss._q(loss.qvalue_network_params, z, a, None) for _ in range(2)]
    assert not torch.equal(*online)  # the online Qs do drop out in train mode
    target = [loss._target_q(z, a, None) for _ in range(2)]
    assert torch.equal(*target)
    assert world_model.qs.training  # and the ensemble is back in its own mode
    # so with two members (both always picked) and a near-deterministic policy the TD target is fixed
    cfg = small_config(dropout=0.5, num_q=2, log_std_min=-30.0, log_std_max=-30.0)
    loss = TDMPC2Loss(TDMPC2WorldModel(4, 2, cfg), cfg)
    with torch.no_grad():
        loss.target_qvalue_network_params["out", "weight"].normal_()
    reward, terminated = torch.zeros(32, 1), torch.zeros(32, 1)
    assert torch.equal(loss.value_target(z, reward, terminated), loss.value_target(z, reward, terminated))


def test_initialisation_is_the_official_truncated_normal_with_zero_reward_and_q_outputs():
    torch.manual_seed(0)
    cfg = small_config(mlp_dim=256, enc_dim=256, latent_dim=64)
    world_model = TDMPC2WorldModel(8, 4, cfg, goal_dim=2)
    linears = [m for m in world_model.modules() if isinstance(m, torch.nn.Linear)]
    for layer in linears[:-1] + [world_model.qs.layer1, world_model.qs.layer2]:
        if layer is world_model.reward[-1]:
            continue
        std = float(layer.weight.std())
        assert abs(std - 0.02) < 0.003, std
        assert abs(float(layer.weight.mean())) < 0.003
        assert float(layer.bias.abs().max()) == 0.0
    for head in (world_model.reward[-1], world_model.qs.out):
        assert float(head.weight.abs().max()) == 0.0 and float(head.bias.abs().max()) == 0.0
    # so both heads start out predicting 0 for any input
    z, a, zg = torch.softmax(torch.randn(3, 64), -1), torch.rand(3, 4), torch.softmax(torch.randn(3, 64), -1)
    assert torch.allclose(world_model.two_hot.decode(world_model.reward_logits(z, a, zg)), torch.zeros(3, 1), atol=1e-5)
    assert torch.allclose(world_model.two_hot.decode(world_model.q_logits(z, a, zg)), torch.zeros(3, 3, 1), atol=1e-5)


def test_world_model_and_policy_have_their_own_adam_and_their_own_gradient_clipping():
    cfg = small_config(lr=1e-3, enc_lr_scale=0.3, grad_clip_norm=20.0)
    world_model = TDMPC2WorldModel(4, 2, cfg, goal_dim=2)
    loss = TDMPC2Loss(world_model, cfg)
    optim, policy_optim = make_tdmpc2_optimizer(loss), make_tdmpc2_policy_optimizer(loss)
    ids = lambda params: {id(p) for p in params}  # noqa: E731
    policy = ids(world_model.policy.parameters())
    encoders = ids(world_model.encoder.parameters()) | ids(world_model.goal_encoder.parameters())
    groups = optim.param_groups
    assert ids(groups[0]["params"]) == encoders and groups[0]["lr"] == 1e-3 * 0.3
    assert ids(groups[1]["params"]) == ids(loss.parameters()) - encoders - policy and groups[1]["lr"] == 1e-3
    (group,) = policy_optim.param_groups
    assert ids(group["params"]) == policy and group["lr"] == 1e-3 and group["eps"] == 1e-5
    # a world-model gradient of norm 1000 * sqrt(n) is clipped to 20; the policy's, of norm 3 * 2 = 6, is not
    q_bias, pi_bias = loss.qvalue_network_params["out", "bias"], world_model.policy[-1].bias
    losses = TensorDict({"loss_value": 1000.0 * q_bias.sum(), "loss_policy": 3.0 * pi_bias.sum()}, [])
    norms = tdmpc2_update(losses, optim, policy_optim, 20.0)
    assert abs(float(norms["grad_norm"]) - 1000.0 * math.sqrt(q_bias.numel())) < 1e-2
    assert abs(float(norms["policy_grad_norm"]) - 6.0) < 1e-5
    assert abs(float(q_bias.grad.norm()) - 20.0) < 1e-3
    assert torch.allclose(pi_bias.grad, torch.full_like(pi_bias, 3.0))
    assert policy_optim.state[pi_bias]["step"] == 1 and optim.state[q_bias]["step"] == 1


def test_a_non_finite_step_moves_neither_optimiser():
    cfg = small_config()
    world_model = TDMPC2WorldModel(4, 2, cfg)
    loss = TDMPC2Loss(world_model, cfg)
    optim, policy_optim = make_tdmpc2_optimizer(loss), make_tdmpc2_policy_optimizer(loss)
    before = [p.detach().clone() for p in loss.parameters()]
    out = loss(fixed_batch())
    out["loss_policy"] = out["loss_policy"] * float("nan")  # only the policy's part is bad
    assert tdmpc2_update(out, optim, policy_optim, 20.0) is None
    assert all(torch.equal(a, b) for a, b in zip(before, loss.parameters()))
    assert not optim.state and not policy_optim.state
    assert all(p.grad is None for p in loss.parameters())


def test_the_policy_term_records_no_gradient_of_the_q_weights():
    """As the official ``track_q_grad(False)``: the policy's Q is differentiated in its action only.
    No Q weight (nor a tensor sharing its memory) is a leaf of the policy term's graph, so the
    backward computes no Q weight gradient; the Q weights still require gradients afterwards."""
    torch.manual_seed(0)
    cfg = small_config()
    loss = TDMPC2Loss(TDMPC2WorldModel(4, 2, cfg), cfg)
    out = loss(fixed_batch())
    q_memory = {p.data_ptr() for p in loss.qvalue_network_params.values(True, True)}
    leaves, seen, stack = [], set(), [out["loss_policy"].grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if hasattr(node, "variable"):
            leaves.append(node.variable)
        stack.extend(next_node for next_node, _ in node.next_functions)
    assert leaves and not any(leaf.data_ptr() in q_memory for leaf in leaves)
    assert any(leaf is p for leaf in leaves for p in loss.world_model.policy.parameters())
    assert all(p.requires_grad for p in loss.qvalue_network_params.values(True, True))
    # the value term does reach the Q weights
    q_grads = torch.autograd.grad(out["loss_value"], list(loss.qvalue_network_params.values(True, True)),
                                  allow_unused=True)
    assert any(g is not None and bool(g.abs().sum() > 0) for g in q_grads)
