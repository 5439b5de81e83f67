"""`Maze2D`: a point mass in a grid maze, its NumPy/torch dynamics and its gymnasium ids."""
from __future__ import annotations

import importlib
import warnings
from collections import deque

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import torchrl_layered.envs as envs_pkg
from torchrl_layered.envs import Maze2D, make_env
from torchrl_layered.envs.maze2d import LAYOUTS, MAZE2D_ENV_IDS, register_maze2d_envs

IDS = sorted(MAZE2D_ENV_IDS)
NAMES = sorted(LAYOUTS)


def wall_distances(env: Maze2D, positions: np.ndarray) -> np.ndarray:
    """Brute-force distance ``[N]`` from each centre to the nearest wall square or maze edge."""
    ys, xs = np.nonzero(env.walls)
    lo = np.stack([xs, ys], -1) * env.cell_size  # [M, 2] lower corners
    p = positions[:, None, :]
    gap = np.maximum(np.maximum(lo - p, p - (lo + env.cell_size)), 0.0)
    to_walls = np.linalg.norm(gap, axis=-1).min(-1)
    to_edges = np.minimum(positions, env.size - positions).min(-1)
    return np.minimum(to_walls, to_edges)


def free_positions(env: Maze2D, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    candidates = rng.uniform(0, env.size, size=(4 * n, 2))
    return candidates[~env.blocked(candidates)][:n]


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Runs this module's torch code on one thread: on small tensors OpenMP threads only add
    overhead, and on a busy machine they stall each op for milliseconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------- spaces and ids
@pytest.mark.parametrize("env_id", IDS)
def test_gym_make_builds_every_id_with_its_layout_and_limit(env_id):
    env = gym.make(env_id)
    layout, limit = MAZE2D_ENV_IDS[env_id]
    assert isinstance(env.unwrapped, Maze2D)
    assert np.array_equal(env.unwrapped.walls, np.asarray(LAYOUTS[layout]["layout"], dtype=bool))
    assert env.spec.max_episode_steps == limit
    assert gym.spec(env_id).entry_point == "torchrl_layered.envs.maze2d:Maze2D"


@pytest.mark.parametrize("env_id", IDS)
def test_observations_are_goal_dicts_inside_the_observation_space(env_id):
    env = gym.make(env_id)
    obs, info = env.reset(seed=3)
    assert set(obs) == {"observation", "achieved_goal", "desired_goal"}
    for _ in range(20):
        assert env.observation_space.contains(obs)
        assert all(obs[k].shape == (2,) and obs[k].dtype == np.float32 for k in obs)
        assert np.array_equal(obs["observation"], obs["achieved_goal"])
        assert np.array_equal(obs["desired_goal"], env.unwrapped.goal.astype(np.float32))
        obs, _, _, _, info = env.step(env.action_space.sample())
    assert set(info) >= {"success", "is_success", "dist_to_goal"}
    high = env.unwrapped.size.astype(np.float32)
    assert np.array_equal(env.observation_space["observation"].high, high)
    assert env.action_space == gym.spaces.Box(-1.0, 1.0, (2,), np.float32)


def test_gymnasium_env_checker_accepts_the_env():
    check_env(gym.make("Maze2D-Medium-v0").unwrapped, skip_render_check=True)


def test_registration_is_idempotent_and_silent():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        register_maze2d_envs()
        importlib.reload(envs_pkg)
    assert all(env_id in gym.registry for env_id in IDS)


def test_simple_layout_has_its_walls_and_gaps():
    walls = np.asarray(LAYOUTS["simple"]["layout"], dtype=bool)
    assert walls.shape == (10, 10)
    assert walls[3, [2, 3, 4, 6, 7]].all() and not walls[3, 5]
    assert walls[[2, 3, 4, 6, 7], 6].all() and not walls[5, 6]
    assert Maze2D("corridor").walls.shape == (5, 20) and Maze2D("open").walls.shape == (6, 6)


@pytest.mark.parametrize("name", NAMES)
def test_every_goal_is_reachable_from_every_start(name):
    env = Maze2D(name)
    free = ~env.walls
    start = tuple(int(c) for c in env.start_positions[0] // env.cell_size)
    seen, queue = {start}, deque([start])
    while queue:
        x, y = queue.popleft()
        for nx, ny in ((x + 1, y), (x - 1, y), (x, y + 1), (x, y - 1)):
            if free[ny, nx] and (nx, ny) not in seen:
                seen.add((nx, ny))
                queue.append((nx, ny))
    cells = np.concatenate([env.start_positions, env.goal_positions]) // env.cell_size
    assert all((int(x), int(y)) in seen for x, y in cells)


# ---------------------------------------------------------------------------- reset
def test_reset_draws_start_and_goal_from_candidates_apart_and_seeded():
    env = Maze2D("medium")
    corners = {(1.5, 1.5), (6.5, 6.5), (6.5, 1.5), (1.5, 6.5)}
    pairs = set()
    for seed in range(60):
        obs, info = env.reset(seed=seed)
        start, goal = tuple(obs["observation"].tolist()), tuple(obs["desired_goal"].tolist())
        assert start in corners and goal in corners and start != goal
        assert info["dist_to_goal"] > env.goal_radius and not info["success"]
        pairs.add((start, goal))
    assert len(pairs) == 12  # every ordered pair of distinct corners shows up
    first, _ = env.reset(seed=7)
    again, _ = env.reset(seed=7)
    assert all(np.array_equal(first[k], again[k]) for k in first)


def test_reset_options_place_start_and_goal():
    env = Maze2D("open")
    obs, _ = env.reset(seed=0, options={"start": (2.0, 3.0), "goal": (4.5, 1.5)})
    assert obs["observation"].tolist() == [2.0, 3.0] and obs["desired_goal"].tolist() == [4.5, 1.5]
    with pytest.raises(ValueError, match="free"):
        env.reset(options={"start": (0.5, 0.5)})


# ---------------------------------------------------------------------------- collisions
@pytest.mark.parametrize("name", NAMES)
def test_random_moves_never_put_the_agent_inside_a_wall(name):
    env = Maze2D(name)
    env.reset(seed=1)
    rng = np.random.default_rng(1)
    positions = []
    for _ in range(300):
        # large, sticky commands push into walls and corners often
        action = np.sign(rng.normal(size=2)) * rng.uniform(0.5, 2.0, size=2)
        for _ in range(3):
            obs, *_ = env.step(action)
            positions.append(obs["observation"])
    assert wall_distances(env, np.asarray(positions, np.float64)).min() >= env.agent_radius - 1e-6
    # the same on a batch, through both dynamics
    p = free_positions(env, 300, seed=2)
    q = torch.as_tensor(p, dtype=torch.float32)
    for _ in range(25):
        v = rng.uniform(-2.0, 2.0, size=p.shape)
        p = env.step_positions(p, v)
        q = env.torch_dynamics(q, torch.as_tensor(v, dtype=torch.float32))
    assert wall_distances(env, p).min() >= env.agent_radius - 1e-6
    assert wall_distances(env, q.double().numpy()).min() >= env.agent_radius - 1e-6


def test_straight_move_into_a_wall_stops_at_agent_radius_from_it():
    env = Maze2D("open")  # walls fill x < 1, x > 5, y < 1, y > 5
    r = env.agent_radius
    env.reset(options={"start": (2.5, 2.5)})
    for _ in range(30):
        env.step([-1.0, 0.0])
    assert env.pos[0] == pytest.approx(1.0 + r, abs=1e-6) and env.pos[1] == 2.5
    for _ in range(50):
        env.step([0.0, 1.0])
    assert env.pos[1] == pytest.approx(5.0 - r, abs=1e-6) and env.pos[0] == pytest.approx(1.0 + r, abs=1e-6)
    # the torch model stops there too, in float32
    q = torch.tensor([[2.5, 2.5]])
    for _ in range(40):
        q = env.torch_dynamics(q, torch.tensor([[1.0, 0.0]]))
    assert q[0, 0].item() == pytest.approx(5.0 - r, abs=1e-4) and q[0, 1].item() == 2.5


def test_diagonal_move_against_a_wall_slides_along_it():
    env = Maze2D("open")
    env.reset(options={"start": (1.2, 2.0)})
    env.step([-1.0, 1.0])  # x reaches the wall x = 1 on the way, y keeps going
    assert env.pos == pytest.approx([1.0 + env.agent_radius, 2.1], abs=1e-6)
    env.step([-1.0, 1.0])
    assert env.pos == pytest.approx([1.0 + env.agent_radius, 2.2], abs=1e-6)


def test_disc_cannot_clip_a_wall_corner_its_centre_misses():
    # the centre stays in free cells, but the disc would overlap wall cell (1, 1)'s corner
    env = Maze2D([[0, 0, 0], [0, 1, 0], [0, 0, 0]], agent_radius=0.3)
    corner_gap = np.array([[0.8, 0.8]])  # 0.2 * sqrt(2) < 0.3 from corner (1, 1)
    assert env.blocked(corner_gap).item() and env.torch_blocked(torch.tensor(corner_gap)).item()
    assert not env.blocked(np.array([[0.7, 0.7]])).item()  # 0.42 from the corner


def test_numpy_and_torch_dynamics_agree():
    rng = np.random.default_rng(0)
    for name in NAMES:
        env = Maze2D(name)
        p = free_positions(env, 1000, seed=3)
        v = rng.uniform(-1.5, 1.5, size=p.shape)
        expected = env.step_positions(p, v)
        assert env.blocked(p + env.dt * np.clip(v, -1, 1)).any()  # collisions are exercised
        got64 = env.torch_dynamics(torch.as_tensor(p), torch.as_tensor(v))
        assert got64.dtype == torch.float64
        np.testing.assert_allclose(got64.numpy(), expected, rtol=0, atol=1e-12)
        got32 = env.torch_dynamics(torch.as_tensor(p, dtype=torch.float32), torch.as_tensor(v, dtype=torch.float32))
        assert got32.dtype == torch.float32
        close = np.abs(got32.double().numpy() - expected).max(-1) < 1e-4
        assert close.mean() > 0.99  # float32 may flip a near-grazing contact
        # broadcasting: one velocity for a [2, 5] batch of positions
        batch = torch.as_tensor(p[:10]).reshape(2, 5, 2)
        assert env.torch_dynamics(batch, torch.tensor([1.0, 0.0], dtype=torch.float64)).shape == (2, 5, 2)


def test_velocities_are_clipped_to_max_velocity():
    env = Maze2D("open", max_velocity=0.5)
    out = env.step_positions(np.array([[3.0, 3.0]]), np.array([[9.0, -9.0]]))
    assert out == pytest.approx(np.array([[3.05, 2.95]]))


# ---------------------------------------------------------------------------- rewards and ends
def test_sparse_reward_is_one_exactly_when_info_says_success():
    env = Maze2D("open", reward_type="sparse")
    env.reset(options={"start": (2.5, 3.5), "goal": (2.5, 2.5)})
    rewards, successes = [], []
    for _ in range(20):  # passes through the goal disc and out again
        _, reward, terminated, _, info = env.step([0.0, -1.0])
        assert reward in (0.0, 1.0) and reward == float(info["success"]) and not terminated
        assert info["is_success"] == info["success"] == (info["dist_to_goal"] < env.goal_radius)
        rewards.append(reward)
        successes.append(info["success"])
    assert any(successes) and not all(successes)


def test_dense_reward_is_minus_distance_over_maze_diagonal():
    env = gym.make("Maze2D-Medium-v0")
    env.reset(seed=0)
    diagonal = np.hypot(8, 8)
    for _ in range(100):
        _, reward, _, _, info = env.step(env.action_space.sample())
        assert -1.0 <= reward <= 0.0
        assert reward == pytest.approx(-info["dist_to_goal"] / diagonal, rel=1e-6)


def test_terminate_on_success_ends_the_episode_only_when_asked():
    for flag in (False, True):
        env = Maze2D("open", terminate_on_success=flag)
        env.reset(options={"start": (2.5, 2.8), "goal": (2.5, 2.5)})
        _, _, terminated, truncated, info = env.step([0.0, -1.0])
        assert info["success"] and terminated == flag and not truncated


def test_registered_time_limit_truncates_exactly_at_the_limit():
    env = gym.make("Maze2D-Open-v0", max_episode_steps=10)
    env.reset(seed=0)
    truncations = [env.step(env.action_space.sample())[3] for _ in range(10)]
    assert truncations == [False] * 9 + [True]


def test_constructor_step_cap_truncates_and_default_never_does():
    capped = Maze2D("open", max_episode_steps=5)
    capped.reset(seed=0)
    assert [capped.step([0.1, 0.0])[3] for _ in range(5)] == [False] * 4 + [True]
    endless = Maze2D("open")
    endless.reset(seed=0)
    assert not any(endless.step([0.1, 0.0])[3] for _ in range(300))


# ---------------------------------------------------------------------------- render, TorchRL, errors
def test_rgb_render_draws_walls_agent_and_goal():
    env = Maze2D("medium", render_mode="rgb_array")
    env.reset(seed=0)
    img = env.render()
    assert img.shape == (8 * 32, 8 * 32, 3) and img.dtype == np.uint8
    assert (img[5, 5] == 60).all()  # cell (0, 0) is wall
    ax, ay = (env.pos * 32).astype(int)
    gx, gy = (env.goal * 32).astype(int)
    assert img[ay, ax].tolist() == [40, 80, 220] and img[gy, gx].tolist() == [40, 170, 60]
    assert Maze2D("corridor", render_mode="rgb_array").render().shape == (5 * 32, 20 * 32, 3)
    assert Maze2D("open").render() is None


def test_make_env_flattens_the_goal_observation_and_survives_episode_ends():
    from torchrl_layered.envs.make import goal_slices

    env = make_env("Maze2D-Open-v0", num_envs=2, max_episode_steps=4)
    rollout = env.rollout(6, break_when_any_done=False)
    assert rollout.batch_size == (2, 6) and rollout["observation"].shape == (2, 6, 6)
    slices = goal_slices(env)
    assert slices == {"observation": slice(0, 2), "achieved_goal": slice(2, 4), "desired_goal": slice(4, 6)}
    obs = rollout["next", "observation"]
    assert torch.equal(obs[..., slices["observation"]], obs[..., slices["achieved_goal"]])
    # the episode ended after step 4: the next observation there is the true last one
    assert bool(rollout["next", "truncated"][:, 3].all())
    assert not torch.equal(rollout["next", "observation"][:, 3], rollout["observation"][:, 4])
    with pytest.raises(ValueError, match="goal-based env"):
        goal_slices(make_env("Pendulum-v1", 1))


def test_make_env_rollout_keeps_the_dict_keys_without_flattening():
    env = make_env("Maze2D-Medium-v0", num_envs=2, flatten_goals=False)
    rollout = env.rollout(6, break_when_any_done=False)
    assert rollout.batch_size == (2, 6)
    for key in ("observation", "achieved_goal", "desired_goal"):
        assert rollout[key].shape == (2, 6, 2) and rollout["next", key].shape == (2, 6, 2)
    assert rollout["next", "reward"].shape == (2, 6, 1)
    assert bool((rollout["next", "reward"] <= 0).all() and (rollout["next", "reward"] >= -1).all())
    # GymWrapper reads the info dict, so success flags come along
    assert rollout["next", "success"].shape == (2, 6) and rollout["next", "success"].dtype == torch.bool


@pytest.mark.parametrize(
    "layout, message",
    [
        ([[1, 1, 1], [1, 0]], "rectangular"),
        ([[1, 1], [1, 1]], "no free cell"),
        ([[0, 2], [0, 0]], "only 0"),
        ([0, 0, 0], "rectangular"),
        ("nowhere", "unknown layout"),
    ],
)
def test_bad_layouts_are_refused_with_a_clear_message(layout, message):
    with pytest.raises(ValueError, match=message):
        Maze2D(layout)


def test_bad_settings_are_refused_with_a_clear_message():
    with pytest.raises(ValueError, match="is a wall"):
        Maze2D("open", start_cells=[(0, 0)])
    with pytest.raises(ValueError, match="outside"):
        Maze2D("open", goal_cells=[(9, 9)])
    with pytest.raises(ValueError, match="agent_radius"):
        Maze2D("open", agent_radius=0.6)
    with pytest.raises(ValueError, match="jump over a wall"):
        Maze2D("open", dt=2.0)
    with pytest.raises(ValueError, match="reward_type"):
        Maze2D("open", reward_type="shaped")
    with pytest.raises(ValueError, match="further apart"):
        Maze2D("open", start_cells=[(2, 2)], goal_cells=[(2, 2)])
