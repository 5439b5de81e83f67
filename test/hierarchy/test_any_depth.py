"""Every learning level at the top, middle and bottom of a 3-level hierarchy acts, stores and learns.

The claim "any level at any depth" as a matrix: each learning level sits at each depth its
contract allows (skill levels need a planner directly above them, so never at the top),
collects a few hundred frames with a TorchRL `Collector`, learns from its own semi-MDP
transitions, and ends with finite parameters. Below a parent the level input must reach
what the level learns: its stored transitions carry it.
"""
from __future__ import annotations

import pytest
import torch
from torchrl.collectors import Collector
from torchrl.data import Bounded

from helpers import OPTION, learning_stack
from torchrl_layered import Hierarchy
from torchrl_layered.collectors import make_collector
from torchrl_layered.envs import make_env
from torchrl_layered.levels import PlannerLevel, RandomLevel

CASES = [(kind, depth) for kind in ("planner", "tdmpc2", "sac") for depth in (0, 1, 2)]
CASES += [(kind, depth) for kind in ("dads", "splates") for depth in (1, 2)]


@pytest.mark.parametrize("kind,depth", CASES, ids=[f"{k}-depth{d}" for k, d in CASES])
def test_every_learning_level_learns_at_every_depth(kind, depth):
    torch.manual_seed(0)
    env = make_env("Pendulum-v1", num_envs=2)
    env.set_seed(0)
    levels = learning_stack(kind, depth)
    hierarchy = Hierarchy(levels, env=env)
    collector = make_collector(env, hierarchy, frames_per_batch=100, total_frames=300)
    learned: dict[str, float] = {}
    stored = 0
    for batch in collector:
        transitions = hierarchy.extend(batch)
        stored += transitions[depth].numel()
        if depth:  # the parent's option reaches the level's transitions
            assert transitions[depth]["level_input"].shape[-1] == levels[depth].get_input_spec().shape[-1]
        learned.update({k: v for k, v in hierarchy.learn().items() if k.startswith(f"level{depth}/")})
    collector.shutdown()
    level = levels[depth]
    assert stored > 0 and level.n_transitions == stored
    assert learned, f"{kind} at depth {depth} took no gradient step"
    assert all(torch.isfinite(torch.as_tensor(v)).all() for v in learned.values()), learned
    for name, param in level.named_parameters():
        assert torch.isfinite(param).all(), f"{kind} at depth {depth}: {name} is not finite"


def test_a_planner_below_a_parent_plans_for_its_level_input():
    """Two level inputs that reward opposite actions lead the same planner to opposite plans."""
    from torchrl_layered.predictors.encoders import IdentityEncoder
    from torchrl_layered.predictors.predictor import KnownModel, Predictor

    def reward(state, context, action):  # context = [level input]: reward the action that matches it
        return -(action[..., 0] - context[..., 0]) ** 2

    predictor = Predictor(IdentityEncoder(1), KnownModel(lambda s, a, c: s), reward, input_dim=1)
    level = PlannerLevel(predictor, learn_predictor=False, horizon=2, num_samples=64, num_iterations=3,
                         input_spec=Bounded(-1.0, 1.0, (1,)))
    Hierarchy([RandomLevel(), level], observation_spec=Bounded(-1.0, 1.0, (1,)),
              action_spec=Bounded(-1.0, 1.0, (1,)))
    level.eval()
    from tensordict import TensorDict
    td = TensorDict({"observation": torch.zeros(2, 1), "level_input": torch.tensor([[-0.8], [0.8]]),
                     "steps": torch.ones(2, 1, dtype=torch.long), "state": level.get_state_spec().zero((2,))}, [2])
    action = level.get_action(td)
    assert action[0, 0] < -0.5 and action[1, 0] > 0.5


def test_a_predictor_built_without_the_level_input_is_refused_below_a_parent():
    env = make_env("Pendulum-v1", num_envs=1)
    two_args = lambda obs_spec, act_spec: None  # noqa: E731 - a factory that cannot take input_dim
    with pytest.raises(TypeError, match="takes no input_dim"):
        Hierarchy([RandomLevel(), PlannerLevel(predictor_factory=two_args, input_spec=OPTION)], env=env)
