"""Networks: ensembles, encoders, predictors."""
from torchrl_layered.modules.ensemble import EnsembleLinear, ProbabilisticEnsemble, RunningNormalizer

__all__ = ["EnsembleLinear", "ProbabilisticEnsemble", "RunningNormalizer"]
