"""Environments and env helpers."""
from torchrl_layered.envs.make import make_env

__all__ = ["make_env"]
