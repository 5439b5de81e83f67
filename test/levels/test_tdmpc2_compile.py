"""`TDMPC2Level` with ``compile``: the compiled planning estimate equals the eager one, in either precision."""
from __future__ import annotations

import pickle
import warnings

import pytest
import torch
from torchrl.envs import TransformedEnv

from torchrl_layered import Hierarchy
from torchrl_layered.envs import make_env
from torchrl_layered.levels import TDMPC2Level
from torchrl_layered.tdmpc2 import get_default_tdmpc2_config


def small_level(**entries) -> tuple[TDMPC2Level, Hierarchy]:
    cfg = get_default_tdmpc2_config()
    cfg.update(model_size=1, enc_dim=32, mlp_dim=32, latent_dim=16, num_q=2, batch_size=8, num_samples=32,
               num_elites=8, num_pi_trajs=4, num_iterations=2, log_std_min=-30.0, log_std_max=-30.0, **entries)
    level = TDMPC2Level(cfg, warm_up_steps=0)
    return level, Hierarchy([level], env=make_env("Pendulum-v1", 2))


@pytest.mark.compile
@pytest.mark.parametrize("planning_dtype", ["float32", "bfloat16"])
def test_a_compiled_tdmpc2_plan_estimates_as_the_eager_one_and_plans(planning_dtype):
    torch.manual_seed(0)
    eager, _ = small_level(planning_dtype=planning_dtype)
    compiled, hierarchy = small_level(planning_dtype=planning_dtype, compile=True)
    with torch.no_grad():  # untrained reward and Q heads are zero: give every head an output
        for p in eager.world_model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    compiled.world_model.load_state_dict(eager.world_model.state_dict())
    z = torch.softmax(torch.randn(2, 16), -1)
    actions = torch.rand(2, 32, 3, 1) * 2 - 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a fallback to eager would warn
        torch.manual_seed(1)  # the Q pair
        got = compiled.estimate_value(z, None, actions)
        env = TransformedEnv(make_env("Pendulum-v1", 2), hierarchy.make_transform())
        action = hierarchy(env.reset())["action"]  # a whole plan, other shapes included
    assert not compiled.__dict__["_compiled_return"].failed
    torch.manual_seed(1)
    expected = eager.estimate_value(z, None, actions)
    assert got.dtype == torch.float32 and got.shape == (2, 32)
    tolerance = 1e-4 if planning_dtype == "float32" else 0.1  # bfloat16: fused and unfused round differently
    torch.testing.assert_close(got, expected, rtol=0.0, atol=tolerance * float(expected.abs().max()))
    assert action.shape == (2, 1) and bool(action.isfinite().all())
    clone = pickle.loads(pickle.dumps(compiled))  # collector workers receive levels by pickle
    assert clone.__dict__["_compiled_return"]._compiled is None


@pytest.mark.compile
def test_a_new_discount_does_not_recompile_the_planning_estimate(monkeypatch):
    torch.manual_seed(0)
    level, _ = small_level(compile=True)
    with torch.no_grad():  # untrained reward and Q heads are zero: give every head an output
        for p in level.world_model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    z, actions = torch.softmax(torch.randn(2, 16), -1), torch.rand(2, 32, 3, 1) * 2 - 1
    torch.manual_seed(1)
    first = level.estimate_value(z, None, actions)
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    # a level below a parent plans with gamma ** mean_duration, which moves as its options do
    monkeypatch.setattr(TDMPC2Level, "planning_gamma", property(lambda self: 0.5))
    torch.manual_seed(1)
    second = level.estimate_value(z, None, actions)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs
    assert not torch.equal(first, second) and not level.__dict__["_compiled_return"].failed
