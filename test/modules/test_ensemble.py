"""`ProbabilisticEnsemble` + `EnsembleModelLoss` learn a known non-linear dynamics."""
from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from torch import nn

from torchrl_layered.modules import EnsembleLinear, ProbabilisticEnsemble
from torchrl_layered.objectives import EnsembleModelLoss


def true_next(state, action):
    return state + 0.3 * torch.sin(2.0 * state) * action + 0.1 * action.roll(1, -1)


def batch(n, low=-1.0, high=1.0):
    state = torch.empty(n, 2).uniform_(low, high)
    action = torch.empty(n, 2).uniform_(-1, 1)
    return TensorDict({"observation": state, "action": action,
                       "next": {"observation": true_next(state, action), "terminated": torch.zeros(n, 1, dtype=torch.bool)}},
                      batch_size=[n])


def test_ensemble_learns_nonlinear_dynamics_and_disagrees_only_off_the_data():
    torch.manual_seed(0)
    model = ProbabilisticEnsemble(2, 2, num_members=5, hidden_sizes=(64, 64))
    loss_fn = EnsembleModelLoss(model)
    optim = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(1500):
        loss = loss_fn(batch(256))
        total = loss["loss_model"] + loss["loss_termination"]
        optim.zero_grad()
        total.backward()
        optim.step()
        first = first if first is not None else float(loss["model_nll"])
    assert float(loss["model_nll"]) < first

    test = batch(2000)
    state, action = test["observation"], test["action"]
    with torch.no_grad():
        mean, std, term = model(state.expand(5, -1, -1), action.expand(5, -1, -1))
    error = (mean.mean(0) - test["next", "observation"]).abs().mean()
    change = (test["next", "observation"] - state).abs().mean()
    assert error < 0.1 * change, f"mean abs error {error:.4f} vs mean change {change:.4f}"
    assert float(term.max()) < 0.05

    far = batch(2000, low=4.0, high=6.0)
    with torch.no_grad():
        far_mean, _, _ = model(far["observation"].expand(5, -1, -1), far["action"].expand(5, -1, -1))
    on_spread = mean.std(0).mean()
    off_spread = far_mean.std(0).mean()
    assert off_spread > 5 * on_spread, f"spread off the data {off_spread:.4f} vs on it {on_spread:.4f}"


def test_log_prob_is_highest_at_the_predicted_next_state():
    torch.manual_seed(0)
    model = ProbabilisticEnsemble(2, 1, num_members=3, hidden_sizes=(16,))
    state, action = torch.randn(4, 2), torch.randn(4, 1)
    with torch.no_grad():
        mean, _, _ = model(state.expand(3, -1, -1), action.expand(3, -1, -1))
        centre = mean.mean(0)
        here = model.log_prob(state, action, centre, std=0.1)
        away = model.log_prob(state, action, centre + 1.0, std=0.1)
    assert here.shape == (4,) and bool((here > away).all())


@pytest.mark.parametrize("activation", [nn.SiLU, nn.ReLU, nn.ELU, nn.Tanh])
def test_planning_without_gradients_predicts_what_training_does(activation):
    """In-place activations (no-grad path) give the same predictions as the autograd path."""
    torch.manual_seed(0)
    model = ProbabilisticEnsemble(3, 2, 1, num_members=4, hidden_sizes=(16, 16), activation=activation)
    state, action, context = torch.randn(4, 32, 3), torch.randn(4, 32, 2), torch.randn(4, 32, 1)
    with_grad = model(state, action, context)
    assert with_grad[0].requires_grad
    with torch.no_grad():
        without = model(state, action, context)
        members = torch.tensor([2, 0])
        subset = model(state[:2], action[:2], context[:2], members=members)
    for a, b in zip(with_grad, without):
        torch.testing.assert_close(a.detach(), b)
    reference = model(state[:2], action[:2], context[:2], members=members)
    for a, b in zip(reference, subset):
        torch.testing.assert_close(a.detach(), b)


def test_a_cpu_forward_without_gradients_runs_member_by_member_only_where_it_pays(monkeypatch):
    """Several members, no gradient, full precision: member by member (equal to the batched path, as above);
    one member, a recorded gradient or autocast: the batched path."""
    torch.manual_seed(0)
    calls = []
    original = ProbabilisticEnsemble._forward_member_by_member
    monkeypatch.setattr(ProbabilisticEnsemble, "_forward_member_by_member",
                        lambda self, x, members: calls.append(x.shape[0]) or original(self, x, members))
    model = ProbabilisticEnsemble(3, 2, num_members=5, hidden_sizes=(16, 16))
    state, action = torch.randn(1, 40, 3).expand(5, 40, 3), torch.randn(5, 40, 2)
    with torch.no_grad():
        mean, std, term = model(state, action)
        assert calls == [5]
        subset = model(state[:3], action[:3], members=torch.tensor([4, 1, 3]))
        assert calls == [5, 3]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(state, action)
        single = ProbabilisticEnsemble(3, 2, num_members=1, hidden_sizes=(16, 16))(state[:1], action[:1])
    assert calls == [5, 3] and low[0].shape == mean.shape and single[0].shape == (1, 40, 3)
    batched = model(state, action)
    assert calls == [5, 3]
    for a, b in zip(batched, (mean, std, term)):
        torch.testing.assert_close(a.detach(), b)
    for a, b in zip(model(state[:3], action[:3], members=torch.tensor([4, 1, 3])), subset):
        torch.testing.assert_close(a.detach(), b)


def test_a_sampled_step_adds_the_noise_it_is_given_and_refuses_noise_of_another_shape():
    torch.manual_seed(0)
    model = ProbabilisticEnsemble(3, 2, num_members=2, hidden_sizes=(8,))
    state, action = torch.randn(2, 5, 3), torch.rand(2, 5, 2) * 2 - 1
    noise = torch.randn(2, 5, 3)
    with torch.no_grad():
        mean, std, term = model(state, action)
        sampled, sampled_term = model.step(state, action, noise=noise)
        torch.testing.assert_close(sampled, mean + std * noise)
        torch.testing.assert_close(sampled_term, term)
        with pytest.raises(ValueError, match=r"noise must have the next state's shape \(2, 5, 3\); got \(5, 3\)"):
            model.step(state, action, noise=noise[0])


def test_a_skinny_head_multiplies_from_a_column_major_copy_of_its_contiguous_weight():
    """A head of few outputs multiplies from its ``[M, in, out]`` weight laid out as ``[M, out, in]``
    (the fast layout for skinny matmuls on CPUs); the parameter stays contiguous (torch.distributed
    and TorchRL's weight updaters send it), and outputs and gradients are the plain layout's."""
    torch.manual_seed(0)
    head = EnsembleLinear(3, 40, 9)
    assert head.weight.is_contiguous() and head.compute_weight().stride() == (360, 1, 40)
    torch.testing.assert_close(head.compute_weight(), head.weight, rtol=0, atol=0)
    for wide in (EnsembleLinear(3, 40, 11), EnsembleLinear(3, 200, 16)):  # narrowing under 4-fold, 16 outputs
        assert wide.compute_weight() is wide.weight

    x = torch.randn(3, 16, 40)
    out = head(x)
    torch.testing.assert_close(out, torch.baddbmm(head.bias, x, head.weight))
    out.square().sum().backward()
    grad = head.weight.grad.clone()
    head.zero_grad()
    torch.baddbmm(head.bias, x, head.weight).square().sum().backward()
    torch.testing.assert_close(grad, head.weight.grad)
    assert head.weight.grad.is_contiguous()
    members = torch.tensor([0, 2])
    torch.testing.assert_close(head(x[:2], members), torch.baddbmm(head.bias[members], x[:2], head.weight[members]))


def trained_like(model: ProbabilisticEnsemble) -> ProbabilisticEnsemble:
    """``model`` with normalisers and weights away from their initial values (identity-like)."""
    with torch.no_grad():
        model.input_normalizer.update(torch.randn(64, model.layers[0].weight.shape[1]) * 2 + 1)
        model.target_normalizer.update(torch.randn(64, model.state_dim) * 0.3 + 0.1)
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


@pytest.mark.parametrize("activation", [nn.ReLU, nn.SiLU, nn.Tanh])  # Tanh: no in-place kind, the batched path
@pytest.mark.parametrize("members, elites", [(1, None), (5, None), (5, 2)])
def test_the_planning_view_steps_as_the_ensemble_does(activation, members, elites):
    """`PlanningEnsemble` (normalisers folded into the weights, elites gathered once): the same
    means, draws and termination probabilities as `ProbabilisticEnsemble.step`, with particles too."""
    torch.manual_seed(0)
    model = trained_like(ProbabilisticEnsemble(3, 2, 1, num_members=members, num_elites=elites, hidden_sizes=(16, 16),
                                               activation=activation))
    if elites:
        model.update_elites(torch.tensor([0.5, 0.1, 0.9, 0.2, 0.7]), momentum=1.0)
    e = model.num_elites
    state, action, context = torch.randn(e, 6, 3), torch.rand(e, 6, 2) * 2 - 1, torch.randn(e, 6, 1)
    with torch.no_grad():
        view = model.planning_view()
        assert view.num_elites == e
        for kwargs in ({"deterministic": True}, {"noise": torch.randn(e, 6, 3)},
                       {"noise": torch.randn(e, 12, 3), "particles": 2}):
            for got, expected in zip(view.step(state, action, context, **kwargs),
                                     model.step(state, action, context, **kwargs)):
                torch.testing.assert_close(got, expected)
        torch.manual_seed(4)
        drawn = view.step(state, action, context)
        torch.manual_seed(4)
        torch.testing.assert_close(drawn[0], model.step(state, action, context)[0])
        with pytest.raises(ValueError, match="noise must have the next state's shape"):
            view.step(state, action, context, noise=torch.randn(6, 3))


def test_a_planning_block_prepares_the_weights_once_and_never_past_its_end(monkeypatch):
    """`Predictor.planning`: one view for all the block's rollouts; outside a block one per rollout;
    with gradients recorded the ensemble itself steps; a block's view does not outlive a weight change."""
    from torchrl_layered.predictors import IdentityEncoder, RewardPredictor

    torch.manual_seed(0)
    predictor = RewardPredictor(IdentityEncoder(3), 2, num_members=2, hidden_sizes=(8,), head_sizes=(8,))
    trained_like(predictor.model)
    views = []
    original = ProbabilisticEnsemble.planning_view
    monkeypatch.setattr(ProbabilisticEnsemble, "planning_view", lambda self: views.append(original(self)) or views[-1])
    state, context = predictor.encode(torch.randn(2, 3))
    actions = torch.rand(2, 4, 3, 2) * 2 - 1
    score = lambda: predictor.returns(state, context, actions, deterministic=True)  # noqa: E731
    with torch.no_grad():
        with predictor.planning():
            first = score()
            assert torch.equal(score(), first) and len(views) == 1
        score(), score()
        assert len(views) == 3
        with predictor.planning():
            score()
            predictor.model.layers[0].bias.add_(1.0)  # learning between plans: a new block, new weights
        with predictor.planning():
            moved = score()
    assert len(views) == 5 and not torch.equal(moved, first)
    with_grad = predictor.returns(state, context, actions, deterministic=True)
    assert len(views) == 5 and with_grad.requires_grad
    torch.testing.assert_close(with_grad.detach(), moved)
