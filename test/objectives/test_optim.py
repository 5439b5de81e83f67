"""`adam`: the fused Adam the levels use takes the same steps as the per-parameter loop."""
from __future__ import annotations

import copy
import warnings

import pytest
import torch

from torchrl_layered.objectives.optim import FusedAdam, adam


def test_a_device_without_fused_kernels_falls_back(monkeypatch):
    def no_fused(params, **kwargs):
        raise RuntimeError("`fused=True` requires all the params to be floating point Tensors of supported devices")

    monkeypatch.setattr("torchrl_layered.objectives.optim.FusedAdam", no_fused)
    optimizer = adam([torch.zeros(3, requires_grad=True)], lr=1e-3)
    assert optimizer.param_groups[0]["foreach"] is True and not optimizer.param_groups[0].get("fused")


@pytest.mark.parametrize("bad", [dict(lr=-1.0), dict(betas=(1.5, 0.9))])
def test_bad_hyperparameters_are_still_refused(bad):
    with pytest.raises(ValueError):
        adam([torch.zeros(3, requires_grad=True)], **bad)


def _twin_steps(make_fast, make_plain, params, steps=6, grad_mask=None, between=None):
    """Runs the same gradients through both optimisers; returns them and the two parameter lists."""
    twins = [p.detach().clone().requires_grad_() for p in params]
    fast, plain = make_fast(params), make_plain(twins)
    for i in range(steps):
        for j, (p, t) in enumerate(zip(params, twins)):
            use = grad_mask is None or grad_mask(i, j)
            g = torch.randn_like(p) if use else None
            p.grad, t.grad = (g.clone(), g.clone()) if use else (None, None)
        fast.step()
        plain.step()
        if between is not None:
            between(fast, plain)
    return fast, plain, params, twins


@pytest.mark.parametrize("options", [
    dict(lr=3e-3),
    dict(lr=1e-3, weight_decay=0.1, eps=1e-5),
    dict(lr=1e-3, weight_decay=0.1, decoupled_weight_decay=True),
    dict(lr=1e-3, maximize=True, betas=(0.8, 0.9)),
    dict(lr=1e-3, amsgrad=True),  # not a plain step: torch's own
])
def test_fused_adam_steps_match_torchs_loop_and_keep_its_state(options):
    torch.manual_seed(0)
    params = [torch.randn(7, 5, requires_grad=True), torch.randn(5, requires_grad=True), torch.randn(3, requires_grad=True)]
    # the third parameter has no gradient at some steps: it is skipped, its state untouched
    fast, plain, params, twins = _twin_steps(
        lambda ps: adam([{"params": ps[:1], "lr": 3e-3}, {"params": ps[1:]}], **options),
        lambda ps: torch.optim.Adam([{"params": ps[:1], "lr": 3e-3}, {"params": ps[1:]}], foreach=False, **options),
        params, grad_mask=lambda i, j: j < 2 or i % 2 == 0)
    assert isinstance(fast, FusedAdam) and fast.param_groups[0]["fused"] is True  # CPU has fused Adam kernels
    for p, t in zip(params, twins):
        assert torch.allclose(p, t, atol=1e-6)
    for p, t in zip(params, twins):
        for key in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.allclose(fast.state[p][key].float(), plain.state[t][key].float(), atol=1e-6), key
    assert float(fast.state[params[2]]["step"]) == 3.0  # only the steps that had its gradient


def test_fused_adam_follows_a_scheduler_and_a_loaded_state():
    torch.manual_seed(1)
    params = [torch.randn(4, 4, requires_grad=True)]
    schedulers = []

    def make(cls_kwargs):
        def build(ps):
            optimizer = adam(ps, lr=1e-2) if cls_kwargs is None else torch.optim.Adam(ps, lr=1e-2, **cls_kwargs)
            schedulers.append(torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.1))
            return optimizer
        return build

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. a scheduler that believes no optimiser step was taken
        fast, plain, params, twins = _twin_steps(make(None), make({"foreach": False}), params, steps=5,
                                                 between=lambda f, p: [s.step() for s in schedulers])
    assert torch.allclose(params[0], twins[0], atol=1e-6)
    assert fast.param_groups[0]["lr"] == pytest.approx(1e-4)
    # a state dict moves between the two both ways and the steps go on alike
    fast.load_state_dict(copy.deepcopy(plain.state_dict()))  # loading may share tensors with the source
    assert torch.equal(fast.state[params[0]]["exp_avg"], plain.state[twins[0]]["exp_avg"])
    g = torch.randn_like(params[0])
    params[0].grad, twins[0].grad = g.clone(), g.clone()
    with torch.no_grad():
        params[0].copy_(twins[0])
    fast.step()
    plain.step()
    assert torch.allclose(params[0], twins[0], atol=1e-6)


def test_fused_adam_calls_hooks_and_zeroes_gradients_as_torch():
    p = torch.randn(3, requires_grad=True)
    optimizer = adam([p], lr=1e-3)
    calls = []
    p.grad = torch.ones(3)
    optimizer.step()  # the first step builds the state
    handles = [optimizer.register_step_pre_hook(lambda *a: calls.append("pre")),
               optimizer.register_step_post_hook(lambda *a: calls.append("post"))]
    p.grad = torch.ones(3)
    optimizer.step()
    assert calls == ["pre", "post"]
    for handle in handles:
        handle.remove()
    before = p.detach().clone()
    optimizer.step()
    assert calls == ["pre", "post"] and not torch.equal(p, before)  # the lean step moved it, without hooks
    optimizer.zero_grad(set_to_none=False)
    assert torch.equal(p.grad, torch.zeros(3))
    optimizer.zero_grad()
    assert p.grad is None
    assert optimizer.step(closure=lambda: torch.tensor(2.0)) == 2.0  # a closure's loss is returned


def test_fused_adam_takes_torchs_step_for_mixed_dtypes():
    torch.manual_seed(2)
    params = [torch.randn(3, requires_grad=True), torch.randn(3, dtype=torch.float64, requires_grad=True)]
    fast, plain, params, twins = _twin_steps(lambda ps: adam(ps, lr=1e-2),
                                             lambda ps: torch.optim.Adam(ps, lr=1e-2, foreach=False), params)
    for p, t in zip(params, twins):
        assert p.dtype == t.dtype and torch.allclose(p, t, atol=1e-6)


def test_only_the_steps_that_need_it_take_torchs_own(monkeypatch):
    """The lean path is the one a plain step takes: torch's step only builds the state and serves hooks."""
    import torchrl_layered.objectives.optim as optim

    full = []
    real = optim._FULL_STEP
    monkeypatch.setattr(optim, "_FULL_STEP", lambda *a: full.append(1) or real(*a))
    p = torch.randn(3, requires_grad=True)
    optimizer = adam([p], lr=1e-3)
    for _ in range(3):
        p.grad = torch.ones(3)
        optimizer.step()
    assert len(full) == 1  # the first step, which builds the state
    handle = optimizer.register_step_pre_hook(lambda *a: None)
    optimizer.step()
    handle.remove()
    optimizer.step()
    assert len(full) == 2 and float(optimizer.state[p]["step"]) == 5.0
