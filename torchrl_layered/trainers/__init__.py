"""The training loop and the ready-made hierarchies of the training app."""
from torchrl_layered.trainers.hierarchies import HIERARCHIES, make_hierarchy
from torchrl_layered.trainers.trainer import train

__all__ = ["HIERARCHIES", "make_hierarchy", "train"]
