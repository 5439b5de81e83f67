"""torchrl_layered: hierarchical RL levels for TorchRL, built on TensorDict."""
from torchrl_layered.hierarchy import Hierarchy, HierarchyTransform
from torchrl_layered.levels import ActionSequenceLevel, ConstantLevel, Level, RandomLevel

__version__ = "0.1.0"

__all__ = ["Hierarchy", "HierarchyTransform", "Level", "RandomLevel", "ConstantLevel", "ActionSequenceLevel"]
