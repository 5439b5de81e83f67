"""The TD-MPC2 Q-ensemble computes only the members asked for, and the estimates use two of them."""
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
