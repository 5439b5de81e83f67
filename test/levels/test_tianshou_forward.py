"""`lighten_forwards`: tianshou's networks find their device and keep their targets in eval mode as before, cheaper."""
from __future__ import annotations

import sys

import pytest
import torch
from tianshou.utils.lagged_network import EvalModeModuleWrapper
from tianshou.utils.net.common import MLP
from tianshou.utils.torch_utils import torch_device
from torchrl.data import Bounded, Unbounded

from torchrl_layered.levels import TianshouLevel, default_sac_config
from torchrl_layered.levels.tianshou_forward import EvalTarget, LeanMLP, first_parameter_device


def _nested() -> torch.nn.Module:
    """Modules without parameters first, the first parameter on the meta device, a later one on the CPU."""
    inner = torch.nn.Sequential(torch.nn.Identity(), torch.nn.Linear(2, 3, device="meta"))
    return torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Sequential(torch.nn.Tanh(), inner), torch.nn.Linear(3, 1))


class _OwnParameterAndChild(torch.nn.Module):
    """Its own parameter (on meta) comes before its child's (on the CPU) in ``parameters()``."""

    def __init__(self):
        super().__init__()
        self.child = torch.nn.Linear(2, 2)
        self.scale = torch.nn.Parameter(torch.ones(1, device="meta"))
        self.register_parameter("unset", None)


@pytest.mark.parametrize("module", [_nested(), _OwnParameterAndChild(), torch.nn.ReLU(), torch.nn.Sequential(),
                                    torch.nn.Linear(2, 2, device="meta")])
def test_the_device_is_tianshous_torch_device(module):
    assert first_parameter_device(module) == torch_device(module)


def sac_level() -> TianshouLevel:
    level = TianshouLevel(default_sac_config(hidden_sizes=[16]), batch_size=8)
    level.initialize(Unbounded((3,)), Bounded(-2.0, 2.0, (1,)))
    return level


def test_a_level_installs_both_and_a_target_stays_in_eval_mode():
    level = sac_level()
    for name in ("tianshou.utils.net.common", "tianshou.utils.net.continuous"):
        assert sys.modules[name].torch_device is first_parameter_device
    targets = [m for m in level.algorithm.modules() if isinstance(m, EvalModeModuleWrapper)]
    assert len(targets) == 2 and all(type(m) is EvalTarget for m in targets)
    target = targets[0]
    target.module.train()  # set on the wrapped module directly, behind the wrapper's back
    obs, act = torch.randn(5, 3), torch.randn(5, 1)
    out = target(obs, act)
    assert not any(m.training for m in target.module.modules())
    torch.testing.assert_close(out, target.module(obs, act))
    level.algorithm.train()  # the wrapper's own train keeps the target in eval mode
    assert not target.module.training and level.algorithm.critic.training


def _mlp(**kwargs) -> MLP:
    torch.manual_seed(0)
    return MLP(input_dim=6, output_dim=2, hidden_sizes=[8, 8], **kwargs)


@pytest.mark.parametrize("kwargs", [{}, {"activation": torch.nn.Tanh}, {"norm_layer": torch.nn.LayerNorm}],
                         ids=["relu", "tanh", "layernorm"])
def test_a_lean_mlp_computes_tianshous_outputs_and_gradients_bit_for_bit(kwargs):
    plain, lean = _mlp(**kwargs), _mlp(**kwargs)
    lean.__class__ = LeanMLP
    obs = torch.randn(5, 2, 3)  # flattened to [5, 6] as tianshou's MLP does
    outputs = []
    for net in (plain, lean):
        out = net(obs)
        out.square().sum().backward()
        outputs.append((out, [p.grad for p in net.parameters()]))
    (out, grads), (lean_out, lean_grads) = outputs
    assert torch.equal(out, lean_out)
    assert all(torch.equal(a, b) for a, b in zip(grads, lean_grads, strict=True))


def test_a_lean_mlp_calls_a_hooked_layer_and_everything_under_a_global_hook():
    net = _mlp()
    net.__class__ = LeanMLP
    seen = []
    handle = net.model[0].register_forward_hook(lambda module, args, out: seen.append("layer"))
    net(torch.randn(2, 6))
    handle.remove()
    handle = torch.nn.modules.module.register_module_forward_hook(lambda module, args, out: seen.append("global"))
    net(torch.randn(2, 6))
    handle.remove()
    net(torch.randn(2, 6))
    assert seen.count("layer") == 1 and seen.count("global") == 7  # the MLP, its Sequential and its five layers


def test_a_level_runs_its_mlps_lean_and_keeps_the_direct_updates():
    level = sac_level()
    mlps = [m for m in level.algorithm.modules() if isinstance(m, MLP)]
    assert mlps and all(type(m) is LeanMLP for m in mlps)
    assert level._direct_update is not None and level._direct_act is not None
