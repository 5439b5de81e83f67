"""n-step targets and the `RewardPredictorLoss` learning reward and value."""
from __future__ import annotations

import torch
from tensordict import TensorDict
from torchrl.objectives import SoftUpdate

from torchrl_layered.predictors.encoders import IdentityEncoder
from torchrl_layered.predictors.predictor import RewardPredictor
from torchrl_layered.objectives.predictor import RewardPredictorLoss, n_step_targets


def reference_targets(r, v, term, done, gamma, n):
    """Plain loops: the hand computation the vectorised version must match."""
    out = []
    for t in range(len(r)):
        total, disc, e = 0.0, 1.0, t
        for j in range(n):
            if t + j >= len(r):
                break
            total += disc * r[t + j]
            disc *= gamma
            e = t + j
            if done[t + j]:
                break
        out.append(total + disc * (0.0 if term[e] else v[e]))
    return out


def test_n_step_targets_match_hand_computation_with_terminations_and_truncations():
    r = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    v = [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0]
    term = [False, False, True, False, False, False, False, False]   # terminates after step 2
    trunc = [False, False, False, False, False, True, False, False]  # truncated after step 5
    done = [a or b for a, b in zip(term, trunc)]
    for n in (1, 2, 3, 5):
        got = n_step_targets(torch.tensor([r]), torch.tensor([v]), torch.tensor([term]), torch.tensor([done]), 0.9, n)
        want = reference_targets(r, v, term, done, 0.9, n)
        assert torch.allclose(got[0], torch.tensor(want)), (n, got, want)
    # spot-check by hand: n=3 from t=0 stops at the termination at t=2, no bootstrap
    assert abs(float(n_step_targets(torch.tensor([r]), torch.tensor([v]), torch.tensor([term]),
                                    torch.tensor([done]), 0.9, 3)[0, 0]) - (1 + 0.9 * 2 + 0.81 * 3)) < 1e-5
    # n=2 from t=4 ends at the truncation at t=5 and bootstraps from V(s'_5)=60
    assert abs(float(n_step_targets(torch.tensor([r]), torch.tensor([v]), torch.tensor([term]),
                                    torch.tensor([done]), 0.9, 2)[0, 4]) - (5 + 0.9 * 6 + 0.81 * 60)) < 1e-4


def context_batch(n, t=None):
    """The synthetic context task: reward = sign of the last observation entry (constant context)."""
    shape = (n,) if t is None else (n, t)
    obs = torch.randn(*shape, 3)
    obs[..., 2] = torch.sign(torch.randn(n, *([1] if t else []))).expand(shape)
    action = torch.randn(*shape, 1)
    next_obs = obs.clone()
    next_obs[..., :2] = obs[..., :2] + 0.1 * action
    reward = obs[..., 2:3].clone()
    flags = torch.zeros(*shape, 1, dtype=torch.bool)
    return TensorDict({"observation": obs, "action": action,
                       "next": {"observation": next_obs, "reward": reward, "terminated": flags, "done": flags.clone()}},
                      batch_size=shape)


def test_reward_and_value_heads_learn_the_sign_of_the_context():
    torch.manual_seed(0)
    predictor = RewardPredictor(IdentityEncoder(3), 1, num_members=2, hidden_sizes=(32, 32), head_sizes=(32, 32))
    loss_fn = RewardPredictorLoss(predictor, gamma=0.9, n_steps=2)
    updater = SoftUpdate(loss_fn, tau=0.05)
    optim = torch.optim.Adam(loss_fn.parameters(), lr=3e-3)
    for i in range(500):
        out = loss_fn(context_batch(64, 4) if i % 2 else context_batch(256))
        total = sum(v for k, v in out.items() if k.startswith("loss_"))
        optim.zero_grad()
        total.backward()
        optim.step()
        updater.step()
    test = context_batch(500)
    s, c = predictor.encode(test["observation"])
    with torch.no_grad():
        reward = predictor.reward(s, c, test["action"])
        value = predictor.value(s, c)
    sign = test["observation"][:, 2]
    assert torch.corrcoef(torch.stack([reward, sign]))[0, 1] > 0.9
    assert torch.corrcoef(torch.stack([value, sign]))[0, 1] > 0.9
    # a constant reward of +-1 forever is worth +-1/(1-0.9) = +-10
    assert float((value * sign).mean()) > 5.0
