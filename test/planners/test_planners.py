"""Tests of the sampling planners (`torchrl_layered/planners/`): CEM, iCEM, MPPI and coloured noise."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torchrl.data import Bounded, Categorical, Unbounded

from torchrl_layered.planners import CEMPlanner, ICEMPlanner, MPPIPlanner, colored_noise

PLANNERS = {
    "cem": (CEMPlanner, {}),
    "icem": (ICEMPlanner, {}),
    # MPPI's weights depend on the objective's scale; 1.0 suits these unit-scale quadratics.
    "mppi": (MPPIPlanner, {"temperature": 1.0, "initial_std": 1.0}),
}


def make(name: str, spec, horizon: int, num_samples: int, num_iterations: int, num_elites: int, **kwargs):
    cls, defaults = PLANNERS[name]
    return cls(spec, horizon, num_samples, num_iterations, num_elites, **{**defaults, **kwargs})


def quadratic(target: torch.Tensor):
    """Objective ``-||a - target||^2`` per candidate, for ``target`` ``[B, H, A]``."""
    return lambda actions: -(actions - target.unsqueeze(1)).pow(2).sum((-2, -1))


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------ optimisation
@pytest.mark.parametrize("name", sorted(PLANNERS))
def test_planner_finds_the_optimum_of_each_instance_at_once(name):
    spec = Bounded(-1.0, 1.0, shape=(2,))
    targets = torch.tensor([[0.3, -0.5], [0.7, 0.1], [-0.8, 0.6]])
    target = targets.unsqueeze(1) + 0.1 * torch.linspace(-1, 1, 6).view(1, 6, 1)  # [3, 6, 2]
    planner = make(name, spec, 6, 256, 10, 32)
    result = planner(quadratic(target), batch_size=3, generator=seeded(0))
    assert result.action.shape == result.mean.shape == result.std.shape == (3, 6, 2)
    assert result.value.shape == (3,)
    # Targets of different instances lie >= 0.4 apart: a shared plan could not pass.
    assert (result.action - target).abs().max() < 0.1


@pytest.mark.parametrize("name", sorted(PLANNERS))
def test_optimum_outside_the_bounds_ends_at_the_bound(name):
    spec = Bounded(torch.tensor([-1.0, 0.0]), torch.tensor([1.0, 2.0]), shape=(2,))
    # Dimension 0 wants 1.5 (above 1), dimension 1 wants -0.7 (below 0).
    target = torch.tensor([1.5, -0.7]).expand(2, 4, 2)
    planner = make(name, spec, 4, 128, 12, 16)
    result = planner(quadratic(target), batch_size=2, generator=seeded(1))
    assert torch.allclose(result.action[..., 0], torch.ones(2, 4), atol=0.05)
    assert torch.allclose(result.action[..., 1], torch.zeros(2, 4), atol=0.05)
    assert (result.action >= spec.space.low).all() and (result.action <= spec.space.high).all()


@pytest.mark.parametrize("name", sorted(PLANNERS))
def test_samples_are_clipped_to_the_bounds(name):
    spec = Bounded(-0.5, 0.25, shape=(3,))
    seen = []
    planner = make(name, spec, 5, 64, 3, 8, initial_std=3.0)
    planner(lambda a: seen.append(a) or a.sum((-2, -1)), batch_size=2, generator=seeded(2))
    actions = torch.cat(seen, dim=1)
    assert actions.min() >= -0.5 and actions.max() <= 0.25
    # A wide std drives many samples onto the bounds: clipping, not rejection.
    assert (actions == 0.25).any() and (actions == -0.5).any()


def rugged(actions: torch.Tensor) -> torch.Tensor:
    """Track a ramp of positions (position = summed actions) in a landscape of local optima.

    Reaching the far end of the ramp needs actions held for many steps; the cosine term adds
    a local optimum every 1.5 units of position error.
    """
    position = actions.squeeze(-1).cumsum(-1)
    error = position - torch.linspace(0.6, 12.0, actions.shape[-2])
    return -(0.05 * error.pow(2) - torch.cos(2 * math.pi * error / 1.5)).sum(-1)


def test_icem_beats_cem_at_equal_samples_on_a_rugged_objective():
    spec = Bounded(-1.0, 1.0, shape=(1,))
    counts = {"cem": 0, "icem": 0}
    finals = {"cem": [], "icem": []}
    planners = {
        "cem": CEMPlanner(spec, 20, 100, 5, 10, result_mode="best"),
        "icem": ICEMPlanner(spec, 20, 130, 5, 10, result_mode="best"),
    }
    for name, planner in planners.items():
        def counted(actions, name=name):
            counts[name] += actions.shape[1]
            return rugged(actions)

        for seed in range(4):
            result = planner(counted, batch_size=8, generator=seeded(100 + seed))
            finals[name].append(rugged(result.action.unsqueeze(1)).mean())
    assert counts["icem"] <= counts["cem"], counts
    cem, icem = torch.stack(finals["cem"]).mean(), torch.stack(finals["icem"]).mean()
    assert icem > cem + 1.5, (cem, icem)


# ------------------------------------------------------------------ warm start
@pytest.mark.parametrize("name", sorted(PLANNERS))
def test_warm_start_resumes_from_the_shifted_plan_and_a_zeroed_instance_restarts(name):
    spec = Bounded(torch.tensor([-1.0, 0.0]), torch.tensor([1.0, 2.0]), shape=(2,))
    centre = torch.tensor([0.0, 1.0])
    target = torch.stack([torch.linspace(-0.9, 0.9, 5), torch.linspace(0.2, 1.8, 5)], -1).expand(3, 5, 2)
    first = make(name, spec, 5, 256, 10, 32)(quadratic(target), batch_size=3, generator=seeded(3))
    assert first.state["has_plan"].all()
    assert torch.equal(first.state["mean"], first.mean)

    state = first.state.clone()
    state[1] = first.state[1].zero_()  # instance 1 starts a new episode
    # One iteration with a vanishing std: the returned mean is where the call started.
    kwargs = {"keep_elites": 0.0} if name == "icem" else {}
    follow = make(name, spec, 5, 16, 1, 4, initial_std=1e-6, min_std=0.0, **kwargs)
    second = follow(quadratic(target), state=state, generator=seeded(4))
    shifted = torch.cat([first.mean[:, 1:], centre.expand(3, 1, 2)], dim=1)
    for i in (0, 2):
        assert torch.allclose(second.mean[i], shifted[i], atol=1e-4)
    assert torch.allclose(second.mean[1], centre.expand(5, 2), atol=1e-4)


def test_a_zero_state_is_a_fresh_start():
    spec = Bounded(-1.0, 1.0, shape=(2,))
    planner = CEMPlanner(spec, 4, 32, 2, 4)
    target = torch.full((2, 4, 2), 0.5)
    fresh = planner(quadratic(target), batch_size=2, generator=seeded(5))
    zeroed = planner(quadratic(target), state=planner.state_spec().zero((2,)), generator=seeded(5))
    assert torch.equal(fresh.mean, zeroed.mean)


@pytest.mark.parametrize("name", sorted(PLANNERS))
def test_state_matches_the_state_spec(name):
    spec = Bounded(-1.0, 1.0, shape=(2,))
    planner = make(name, spec, 4, 32, 2, 8)
    result = planner(quadratic(torch.zeros(3, 4, 2)), batch_size=3)
    state_spec = planner.state_spec()
    assert {"mean", "has_plan"} <= set(state_spec.keys())
    assert set(result.state.keys()) == set(state_spec.keys())
    assert state_spec.expand(3).is_in(result.state)


def test_icem_carries_shifted_elites_into_the_next_call():
    spec = Bounded(-1.0, 1.0, shape=(1,))
    planner = ICEMPlanner(spec, 6, 64, 3, 10, keep_elites=0.3)
    target = torch.linspace(-0.5, 0.5, 6).view(1, 6, 1).expand(2, 6, 1)
    first = planner(quadratic(target), batch_size=2, generator=seeded(6))
    kept = first.state["elites"]
    assert kept.shape == (2, 3, 6, 1)

    state = first.state.clone()
    state["has_plan"][1] = False
    seen = []
    planner(lambda a: seen.append(a) or quadratic(target)(a), state=state, generator=seeded(7))
    shifted = torch.cat([kept[:, :, 1:], torch.zeros(2, 3, 1, 1)], dim=2)
    candidates = seen[0]  # first iteration
    assert candidates.shape[1] == planner.population(0) + planner.num_kept

    def contains(b: int, sequence: torch.Tensor) -> bool:
        return bool((candidates[b] - sequence).abs().amax((-2, -1)).eq(0).any())

    assert all(contains(0, shifted[0, k]) for k in range(3))
    assert not any(contains(1, shifted[1, k]) for k in range(3))


def test_icem_population_decays_and_adds_the_mean_last():
    spec = Bounded(-1.0, 1.0, shape=(2,))
    planner = ICEMPlanner(spec, 4, 200, 5, 20, population_decay=1.25, keep_elites=0.3)
    sizes = []
    planner(lambda a: sizes.append(a.shape[1]) or a.sum((-2, -1)), batch_size=2)
    populations = [max(int(200 * 1.25 ** -i), 40) for i in range(5)]
    assert [planner.population(i) for i in range(5)] == populations
    expected = [populations[0]] + [n + 6 for n in populations[1:]]
    expected[-1] += 1  # the mean
    assert sizes == expected


# ---------------------------------------------------------------- objectives
def risky(actions: torch.Tensor) -> torch.Tensor:
    """Two particles on a one-step plan: one rewards ``2a``; the other collapses past 0.5.

    Their mean rises up to ``a = 1``; their minimum peaks at ``a = 0.5``.
    """
    a = actions[..., 0, 0]
    cautious = torch.where(a < 0.5, a, 1.0 - a)
    return torch.stack([2 * a, cautious], dim=-1)


@pytest.mark.parametrize("name", sorted(PLANNERS))
def test_particle_reduction_min_avoids_the_risky_particle_that_mean_accepts(name):
    spec = Bounded(-1.0, 1.0, shape=(1,))
    optimistic = make(name, spec, 1, 128, 8, 16, particle_reduction="mean")
    pessimistic = make(name, spec, 1, 128, 8, 16, particle_reduction="min")
    mean_plan = optimistic(risky, batch_size=2, generator=seeded(8)).action[:, 0, 0]
    min_plan = pessimistic(risky, batch_size=2, generator=seeded(8)).action[:, 0, 0]
    assert torch.allclose(mean_plan, torch.ones(2), atol=0.03)
    assert torch.allclose(min_plan, torch.full((2,), 0.5), atol=0.05)


@pytest.mark.parametrize("name", sorted(PLANNERS))
def test_objective_is_called_once_per_iteration_with_batched_candidates(name):
    spec = Bounded(-1.0, 1.0, shape=(3,))
    calls = []
    planner = make(name, spec, 7, 40, 4, 5)
    planner(lambda a: calls.append(a.shape) or a.sum((-2, -1)), batch_size=6)
    assert len(calls) == 4
    assert all(shape[0] == 6 and shape[2:] == (7, 3) for shape in calls)


@pytest.mark.parametrize("name", sorted(PLANNERS))
def test_extra_samples_join_every_iteration(name):
    spec = Bounded(-1.0, 1.0, shape=(2,))
    target = torch.tensor([0.37, -0.81]).expand(2, 3, 2)
    extra = torch.cat([target.unsqueeze(1), torch.zeros(2, 1, 3, 2)], dim=1)  # [B, 2, H, A]
    seen = []

    def objective(actions):
        seen.append(actions)
        return quadratic(target)(actions)

    planner = make(name, spec, 3, 32, 3, 4, result_mode="best")
    result = planner(objective, batch_size=2, extra_samples=extra, generator=seeded(9))
    assert len(seen) == 3 and all(torch.equal(a[:, -2:], extra) for a in seen)
    assert torch.equal(result.action, target)
    assert torch.allclose(result.value, torch.zeros(2))


def test_nan_returns_lose_instead_of_winning():
    spec = Bounded(-1.0, 1.0, shape=(1,))

    def objective(actions):
        value = -(actions - 0.5).pow(2).sum((-2, -1))
        return torch.where(actions[..., 0, 0] < 0, float("nan"), value)

    for name in sorted(PLANNERS):
        result = make(name, spec, 2, 64, 5, 8)(objective, batch_size=2, generator=seeded(10))
        assert torch.isfinite(result.action).all() and (result.action[:, 0] > 0).all()


def test_mppi_sample_mode_returns_an_elite_and_is_reproducible():
    spec = Bounded(-1.0, 1.0, shape=(2,))
    planner = MPPIPlanner(spec, 3, 64, 3, 8, temperature=1.0, result_mode="sample")
    seen = []
    objective = quadratic(torch.full((2, 3, 2), 0.2))
    result = planner(lambda a: seen.append(a) or objective(a), batch_size=2, generator=seeded(11))
    last = seen[-1]
    for b in range(2):
        assert (last[b] - result.action[b]).abs().amax((-2, -1)).eq(0).any()
    again = planner(objective, batch_size=2, generator=seeded(11))
    assert torch.equal(result.action, again.action)


@pytest.mark.parametrize("name", sorted(PLANNERS))
def test_same_generator_seed_gives_the_same_plan(name):
    spec = Bounded(-1.0, 1.0, shape=(2,))
    planner = make(name, spec, 4, 32, 3, 4)
    objective = quadratic(torch.full((2, 4, 2), 0.3))
    first = planner(objective, batch_size=2, generator=seeded(12))
    second = planner(objective, batch_size=2, generator=seeded(12))
    assert torch.equal(first.action, second.action) and torch.equal(first.std, second.std)


# ------------------------------------------------------------------ coloured noise
@pytest.mark.parametrize("beta", [0.0, 1.0, 2.0, 3.0])
def test_colored_noise_has_unit_variance_at_every_step(beta):
    noise = colored_noise((20000, 12), beta, generator=seeded(13))
    assert noise.shape == (20000, 12)
    assert (noise.var(dim=0) - 1).abs().max() < 0.06
    assert noise.mean().abs() < 0.05


def lag_one_correlation(noise: torch.Tensor) -> torch.Tensor:
    return (noise[:, 1:] * noise[:, :-1]).mean() / noise.var()


def test_red_noise_is_more_correlated_in_time_than_white():
    white = colored_noise((4000, 16), 0.0, generator=seeded(14))
    pink = colored_noise((4000, 16), 1.0, generator=seeded(14))
    red = colored_noise((4000, 16), 2.0, generator=seeded(14))
    assert lag_one_correlation(white).abs() < 0.03
    assert lag_one_correlation(red) > lag_one_correlation(pink) > lag_one_correlation(white) + 0.2
    assert lag_one_correlation(red) > 0.8


def test_colored_noise_runs_along_the_requested_axis_only():
    noise = colored_noise((3000, 4, 10, 2), 2.0, dim=2, generator=seeded(15))
    assert noise.shape == (3000, 4, 10, 2)
    along_time = (noise[:, :, 1:] * noise[:, :, :-1]).mean()
    across_actions = (noise[..., 0] * noise[..., 1]).mean()
    assert along_time > 0.8 and across_actions.abs() < 0.03


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"horizon": 0}, "horizon must be an int >= 1"),
        ({"num_elites": 0}, "num_elites must be an int >= 1"),
        ({"num_samples": 4, "num_elites": 8}, r"num_samples must be an int >= num_elites \(8\)"),
        ({"num_iterations": 0}, "num_iterations must be an int >= 1"),
        ({"particle_reduction": "max"}, "particle_reduction must be 'mean' or 'min'"),
        ({"result_mode": "median"}, "result_mode must be one of"),
    ],
)
@pytest.mark.parametrize("name", sorted(PLANNERS))
def test_bad_arguments_raise_clear_errors(name, kwargs, message):
    args = {"horizon": 5, "num_samples": 32, "num_iterations": 2, "num_elites": 4, **kwargs}
    with pytest.raises(ValueError, match=message):
        make(name, Bounded(-1.0, 1.0, shape=(2,)), args.pop("horizon"), args.pop("num_samples"),
             args.pop("num_iterations"), args.pop("num_elites"), **args)


@pytest.mark.parametrize("momentum", [-0.1, 1.0])
def test_momentum_outside_zero_one_is_refused(momentum):
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\)"):
        CEMPlanner(Bounded(-1.0, 1.0, shape=(2,)), 5, 32, 2, 4, momentum=momentum)


@pytest.mark.parametrize("name", sorted(PLANNERS))
def test_a_non_box_action_spec_is_refused_by_name(name):
    cls = PLANNERS[name][0]
    with pytest.raises(TypeError, match=f"{cls.__name__} needs a Bounded \\(Box\\) action spec; got Categorical"):
        make(name, Categorical(4), 5, 32, 2, 4)
    with pytest.raises(TypeError, match="got Unbounded"):
        make(name, Unbounded(shape=(2,)), 5, 32, 2, 4)
    with pytest.raises(TypeError, match="continuous"):
        make(name, Bounded(0, 3, shape=(2,), dtype=torch.int64), 5, 32, 2, 4)


def test_a_call_without_state_or_batch_size_and_a_bad_objective_are_refused():
    planner = CEMPlanner(Bounded(-1.0, 1.0, shape=(2,)), 5, 32, 2, 4)
    with pytest.raises(ValueError, match="batch_size=B"):
        planner(lambda a: a.sum((-2, -1)))
    with pytest.raises(ValueError, match=r"returns \[B, N\] or \[B, N, P\]"):
        planner(lambda a: a.sum((-3, -2, -1)), batch_size=2)
    with pytest.raises(ValueError, match="extra_samples must have shape"):
        planner(lambda a: a.sum((-2, -1)), batch_size=2, extra_samples=torch.zeros(2, 3, 4, 2))


def test_planners_do_not_sync_with_the_host_in_their_code():
    # The loop must stay on the device: no call that copies a value back to the host.
    package = Path(__file__).parents[2] / "torchrl_layered" / "planners"
    for path in package.glob("*.py"):
        source = path.read_text()
        for call in (".item(", ".cpu(", ".tolist(", ".nonzero(", ".numpy("):
            assert call not in source, f"{path.name} calls {call})"
