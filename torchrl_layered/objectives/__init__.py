"""TorchRL `LossModule`s of the levels."""
from torchrl_layered.objectives.ensemble import EnsembleModelLoss

__all__ = ["EnsembleModelLoss"]
