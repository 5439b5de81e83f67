"""Levels: the layers of a hierarchy, each a TensorDict module."""
from torchrl_layered.levels.base import Level, LevelKeys
from torchrl_layered.levels.planner import PlannerLevel
from torchrl_layered.levels.simple import ActionSequenceLevel, ConstantLevel, RandomLevel

__all__ = ["Level", "LevelKeys", "PlannerLevel", "RandomLevel", "ConstantLevel", "ActionSequenceLevel"]
