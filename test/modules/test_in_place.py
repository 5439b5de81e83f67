"""In-place activations in no-grad forwards: same outputs as the modules, inputs untouched, gradients intact."""
import pytest
import torch
from torch import nn

from torchrl_layered.modules.in_place import activate, run_sequential


@pytest.mark.parametrize("activation", [nn.SiLU, nn.ReLU, nn.ELU, nn.Tanh])
def test_run_sequential_equals_the_module_with_and_without_gradients(activation):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 16), activation(), nn.Linear(16, 16), activation(), nn.Linear(16, 1))
    x = torch.randn(32, 6)
    expected = net(x)
    with torch.no_grad():
        assert torch.allclose(run_sequential(net, x), expected)
    out = run_sequential(net, x)
    assert torch.allclose(out, expected)
    out.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_the_callers_input_is_never_overwritten():
    net = nn.Sequential(nn.SiLU(), nn.Linear(4, 4), nn.SiLU())
    x = torch.randn(8, 4)
    before = x.clone()
    with torch.no_grad():
        out = run_sequential(net, x)
    assert torch.equal(x, before)
    assert torch.allclose(out, net(x))


def test_activate_overwrites_only_without_gradients():
    h = torch.randn(5, 3)
    with torch.no_grad():
        out = activate(nn.ReLU(), h)
    assert out.data_ptr() == h.data_ptr() and (h >= 0).all()
    g = torch.randn(5, 3, requires_grad=True)
    assert activate(nn.ReLU(), g * 1).data_ptr() != g.data_ptr()
