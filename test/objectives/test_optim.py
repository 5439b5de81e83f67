"""`adam`: the fused Adam the levels use takes the same steps as the per-parameter loop."""
from __future__ import annotations

import pytest
import torch

from torchrl_layered.objectives.optim import adam


def test_fused_adam_takes_the_steps_of_the_plain_loop():
    torch.manual_seed(0)
    params = [torch.randn(7, 5, requires_grad=True), torch.randn(5, requires_grad=True)]
    twins = [p.detach().clone().requires_grad_() for p in params]
    fused = adam([{"params": params[:1], "lr": 3e-3}, {"params": params[1:]}], lr=1e-3, eps=1e-5)
    plain = torch.optim.Adam([{"params": twins[:1], "lr": 3e-3}, {"params": twins[1:]}], lr=1e-3, eps=1e-5,
                             foreach=False)
    assert fused.param_groups[0]["fused"] is True  # CPU has fused Adam kernels
    for _ in range(5):
        grads = [torch.randn_like(p) for p in params]
        for p, t, g in zip(params, twins, grads):
            p.grad, t.grad = g.clone(), g.clone()
        fused.step()
        plain.step()
    for p, t in zip(params, twins):
        assert torch.allclose(p, t, atol=1e-6)


def test_a_device_without_fused_kernels_falls_back(monkeypatch):
    real = torch.optim.Adam

    def no_fused(params, **kwargs):
        if kwargs.get("fused"):
            raise RuntimeError("`fused=True` requires all the params to be floating point Tensors of supported devices")
        return real(params, **kwargs)

    monkeypatch.setattr(torch.optim, "Adam", no_fused)
    optimizer = adam([torch.zeros(3, requires_grad=True)], lr=1e-3)
    assert optimizer.param_groups[0]["foreach"] is True and not optimizer.param_groups[0].get("fused")


@pytest.mark.parametrize("bad", [dict(lr=-1.0), dict(betas=(1.5, 0.9))])
def test_bad_hyperparameters_are_still_refused(bad):
    with pytest.raises(ValueError):
        adam([torch.zeros(3, requires_grad=True)], **bad)
