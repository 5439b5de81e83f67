"""The SPlaTES world model's heads: the conditioning embedded (default) or as the reference's read it."""
import torch

from torchrl_layered.modules.splates import SPlaTESWorldModel
from torchrl_layered.objectives.tdmpc2_config import cpu_tdmpc2_config, resolve_tdmpc2_config


def make_model(obs_dim=6, action_dim=2, skill_dim=3, start_dim=4, raw_conditioning=True) -> SPlaTESWorldModel:
    torch.manual_seed(0)
    cfg = resolve_tdmpc2_config(cpu_tdmpc2_config(), obs_dim=obs_dim, action_dim=action_dim)
    model = SPlaTESWorldModel(obs_dim, action_dim, cfg, skill_dim, start_dim, raw_conditioning=raw_conditioning)
    with torch.no_grad():  # untrained reward and Q heads are zero: give every head an output
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def test_the_heads_read_the_conditioning_unembedded_beside_the_latent():
    model = make_model()
    latent, action = model.latent_dim, model.action_dim
    assert model.goal_encoder is None
    # [z, a, k/CI, s_start, skill], [z, k/CI, s_start, skill], [z, a, s_start, skill]
    assert model.qs.layer1.weight.shape[1] == latent + action + 1 + 4 + 3
    assert model.policy[0][0].in_features == latent + 1 + 4 + 3
    assert model.reward[0][0].in_features == latent + action + 4 + 3
    goal = model.conditioning(torch.full((5, 1), 0.3), torch.randn(5, 4), torch.rand(5, 3))
    assert torch.equal(model.encode_goal(goal), goal)


def test_the_reward_ignores_the_time_in_the_skill_and_q_and_policy_do_not():
    model = make_model()
    z, a = torch.randn(5, model.latent_dim), torch.rand(5, model.action_dim) * 2 - 1
    start, skill = torch.randn(5, 4), torch.rand(5, 3)
    early = model.conditioning(torch.full((5, 1), 0.1), start, skill)
    late = model.conditioning(torch.full((5, 1), 0.8), start, skill)
    with torch.no_grad():
        torch.testing.assert_close(model.reward_logits(z, a, early), model.reward_logits(z, a, late))
        assert not torch.allclose(model.q_logits(z, a, early), model.q_logits(z, a, late))
        assert not torch.allclose(model.pi(z, early, deterministic=True)[0], model.pi(z, late, deterministic=True)[0])
        # and the reward does depend on the skill
        other = model.conditioning(torch.full((5, 1), 0.1), start, 1 - skill)
        assert not torch.allclose(model.reward_logits(z, a, early), model.reward_logits(z, a, other))


def test_by_default_every_head_reads_the_embedded_conditioning():
    model = make_model(raw_conditioning=False)
    latent, action = model.latent_dim, model.action_dim
    assert model.goal_encoder is not None
    assert model.qs.layer1.weight.shape[1] == latent + action + latent
    assert model.policy[0][0].in_features == 2 * latent
    assert model.reward[0][0].in_features == 2 * latent + action
    goal = model.conditioning(torch.full((5, 1), 0.3), torch.randn(5, 4), torch.rand(5, 3))
    assert model.encode_goal(goal).shape == (5, latent)
