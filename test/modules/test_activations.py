"""The fast Mish and SimNorm equal torch's Mish and a grouped softmax, in value and gradient."""
import pytest
import torch
import torch.nn.functional as F

from torchrl_layered.modules import activations
from torchrl_layered.modules.activations import Mish, SimNorm, mish

EDGES = torch.tensor([-1e30, -1e4, -60.0, -20.0, -1e-3, 0.0, 1e-3, 19.9, 20.0, 20.1, 43.0, 45.0, 60.0, 88.0,
                      89.0, 1e4, 1e30, 1e38])


def test_mish_equals_torchs_mish_with_and_without_gradients():
    x = torch.cat([torch.randn(4000) * 6, EDGES])
    with torch.no_grad():
        torch.testing.assert_close(mish(x.clone()), F.mish(x), atol=2e-6, rtol=1e-5)
    leaf = x.clone().requires_grad_(True)
    torch.testing.assert_close(Mish()(leaf), F.mish(x), atol=2e-6, rtol=1e-5)


@pytest.mark.parametrize("via_exp2", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_mish_is_torchs_on_both_exp_paths_and_in_bfloat16_where_exp_overflows(monkeypatch, via_exp2, dtype):
    monkeypatch.setattr(activations, "_EXP_VIA_EXP2", via_exp2)  # both paths, whichever this CPU measured faster
    x = torch.cat([torch.randn(4000) * 30, EDGES]).to(dtype)
    expected = F.mish(x.double())
    with torch.no_grad():
        got = mish(x.clone())
    assert torch.isfinite(got).all()  # e^x and its square overflow to inf far below the largest input
    # bfloat16 rounds each pass to 8 bits: a few of its steps off near mish's dip
    tolerance = {"atol": 2e-6, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 3e-2, "rtol": 2e-2}
    torch.testing.assert_close(got.double(), expected, **tolerance)
    leaf = x.float().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(mish(leaf).sum(), leaf)
    (reference,) = torch.autograd.grad(F.mish(leaf).sum(), leaf)
    torch.testing.assert_close(grad, reference, atol=1e-5, rtol=1e-4)


def test_exp2_is_taken_only_on_a_cpu_where_it_measured_faster(monkeypatch):
    monkeypatch.setattr(activations, "_EXP_VIA_EXP2", True)
    assert activations._via_exp2(torch.ones(1))
    assert not activations._via_exp2(torch.ones(1, device="meta"))  # any other device takes exp
    monkeypatch.setattr(activations, "_EXP_VIA_EXP2", False)
    assert not activations._via_exp2(torch.ones(1))


def test_the_exp_path_is_measured_once_per_process_on_first_use(monkeypatch):
    calls = []
    monkeypatch.setattr(activations, "_EXP_VIA_EXP2", None)
    monkeypatch.setattr(activations, "_measure_exp_via_exp2", lambda: calls.append(1) or True)
    with torch.no_grad():
        first, second = mish(torch.randn(64)), mish(torch.randn(64))
    assert len(calls) == 1 and activations._EXP_VIA_EXP2 is True
    assert torch.isfinite(first).all() and torch.isfinite(second).all()


def test_exp2_must_win_by_the_margin_to_be_taken(monkeypatch):
    monkeypatch.setattr(activations, "_EXP2_MARGIN", 1e6)  # no kernel is a million times faster
    assert activations._measure_exp_via_exp2(size=(8, 64), repeats=2) is False
    monkeypatch.setattr(activations, "_EXP2_MARGIN", 1e-6)
    assert activations._measure_exp_via_exp2(size=(8, 64), repeats=2) is True


def test_mish_gradient_matches_autograd_of_the_definition():
    x = torch.cat([torch.randn(200, dtype=torch.float64) * 6, EDGES.double()]).requires_grad_(True)
    assert torch.autograd.gradcheck(mish, (x[:60].detach().clone().requires_grad_(True),))
    (mine,) = torch.autograd.grad(mish(x).sum(), x)
    (torchs,) = torch.autograd.grad((x * torch.tanh(F.softplus(x))).sum(), x)
    torch.testing.assert_close(mine, torchs)


def test_mish_keeps_its_input_and_nan():
    x = torch.tensor([1.0, float("nan"), -2.0])
    before = x.clone()
    with torch.no_grad():
        out = mish(x)
    torch.testing.assert_close(x, before, equal_nan=True)
    assert torch.isnan(out[1]) and not torch.isnan(out[[0, 2]]).any()


def test_simnorm_is_a_softmax_over_groups_with_its_gradient():
    x = torch.randn(3, 5, 32) * 10
    expected = F.softmax(x.reshape(3, 5, 4, 8), -1).reshape(3, 5, 32)
    with torch.no_grad():
        torch.testing.assert_close(SimNorm(8)(x), expected)
    leaf = x.double().requires_grad_(True)
    assert torch.autograd.gradcheck(SimNorm(8), (leaf[:1, :2],))
    (mine,) = torch.autograd.grad((SimNorm(8)(leaf) ** 2).sum(), leaf)
    (torchs,) = torch.autograd.grad((F.softmax(leaf.reshape(3, 5, 4, 8), -1) ** 2).sum(), leaf)
    torch.testing.assert_close(mine, torchs)


def test_mish_with_gradients_keeps_its_input_and_matches_torchs_gradient_in_float32():
    x = torch.cat([torch.randn(4000) * 6, EDGES])
    leaf = x.clone().requires_grad_(True)
    weight = torch.randn_like(x)
    (mine,) = torch.autograd.grad((mish(leaf) * weight).sum(), leaf)
    reference = x.clone().requires_grad_(True)
    (torchs,) = torch.autograd.grad((F.mish(reference) * weight).sum(), reference)
    torch.testing.assert_close(leaf.detach(), x)
    torch.testing.assert_close(mine, torchs)


def test_simnorm_with_gradients_keeps_its_input_and_matches_torchs_gradient_in_float32():
    x = torch.cat([torch.randn(64, 32) * 10, torch.tensor([[-1e4, 1e4] * 16])])
    leaf = x.clone().requires_grad_(True)
    weight = torch.randn_like(x)
    out = SimNorm(8)(leaf)
    (mine,) = torch.autograd.grad((out * weight).sum(), leaf)
    reference = x.clone().requires_grad_(True)
    expected = F.softmax(reference.reshape(-1, 4, 8), -1).reshape(x.shape)
    (torchs,) = torch.autograd.grad((expected * weight).sum(), reference)
    torch.testing.assert_close(leaf.detach(), x)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(mine, torchs)


def test_a_nan_stays_in_its_entry_for_mish_and_in_its_group_for_simnorm_through_the_backward():
    x = torch.tensor([[1.0, float("nan"), -2.0, 0.5] * 4])
    leaf = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(mish(leaf).sum(), leaf)
    assert torch.isnan(grad[0, 1::4]).all() and not torch.isnan(grad[0, 0::4]).any()
    leaf = torch.cat([x[:, :8], torch.ones(1, 8)], -1).requires_grad_(True)  # a NaN group, a clean one
    out = SimNorm(8)(leaf)
    (grad,) = torch.autograd.grad((out * torch.arange(16.0)).sum(), leaf)
    assert torch.isnan(out[0, :8]).all() and torch.isfinite(out[0, 8:]).all()
    assert torch.isfinite(grad[0, 8:]).all()
