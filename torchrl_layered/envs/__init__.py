"""Environments and env helpers."""
from torchrl_layered.envs.make import make_env
from torchrl_layered.envs.maze2d import Maze2D, register_maze2d_envs

# importing the package makes the Maze2D-*-v0 ids available to gym.make and make_env
register_maze2d_envs()

__all__ = ["make_env", "Maze2D", "register_maze2d_envs"]
