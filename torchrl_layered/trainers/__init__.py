"""The training app's loop, settings, ready-made hierarchies, evaluation and checkpoints."""
from torchrl_layered.trainers.checkpoint import CheckpointError, read_checkpoint
from torchrl_layered.trainers.config import ConfigError, TrainConfig, compose_config, parse_config
from torchrl_layered.trainers.evaluate import EvalResult, evaluate
from torchrl_layered.hierarchies import HIERARCHIES, make_hierarchy, register_hierarchy
from torchrl_layered.trainers.trainer import train

__all__ = [
    "HIERARCHIES", "make_hierarchy", "register_hierarchy", "train", "TrainConfig", "ConfigError", "CheckpointError",
    "compose_config", "parse_config", "read_checkpoint", "evaluate", "EvalResult",
]
