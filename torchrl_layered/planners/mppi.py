"""The MPPI planner as TD-MPC2 runs it: a score-weighted refit to the top elites."""
from __future__ import annotations

import torch
from torchrl.data import TensorSpec

from torchrl_layered.planners.base import SamplingPlanner, _take


class MPPIPlanner(SamplingPlanner):
    """Model predictive path integral control over the top elites, batched over instances.

    Each iteration samples ``num_samples`` sequences around the mean, keeps the
    ``num_elites`` best and refits mean and std to them weighted by
    ``softmax((score - max score) / temperature)``: unlike CEM, a much better elite counts
    for more than a barely-elite one. This is the planner of TD-MPC2, which also mixes policy
    rollouts into the samples (``extra_samples`` in `forward`).

    Note that TD-MPC2's ``temperature`` *multiplies* the scores; here it divides them, as a
    temperature does, so TD-MPC2's ``temperature=0.5`` is ``temperature=2.0`` here.

    Args:
        action_spec: a continuous `Bounded` spec of one action, shape ``[*A]``.
        horizon: the number of steps ``H`` of a plan.
        num_samples: the number of candidates per instance and iteration.
        num_iterations: the number of refits (objective calls).
        num_elites: the number of best candidates the weighted refit uses.
        temperature: the softmax temperature of the weights, in the objective's units; lower
            is greedier.
        min_std: the floor of the std, as a fraction of the half range.
        max_std: the ceiling of the std, as a fraction of the half range.
        initial_std: the std at the start of each call, as a fraction of the half range; the
            default starts at ``max_std``, as TD-MPC2 does.
        particle_reduction: reduction of per-particle returns: ``"mean"`` or ``"min"``.
        result_mode: ``"mean"`` returns the final mean, ``"best"`` the best candidate scored,
            ``"sample"`` one of the last iteration's elites drawn by weight (TD-MPC2).
        initial_guess: ``[*A]``, where a fresh plan starts (default: the centre of the range).
    """

    result_modes = ("mean", "best", "sample")

    def __init__(
        self,
        action_spec: TensorSpec,
        horizon: int,
        num_samples: int,
        num_iterations: int,
        num_elites: int,
        *,
        temperature: float = 0.5,
        min_std: float = 0.05,
        max_std: float = 2.0,
        initial_std: float = 2.0,
        particle_reduction: str = "mean",
        result_mode: str = "mean",
        initial_guess: torch.Tensor | None = None,
    ):
        super().__init__(
            action_spec, horizon, num_samples, num_iterations, num_elites, initial_std=initial_std,
            min_std=min_std, particle_reduction=particle_reduction, result_mode=result_mode,
            initial_guess=initial_guess,
        )
        name = type(self).__name__
        if not temperature > 0:
            raise ValueError(f"{name}: temperature must be > 0; got {temperature}")
        if not max_std >= min_std:
            raise ValueError(f"{name}: max_std ({max_std}) must be >= min_std ({min_std})")
        self.temperature = temperature
        self.register_buffer("max_std", max_std * (self.high - self.low) / 2, persistent=False)

    def _weights(self, elite_scores: torch.Tensor) -> torch.Tensor:
        # -inf scores (NaN objectives) become the lowest finite value, so that an all-failed
        # instance gets uniform weights instead of NaN.
        logits = (elite_scores / self.temperature).clamp_min(torch.finfo(elite_scores.dtype).min)
        return torch.softmax(logits, dim=1)

    def _refit(
        self, mean: torch.Tensor, std: torch.Tensor, elites: torch.Tensor, elite_scores: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        weights = self._weights(elite_scores).to(elites.dtype)
        weights = weights.reshape(*weights.shape, *([1] * (elites.dim() - 2)))
        mean = (weights * elites).sum(dim=1)
        variance = (weights * (elites - mean.unsqueeze(1)).pow(2)).sum(dim=1)
        std = torch.minimum(torch.maximum(variance.sqrt(), self.min_std.to(std.device)), self.max_std.to(std.device))
        return mean, std

    def _select(
        self,
        mean: torch.Tensor,
        elites: torch.Tensor,
        elite_scores: torch.Tensor,
        best_action: torch.Tensor,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        if self.result_mode != "sample":
            return super()._select(mean, elites, elite_scores, best_action, generator)
        index = torch.multinomial(self._weights(elite_scores), 1, generator=generator)
        return _take(elites, index).squeeze(1)
