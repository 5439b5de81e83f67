"""`Maze2D`: a velocity-controlled point mass in a grid maze, goal-based, in pure NumPy."""
from __future__ import annotations

import math
from collections.abc import Sequence

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces


def _simple_layout() -> np.ndarray:
    """The 10x10 "simple" maze: one horizontal and one vertical wall, each with a gap."""
    walls = np.zeros((10, 10), dtype=np.int64)
    walls[0, :] = walls[-1, :] = walls[:, 0] = walls[:, -1] = 1
    walls[3, 2:8] = 1  # horizontal wall in row 3 over columns 2..7
    walls[2:8, 6] = 1  # vertical wall in column 6 over rows 2..7
    # the gaps are cleared last so that a gap stays free even where the two walls cross
    walls[3, 5] = 0
    walls[5, 6] = 0
    return walls


def _border_layout(width: int, height: int) -> np.ndarray:
    """An open room of ``width`` x ``height`` cells whose outer ring is wall."""
    walls = np.zeros((height, width), dtype=np.int64)
    walls[0, :] = walls[-1, :] = walls[:, 0] = walls[:, -1] = 1
    return walls


_MEDIUM_CORNERS = [(1, 1), (6, 6), (6, 1), (1, 6)]

# Named layouts: ``layout[y][x]`` with 1 = wall, plus the cells whose centres are the default
# starts and goals (None = every free cell).
LAYOUTS: dict[str, dict] = {
    "medium": {
        "layout": np.array(
            [
                [1, 1, 1, 1, 1, 1, 1, 1],
                [1, 0, 0, 1, 1, 0, 0, 1],
                [1, 0, 0, 1, 0, 0, 0, 1],
                [1, 1, 0, 0, 0, 1, 1, 1],
                [1, 0, 0, 1, 0, 0, 0, 1],
                [1, 0, 1, 0, 0, 1, 0, 1],
                [1, 0, 0, 0, 1, 0, 0, 1],
                [1, 1, 1, 1, 1, 1, 1, 1],
            ]
        ),
        "start_cells": _MEDIUM_CORNERS,
        "goal_cells": _MEDIUM_CORNERS,
    },
    "simple": {"layout": _simple_layout(), "start_cells": [(1, 1)], "goal_cells": [(8, 8)]},
    "corridor": {"layout": _border_layout(20, 5), "start_cells": [(1, 2)], "goal_cells": [(18, 2)]},
    "open": {"layout": _border_layout(6, 6), "start_cells": None, "goal_cells": None},
}

# Registered gymnasium ids: id -> (layout name, TimeLimit steps).
MAZE2D_ENV_IDS: dict[str, tuple[str, int]] = {
    "Maze2D-Medium-v0": ("medium", 500),
    "Maze2D-Simple-v0": ("simple", 500),
    "Maze2D-Corridor-v0": ("corridor", 1000),
    "Maze2D-Open-v0": ("open", 200),
}


def register_maze2d_envs() -> None:
    """Registers the ``Maze2D-*-v0`` ids with gymnasium, skipping ids already registered.

    Skipping makes a second import (or a module reload) silent: gymnasium warns on re-registration.
    """
    for env_id, (layout, max_steps) in MAZE2D_ENV_IDS.items():
        if env_id in gym.registry:
            continue
        gym.register(
            id=env_id,
            entry_point="torchrl_layered.envs.maze2d:Maze2D",
            max_episode_steps=max_steps,
            kwargs={"layout": layout},
        )


class Maze2D(gym.Env):
    """A disc-shaped point mass driven by velocity commands through a grid maze towards a goal.

    It is a small, dependency-free goal-based navigation task whose exact dynamics are exposed
    (``step_positions`` in NumPy, ``torch_dynamics`` in torch) so planners can use them as a
    known model. Cell ``(x, y)`` spans ``[x, x+1] x [y, y+1]`` times ``cell_size``. A move that
    would make the disc overlap a wall is resolved as: take the full move if it is free; else
    the x-only move, then the y-only move, each taken up to contact rather than all-or-nothing
    (so a move into a wall stops with the disc touching it, and a diagonal push along a wall
    slides). Positions stay free: no step ever leaves the disc overlapping a wall.

    Args:
        layout: a name in ``LAYOUTS`` ("medium", "simple", "corridor", "open") or an array-like
            ``[H][W]`` of 0/1 with 1 = wall, indexed ``layout[y][x]``.
        start_cells: ``(x, y)`` cells whose centres are the candidate starts; None = the named
            layout's starts, or every free cell for an array layout.
        goal_cells: the candidate goal cells, as ``start_cells``.
        cell_size: side length of a cell in world units.
        agent_radius: radius of the agent's disc; at most ``cell_size / 2`` so it fits in a cell.
        dt: integration step, ``pos + dt * velocity``.
        max_velocity: each velocity component is clipped to ``[-max_velocity, max_velocity]``.
        goal_radius: the goal is reached when the centre is closer than this to the goal.
        reward_type: ``"dense"`` (``-dist / maze diagonal``, in [-1, 0]) or ``"sparse"``
            (1 on success, else 0).
        max_episode_steps: truncate after this many steps; None = never (gymnasium's ``TimeLimit``
            from the registration does it for the registered ids).
        render_mode: None or ``"rgb_array"``.
        terminate_on_success: end the episode (``terminated``) when the goal is reached.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}
    pixels_per_cell = 32

    def __init__(
        self,
        layout: str | Sequence[Sequence[int]] | np.ndarray = "medium",
        start_cells: Sequence[tuple[int, int]] | None = None,
        goal_cells: Sequence[tuple[int, int]] | None = None,
        cell_size: float = 1.0,
        agent_radius: float = 0.15,
        dt: float = 0.1,
        max_velocity: float = 1.0,
        goal_radius: float = 0.3,
        reward_type: str = "dense",
        max_episode_steps: int | None = None,
        render_mode: str | None = None,
        terminate_on_success: bool = False,
    ):
        if isinstance(layout, str):
            if layout not in LAYOUTS:
                raise ValueError(f"Maze2D: unknown layout {layout!r}; pick one of {sorted(LAYOUTS)} or pass a 0/1 array")
            preset = LAYOUTS[layout]
            walls = preset["layout"]
            start_cells = preset["start_cells"] if start_cells is None else start_cells
            goal_cells = preset["goal_cells"] if goal_cells is None else goal_cells
        else:
            walls = layout
        self.walls = self._check_layout(walls)
        self.height, self.width = self.walls.shape

        if not cell_size > 0:
            raise ValueError(f"Maze2D needs cell_size > 0; got {cell_size}")
        if not 0 < agent_radius <= cell_size / 2:
            raise ValueError(
                f"Maze2D needs 0 < agent_radius <= cell_size / 2 so the disc fits in a cell; "
                f"got agent_radius={agent_radius}, cell_size={cell_size}"
            )
        if not (dt > 0 and max_velocity > 0):
            raise ValueError(f"Maze2D needs dt > 0 and max_velocity > 0; got dt={dt}, max_velocity={max_velocity}")
        if dt * max_velocity > cell_size:
            # a longer step could carry the disc across a whole wall cell in one move
            raise ValueError(
                f"Maze2D needs dt * max_velocity <= cell_size so a step cannot jump over a wall; "
                f"got {dt} * {max_velocity} > {cell_size}: lower dt or max_velocity"
            )
        if not goal_radius > 0:
            raise ValueError(f"Maze2D needs goal_radius > 0; got {goal_radius}")
        if reward_type not in ("dense", "sparse"):
            raise ValueError(f"Maze2D reward_type must be 'dense' or 'sparse'; got {reward_type!r}")
        if max_episode_steps is not None and max_episode_steps < 1:
            raise ValueError(f"Maze2D needs max_episode_steps >= 1 or None; got {max_episode_steps}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"Maze2D render_mode must be None or 'rgb_array'; got {render_mode!r}")

        self.cell_size = float(cell_size)
        self.agent_radius = float(agent_radius)
        self.dt = float(dt)
        self.max_velocity = float(max_velocity)
        self.goal_radius = float(goal_radius)
        self.reward_type = reward_type
        self.max_episode_steps = max_episode_steps
        self.render_mode = render_mode
        self.terminate_on_success = bool(terminate_on_success)
        self.size = np.array([self.width, self.height], dtype=np.float64) * self.cell_size
        self.maze_diameter = float(np.hypot(*self.size))

        self.start_positions = self._cell_centres(start_cells, "start_cells")
        self.goal_positions = self._cell_centres(goal_cells, "goal_cells")
        gaps = np.linalg.norm(self.start_positions[:, None] - self.goal_positions[None], axis=-1)
        if not (gaps > self.goal_radius).any():
            raise ValueError(
                f"Maze2D: every start is within goal_radius={self.goal_radius} of every goal; "
                "give start_cells and goal_cells that are further apart"
            )

        # the disc can reach cells up to ceil(radius / cell) away from the one holding its centre
        reach = math.ceil(self.agent_radius / self.cell_size)
        offsets = np.arange(-reach, reach + 1)
        self._off_x, self._off_y = (o.ravel() for o in np.meshgrid(offsets, offsets, indexing="xy"))
        # a slide moves at most one cell, so it can meet squares one cell further along its axis
        along, across = np.meshgrid(np.arange(-reach - 1, reach + 2), offsets, indexing="xy")
        self._slide_along, self._slide_across = along.ravel(), across.ravel()
        self._margin = self._margin_for(np.finfo(np.float64).eps)
        self._torch_cache: dict[torch.device, dict[str, torch.Tensor]] = {}

        box = spaces.Box(low=np.zeros(2, np.float32), high=self.size.astype(np.float32), dtype=np.float32)
        self.observation_space = spaces.Dict(observation=box, achieved_goal=box, desired_goal=box)
        self.action_space = spaces.Box(-self.max_velocity, self.max_velocity, shape=(2,), dtype=np.float32)

        self.pos = self.start_positions[0].copy()
        self.goal = self.goal_positions[0].copy()
        self._steps = 0
        self._has_reset = False
        self._background: np.ndarray | None = None

    # ------------------------------------------------------------------ construction helpers
    def _margin_for(self, eps: float) -> float:
        """How far short of exact contact a slide stops, so rounding never leaves the disc in a wall."""
        return 8.0 * eps * (float(self.size.max()) + self.cell_size)

    @staticmethod
    def _check_layout(layout) -> np.ndarray:
        """Turns a 0/1 array-like into a ``[H, W]`` bool wall grid, refusing malformed layouts."""
        try:
            grid = np.asarray(layout)
        except ValueError:
            grid = None  # numpy refuses ragged nested lists
        if grid is None or grid.ndim != 2 or grid.dtype == object:
            raise ValueError("Maze2D layout must be rectangular: a 2-D array-like [H][W] whose rows all have the same length")
        if grid.size == 0:
            raise ValueError("Maze2D layout is empty; give at least one row and one column")
        if not np.isin(grid, (0, 1)).all():
            raise ValueError("Maze2D layout must hold only 0 (free) and 1 (wall)")
        walls = grid.astype(bool)
        if walls.all():
            raise ValueError("Maze2D layout has no free cell (all 1s); mark at least one cell 0")
        return walls

    def _cell_centres(self, cells, name: str) -> np.ndarray:
        """Centres ``[N, 2]`` of the given free cells (all free cells if None), checked."""
        if cells is None:
            ys, xs = np.nonzero(~self.walls)
            cells = list(zip(xs.tolist(), ys.tolist()))
        cells = [tuple(int(c) for c in cell) for cell in cells]
        if not cells:
            raise ValueError(f"Maze2D {name} is empty; give at least one (x, y) cell or None for all free cells")
        for x, y in cells:
            if not (0 <= x < self.width and 0 <= y < self.height):
                raise ValueError(f"Maze2D {name}: cell {(x, y)} is outside the {self.width}x{self.height} layout")
            if self.walls[y, x]:
                raise ValueError(f"Maze2D {name}: cell {(x, y)} is a wall; pick free cells (layout[y][x] == 0)")
        return (np.array(cells, dtype=np.float64) + 0.5) * self.cell_size

    # ------------------------------------------------------------------ NumPy dynamics
    def blocked(self, positions: np.ndarray) -> np.ndarray:
        """Whether a disc centred at each of ``positions [..., 2]`` overlaps a wall or leaves the maze.

        It is the one collision test behind the dynamics; touching a wall (distance == radius) is free.
        """
        p = np.asarray(positions, dtype=np.float64)
        x, y = p[..., 0], p[..., 1]
        r, cs = self.agent_radius, self.cell_size
        out = (x < r) | (x > self.size[0] - r) | (y < r) | (y > self.size[1] - r)
        cx = self._cell_np(x, self.size[0])[..., None] + self._off_x
        cy = self._cell_np(y, self.size[1])[..., None] + self._off_y
        inside = (cx >= 0) & (cx < self.width) & (cy >= 0) & (cy < self.height)
        wall = inside & self.walls[np.clip(cy, 0, self.height - 1), np.clip(cx, 0, self.width - 1)]
        # distance from the centre to each neighbouring square, per axis
        gap_x = np.maximum(np.maximum(cx * cs - x[..., None], x[..., None] - (cx + 1) * cs), 0.0)
        gap_y = np.maximum(np.maximum(cy * cs - y[..., None], y[..., None] - (cy + 1) * cs), 0.0)
        return out | (wall & (gap_x * gap_x + gap_y * gap_y < r * r)).any(-1)

    def _cell_np(self, coord: np.ndarray, extent: float) -> np.ndarray:
        # far-out coordinates are blocked by the bounds test anyway; clipping keeps the int cast sane
        return np.floor(np.clip(coord, -1.0, extent + 1.0) / self.cell_size).astype(np.int64)

    def _slide(self, p: np.ndarray, d: np.ndarray, axis: int) -> np.ndarray:
        """Moves each ``p`` by ``d[..., axis]`` along ``axis``, stopping where the disc touches a wall.

        The contact point is computed in closed form (not searched for), so a planner can afford it.
        """
        r, cs = self.agent_radius, self.cell_size
        walls = self.walls if axis == 0 else self.walls.T  # indexed [across, along]
        n_across, n_along = walls.shape
        pa, pb, da = p[..., axis], p[..., 1 - axis], d[..., axis]
        ca = self._cell_np(pa, self.size[axis])[..., None] + self._slide_along
        cb = self._cell_np(pb, self.size[1 - axis])[..., None] + self._slide_across
        inside = (ca >= 0) & (ca < n_along) & (cb >= 0) & (cb < n_across)
        wall = inside & walls[np.clip(cb, 0, n_across - 1), np.clip(ca, 0, n_along - 1)]
        pa_, pb_ = pa[..., None], pb[..., None]
        gap_b = np.maximum(np.maximum(cb * cs - pb_, pb_ - (cb + 1) * cs), 0.0)
        in_lane = wall & (gap_b * gap_b < r * r)
        # the centre may come this close (along `axis`) to a square in its lane; the margin keeps
        # rounding from leaving the disc a hair inside the wall
        reach = np.sqrt(np.maximum(r * r - gap_b * gap_b, 0.0)) + self._margin
        forward = (da >= 0)[..., None]
        centre = (ca + 0.5) * cs
        ahead = in_lane & np.where(forward, centre > pa_, centre < pa_)
        upper = np.where(ahead & forward, ca * cs - reach, np.inf).min(-1)
        lower = np.where(ahead & ~forward, (ca + 1) * cs + reach, -np.inf).max(-1)
        hi = np.minimum(upper, self.size[axis] - r - self._margin)
        lo = np.maximum(lower, r + self._margin)
        target = np.minimum(np.maximum(pa + da, lo), hi)
        # never move backwards (rounding at contact) nor further than asked
        target = np.where(da >= 0, np.clip(target, pa, pa + da), np.clip(target, pa + da, pa))
        out = p.copy()
        out[..., axis] = target
        # keeps "a free position stays free" exact even where the closed form rounds badly
        return np.where(self.blocked(out)[..., None], p, out)

    def step_positions(self, positions: np.ndarray, velocities: np.ndarray) -> np.ndarray:
        """Applies one step of the env's dynamics to a batch: ``[..., 2]`` positions -> ``[..., 2]``.

        The env's own ``step`` calls it, so a planner using it gets exactly the true dynamics.

        Args:
            positions: free disc centres ``[..., 2]`` (a blocked position never moves into a wall
                further, but is not pushed out either).
            velocities: commanded velocities ``[..., 2]``, clipped to ``max_velocity`` per axis.
        """
        p = np.asarray(positions, dtype=np.float64)
        v = np.clip(np.asarray(velocities, dtype=np.float64), -self.max_velocity, self.max_velocity)
        p, v = np.broadcast_arrays(p, v)
        d = self.dt * v
        new = p + d
        hit = self.blocked(new)
        if hit.any():
            # blocked moves slide: along x up to contact, then along y up to contact
            new[hit] = self._slide(self._slide(p[hit], d[hit], 0), d[hit], 1)
        return new

    # ------------------------------------------------------------------ torch dynamics
    def _torch_consts(self, device: torch.device) -> dict[str, torch.Tensor]:
        if device not in self._torch_cache:
            self._torch_cache[device] = {
                name: torch.as_tensor(value, device=device)
                for name, value in (
                    ("walls", self.walls),
                    ("walls_t", np.ascontiguousarray(self.walls.T)),
                    ("off_x", self._off_x),
                    ("off_y", self._off_y),
                    ("along", self._slide_along),
                    ("across", self._slide_across),
                )
            }
        return self._torch_cache[device]

    def _cell_torch(self, coord: torch.Tensor, extent: float) -> torch.Tensor:
        return torch.floor(coord.clamp(-1.0, extent + 1.0) / self.cell_size).long()

    def torch_blocked(self, positions: torch.Tensor) -> torch.Tensor:
        """Torch twin of ``blocked``: a bool ``[...]`` mask of positions ``[..., 2]`` overlapping a wall.

        It lets a planner check many samples on their device without leaving torch.
        """
        c = self._torch_consts(positions.device)
        x, y = positions[..., 0], positions[..., 1]
        r, cs = self.agent_radius, self.cell_size
        w_max, h_max = float(self.size[0]), float(self.size[1])
        out = (x < r) | (x > w_max - r) | (y < r) | (y > h_max - r)
        cx = self._cell_torch(x, w_max).unsqueeze(-1) + c["off_x"]
        cy = self._cell_torch(y, h_max).unsqueeze(-1) + c["off_y"]
        inside = (cx >= 0) & (cx < self.width) & (cy >= 0) & (cy < self.height)
        wall = inside & c["walls"][cy.clamp(0, self.height - 1), cx.clamp(0, self.width - 1)]
        xs, ys = x.unsqueeze(-1), y.unsqueeze(-1)
        # cell edges in the positions' dtype (a long * float product would be float32)
        fx, fy = cx.to(positions.dtype), cy.to(positions.dtype)
        zero = positions.new_zeros(())
        gap_x = torch.maximum(torch.maximum(fx * cs - xs, xs - (fx + 1) * cs), zero)
        gap_y = torch.maximum(torch.maximum(fy * cs - ys, ys - (fy + 1) * cs), zero)
        return out | (wall & (gap_x * gap_x + gap_y * gap_y < r * r)).any(-1)

    def _torch_slide(self, p: torch.Tensor, d: torch.Tensor, axis: int) -> torch.Tensor:
        """Torch twin of ``_slide``."""
        c = self._torch_consts(p.device)
        r, cs = self.agent_radius, self.cell_size
        walls = c["walls"] if axis == 0 else c["walls_t"]
        n_across, n_along = walls.shape
        extent_a, extent_b = float(self.size[axis]), float(self.size[1 - axis])
        margin = self._margin if p.dtype == torch.float64 else self._margin_for(torch.finfo(p.dtype).eps)
        pa, pb, da = p[..., axis], p[..., 1 - axis], d[..., axis]
        ca = self._cell_torch(pa, extent_a).unsqueeze(-1) + c["along"]
        cb = self._cell_torch(pb, extent_b).unsqueeze(-1) + c["across"]
        inside = (ca >= 0) & (ca < n_along) & (cb >= 0) & (cb < n_across)
        wall = inside & walls[cb.clamp(0, n_across - 1), ca.clamp(0, n_along - 1)]
        fa, fb = ca.to(p.dtype), cb.to(p.dtype)
        pa_, pb_ = pa.unsqueeze(-1), pb.unsqueeze(-1)
        zero = p.new_zeros(())
        gap_b = torch.maximum(torch.maximum(fb * cs - pb_, pb_ - (fb + 1) * cs), zero)
        in_lane = wall & (gap_b * gap_b < r * r)
        reach = torch.sqrt(torch.clamp(r * r - gap_b * gap_b, min=0.0)) + margin
        forward = (da >= 0).unsqueeze(-1)
        centre = (fa + 0.5) * cs
        ahead = in_lane & torch.where(forward, centre > pa_, centre < pa_)
        inf = torch.tensor(float("inf"), dtype=p.dtype, device=p.device)
        upper = torch.where(ahead & forward, fa * cs - reach, inf).amin(-1)
        lower = torch.where(ahead & ~forward, (fa + 1) * cs + reach, -inf).amax(-1)
        hi = upper.clamp(max=extent_a - r - margin)
        lo = lower.clamp(min=r + margin)
        target = torch.minimum(torch.maximum(pa + da, lo), hi)
        end = pa + da
        target = torch.where(
            da >= 0,
            torch.minimum(torch.maximum(target, pa), end),
            torch.maximum(torch.minimum(target, pa), end),
        )
        out = p.clone()
        out[..., axis] = target
        return torch.where(self.torch_blocked(out).unsqueeze(-1), p, out)

    def torch_dynamics(self, positions: torch.Tensor, velocities: torch.Tensor) -> torch.Tensor:
        """Torch twin of ``step_positions``: one step for positions/velocities ``[..., 2]``, vectorised.

        Planners roll it out over many samples as a known model; it matches ``step_positions``
        exactly in float64 and to float precision in float32.

        Args:
            positions: free disc centres ``[..., 2]`` (floating point; the result keeps their dtype).
            velocities: commanded velocities ``[..., 2]``, broadcast against ``positions``.
        """
        if not positions.is_floating_point():
            positions = positions.float()
        v = velocities.to(positions.dtype).clamp(-self.max_velocity, self.max_velocity)
        p, v = torch.broadcast_tensors(positions, v)
        d = self.dt * v
        new = p + d
        hit = self.torch_blocked(new)
        slid = self._torch_slide(self._torch_slide(p, d, 0), d, 1)
        return torch.where(hit.unsqueeze(-1), slid, new)

    # ------------------------------------------------------------------ gymnasium API
    def compute_reward(self, achieved_goal: np.ndarray, desired_goal: np.ndarray, info=None) -> np.ndarray:
        """The reward for ``[..., 2]`` achieved/desired goals, vectorised.

        It follows the goal-env convention so hindsight relabelling can recompute rewards.
        """
        dist = np.linalg.norm(np.asarray(achieved_goal, np.float64) - np.asarray(desired_goal, np.float64), axis=-1)
        if self.reward_type == "sparse":
            return (dist < self.goal_radius).astype(np.float64)
        return -dist / self.maze_diameter

    def torch_reward(self, achieved_goal: torch.Tensor, desired_goal: torch.Tensor) -> torch.Tensor:
        """`compute_reward` in torch, for ``[..., 2]`` goals on any device: ``[...]``.

        Planners score imagined states with it (``make_env`` exposes it as ``env.goal_reward``).
        """
        dist = torch.linalg.vector_norm(achieved_goal - desired_goal, dim=-1)
        if self.reward_type == "sparse":
            return (dist < self.goal_radius).to(achieved_goal.dtype)
        return -dist / self.maze_diameter

    def _obs(self) -> dict[str, np.ndarray]:
        pos = self.pos.astype(np.float32)
        return {"observation": pos, "achieved_goal": pos.copy(), "desired_goal": self.goal.astype(np.float32)}

    def _info(self) -> dict:
        dist = float(np.linalg.norm(self.pos - self.goal))
        success = dist < self.goal_radius
        return {"success": success, "is_success": success, "dist_to_goal": dist}

    def _position_option(self, options: dict, key: str) -> np.ndarray | None:
        if key not in options or options[key] is None:
            return None
        pos = np.asarray(options[key], dtype=np.float64).reshape(-1)
        if pos.shape != (2,) or self.blocked(pos):
            raise ValueError(f"Maze2D.reset options[{key!r}] must be a free (x, y) position; got {options[key]!r}")
        return pos

    def _sample_start_goal(self) -> tuple[np.ndarray, np.ndarray]:
        rng = self.np_random
        for _ in range(100):
            start = self.start_positions[rng.integers(len(self.start_positions))]
            goal = self.goal_positions[rng.integers(len(self.goal_positions))]
            if np.linalg.norm(start - goal) > self.goal_radius:
                return start.copy(), goal.copy()
        # rare (few far-apart pairs): draw uniformly among the far-apart pairs, as the loop would
        gaps = np.linalg.norm(self.start_positions[:, None] - self.goal_positions[None], axis=-1)
        pairs = np.argwhere(gaps > self.goal_radius)
        i, j = pairs[rng.integers(len(pairs))]
        return self.start_positions[i].copy(), self.goal_positions[j].copy()

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Draws a goal and a start more than ``goal_radius`` apart and puts the agent at the start.

        ``options`` may fix either with ``{"start": (x, y), "goal": (x, y)}`` (world positions),
        which tests and scripted evaluations use.
        """
        super().reset(seed=seed)
        options = options or {}
        self.pos, self.goal = self._sample_start_goal()
        start = self._position_option(options, "start")
        goal = self._position_option(options, "goal")
        self.pos = self.pos if start is None else start
        if goal is not None:
            self.goal = goal
        self._steps = 0
        self._has_reset = True
        return self._obs(), self._info()

    def step(self, action):
        if not self._has_reset:
            raise RuntimeError("Maze2D.step called before reset(); call env.reset() first")
        action = np.asarray(action, dtype=np.float64).reshape(2)
        if not np.isfinite(action).all():
            raise ValueError(f"Maze2D.step got a non-finite action {action}; actions must be finite velocities")
        self.pos = self.step_positions(self.pos[None], action[None])[0]
        self._steps += 1
        info = self._info()
        reward = float(self.compute_reward(self.pos, self.goal))
        terminated = self.terminate_on_success and info["success"]
        truncated = self.max_episode_steps is not None and self._steps >= self.max_episode_steps
        return self._obs(), reward, terminated, truncated, info

    def render(self):
        """Draws walls, goal (its success disc) and agent as an ``[H*32, W*32, 3]`` uint8 image.

        Image row ``i`` is world ``y`` growing downwards, so the picture reads like the printed layout.
        """
        if self.render_mode != "rgb_array":
            return None
        ppc = self.pixels_per_cell
        if self._background is None:
            wall_px = np.repeat(np.repeat(self.walls, ppc, axis=0), ppc, axis=1)
            self._background = np.where(wall_px[..., None], np.uint8(60), np.uint8(235)).repeat(3, axis=-1)
        img = self._background.copy()
        scale = ppc / self.cell_size
        ys = (np.arange(img.shape[0]) + 0.5)[:, None] / scale
        xs = (np.arange(img.shape[1]) + 0.5)[None, :] / scale
        for centre, radius, colour in (
            (self.goal, self.goal_radius, (40, 170, 60)),
            (self.pos, self.agent_radius, (40, 80, 220)),
        ):
            disc = (xs - centre[0]) ** 2 + (ys - centre[1]) ** 2 <= radius**2
            img[disc] = colour
        return img
