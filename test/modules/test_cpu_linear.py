"""`modules.cpu_linear`: oneDNN's linear where it measured faster, the same results as ``F.linear``."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torchrl_layered.modules import cpu_linear
from torchrl_layered.modules.cpu_linear import Linear, linear
from torchrl_layered.modules.tdmpc2 import QEnsemble, mlp, mlp_on

needs_onednn = pytest.mark.skipif(cpu_linear._onednn_linear_op() is None, reason="this torch build has no oneDNN")


@pytest.fixture
def onednn(monkeypatch):
    """Takes oneDNN wherever it may be taken, whatever this CPU measured, for products of any size."""
    monkeypatch.setattr(cpu_linear, "_ONEDNN", True)
    monkeypatch.setattr(cpu_linear, "_ONEDNN_MIN_MACS", 0)


def _operands(x_shape, weight, bias=True, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(*x_shape, generator=generator)
    w = torch.randn(*weight, generator=generator)
    b = torch.randn(weight[0], generator=generator) if bias else None
    return x, w, b


@needs_onednn
@pytest.mark.parametrize("x_shape", [(7, 32), (3, 5, 32), (0, 32)])
@pytest.mark.parametrize("bias", [True, False])
def test_values_and_gradients_match_f_linear(onednn, x_shape, bias):
    x, w, b = _operands(x_shape, (24, 32), bias)
    leaves = [t.clone().requires_grad_(True) for t in (x, w, *([b] if bias else []))]
    ref_leaves = [t.clone().requires_grad_(True) for t in (x, w, *([b] if bias else []))]
    out = linear(*leaves, *([] if bias else [None]))
    ref = F.linear(*ref_leaves, *([] if bias else [None]))
    assert out.grad_fn is not None and type(out.grad_fn).__name__.startswith("_OneDNNLinear")
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    upstream = torch.randn_like(ref)
    grads = torch.autograd.grad(out, leaves, upstream)
    ref_grads = torch.autograd.grad(ref, ref_leaves, upstream)
    for mine, theirs in zip(grads, ref_grads):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-5)


@needs_onednn
def test_only_the_gradients_asked_for_are_computed(onednn):
    x, w, b = _operands((6, 16), (4, 16))
    w.requires_grad_(True)
    out = linear(x, w, b)
    assert type(out.grad_fn).__name__.startswith("_OneDNNLinear")
    (grad_w,) = torch.autograd.grad(out.sum(), [w])
    torch.testing.assert_close(grad_w, torch.ones(6, 4).t() @ x)


@needs_onednn
def test_a_transposed_weight_and_an_expanded_input_give_the_dense_result(onednn):
    x, w, b = _operands((3, 1, 16), (16, 12))  # the weight stored [in, out], used transposed
    x = x.expand(3, 5, 16)
    with torch.no_grad():
        out = linear(x, w.t(), b[:12] if b is not None else None)
    torch.testing.assert_close(out, F.linear(x.contiguous(), w.t().contiguous(), b[:12]), rtol=1e-5, atol=1e-5)


def test_the_blas_keeps_what_onednn_does_not_take(monkeypatch):
    """float64, autocast, small products, few inputs and a column slice of a weight (oneDNN's slow
    path) stay with ``F.linear``."""
    monkeypatch.setattr(cpu_linear, "_ONEDNN", True)
    big = torch.zeros(1024, 128), torch.zeros(128, 128)
    assert cpu_linear._takes_onednn(*big) is (cpu_linear._onednn_linear_op() is not None)
    assert not cpu_linear._takes_onednn(big[0][:64], big[1])  # 1M multiply-adds
    assert not cpu_linear._takes_onednn(torch.zeros(1 << 20, 8), torch.zeros(128, 8))  # 8 inputs
    monkeypatch.setattr(cpu_linear, "_ONEDNN_MIN_MACS", 0)
    x, w, _ = _operands((4, 16), (6, 17))
    assert not cpu_linear._takes_onednn(x.double(), w.double())
    assert not cpu_linear._takes_onednn(x, w[:, :16])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not cpu_linear._takes_onednn(x, w[:, :16].contiguous())
    assert cpu_linear._takes_onednn(x, w[:, :16].contiguous()) is (cpu_linear._onednn_linear_op() is not None)
    monkeypatch.setattr(cpu_linear, "_ONEDNN", False)
    assert not cpu_linear._takes_onednn(x, w[:, :16].contiguous())


def test_the_kernel_is_measured_once_per_process_on_first_use(monkeypatch):
    calls = []
    monkeypatch.setattr(cpu_linear, "_ONEDNN", None)
    monkeypatch.setattr(cpu_linear, "_measure_onednn", lambda: calls.append(1) or False)
    monkeypatch.setattr(cpu_linear, "_ONEDNN_MIN_MACS", 0)
    x, w, b = _operands((4, 16), (6, 16))
    first, second = linear(x, w, b), linear(x, w, b)
    assert len(calls) == 1 and cpu_linear._ONEDNN is False
    torch.testing.assert_close(first, F.linear(x, w, b))
    torch.testing.assert_close(second, first)


@needs_onednn
def test_the_blas_keeps_the_products_only_when_faster_by_the_margin(monkeypatch):
    monkeypatch.setattr(cpu_linear, "_BLAS_MARGIN", 1e6)  # the BLAS would have to be a million times faster
    assert cpu_linear._measure_onednn(size=(16, 32, 32), repeats=3) is True
    monkeypatch.setattr(cpu_linear, "_BLAS_MARGIN", 1e-6)  # oneDNN would have to be a million times faster
    assert cpu_linear._measure_onednn(size=(16, 32, 32), repeats=3) is False


@needs_onednn
def test_a_slow_moment_of_the_machine_counts_against_both_kernels(monkeypatch):
    """The decision reads the kernels' ratio within each pair: one slow pair does not decide it."""
    clock = iter([0.0, 10.0, 11.0,  # a pair in a slow moment: the BLAS took 10 s, oneDNN 1 s
                  20.0, 20.5, 21.0,  # then both took 0.5 s: neither is faster
                  30.0, 30.5, 31.0])
    monkeypatch.setattr(cpu_linear, "_BLAS_MARGIN", 1.15)
    assert cpu_linear._measure_onednn(size=(16, 32, 32), repeats=3, clock=lambda: next(clock)) is True  # even
    clock = iter([0.0, 1.0, 11.0,  # oneDNN's slow moment
                  20.0, 20.5, 21.5, 30.0, 30.5, 31.5])  # then the BLAS twice as fast
    assert cpu_linear._measure_onednn(size=(16, 32, 32), repeats=3, clock=lambda: next(clock)) is False


def test_linear_is_nn_linear_with_the_same_state_dict():
    torch.manual_seed(0)
    layer = Linear(8, 3)
    plain = nn.Linear(8, 3)
    plain.load_state_dict(layer.state_dict())
    assert isinstance(layer, nn.Linear) and layer.state_dict().keys() == plain.state_dict().keys()
    x = torch.randn(5, 8)
    torch.testing.assert_close(layer(x), plain(x), rtol=1e-5, atol=1e-5)


@needs_onednn
@pytest.mark.parametrize("kernel", [True, False])
def test_tdmpc2_networks_give_the_same_values_and_gradients_with_either_kernel(monkeypatch, kernel):
    """The TD-MPC2 MLP (broadcast first layer included) and the Q ensemble's member-by-member
    layers, through oneDNN or the BLAS, against the same networks in float64 (the BLAS only)."""
    monkeypatch.setattr(cpu_linear, "_ONEDNN", kernel)
    monkeypatch.setattr(cpu_linear, "_ONEDNN_MIN_MACS", 0)
    torch.manual_seed(0)
    net, qs = mlp(10, [32, 32], 5), QEnsemble(3, 10, 32, 7, dropout=0.0)
    for module in (net, qs):
        for p in module.parameters():
            p.data.normal_(0, 0.3)
    z, a = torch.randn(4, 1, 8).expand(4, 6, 8), torch.randn(4, 6, 2)
    x = torch.cat([z, a], -1)
    with torch.no_grad():
        broadcast = mlp_on(net, z, a)
        torch.testing.assert_close(broadcast.double(), net.double()(x.double()), rtol=1e-4, atol=1e-4)
        net.float()
    out = qs(x.reshape(-1, 10))
    (grad,) = torch.autograd.grad(out.square().sum(), [qs.layer1.weight])
    qs64 = qs.double()
    out64 = qs64(x.reshape(-1, 10).double())
    (grad64,) = torch.autograd.grad(out64.square().sum(), [qs64.layer1.weight])
    torch.testing.assert_close(out.double(), out64, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(grad.double(), grad64, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("weight, bias", [((8, 33), None), ((8, 32), (7,))])
def test_operands_that_do_not_fit_get_torchs_error_naming_the_shapes(onednn, weight, bias):
    x = torch.randn(4, 32)
    with pytest.raises(RuntimeError, match=r"shape|size"):
        linear(x, torch.randn(*weight), None if bias is None else torch.randn(*bias))


@needs_onednn
def test_nan_passes_through_as_with_f_linear(onednn):
    x, w, b = _operands((4, 32), (8, 32))
    x[1, 3] = float("nan")
    out = linear(x, w, b)
    assert torch.isnan(out[1]).all() and torch.isfinite(out[[0, 2, 3]]).all()
