"""`ForeachSoftUpdate` moves the targets as TorchRL's `SoftUpdate` does, in one foreach pass."""
from __future__ import annotations

import pytest
import torch
from torchrl.objectives import SoftUpdate

from torchrl_layered.objectives import ForeachSoftUpdate, RewardPredictorLoss
from torchrl_layered.predictors.encoders import IdentityEncoder
from torchrl_layered.predictors.predictor import RewardPredictor


def make_loss(seed: int = 0) -> RewardPredictorLoss:
    torch.manual_seed(seed)
    predictor = RewardPredictor(IdentityEncoder(3), 1, num_members=2, hidden_sizes=(16,), head_sizes=(16, 16))
    return RewardPredictorLoss(predictor)


def targets(loss: RewardPredictorLoss) -> list[torch.Tensor]:
    return [t.clone() for t in loss.target_value_network_params.values(True, True)]


def perturb(loss: RewardPredictorLoss, step: int) -> None:
    with torch.no_grad():
        for i, p in enumerate(loss.value_network_params.values(True, True)):
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(100 * step + i)))


def test_its_steps_match_torchrls_soft_update_and_leave_the_sources_alone():
    ours_loss, torchrl_loss = make_loss(), make_loss()
    ours, theirs = ForeachSoftUpdate(ours_loss, tau=0.3), SoftUpdate(torchrl_loss, tau=0.3)
    for step in range(3):
        perturb(ours_loss, step)
        perturb(torchrl_loss, step)
        before = targets(ours_loss)
        sources = [p.clone() for p in ours_loss.value_network_params.values(True, True)]
        ours.step()
        theirs.step()
        for a, b in zip(targets(ours_loss), targets(torchrl_loss)):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
        for target, old, source in zip(targets(ours_loss), before, sources):
            torch.testing.assert_close(target, old + 0.3 * (source - old))
            assert not torch.equal(target, old)
        for p, source in zip(ours_loss.value_network_params.values(True, True), sources):
            assert torch.equal(p, source)


def test_it_follows_the_targets_through_a_change_of_dtype():
    loss = make_loss()
    updater = ForeachSoftUpdate(loss, tau=0.5)
    updater.step()  # the pairs are read
    loss.to(torch.float64)
    perturb(loss, 0)
    before = targets(loss)
    updater.step()
    after = targets(loss)
    assert all(t.dtype == torch.float64 for t in after)
    for target, old, source in zip(after, before, loss.value_network_params.values(True, True)):
        torch.testing.assert_close(target, old + 0.5 * (source.detach() - old))


def test_it_refuses_a_step_before_init_and_a_target_in_a_graph():
    updater = ForeachSoftUpdate(make_loss(), tau=0.1)
    updater.initialized = False
    with pytest.raises(RuntimeError, match=r"must be initialized \(`init_\(\)`\)"):
        updater.step()
    loss = make_loss()
    updater = ForeachSoftUpdate(loss, tau=0.1)
    next(iter(loss.target_value_network_params.values(True, True))).requires_grad_(True)
    with pytest.raises(RuntimeError, match="the target parameter is part of a graph"):
        updater.step()
