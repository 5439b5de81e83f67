"""The DADS and SPlaTES intrinsic rewards against a hand computation on a model whose predictions we set."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tensordict import TensorDict

from torchrl_layered.modules.ensemble import ProbabilisticEnsemble
from torchrl_layered.modules.splates import SPlaTESWorldModel
from torchrl_layered.modules.tdmpc2 import TDMPC2WorldModel
from torchrl_layered.objectives.dads import DADSLoss
from torchrl_layered.objectives.skill_rewards import RunningMeanVar, SymmetryBreakingPrior, skill_log_ratio
from torchrl_layered.objectives.splates import SPlaTESLoss
from torchrl_layered.predictors import FixedEncoder, Predictor
from torchrl_layered.objectives.tdmpc2_config import get_default_tdmpc2_config, resolve_tdmpc2_config

TARGET_MEAN = np.array([0.1, -0.2])
TARGET_STD = np.array([2.0, 0.5])


def small_config():
    cfg = get_default_tdmpc2_config()
    cfg.update(model_size=1, enc_dim=16, mlp_dim=16, latent_dim=16, num_q=2)
    return resolve_tdmpc2_config(cfg)


def known_predictor(gain: float = 0.5) -> Predictor:
    """A 1-member ensemble whose normalised mean change is ``gain * skill``; state = obs[:2], context = obs[2:]."""
    model = ProbabilisticEnsemble(2, 2, 2, num_members=1, hidden_sizes=(4,))
    model.target_normalizer.mean.copy_(torch.tensor(TARGET_MEAN, dtype=torch.float32))
    model.target_normalizer.std.copy_(torch.tensor(TARGET_STD, dtype=torch.float32))

    def normalized_forward(x, members=None):  # x = normalised [state, context, skill]
        mean = gain * x[..., 4:6]
        return mean, torch.zeros_like(mean), torch.zeros_like(mean[..., 0])

    model.normalized_forward = normalized_forward
    return Predictor(FixedEncoder([0, 1], [2, 3]), model, reward=lambda s, c, a: s.sum(-1))


def hand_log_q(start, skill, end, std, gain=0.5):
    """log N((end - start - mu_T) / sigma_T ; gain * skill, std) summed over dims, in float64."""
    target = (np.asarray(end, np.float64) - np.asarray(start, np.float64) - TARGET_MEAN) / TARGET_STD
    mean = gain * np.asarray(skill, np.float64)
    return float(np.sum(-0.5 * ((target - mean) / std) ** 2 - math.log(std) - 0.5 * math.log(2 * math.pi)))


def hand_ratio(start, skill, end, prior, std):
    """log q(z) - log((sum_i q(z_i) + q(z)) / (L + 1)), by plain exp/sum (no log-sum-exp)."""
    q = math.exp(hand_log_q(start, skill, end, std))
    others = sum(math.exp(hand_log_q(start, z, end, std)) for z in prior)
    return math.log(q) - math.log((others + q) / (len(prior) + 1))


PRIOR = torch.tensor([[0.9, -0.3], [-0.5, 0.5], [0.1, 0.8]])
STARTS = torch.tensor([[1.0, 2.0, 5.0, 5.0], [0.5, 0.5, 1.0, 4.0], [3.0, 1.0, 2.0, 2.0]])
SKILLS = torch.tensor([[0.5, -0.5], [-1.0, 0.2], [0.0, 0.9]])
ENDS = torch.tensor([[2.1, 1.8, 5.0, 5.0], [0.0, 0.6, 1.0, 4.0], [3.2, 1.3, 2.0, 2.0]])


def test_normalised_log_prob_uses_the_fixed_std_in_the_target_space():
    predictor = known_predictor()
    state, context = predictor.encode(STARTS)
    end, _ = predictor.encode(ENDS)
    got = predictor.model.log_prob(state, SKILLS, end, context, std=0.7, normalized=True)
    expected = [hand_log_q(s[:2], z, e[:2], 0.7) for s, z, e in zip(STARTS.numpy(), SKILLS.numpy(), ENDS.numpy())]
    assert np.allclose(got.numpy(), expected, atol=1e-4)


@pytest.mark.parametrize("normalized", [True, False])
@pytest.mark.parametrize("symmetry_weight", [0.0, 0.5])
def test_several_outcomes_per_row_score_as_one_call_each(normalized, symmetry_weight):
    """Targets ``[K, N, d]`` give what K separate calls give (the members run once for all K)."""
    torch.manual_seed(0)
    model = ProbabilisticEnsemble(2, 2, 2, num_members=3, hidden_sizes=(16,))
    model.input_normalizer.update(torch.randn(64, 6))
    model.target_normalizer.update(torch.randn(64, 2) * 2)
    predictor = Predictor(FixedEncoder([0, 1], [2, 3]), model, reward=lambda s, c, a: s.sum(-1))
    state, context = predictor.encode(STARTS)
    ends = torch.stack([predictor.encode(ENDS)[0], predictor.encode(STARTS + 0.3)[0]])
    with torch.no_grad():
        together = model.log_prob(state, SKILLS, ends, context, std=0.7, normalized=normalized)
        apart = torch.stack([model.log_prob(state, SKILLS, e, context, std=0.7, normalized=normalized) for e in ends])
    assert together.shape == (2, 3)
    torch.testing.assert_close(together, apart)
    prior = SymmetryBreakingPrior(2, 2, duration=20)
    prior.step.fill_(15 if symmetry_weight else 20)  # weight (20 - step) / 10
    assert prior.weight() == pytest.approx(symmetry_weight)
    args = dict(fixed_std=0.7, clip_low=-5.0, clip_high=5.0, symmetry_breaking=prior)
    ratios = skill_log_ratio(predictor, state, context, SKILLS, ends, PRIOR, **args)
    torch.testing.assert_close(ratios, torch.stack([skill_log_ratio(predictor, state, context, SKILLS, e, PRIOR, **args)
                                                    for e in ends]))


@pytest.mark.parametrize("bad", [(3, 3), (2, 4, 2), (2,)], ids=["wrong-width", "wrong-rows", "too-few-dims"])
def test_outcomes_of_another_shape_than_the_states_are_refused(bad):
    predictor = known_predictor()
    state, context = predictor.encode(STARTS)
    outcome = torch.zeros(bad)
    with pytest.raises(ValueError, match=r"ProbabilisticEnsemble.log_prob: the outcomes must have the states' shape \(3, 2\)"):
        predictor.model.log_prob(state, SKILLS, outcome, context, std=0.7, normalized=True)
    with pytest.raises(ValueError, match=r"skill_log_ratio: the outcomes must have the states' shape \(3, 2\)"):
        skill_log_ratio(predictor, state, context, SKILLS, outcome, PRIOR, fixed_std=0.7, clip_low=-5.0, clip_high=5.0)


def test_dads_reward_matches_a_hand_computation():
    predictor = known_predictor()
    loss = DADSLoss(TDMPC2WorldModel(4, 2, small_config(), goal_dim=2), predictor, small_config(), fixed_std=0.8)
    got = loss.intrinsic_reward(STARTS, SKILLS, ENDS, prior_skills=PRIOR)
    expected = [hand_ratio(s[:2], z, e[:2], PRIOR.numpy(), 0.8)
                for s, z, e in zip(STARTS.numpy(), SKILLS.numpy(), ENDS.numpy())]
    assert np.allclose(got.numpy(), expected, atol=1e-4)
    # the skill that explains the move best earns more than one that does not
    assert float(loss.intrinsic_reward(STARTS[:1], SKILLS[:1], ENDS[:1], PRIOR)) > float(
        loss.intrinsic_reward(STARTS[:1], -SKILLS[:1], ENDS[:1], PRIOR))


def test_reward_is_clipped_and_non_finite_values_map_to_the_clip_values():
    predictor = known_predictor()
    state, context = predictor.encode(STARTS)
    far, _ = predictor.encode(ENDS + 100.0)
    # the skill's own density underflows to -inf far away while the prior's logsumexp stays finite
    clipped = skill_log_ratio(predictor, state, context, SKILLS, far, PRIOR, fixed_std=0.05, clip_low=-3.0, clip_high=2.0)
    assert bool(((clipped >= -3.0) & (clipped <= 2.0)).all())
    nan_model = known_predictor()
    nan_model.model.normalized_forward = lambda x, members=None: (torch.full_like(x[..., :2], float("nan")),) * 2 + (
        torch.zeros_like(x[..., 0]),)
    nan_reward = skill_log_ratio(nan_model, state, context, SKILLS, far, PRIOR, fixed_std=0.5, clip_low=-3.0, clip_high=2.0)
    assert torch.equal(nan_reward, torch.full((3,), -3.0))


def test_dads_loss_normalises_the_recomputed_reward_and_adds_the_offset():
    torch.manual_seed(0)
    cfg = small_config()
    loss = DADSLoss(TDMPC2WorldModel(4, 2, cfg, goal_dim=2), known_predictor(), cfg, fixed_std=0.8, reward_offset=1.0,
                    n_skill_samples=5)
    b, t = 8, 3
    obs = torch.rand(b, t, 4) * 3
    batch = TensorDict({
        "observation": obs, "action": torch.rand(b, t, 2) * 2 - 1, "goal": torch.rand(b, t, 2) * 2 - 1,
        "next": {"observation": obs + 0.3 * torch.randn(b, t, 4), "reward": torch.zeros(b, t, 1),
                 "terminated": torch.zeros(b, t, 1, dtype=torch.bool)},
    }, batch_size=[b, t])
    out = loss(batch)
    assert all(torch.isfinite(out[k]) for k in out.keys() if k.startswith("loss_"))
    # the first batch initialises the running statistics: normalised rewards then have mean 0 (+ offset 1)
    assert bool(loss.reward_norm.initialized)
    # a second normaliser fed the same raw rewards reproduces the mean the loss saw
    assert torch.isfinite(out["intrinsic_reward"])
    norm = RunningMeanVar(0.005)
    raw = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert torch.allclose(norm(raw), (raw - 2.5) / raw.var().add(1e-5).sqrt())
    norm(raw + 10.0)
    assert math.isclose(float(norm.mean), 2.5 + 0.005 * 10.0, rel_tol=1e-5)


@pytest.mark.parametrize("dense", [False, True])
def test_splates_reward_matches_a_hand_computation(dense):
    ci = 4
    predictor = known_predictor()
    cfg = small_config()
    wm = SPlaTESWorldModel(4, 2, cfg, skill_dim=2, start_dim=2)
    loss = SPlaTESLoss(wm, predictor, cfg, control_interval=ci, fixed_std=0.5, potential_diff_reward=dense)
    step = torch.tensor([[ci - 1], [1], [ci - 1]])
    obs = STARTS + 0.4  # o_t, somewhere along the skill
    got = loss.intrinsic_reward(STARTS, SKILLS, step, obs, ENDS, prior_skills=PRIOR)
    prior = PRIOR.numpy()
    expected = []
    for s, z, k, o, e in zip(STARTS.numpy(), SKILLS.numpy(), step[:, 0].tolist(), obs.numpy(), ENDS.numpy()):
        phi_end = hand_ratio(s[:2], z, e[:2], prior, 0.5)
        if dense:
            expected.append(phi_end - hand_ratio(s[:2], z, o[:2], prior, 0.5))
        else:
            expected.append(phi_end if k == ci - 1 else 0.0)
    assert np.allclose(got.numpy(), expected, atol=1e-4)
    if not dense:
        assert float(got[1]) == 0.0


def test_splates_reward_is_measured_from_the_skill_start_not_the_previous_step():
    predictor = known_predictor()
    cfg = small_config()
    loss = SPlaTESLoss(SPlaTESWorldModel(4, 2, cfg, 2, 2), predictor, cfg, control_interval=3, fixed_std=0.5)
    step = torch.full((3, 1), 2)
    a = loss.intrinsic_reward(STARTS, SKILLS, step, ENDS - 0.1, ENDS, PRIOR)
    b = loss.intrinsic_reward(STARTS, SKILLS, step, STARTS, ENDS, PRIOR)
    assert torch.equal(a, b)  # o_t does not enter the sparse reward
    moved = loss.intrinsic_reward(STARTS + 0.5, SKILLS, step, STARTS, ENDS, PRIOR)
    assert not torch.allclose(a, moved)


def test_splates_loss_bootstraps_from_v_avg_exactly_at_skill_boundaries():
    torch.manual_seed(0)
    cfg = small_config()
    wm = SPlaTESWorldModel(4, 2, cfg, 2, 2)
    loss = SPlaTESLoss(wm, known_predictor(), cfg, control_interval=3, fixed_std=0.5, n_skill_samples=4)
    with torch.no_grad():  # V_avg says 5 everywhere, the Qs say 0
        wm.avg_value[-1].bias.copy_(torch.log(wm.two_hot.encode(torch.tensor([5.0])) + 1e-9))
    b, t = 6, 3
    obs = torch.rand(b, t, 4) * 3
    batch = TensorDict({
        "observation": obs, "action": torch.zeros(b, t, 2), "skill": torch.zeros(b, t, 2),
        "skill_start": obs[:, :1].expand(b, t, 4), "skill_step": torch.arange(t).expand(b, t)[..., None],
        "next": {"observation": obs + 0.1, "reward": torch.zeros(b, t, 1),
                 "terminated": torch.zeros(b, t, 1, dtype=torch.bool)},
    }, batch_size=[b, t])
    seen = {}
    original = loss.bootstrap_value

    def spy(td, next_z, next_zg):
        seen["value"] = original(td, next_z, next_zg)
        seen["boundary"] = td.get(("next", "skill_boundary"))
        return seen["value"]

    loss.bootstrap_value = spy
    out = loss(batch)
    boundary = seen["boundary"].squeeze(-1)  # time-major [T, B]: only the last step (k = 2) ends the skill
    assert bool(boundary[-1].all()) and not bool(boundary[:-1].any())
    assert torch.allclose(seen["value"][-1], torch.full_like(seen["value"][-1], 5.0), atol=0.05)
    assert torch.allclose(seen["value"][:-1], torch.zeros_like(seen["value"][:-1]), atol=0.05)
    assert {"loss_avg_value", "loss_converter", "loss_value"} <= set(out.keys())
