"""Bad data never reaches a model: non-finite values, foreign batches and bad gradient steps.

Every learning level refuses a batch with a NaN reward or an inf observation before any
buffer or counter changes (or drops those rows when built with ``on_nonfinite="drop"``);
a hierarchy refuses batches collected without its transform or by another hierarchy; a
gradient step with a non-finite loss or gradient is skipped and counted, never applied.
"""
from __future__ import annotations

import pytest
import torch
from helpers import LEARNING_KINDS, learning_stack
from tensordict import TensorDict
from torch import nn
from torchrl.objectives import LossModule

from torchrl_layered import Hierarchy, RandomLevel
from torchrl_layered.collectors import make_collector
from torchrl_layered.envs import make_env
from torchrl_layered.levels import PlannerLevel
from torchrl_layered.levels.learning import gradient_steps
from torchrl_layered.levels.validation import InvalidDataError


def depth_of(kind: str) -> int:
    return 1 if kind in ("dads", "splates") else 0


def collect(hierarchy: Hierarchy, env, frames: int = 120, per_batch: int = 60) -> list:
    collector = make_collector(env, hierarchy, frames_per_batch=per_batch, total_frames=frames)
    batches = [batch.clone() for batch in collector]
    collector.shutdown()
    return batches


def stored(levels) -> list[tuple[int, int]]:
    """Per level: transitions counted and rows in its replay buffer."""
    return [(level.n_transitions, len(getattr(level, "replay_buffer", None) or [])) for level in levels]


def corrupt(batch, what: str):
    """``batch`` as an env emitting NaN rewards (or inf observations) in instance 0 from step 3 would give it."""
    bad = batch.clone()
    if what == "nan reward":
        bad["next", "reward"][0, 3:] = float("nan")
        bad["next", "levels", "option_reward"][0, 3:] = float("nan")  # the transform sums the NaN in
    else:
        bad["next", "observation"][0, 3:] = float("inf")
    return bad


@pytest.fixture
def pendulum():
    """A fresh env per test: a collector with auto-registered transforms appends the hierarchy's to it."""
    return make_env("Pendulum-v1", num_envs=2)


@pytest.mark.parametrize("what", ["nan reward", "inf observation"])
@pytest.mark.parametrize("kind", LEARNING_KINDS)
def test_non_finite_data_is_refused_before_anything_is_stored(kind, what, pendulum):
    torch.manual_seed(0)
    levels = learning_stack(kind, depth_of(kind))
    hierarchy = Hierarchy(levels, env=pendulum)
    good, later = collect(hierarchy, pendulum)
    hierarchy.extend(good)
    before = stored(levels)
    params = [p.detach().clone() for p in hierarchy.parameters()]
    with pytest.raises(InvalidDataError, match=r"Level \(level \d\): \d+ of \d+ transitions are bad .*non-finite .*nothing was stored"):
        hierarchy.extend(corrupt(later, what))
    assert stored(levels) == before
    assert all(torch.equal(p, q) for p, q in zip(params, hierarchy.parameters()))


@pytest.mark.parametrize("kind", LEARNING_KINDS)
def test_non_finite_rows_are_dropped_with_a_warning_and_the_level_learns_on(kind, pendulum):
    torch.manual_seed(0)
    levels = learning_stack(kind, depth_of(kind))
    for level in levels:
        level.on_nonfinite = "drop"
    hierarchy = Hierarchy(levels, env=pendulum)
    batches = collect(hierarchy, pendulum, frames=240)
    metrics = {}
    for i, batch in enumerate(batches):
        bad = corrupt(batch, "nan reward" if i % 2 else "inf observation")
        clean = [t.numel() for t in hierarchy.transitions(batch)]
        with pytest.warns(RuntimeWarning, match="dropped them"):
            hierarchy.extend(bad)
        metrics.update(hierarchy.learn())
        assert all(0 < level.n_transitions for level in levels[: depth_of(kind) + 1])
        assert sum(clean) > 0
    level = levels[depth_of(kind)]
    assert level.n_transitions < sum(t.numel() for b in batches for t in hierarchy.transitions(b)[depth_of(kind): depth_of(kind) + 1])
    assert any(name.startswith(f"level{depth_of(kind)}/") for name in metrics), "the level should still learn"
    for name, param in hierarchy.named_parameters():
        assert torch.isfinite(param).all(), name
    buffer = getattr(level, "replay_buffer", None)
    if buffer is not None and len(buffer):
        data = buffer[: len(buffer)]
        for key in ("observation", ("next", "observation"), ("next", "reward")):
            if key in data.keys(True):
                assert torch.isfinite(data[key].float()).all(), key


def test_on_nonfinite_is_checked_at_construction():
    with pytest.raises(ValueError, match="on_nonfinite must be one of"):
        RandomLevel(on_nonfinite="ignore")


# ---------------------------------------------------------------- foreign batches
def test_a_batch_without_the_hierarchys_transform_is_refused_with_the_fix(pendulum):
    hierarchy = Hierarchy([PlannerLevel(warm_up_steps=10, horizon=2, num_samples=8, num_iterations=1)], env=pendulum)
    plain = pendulum.rollout(5, break_when_any_done=False)
    with pytest.raises(InvalidDataError, match=r"no option state .*make_transform\(\).*auto_register_policy_transforms=True"):
        hierarchy.extend(plain)
    assert hierarchy.levels[0].n_transitions == 0


def test_a_batch_of_a_hierarchy_of_another_depth_is_refused(pendulum):
    from helpers import OPTION
    two = Hierarchy([RandomLevel(), RandomLevel(input_spec=OPTION, control_interval=10)], env=pendulum)
    (batch,) = collect(two, pendulum, frames=40, per_batch=40)
    one = Hierarchy([PlannerLevel(warm_up_steps=10, horizon=2, num_samples=8, num_iterations=1)], env=pendulum)
    with pytest.raises(InvalidDataError, match=r"shape \(2, 20, 2\), not \(2, 20, 1\) \(1 levels\): .*another hierarchy"):
        one.extend(batch)
    assert one.levels[0].n_transitions == 0


def test_a_level_holding_data_refuses_a_batch_of_another_env_before_writing(pendulum):
    torch.manual_seed(0)
    level = PlannerLevel(warm_up_steps=10, horizon=2, num_samples=8, num_iterations=1, batch_size=8)
    hierarchy = Hierarchy([level], env=pendulum)
    (batch,) = collect(hierarchy, pendulum, frames=40, per_batch=40)
    hierarchy.extend(batch)
    before = (level.n_transitions, len(level.replay_buffer), level.env_steps)
    other_env = make_env("MountainCarContinuous-v0", num_envs=2)
    (foreign,) = collect(Hierarchy([RandomLevel()], env=other_env), other_env, frames=40, per_batch=40)
    with pytest.raises(InvalidDataError, match=r"PlannerLevel \(level 0\): 'observation' has shape \(40, 2\), but the level's spec needs \(40, 3\)"):
        hierarchy.extend(foreign)
    assert (level.n_transitions, len(level.replay_buffer), level.env_steps) == before


def test_a_wrong_dtype_is_refused(pendulum):
    level = PlannerLevel(warm_up_steps=10, horizon=2, num_samples=8, num_iterations=1)
    hierarchy = Hierarchy([level], env=pendulum)
    (batch,) = collect(hierarchy, pendulum, frames=40, per_batch=40)
    (transitions,) = hierarchy.transitions(batch)
    transitions["observation"] = transitions["observation"].double()
    with pytest.raises(InvalidDataError, match="'observation' has dtype torch.float64, but the level's spec says torch.float32"):
        level.observe(transitions)
    assert level.n_transitions == 0


# ---------------------------------------------------------------- gradient steps
class _Quadratic(LossModule):
    """``loss = (w - target)^2``, with a target the test can make NaN."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(3))

    def forward(self, td):
        return TensorDict({"loss_q": ((self.w - td["target"]) ** 2).sum()}, [])


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_gradient_step_with_a_non_finite_loss_is_skipped_and_counted(bad):
    loss = _Quadratic()
    optimizer = torch.optim.Adam(loss.parameters(), lr=0.1)
    batches = [TensorDict({"target": t}, []) for t in (torch.zeros(3), torch.tensor([0.0, bad, 0.0]), torch.zeros(3))]
    metrics = gradient_steps(loss, optimizer, None, batches, max_grad_norm=10.0)
    assert metrics["skipped_steps"] == 1.0
    assert torch.isfinite(loss.w).all() and (loss.w < 1.0).all()  # the two good steps moved it
    state = optimizer.state[loss.w]
    assert int(state["step"]) == 2 and torch.isfinite(state["exp_avg_sq"]).all()
    assert metrics["loss_q"] > 0 and metrics["grad_norm"] > 0


def test_every_step_skipped_reports_no_loss_but_the_count():
    loss = _Quadratic()
    optimizer = torch.optim.Adam(loss.parameters(), lr=0.1)
    batches = [TensorDict({"target": torch.full((3,), float("nan"))}, []) for _ in range(2)]
    metrics = gradient_steps(loss, optimizer, None, batches, max_grad_norm=10.0)
    assert metrics == {"skipped_steps": 2.0}
    assert torch.equal(loss.w, torch.ones(3)) and not optimizer.state


def test_a_batch_without_terminated_is_refused_rather_than_bootstrapping_wrongly(pendulum):
    hierarchy = Hierarchy([RandomLevel()], env=pendulum)
    (batch,) = collect(hierarchy, pendulum, frames=20, per_batch=20)
    del batch["next", "terminated"]
    with pytest.raises(InvalidDataError, match=r"no \('next', 'terminated'\).*truncated episode could not be told"):
        hierarchy.transitions(batch)
