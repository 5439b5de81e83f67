"""The cross-entropy method (CEM) planner: refit a Gaussian to the best sampled sequences."""
from __future__ import annotations

import torch
from torchrl.data import TensorSpec

from torchrl_layered.planners.base import SamplingPlanner


class CEMPlanner(SamplingPlanner):
    """Plans by the cross-entropy method over action sequences, batched over instances.

    Each iteration samples ``num_samples`` sequences from ``N(mean, std)`` (clipped to the
    bounds), keeps the ``num_elites`` best and moves the mean and std towards theirs with
    ``momentum``: the simplest sampling planner, and the baseline the others refine.

    Args:
        action_spec: a continuous `Bounded` spec of one action, shape ``[*A]``.
        horizon: the number of steps ``H`` of a plan.
        num_samples: the number of candidates per instance and iteration.
        num_iterations: the number of refits (objective calls).
        num_elites: the number of best candidates the Gaussian is refitted to.
        momentum: the weight of the old mean/std in each refit, in ``[0, 1)``.
        initial_std: the std at the start of each call, as a fraction of the half range.
        min_std: the floor of the std, as a fraction of the half range.
        particle_reduction: reduction of per-particle returns: ``"mean"`` or ``"min"``.
        result_mode: ``"mean"`` returns the final mean, ``"best"`` the best candidate scored.
        initial_guess: ``[*A]``, where a fresh plan starts (default: the centre of the range).

    Example:
        >>> planner = CEMPlanner(Bounded(-1.0, 1.0, shape=(2,)), horizon=10, num_samples=512,
        ...                      num_iterations=6, num_elites=64)
        >>> result = planner(lambda a: -a.pow(2).sum((-2, -1)), batch_size=4)
        >>> result.action.shape
        torch.Size([4, 10, 2])
    """

    def __init__(
        self,
        action_spec: TensorSpec,
        horizon: int,
        num_samples: int,
        num_iterations: int,
        num_elites: int,
        *,
        momentum: float = 0.1,
        initial_std: float = 1.0,
        min_std: float = 0.05,
        particle_reduction: str = "mean",
        result_mode: str = "mean",
        initial_guess: torch.Tensor | None = None,
    ):
        super().__init__(
            action_spec, horizon, num_samples, num_iterations, num_elites, initial_std=initial_std,
            min_std=min_std, particle_reduction=particle_reduction, result_mode=result_mode,
            initial_guess=initial_guess,
        )
        if not 0 <= momentum < 1:
            raise ValueError(f"{type(self).__name__}: momentum must be in [0, 1); got {momentum}")
        self.momentum = momentum

    def _refit(
        self, mean: torch.Tensor, std: torch.Tensor, elites: torch.Tensor, elite_scores: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        elite_mean = elites.mean(dim=1)
        elite_std = elites.std(dim=1, correction=0)
        mean = self.momentum * mean + (1 - self.momentum) * elite_mean
        std = self.momentum * std + (1 - self.momentum) * elite_std
        return mean, torch.maximum(std, self.min_std.to(std.device))
