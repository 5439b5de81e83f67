"""The hierarchy of levels, its option-state transform and its semi-MDP transitions."""
from torchrl_layered.hierarchy.hierarchy import Hierarchy
from torchrl_layered.keys import level_key
from torchrl_layered.hierarchy.transform import HierarchyTransform
from torchrl_layered.hierarchy.transitions import level_transitions

__all__ = ["Hierarchy", "HierarchyTransform", "level_key", "level_transitions"]
