"""`DADSLevel`: parent checks, skill spec and hand-back, learning below a planner with rewards recomputed per batch."""
from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from torchrl.data import Bounded

from torchrl_layered import Hierarchy
from torchrl_layered.collectors import make_collector
from torchrl_layered.envs import make_env
from torchrl_layered.levels import PlannerLevel, RandomLevel
from torchrl_layered.levels.dads import DADSLevel
from torchrl_layered.hierarchies.skills import cpu_tdmpc2_config, planner_over_dads
from torchrl_layered.predictors import get_default_predictor_factory


def tiny_config(**kw):
    cfg = cpu_tdmpc2_config(enc_dim=16, mlp_dim=16, latent_dim=16, batch_size=4, num_samples=16, num_elites=4,
                            num_pi_trajs=2, num_iterations=2)
    cfg.update(kw)
    return cfg


def test_a_parent_without_a_predictor_is_refused():
    env = make_env("Maze2D-Open-v0", 1)
    with pytest.raises(TypeError, match=r"DADSLevel needs a parent with a predictor \(e\.g\. PlannerLevel\); got NoneType"):
        Hierarchy([DADSLevel(2, tiny_config())], env=env)
    with pytest.raises(TypeError, match=r"DADSLevel needs a parent with a predictor \(e\.g\. PlannerLevel\); got RandomLevel"):
        Hierarchy([RandomLevel(), DADSLevel(2, tiny_config())], env=env)


def test_skill_spec_and_random_hand_back():
    level = DADSLevel(3, tiny_config(), control_interval=None, termination_probability=0.25)
    spec = level.get_input_spec()
    assert isinstance(spec, Bounded) and spec.shape == (3,) and float(spec.space.low.min()) == -1.0
    torch.manual_seed(0)
    done = level.is_done(TensorDict({"steps": torch.ones(4000, 1, dtype=torch.long)}, [4000]))
    assert abs(float(done.float().mean()) - 0.25) < 0.03
    every_step = DADSLevel(2, tiny_config())  # control_interval 1 by default
    assert bool(every_step.is_done(TensorDict({"steps": torch.ones(5, 1, dtype=torch.long)}, [5])).all())
    with pytest.raises(ValueError, match="termination_probability"):
        DADSLevel(2, tiny_config(), termination_probability=1.5)


@pytest.mark.parametrize("update_dtype", ["float32", "bfloat16"])
def test_dads_below_a_planner_learns_with_the_reward_recomputed_from_the_parent_model(update_dtype):
    torch.manual_seed(0)
    env = make_env("Maze2D-Open-v0", 2, max_episode_steps=25)
    factory = get_default_predictor_factory(env, num_members=1, hidden_sizes=(16,), head_sizes=(16,))
    top = PlannerLevel(predictor_factory=factory, planner="cem", horizon=3, num_samples=16, num_iterations=2,
                       num_elites=4, warm_up_steps=20, batch_size=16)
    skill = DADSLevel(2, tiny_config(update_dtype=update_dtype), control_interval=2, warm_up_steps=20,
                      n_skill_samples=8, symmetry_breaking_steps=60)
    hierarchy = Hierarchy([top, skill], env=env)
    collector = make_collector(env, hierarchy, frames_per_batch=50, total_frames=150)
    seen = []  # the dtype of the skill dynamics' first layer wherever gradients are on: the skill level's updates
    skill.world_model.dynamics[0][0].register_forward_hook(
        lambda module, args, out: seen.append(out.dtype) if torch.is_grad_enabled() else None)
    for batch in collector:
        hierarchy.extend(batch)
        metrics = hierarchy.learn()
    collector.shutdown()
    assert skill.num_gradient_updates > 0 and top.num_gradient_updates > 0
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
    assert set(seen) == {getattr(torch, update_dtype)}
    assert all(p.dtype == torch.float32 for p in skill.world_model.parameters())
    assert skill.loss.predictor is top.predictor
    assert not any("predictor" in k for k in skill.state_dict())
    # the stored reward is the env's; the loss recomputes the skill reward from the parent's current model
    sample = skill.sample()
    first = skill.loss.intrinsic_reward(sample["observation"], sample["goal"], sample["next", "observation"],
                                        prior_skills=torch.zeros(4, 2))
    with torch.no_grad():
        for p in top.predictor.model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    second = skill.loss.intrinsic_reward(sample["observation"], sample["goal"], sample["next", "observation"],
                                         prior_skills=torch.zeros(4, 2))
    assert not torch.allclose(first, second)


def test_planner_over_dads_builds_the_reference_settings():
    env = make_env("Maze2D-Medium-v0", 2)
    hierarchy = planner_over_dads(env)
    top, skill = hierarchy.levels
    assert isinstance(skill, DADSLevel) and skill.control_interval == 1 and skill.skill_dim == 2
    assert top.planner.horizon == 10 and type(top.planner).__name__ == "CEMPlanner"
