"""Networks: probabilistic ensembles, the TD-MPC2 and SPlaTES world models, two-hot heads."""
from torchrl_layered.modules.ensemble import EnsembleLinear, PlanningEnsemble, ProbabilisticEnsemble, RunningNormalizer

__all__ = ["EnsembleLinear", "PlanningEnsemble", "ProbabilisticEnsemble", "RunningNormalizer"]
