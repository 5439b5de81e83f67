"""`finite_clipped_norms`: clip_grad_norm_'s norms and gradients, one host read, no pass where nothing clips."""
from __future__ import annotations

import pytest
import torch

from torchrl_layered.objectives import grad_clip
from torchrl_layered.objectives.grad_clip import finite_clipped_norms


def groups_with_grads(scale_a: float, scale_b: float):
    torch.manual_seed(0)
    groups = [[torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(4))],
              [torch.nn.Parameter(torch.randn(7))]]
    for group, scale in zip(groups, (scale_a, scale_b)):
        for p in group:
            p.grad = scale * torch.randn_like(p)
    return groups


@pytest.mark.parametrize("scales", [(0.01, 0.01), (10.0, 0.01), (10.0, 10.0)], ids=["none", "one", "both"])
def test_norms_and_gradients_are_clip_grad_norm_s(scales):
    groups, expected = groups_with_grads(*scales), groups_with_grads(*scales)
    norms = finite_clipped_norms(groups, 1.0, torch.tensor(2.0))
    for group, reference, norm in zip(groups, expected, norms):
        torch.testing.assert_close(norm, torch.nn.utils.clip_grad_norm_(reference, 1.0), rtol=0, atol=0)
        for p, q in zip(group, reference):
            torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=0)
    assert [bool(n > 1.0) for n in norms] == [s > 1 for s in scales]


def test_a_group_under_the_limit_is_not_touched(monkeypatch):
    scaled = []
    monkeypatch.setattr(torch.nn.utils, "clip_grads_with_norm_",
                        lambda params, max_norm, norm: scaled.append(len(params)), raising=False)
    finite_clipped_norms(groups_with_grads(10.0, 0.01), 1.0, torch.tensor(2.0))
    assert scaled == ([2] if grad_clip._TOTAL_NORM is not None else [])


@pytest.mark.parametrize("bad", ["loss", "grad"])
def test_a_step_that_is_not_finite_gets_none_and_nothing_is_scaled(bad):
    groups = groups_with_grads(10.0, 10.0)
    before = [p.grad.clone() for group in groups for p in group]
    loss = torch.tensor(float("nan") if bad == "loss" else 1.0)
    if bad == "grad":
        groups[1][0].grad[0] = float("inf")
        before[-1][0] = float("inf")
    assert finite_clipped_norms(groups, 1.0, loss) is None
    if grad_clip._TOTAL_NORM is not None:
        for p, grad in zip([p for group in groups for p in group], before):
            assert torch.equal(p.grad, grad)


def test_a_group_without_gradients_has_norm_zero():
    groups = groups_with_grads(1.0, 1.0)
    groups[1][0].grad = None
    norms = finite_clipped_norms(groups, 1.0, torch.tensor(0.5))
    assert float(norms[1]) == 0.0
