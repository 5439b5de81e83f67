"""The TD-MPC2 Q-ensemble computes only the members asked for, and the estimates use two of them."""
import pytest
import torch

from torchrl_layered.modules.tdmpc2 import QEnsemble, TDMPC2WorldModel
from torchrl_layered.objectives.tdmpc2_config import cpu_tdmpc2_config, resolve_tdmpc2_config


def test_members_give_the_logits_of_those_members_only():
    torch.manual_seed(0)
    qs = QEnsemble(5, 6, 16, 11, dropout=0.0)
    with torch.no_grad():
        qs.out.weight.normal_()  # the official init zeroes the output: make members differ
        qs.norm_weight.normal_()
    x = torch.randn(3, 4, 6)
    members = torch.tensor([3, 1])
    torch.testing.assert_close(qs(x, members), qs(x)[members])
    assert qs(x, members).shape == (2, 3, 4, 11)


def test_avg_q_is_the_mean_of_two_distinct_members(monkeypatch):
    torch.manual_seed(0)
    cfg = resolve_tdmpc2_config(cpu_tdmpc2_config(), obs_dim=4, action_dim=2)
    wm = TDMPC2WorldModel(4, 2, cfg).eval()
    with torch.no_grad():
        wm.qs.out.weight.normal_(std=0.1)
    z, a = torch.randn(7, wm.latent_dim), torch.rand(7, 2) * 2 - 1
    pair = wm.qs.random_pair()
    assert pair.shape == (2,) and pair[0] != pair[1] and (pair < wm.qs.num_q).all()
    seen = []
    original = wm.q_logits

    def recording(*args, **kwargs):
        seen.append(args[3] if len(args) > 3 else kwargs.get("members"))
        return original(*args, **kwargs)

    monkeypatch.setattr(wm, "q_logits", recording)
    got = wm.avg_q(z, a)
    chosen = seen[0]
    assert chosen is not None and chosen.shape == (2,)
    expected = wm.two_hot.decode(original(z, a)[chosen]).mean(0)
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("action_dim", [1, 2])  # one action dim is added as an outer product
def test_broadcast_parts_go_through_the_first_layer_once_with_the_same_result(action_dim):
    torch.manual_seed(0)
    cfg = resolve_tdmpc2_config(cpu_tdmpc2_config(episodic=True))
    wm = TDMPC2WorldModel(4, action_dim, cfg, goal_dim=3).eval()
    with torch.no_grad():
        for p in wm.parameters():
            p.normal_(std=0.2)  # the official init zeroes some heads: make every output depend on its inputs
    b, n = 3, 5
    z = torch.randn(b, 1, wm.latent_dim).expand(b, n, -1)  # the latent every candidate starts from
    zg = torch.randn(b, 1, wm.latent_dim).expand(b, n, -1)
    a = torch.rand(b, n, action_dim) * 2 - 1
    dense = dict(z=z.contiguous(), zg=zg.contiguous())
    with torch.no_grad():
        torch.testing.assert_close(wm.next(z, a), wm.next(dense["z"], a))
        torch.testing.assert_close(wm.reward_logits(z, a, zg), wm.reward_logits(dense["z"], a, dense["zg"]))
        torch.testing.assert_close(wm.termination_logit(z, a), wm.termination_logit(dense["z"], a))
        mean = wm.pi(z, zg, deterministic=True)[0]
        torch.testing.assert_close(mean, wm.pi(dense["z"], dense["zg"], deterministic=True)[0])
        assert mean.shape == (b, n, action_dim)
        sampled, _ = wm.pi(z, zg)  # every row draws its own noise, though they share the net's output
        assert sampled.shape == (b, n, action_dim) and (sampled.std(1) > 0).all()


def test_mlp_on_a_net_without_hidden_layers_and_a_feature_broadcast_part():
    from torchrl_layered.modules.tdmpc2 import mlp, mlp_on

    torch.manual_seed(0)
    net = mlp(6, [], 3)  # a single plain linear layer: no normed first block to split
    z = torch.randn(2, 1, 4).expand(2, 5, 4)
    a = torch.randn(2, 5, 2)
    flag = torch.ones(1).expand(2, 5, 4)  # broadcast in every dim, the features included
    with torch.no_grad():
        torch.testing.assert_close(mlp_on(net, z, a), net(torch.cat([z, a], -1)))
        deep = mlp(10, [8], 3)
        torch.testing.assert_close(mlp_on(deep, flag, a, z[..., :4]), deep(torch.cat([flag, a, z[..., :4]], -1)))


@pytest.mark.parametrize("members", [None, [3, 1]])
def test_member_by_member_forward_matches_the_batched_layers_with_the_same_dropout(monkeypatch, members):
    """On a CPU the members run one after the other; the logits, the dropout's masks (the same
    draw, split by member) and the gradients are those of the batched layers."""
    torch.manual_seed(0)
    qs = QEnsemble(5, 13, 32, 11, dropout=0.05).double()  # the paths' kernels round differently in float32
    with torch.no_grad():
        for param in (qs.out.weight, qs.norm_weight, qs.norm_bias):
            param.normal_()
    x = torch.randn(4, 7, 13, dtype=torch.float64, requires_grad=True)
    members = None if members is None else torch.tensor(members)
    results = {}
    for training in (False, True):
        qs.train(training)
        for member_major in (True, False):
            monkeypatch.setattr(QEnsemble, "_member_major", staticmethod(lambda _, flag=member_major: flag))
            torch.manual_seed(1)
            logits = qs(x, members)
            results[training, member_major] = logits, torch.autograd.grad(logits.square().sum(), [x, *qs.parameters()])
        (by_member, grads_by_member), (batched, grads_batched) = results[training, True], results[training, False]
        torch.testing.assert_close(by_member, batched)
        for a, b in zip(grads_by_member, grads_batched):
            torch.testing.assert_close(a, b)
    assert not torch.equal(results[True, True][0], results[False, True][0])  # training dropped entries
    monkeypatch.undo()
    assert QEnsemble._member_major(x)  # eager on the CPU: the member-by-member path
