"""`TDMPC2Level`: MPPI on a hand-made model, HER relabelling, goal-based and hierarchical use."""
from __future__ import annotations

import math

import pytest
import torch
from tensordict import TensorDict
from torchrl.data import Bounded, Unbounded
from torchrl.envs import TransformedEnv

from helpers import failing_compile
from torchrl_layered import Hierarchy, RandomLevel
from torchrl_layered.collectors import make_collector
from torchrl_layered.envs import make_env
from torchrl_layered.envs.make import goal_slices
from torchrl_layered.keys import OPTION_INDEX, TRAJ_IDS
from torchrl_layered.levels import TDMPC2Level
from torchrl_layered.modules.precision import autocast_dtype, autocast_to
from torchrl_layered.modules.tdmpc2 import TDMPC2WorldModel
from torchrl_layered.tdmpc2 import get_default_tdmpc2_config, resolve_tdmpc2_config


def small_config(**kw):
    cfg = get_default_tdmpc2_config()
    cfg.update(model_size=1, enc_dim=32, mlp_dim=32, latent_dim=16, num_q=2, batch_size=8, num_samples=64,
               num_elites=8, num_pi_trajs=4, num_iterations=3)
    cfg.update(kw)
    return cfg


class ReachModel(TDMPC2WorldModel):
    """A hand-made 1-D reach task: the latent is the position, the goal sits at +0.5."""

    def _logits(self, value):
        return torch.log(self.two_hot.encode(value) + 1e-9)

    def encode(self, obs):
        return obs[..., :1]

    def next(self, z, a):
        return z + 0.2 * a

    def reward_logits(self, z, a, zg=None):
        return self._logits(-(z + 0.2 * a - 0.5).abs())

    def termination_logit(self, z, a):
        return torch.full_like(z, -30.0)

    def q_logits(self, z, a, zg=None, members=None):
        count = self.qs.num_q if members is None else len(members)
        return self._logits(torch.zeros_like(z)).expand(count, *z.shape[:-1], -1)

    def pi(self, z, zg=None, deterministic=False):
        return torch.zeros_like(z), torch.zeros_like(z)


@pytest.mark.parametrize("position, direction", [(-0.8, 1.0), (1.4, -1.0)])
def test_mppi_with_a_hand_made_model_moves_towards_the_goal(position, direction):
    torch.manual_seed(0)
    env = make_env("Pendulum-v1", 1)
    level = TDMPC2Level(small_config(horizon=4), warm_up_steps=0)
    hierarchy = Hierarchy([level], env=env)
    model = ReachModel(3, 1, level.cfg)
    level.world_model = model
    hierarchy.eval()
    tenv = TransformedEnv(env, hierarchy.make_transform())
    td = tenv.reset()
    td["observation"] = torch.tensor([[position, 0.0, 0.0]])
    action = hierarchy(td)["action"]
    assert float(action.sign()) == direction
    # far from the goal the plan pushes hard (unit action 1 = torque 2 in Pendulum)
    assert abs(float(action)) > 1.0


def test_her_relabels_with_later_achieved_goals_and_the_given_reward():
    torch.manual_seed(0)
    env = make_env("Maze2D-Open-v0", 2)
    slices = goal_slices(env)

    def reward_fn(achieved_goal, desired_goal):
        return -(achieved_goal - desired_goal).norm(dim=-1)

    level = TDMPC2Level(small_config(horizon=3), desired_goal_slice=slices["desired_goal"],
                        achieved_goal_slice=slices["achieved_goal"], use_her=True, her_goals=2, reward_fn=reward_fn,
                        warm_up_steps=10**6)
    hierarchy = Hierarchy([level], env=env)
    collector = make_collector(env, hierarchy, frames_per_batch=100, total_frames=100)
    for batch in collector:
        hierarchy.extend(batch)
    collector.shutdown()
    sample = level.sample()
    assert sample.shape == (3 * 8, 3)
    relabelled = sample[8:]
    # the model observation keeps (observation, achieved_goal) and drops the desired goal
    achieved = relabelled["next", "observation"][..., 2:4]
    assert torch.allclose(relabelled["next", "reward"].squeeze(-1), reward_fn(achieved, relabelled["goal"]))
    # every relabelled goal is an achieved goal stored in the buffer (which episode and step: below)
    stored = level.replay_buffer[:]["next", "observation"][:, slices["achieved_goal"]]
    assert bool(((relabelled["goal"].reshape(-1, 1, 2) - stored).norm(dim=-1).min(-1).values < 1e-6).all())


def test_goal_based_level_learns_without_errors_and_restarts_its_warm_start_each_episode():
    torch.manual_seed(0)
    env = make_env("Maze2D-Open-v0", 2, max_episode_steps=20)
    slices = goal_slices(env)
    level = TDMPC2Level(small_config(horizon=3), desired_goal_slice=slices["desired_goal"],
                        achieved_goal_slice=slices["achieved_goal"], use_her=True,
                        reward_fn=lambda achieved_goal, desired_goal: -(achieved_goal - desired_goal).norm(dim=-1),
                        warm_up_steps=40)
    hierarchy = Hierarchy([level], env=env)
    collector = make_collector(env, hierarchy, frames_per_batch=40, total_frames=120)
    metrics = {}
    for batch in collector:
        hierarchy.extend(batch)
        metrics = hierarchy.learn() or metrics
    collector.shutdown()
    assert level.num_gradient_updates > 0 and all(torch.isfinite(torch.tensor(list(metrics.values()))))
    # each episode starts without a plan: the warm start is zeroed by the (partial) reset
    tenv = TransformedEnv(make_env("Maze2D-Open-v0", 2), hierarchy.make_transform())
    td = tenv.reset()
    assert not bool(td["levels", "0", "state", "planner", "has_plan"].any())
    td = hierarchy(td)
    assert bool(td["levels", "0", "state", "planner", "has_plan"].all())
    td = tenv.reset()
    assert not bool(td["levels", "0", "state", "planner", "has_plan"].any())


def test_tdmpc2_runs_as_a_higher_and_as_a_lower_level():
    torch.manual_seed(0)
    env = make_env("Pendulum-v1", 2)
    option = Bounded(-1.0, 1.0, shape=(2,))
    top = TDMPC2Level(small_config(), warm_up_steps=10)
    low = TDMPC2Level(small_config(), warm_up_steps=10, input_spec=option, control_interval=3)
    hierarchy = Hierarchy([top, RandomLevel(input_spec=option, control_interval=2)][:1] + [low], env=env)
    collector = make_collector(env, hierarchy, frames_per_batch=60, total_frames=180)
    for batch in collector:
        transitions = hierarchy.extend(batch)
        hierarchy.learn()
    collector.shutdown()
    assert bool((transitions[0]["next", "duration"][~transitions[0]["next", "done"].squeeze(-1)] == 3).all())
    assert top.num_gradient_updates > 0 and low.num_gradient_updates > 0
    assert batch["levels", "0", "action"].abs().max() <= 1.0


# --------------------------------------------------------------------- HER over whole episodes
def her_level(horizon=3, batch_size=64, her_goals=2, buffer_size=10_000):
    """A goal-based level on observations ``[x, achieved (2), desired (2)]``, built without an env."""
    level = TDMPC2Level(small_config(horizon=horizon, batch_size=batch_size, buffer_size=buffer_size),
                        desired_goal_slice=(3, 5), achieved_goal_slice=(1, 3), use_her=True, her_goals=her_goals,
                        reward_fn=lambda achieved_goal, desired_goal: -(achieved_goal - desired_goal).norm(dim=-1),
                        warm_up_steps=0)
    level.initialize(Unbounded(shape=(5,)), Bounded(-1.0, 1.0, shape=(1,)))
    return level


def episode_chunk(episode, start, stop):
    """Steps ``start .. stop - 1`` of ``episode``; the achieved goal after step k is ``[episode, k + 1]``."""
    k = torch.arange(start, stop, dtype=torch.float32)
    e = torch.full_like(k, float(episode))
    desired = torch.full((len(k), 2), -5.0)
    obs = torch.cat([k[:, None], e[:, None], k[:, None], desired], -1)
    next_obs = torch.cat([k[:, None] + 1, e[:, None], k[:, None] + 1, desired], -1)
    n = len(k)
    return TensorDict({
        "observation": obs, "action": torch.zeros(n, 1), OPTION_INDEX: k.long(),
        TRAJ_IDS: torch.full((n,), episode, dtype=torch.long),
        "next": {"observation": next_obs, "reward": torch.zeros(n, 1), "terminated": torch.zeros(n, 1, dtype=torch.bool),
                 "truncated": torch.zeros(n, 1, dtype=torch.bool), "done": torch.zeros(n, 1, dtype=torch.bool),
                 "duration": torch.ones(n, 1, dtype=torch.long)},
    }, [n])


def fill(level, episodes, length, chunk):
    """Stores the episodes as parallel envs do: chunk by chunk, episodes interleaved in the storage."""
    for start in range(0, length, chunk):
        level.extend(torch.cat([episode_chunk(e, start, min(start + chunk, length)) for e in episodes]))


def relabelled_rows(level):
    """(episode, step of each transition, relabelled goal) of the relabelled rows of one sample."""
    torch.manual_seed(0)
    sample = level.sample()
    b = level.cfg["batch_size"]
    original, relabelled = sample[:b], sample[b:]
    assert bool((original["goal"] == -5.0).all())  # the first copy keeps the stored goals
    obs = relabelled["observation"]  # [x, achieved]: x = step, achieved = [episode, step]
    return obs[..., 1], obs[..., 0], relabelled["goal"], relabelled


def test_her_draws_goals_from_the_rest_of_the_episode_not_only_the_sampled_window():
    level = her_level(horizon=3, batch_size=64, her_goals=2)
    fill(level, episodes=[7, 8, 9], length=60, chunk=10)
    episode, step, goal, relabelled = relabelled_rows(level)
    assert relabelled.shape == (2 * 64, 3)
    # always the same episode, at the same step or later (the achieved goal after step k is k + 1)
    assert torch.equal(goal[..., 0], episode)
    assert bool((goal[..., 1] >= step + 1).all()) and bool((goal[..., 1] <= 60).all())
    # most goals lie beyond the window of horizon + 1 steps: the old draw never did
    beyond = goal[..., 1] > step[:, :1] + 3
    assert float(beyond.float().mean()) > 0.5
    # uniform over the rest of the episode: the goal's position in [k + 1, 60] averages one half
    position = (goal[..., 1] - (step + 1)) / (60 - (step + 1)).clamp_min(1)
    assert abs(float(position.mean()) - 0.5) < 0.06
    # rewards recomputed against the relabelled goals
    achieved = relabelled["next", "observation"][..., 1:3]
    assert torch.allclose(relabelled["next", "reward"].squeeze(-1), -(achieved - goal).norm(dim=-1))


def test_her_goals_are_only_drawn_from_steps_still_stored():
    # a buffer of 100 transitions over 3 episodes of 60: the first steps of each were overwritten,
    # and the episodes still running have stored only their first steps
    level = her_level(horizon=3, batch_size=32, her_goals=4, buffer_size=100)
    fill(level, episodes=[1, 2, 3], length=60, chunk=10)
    stored = level.replay_buffer[:]
    pairs = {(int(e), int(k)) for e, k in zip(stored[TRAJ_IDS], stored[OPTION_INDEX])}
    episode, step, goal, _ = relabelled_rows(level)
    for e, k, g in zip(episode.reshape(-1).tolist(), step.reshape(-1).tolist(), goal.reshape(-1, 2).tolist()):
        assert g[0] == e and g[1] >= k + 1 and (int(e), int(g[1]) - 1) in pairs
    # later chunks change the index: goals follow what is stored now
    fill(level, episodes=[4], length=60, chunk=30)
    episode, step, goal, _ = relabelled_rows(level)
    stored = level.replay_buffer[:]
    pairs = {(int(e), int(k)) for e, k in zip(stored[TRAJ_IDS], stored[OPTION_INDEX])}
    assert all((int(e), int(g) - 1) in pairs for e, g in zip(episode.reshape(-1).tolist(), goal[..., 1].reshape(-1).tolist()))


# --------------------------------------------------------------- acting without dropout
def test_planning_never_uses_dropout_and_learning_does():
    torch.manual_seed(0)
    env = make_env("Pendulum-v1", 2)
    cfg = small_config(dropout=0.5, num_q=2, log_std_min=-30.0, log_std_max=-30.0)
    level = TDMPC2Level(cfg, warm_up_steps=10)
    hierarchy = Hierarchy([level], env=env)
    hierarchy.train()
    assert level.training and not level.world_model.training
    with torch.no_grad():
        level.world_model.qs.out.weight.normal_()
    z = torch.softmax(torch.randn(2, 16), -1)
    actions = torch.rand(2, 8, 4, 1) * 2 - 1
    # with both Q members used and a near-deterministic policy prior, only dropout could differ
    torch.manual_seed(1)
    first = level.estimate_value(z, None, actions)
    torch.manual_seed(2)
    assert torch.equal(first, level.estimate_value(z, None, actions))
    # learning turns dropout on for the online Qs, never for the targets
    modes = []
    level.world_model.qs.register_forward_pre_hook(lambda module, args: modes.append(module.training))
    collector = make_collector(env, hierarchy, frames_per_batch=40, total_frames=40)
    for batch in collector:
        hierarchy.extend(batch)
    collector.shutdown()
    modes.clear()
    assert hierarchy.learn()["level0/skipped_steps"] == 0.0
    assert True in modes and False in modes
    assert not level.world_model.training


# ------------------------------------------------------------------ the two optimisers
def learned_level(seed=0):
    torch.manual_seed(seed)
    env = make_env("Pendulum-v1", 2)
    level = TDMPC2Level(small_config(), warm_up_steps=10)
    hierarchy = Hierarchy([level], env=env)
    collector = make_collector(env, hierarchy, frames_per_batch=40, total_frames=80)
    for batch in collector:
        hierarchy.extend(batch)
        hierarchy.learn()
    collector.shutdown()
    return env, level, hierarchy


def test_policy_has_its_own_optimiser_and_both_round_trip_through_the_state_dict():
    env, level, hierarchy = learned_level()
    policy = {id(p) for p in level.world_model.policy.parameters()}
    assert {id(p) for g in level.policy_optimizer.param_groups for p in g["params"]} == policy
    assert not policy & {id(p) for g in level.optimizer.param_groups for p in g["params"]}
    steps = level.num_gradient_updates
    assert steps > 0
    assert all(int(s["step"]) == steps for s in level.optimizer.state.values())
    assert all(int(s["step"]) == steps for s in level.policy_optimizer.state.values())
    other = TDMPC2Level(small_config(), warm_up_steps=10)
    Hierarchy([other], env=env).load_state_dict(hierarchy.state_dict())
    for mine, theirs in [(level.optimizer, other.optimizer), (level.policy_optimizer, other.policy_optimizer)]:
        a, b = mine.state_dict(), theirs.state_dict()
        assert a["param_groups"] == b["param_groups"] and a["state"].keys() == b["state"].keys()
        for key in a["state"]:
            assert all(torch.equal(a["state"][key][n], b["state"][key][n]) for n in a["state"][key])


def test_a_non_finite_update_is_skipped_and_counted():
    env, level, hierarchy = learned_level()
    before = level.num_gradient_updates
    params = [p.detach().clone() for p in level.loss.parameters()]
    forward = level.loss.forward
    calls = []

    def poisoned(td, bad=(2,)):  # a non-finite policy loss on the calls numbered in ``bad``
        out = forward(td)
        calls.append(None)
        if len(calls) in bad:
            out["loss_policy"] = out["loss_policy"] * float("inf")
        return out

    level.loss.forward = poisoned
    metrics = level._gradient_steps(3)
    assert metrics["skipped_steps"] == 1.0 and all(map(math.isfinite, metrics.values()))
    assert all(int(s["step"]) == before + 2 for s in level.policy_optimizer.state.values())
    assert all(int(s["step"]) == before + 2 for s in level.optimizer.state.values())
    assert any(not torch.equal(a, b) for a, b in zip(params, level.loss.parameters()))
    # every step bad: nothing moves, the target Qs neither
    level.loss.forward = lambda td: poisoned(td, bad=range(100))
    params = [p.detach().clone() for p in level.loss.parameters()]
    targets = level.loss.target_qvalue_network_params.clone()
    assert level._gradient_steps(2) == {"skipped_steps": 2.0}
    assert all(torch.equal(a, b) for a, b in zip(params, level.loss.parameters()))
    assert (level.loss.target_qvalue_network_params == targets).all()


def test_a_bfloat16_update_runs_the_loss_forward_under_autocast_and_keeps_float32_weights_and_gradients():
    env, level, hierarchy = learned_level()
    batch = level.sample()
    losses = {}
    for dtype in ("float32", "bfloat16"):
        torch.manual_seed(1)  # the same dropout masks and Q pairs
        with autocast_to(autocast_dtype(dtype, "test"), "cpu"):
            losses[dtype] = level.loss(batch)
    for key, value in losses["float32"].items():
        assert losses["bfloat16"][key].dtype == torch.float32
        # about 3 significant digits per op, compounded through the layers
        torch.testing.assert_close(losses["bfloat16"][key], value, rtol=0.05, atol=0.02 * float(value.detach().abs()) + 1e-3)
    assert any(not torch.equal(losses["bfloat16"][k], v) for k, v in losses["float32"].items())

    level.cfg["update_dtype"] = "bfloat16"
    level.sample = lambda: batch
    seen = []
    first = level.world_model.dynamics[0][0]
    handle = first.register_forward_hook(lambda module, args, out: seen.append((torch.is_grad_enabled(), out.dtype)))
    before = [p.detach().clone() for p in level.loss.parameters()]
    metrics = level._gradient_steps(2)
    handle.remove()
    assert metrics["skipped_steps"] == 0.0 and all(map(math.isfinite, metrics.values()))
    assert (True, torch.bfloat16) in seen  # the update's forward ran in bfloat16
    assert all(p.dtype == torch.float32 for p in level.loss.parameters())
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in level.loss.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, level.loss.parameters()))
    action = hierarchy(TransformedEnv(env, hierarchy.make_transform()).reset())["action"]  # planning: float32
    assert action.dtype == torch.float32 and bool(action.isfinite().all())


def test_the_configs_mppi_settings_mean_what_mppiplanners_do():
    level = TDMPC2Level(small_config(temperature=0.25, num_iterations=2))
    level.initialize(Unbounded((3,)), Bounded(-2.0, 2.0, (1,)))
    planner = level.planner
    assert planner.temperature == 0.25 and planner.num_iterations == 2


def test_num_samples_counts_the_policy_prior_rollouts_as_official_td_mpc2_does():
    """Each MPPI iteration scores ``num_samples`` candidates: the ``num_pi_trajs`` rollouts of the
    policy prior and ``num_samples - num_pi_trajs`` sampled ones (the official planner's split)."""
    torch.manual_seed(0)
    env = make_env("Pendulum-v1", 2)
    level = TDMPC2Level(small_config(num_samples=40, num_pi_trajs=6, num_elites=8, num_iterations=3), warm_up_steps=0)
    hierarchy = Hierarchy([level], env=env)
    level.world_model = ReachModel(3, 1, level.cfg)  # its policy prior acts 0 everywhere
    scored, estimate = [], level.estimate_value

    def recording(z, zg, actions, gamma=None, **kwargs):
        scored.append(actions.clone())
        return estimate(z, zg, actions, gamma, **kwargs)

    level.estimate_value = recording
    hierarchy(TransformedEnv(env, hierarchy.make_transform()).reset())
    assert [tuple(actions.shape[:2]) for actions in scored] == [(2, 40)] * 3
    for actions in scored:
        assert (actions[:, -6:] == 0).all() and (actions[:, :-6] != 0).all()


def test_the_policy_prior_horizon_is_imagined_once_per_plan_and_its_returns_are_unchanged():
    """The prior's rollouts join every MPPI iteration unchanged: their rewards, terminations and
    latents over the horizon come from `horizon_prefix` once per plan, and each iteration only
    bootstraps them again (a fresh policy action and Q pair, drawn in the same order)."""
    torch.manual_seed(0)
    env = make_env("Pendulum-v1", 2)
    level = TDMPC2Level(small_config(num_samples=40, num_pi_trajs=6, num_elites=8, num_iterations=3, horizon=4,
                                     episodic=True), warm_up_steps=0)
    hierarchy = Hierarchy([level], env=env)
    with torch.no_grad():
        for p in level.world_model.parameters():
            p.normal_(std=0.2)
    z = level.world_model.encode(torch.randn(2, 3))
    gamma = torch.tensor(0.95)
    prior = level.policy_trajectories(z, None)
    actions = torch.cat([torch.rand(2, 34, 4, 1) * 2 - 1, prior], 1)
    known = level.horizon_prefix(z, None, prior, gamma)
    torch.manual_seed(3)
    full = level.estimate_value(z, None, actions, gamma)
    torch.manual_seed(3)
    reused = level.estimate_value(z, None, actions, gamma, known=known)
    torch.testing.assert_close(reused, full)
    with pytest.raises(ValueError, match="known prefix covers 6 candidates"):
        level.estimate_value(z, None, actions[:, :4], gamma, known=known)
    with pytest.raises(ValueError, match="of 2 instances; .* of 1 instances given"):  # another batch's prefix
        level.estimate_value(z[:1], None, actions[:1], gamma, known=known)
    # in a plan the dynamics imagine the prior's 6 rows for one prefix, the sampled 34 every iteration
    # (the first step of each rollout starts from one latent: computed once per instance, not per row)
    rows = []
    level.world_model.dynamics.register_forward_pre_hook(lambda module, args: rows.append(args[0].shape[-2]))
    hierarchy(TransformedEnv(env, hierarchy.make_transform()).reset())
    assert 40 not in rows and rows.count(34) == 3 * 3
    assert rows.count(6) == 2 + 3  # the prior's own rollout, then its prefix


def test_learning_steps_freeze_the_world_model_and_the_level_goes_on_acting_and_storing():
    torch.manual_seed(0)
    env = make_env("Pendulum-v1", 2)
    level = TDMPC2Level(small_config(), warm_up_steps=10, learning_steps=60)
    hierarchy = Hierarchy([level], env=env)
    collector = make_collector(env, hierarchy, frames_per_batch=40, total_frames=120)
    updates, frozen = [], None
    for batch in collector:
        hierarchy.extend(batch)
        hierarchy.learn()
        updates.append(level.num_gradient_updates)
        if frozen is None and level.learning_done:
            frozen = [p.detach().clone() for p in level.world_model.parameters()]
    collector.shutdown()
    # updates in the first batch only (from the second on, its stored env steps cover 60)
    assert updates[0] > 0 and updates == [updates[0]] * 3 and len(level.replay_buffer) == 120
    assert all(torch.equal(a, b) for a, b in zip(frozen, level.world_model.parameters()))


# --------------------------------------------------------------- planning precision
def test_a_bfloat16_plan_estimates_as_float32_does_within_its_precision():
    torch.manual_seed(0)
    env = make_env("Pendulum-v1", 2)
    levels, hierarchies = {}, {}
    for dtype in ("float32", "bfloat16"):
        levels[dtype] = TDMPC2Level(small_config(planning_dtype=dtype, log_std_min=-30.0, log_std_max=-30.0),
                                    warm_up_steps=0)
        hierarchies[dtype] = Hierarchy([levels[dtype]], env=env)
    with torch.no_grad():  # untrained reward and Q heads are zero: give every head an output
        for p in levels["float32"].world_model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    levels["bfloat16"].world_model.load_state_dict(levels["float32"].world_model.state_dict())
    z = torch.softmax(torch.randn(2, 16), -1)
    actions = torch.rand(2, 8, 4, 1) * 2 - 1
    values = {}
    for dtype, level in levels.items():
        torch.manual_seed(1)  # the Q pair
        values[dtype] = level.estimate_value(z, None, actions)
        assert values[dtype].dtype == torch.float32 and values[dtype].shape == (2, 8)
    assert next(levels["bfloat16"].world_model.parameters()).dtype == torch.float32  # autocast, not a cast model
    assert not torch.equal(values["bfloat16"], values["float32"])
    # about 3 significant digits per op, compounded through the layers and the two-hot's symexp
    torch.testing.assert_close(values["bfloat16"], values["float32"], rtol=0.0,
                               atol=0.1 * float(values["float32"].abs().max()))
    hierarchy = hierarchies["bfloat16"]  # and it plans
    action = hierarchy(TransformedEnv(env, hierarchy.make_transform()).reset())["action"]
    assert action.shape == (2, 1) and bool(action.isfinite().all())


@pytest.mark.parametrize("entry, message", [
    (dict(planning_dtype="half"), "planning_dtype must be one of"),
    (dict(planning_dtype=torch.bfloat16), "planning_dtype must be one of"),
    (dict(compile="yes"), "compile must be a bool"),
    (dict(update_dtype="float16"), "update_dtype must be one of"),
])
def test_the_speed_settings_refuse_what_they_do_not_know(entry, message):
    with pytest.raises((ValueError, TypeError), match=message):
        resolve_tdmpc2_config(small_config(**entry))


def test_a_planning_estimate_that_cannot_compile_warns_once_and_estimates_eagerly(monkeypatch):
    monkeypatch.setattr(torch, "compile", failing_compile)
    torch.manual_seed(0)
    env = make_env("Pendulum-v1", 2)
    eager = TDMPC2Level(small_config(log_std_min=-30.0, log_std_max=-30.0), warm_up_steps=0)
    compiled = TDMPC2Level(small_config(log_std_min=-30.0, log_std_max=-30.0, compile=True), warm_up_steps=0)
    for level in (eager, compiled):
        Hierarchy([level], env=env)
    compiled.world_model.load_state_dict(eager.world_model.state_dict())
    z, actions = torch.softmax(torch.randn(2, 16), -1), torch.rand(2, 8, 3, 1) * 2 - 1
    torch.manual_seed(1)
    with pytest.warns(RuntimeWarning, match="TDMPC2Level planning estimate: torch.compile failed .*no C\\+\\+ compiler"):
        got = compiled.estimate_value(z, None, actions)
    torch.manual_seed(1)
    torch.testing.assert_close(got, eager.estimate_value(z, None, actions))
    assert compiled.__dict__["_compiled_return"].failed
