"""TD-MPC2 learns Pendulum-v1 (budgeted learning run: marker `learning`)."""
from __future__ import annotations

import pytest
import torch
from torchrl.collectors import Collector
from torchrl.envs import RewardSum

from helpers import BFLOAT16_UNITS
from torchrl_layered import Hierarchy
from torchrl_layered.envs import make_env
from torchrl_layered.levels import TDMPC2Level
from torchrl_layered.modules import cpu_linear
from torchrl_layered.tdmpc2 import get_default_tdmpc2_config


def cpu_config():
    """A TD-MPC2 small enough to train 15k steps on two CPU cores in minutes."""
    cfg = get_default_tdmpc2_config()
    cfg.update(model_size=1, enc_dim=128, mlp_dim=128, latent_dim=64, num_q=2, batch_size=64, lr=1e-3,
               num_samples=128, num_iterations=4, num_elites=16, num_pi_trajs=8)
    return cfg


@pytest.mark.learning(minutes=12)
@pytest.mark.parametrize("planning_dtype, update_dtype, kernel", [
    ("float32", "float32", "default"),
    pytest.param("float32", "float32", "onednn", marks=pytest.mark.skipif(
        cpu_linear._onednn_linear_op() is None, reason="this torch build has no oneDNN")),
    pytest.param("bfloat16", "float32", "default", marks=BFLOAT16_UNITS),
    pytest.param("bfloat16", "bfloat16", "default", marks=BFLOAT16_UNITS),
])
def test_tdmpc2_solves_pendulum_within_15k_env_steps(planning_dtype, update_dtype, kernel, monkeypatch):
    """``kernel="onednn"``: every float32 linear of the networks through oneDNN's kernel
    (`modules.cpu_linear`; this small model's products are below the size it takes by default),
    forward and backward, so that the path the default-size model takes on some CPUs learns too."""
    if kernel == "onednn":
        monkeypatch.setattr(cpu_linear, "_ONEDNN", True)
        monkeypatch.setattr(cpu_linear, "_ONEDNN_MIN_MACS", 0)
    torch.manual_seed(0)
    env = make_env("Pendulum-v1", 4)
    env.set_seed(0)
    level = TDMPC2Level({**cpu_config(), "planning_dtype": planning_dtype, "update_dtype": update_dtype},
                        warm_up_steps=1000, update_interval=2)
    hierarchy = Hierarchy([level], env=env)
    env = env.append_transform(hierarchy.make_transform()).append_transform(RewardSum())
    collector = Collector(env, hierarchy, frames_per_batch=400, total_frames=15_000)
    returns = []
    for batch in collector:
        hierarchy.extend(batch)
        hierarchy.learn()
        done = batch["next", "done"].squeeze(-1)
        returns += batch["next", "episode_reward"][done].reshape(-1).tolist()
    collector.shutdown()
    last10 = sum(returns[-10:]) / 10
    print(f"TD-MPC2 Pendulum, planning in {planning_dtype}, updates in {update_dtype}, {kernel} linears: {len(returns)} episodes, mean return of the last 10: {last10:.1f}")
    assert len(returns) >= 60 and last10 > -400, f"mean return of the last 10 episodes: {last10:.0f}"
