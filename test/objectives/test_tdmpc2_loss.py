"""`TDMPC2Loss`: key contract, each term learning on a fixed batch, the TD target, a plain TorchRL pipeline."""
from __future__ import annotations

import torch
from tensordict import TensorDict
from torchrl.collectors import Collector
from torchrl.data import LazyTensorStorage, SliceSampler, TensorDictReplayBuffer
from torchrl.envs import GymEnv
from torchrl.objectives import SoftUpdate

from torchrl_layered.modules.tdmpc2 import TDMPC2WorldModel
from torchrl_layered.objectives import TDMPC2Loss
from torchrl_layered.objectives.tdmpc2 import make_tdmpc2_optimizer
from torchrl_layered.tdmpc2 import get_default_tdmpc2_config, resolve_tdmpc2_config

TERMS = ["loss_consistency", "loss_reward", "loss_value", "loss_termination", "loss_policy"]


def small_config(**kw):
    cfg = get_default_tdmpc2_config()
    cfg.update(model_size=1, enc_dim=32, mlp_dim=32, latent_dim=16, num_q=3, **kw)
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
    start = float(loss(batch)["loss_policy"])
    for _ in range(100):
        out = loss(batch)
        policy_optim.zero_grad()
        out["loss_policy"].backward()
        policy_optim.step()
    assert float(loss(batch)["loss_policy"]) < start


def test_value_target_matches_hand_computation_with_termination():
    cfg = small_config(discount_factor=[0.9])
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
    assert resolved["discount"] == 0.95 and resolved["latent_dim"] == 512 and resolved["num_q"] == 5
    assert resolve_tdmpc2_config(model_size=1)["latent_dim"] == 128
    for bad, message in [({"discount_factor": [0.9, 0.8]}, "one value"), ({"model_size": 7}, "model_size"),
                         ({"horizon": 0}, "horizon"), ({"nonsense": 1}, "unknown")]:
        try:
            resolve_tdmpc2_config(bad)
        except ValueError as err:
            assert message in str(err)
        else:
            raise AssertionError(f"{bad} was accepted")


def test_loss_in_a_plain_torchrl_pipeline_with_slice_sampler():
    torch.manual_seed(0)
    env = GymEnv("Pendulum-v1")
    cfg = small_config(horizon=3, batch_size=8)
    world_model = TDMPC2WorldModel(3, 1, cfg)
    loss = TDMPC2Loss(world_model, cfg, action_spec=env.action_spec)
    updater = SoftUpdate(loss, tau=cfg["tau"])
    optim = make_tdmpc2_optimizer(loss)
    buffer = TensorDictReplayBuffer(
        storage=LazyTensorStorage(10_000),
        sampler=SliceSampler(slice_len=cfg["horizon"], traj_key=("collector", "traj_ids"), strict_length=True),
        batch_size=cfg["batch_size"] * cfg["horizon"],
    )
    collector = Collector(env, None, frames_per_batch=100, total_frames=300, auto_register_policy_transforms=False)
    target_before = loss.target_qvalue_network_params.clone()
    consistency = []
    for batch in collector:
        buffer.extend(batch)
        for _ in range(10):
            sample = buffer.sample().reshape(cfg["batch_size"], cfg["horizon"])
            out = loss(sample)
            total = sum(v for k, v in out.items() if k.startswith("loss_"))
            optim.zero_grad()
            total.backward()
            optim.step()
            updater.step()
            consistency.append(float(out["loss_consistency"]))
    collector.shutdown()
    assert all(torch.isfinite(torch.tensor(consistency)))
    assert sum(consistency[-5:]) < sum(consistency[:5])
    moved = (loss.target_qvalue_network_params - target_before).abs().sum()
    assert float(sum(moved.values(True, True))) > 0
