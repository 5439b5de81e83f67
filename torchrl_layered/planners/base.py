"""The sampling-planner base class: spec checks, warm start, scoring and the planning loop.

A sampling planner keeps a Gaussian over action sequences ``[H, *A]`` for each instance,
samples candidates, scores them with an objective, refits the Gaussian to the best ones and
repeats. The subclasses only say how to sample (`_sample`) and how to refit (`_refit`); the
loop, the warm start and the batching over instances live here, so that CEM, iCEM and MPPI
agree on them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from tensordict import TensorDict, TensorDictBase
from torch import nn
from torchrl.data import Bounded, Composite, TensorSpec, Unbounded

from torchrl_layered.modules.heap import keep_freed_memory

#: Maps candidate action sequences ``[B, N, H, *A]`` to returns ``[B, N]`` or ``[B, N, P]``.
Objective = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class PlanResult:
    """What one planner call returns.

    Attributes:
        action: ``[B, H, *A]`` the plan, inside the action bounds; ``action[:, 0]`` is the
            action to take now.
        mean: ``[B, H, *A]`` the mean of the final sampling distribution.
        std: ``[B, H, *A]`` the std of the final sampling distribution.
        value: ``[B]`` the best score among all the candidates evaluated (``-inf`` if none
            scored a number).
        state: ``[B]`` the warm start to pass as ``state`` at the next step; its keys are
            those of `SamplingPlanner.state_spec`.
    """

    action: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    value: torch.Tensor
    state: TensorDict


class SamplingPlanner(nn.Module):
    """Base class of the planners that maximise an objective over action sequences by sampling.

    The planning loop (`forward`) is one function, batched over instances and samples, with no
    Python loop over instances and no host synchronisation, so that it runs at the speed of
    the objective on any device. It is a module without parameters: ``planner.to(device)``
    moves its action bounds.

    Warm start: where ``state["has_plan"]`` is True the sampling mean starts from the previous
    plan shifted by one step (step 0 dropped, the new last step set to ``initial_guess``, as
    TD-MPC2 does: nothing is known about it yet, so it gets the prior of a fresh plan); where
    it is False (a new episode: a caller resets an instance by zeroing its state) it starts
    from ``initial_guess`` at every step. The std is reset to ``initial_std`` at every call.

    Args:
        action_spec: a continuous `Bounded` spec of one action, shape ``[*A]``, finite bounds.
        horizon: the number of steps ``H`` of a plan.
        num_samples: the number of candidates sampled per instance and iteration.
        num_iterations: the number of refits; the objective is called once per iteration.
        num_elites: the number of best candidates the distribution is refitted to.
        initial_std: the std at the start of each call, as a fraction of the half range
            ``(high - low) / 2``.
        min_std: the floor of the std, as a fraction of the half range.
        particle_reduction: how per-particle returns ``[B, N, P]`` are reduced: ``"mean"``, or
            ``"min"`` for a pessimistic planner.
        result_mode: what `PlanResult.action` is: ``"mean"`` the final mean, ``"best"`` the
            best candidate ever scored (see `result_modes` for a planner's choices).
        initial_guess: ``[*A]``, the action a fresh plan starts from at every step and a
            shifted plan gets as its new last step; default the centre of the action range.
    """

    #: The values of ``result_mode`` a planner accepts.
    result_modes: tuple[str, ...] = ("mean", "best")

    def __init__(
        self,
        action_spec: TensorSpec,
        horizon: int,
        num_samples: int,
        num_iterations: int,
        num_elites: int,
        *,
        initial_std: float = 1.0,
        min_std: float = 0.05,
        particle_reduction: str = "mean",
        result_mode: str = "mean",
        initial_guess: torch.Tensor | None = None,
    ):
        super().__init__()
        name = type(self).__name__
        if not isinstance(action_spec, Bounded):
            raise TypeError(f"{name} needs a Bounded (Box) action spec; got {type(action_spec).__name__}")
        if not action_spec.dtype.is_floating_point:
            raise TypeError(
                f"{name} needs a continuous Bounded (Box) action spec; got {type(action_spec).__name__} "
                f"of dtype {action_spec.dtype}"
            )
        low, high = action_spec.space.low, action_spec.space.high
        if not (torch.isfinite(low).all() and torch.isfinite(high).all() and (low <= high).all()):
            raise ValueError(f"{name} needs finite action bounds with low <= high; got low={low}, high={high}")
        _check_int(name, "horizon", horizon, 1)
        _check_int(name, "num_iterations", num_iterations, 1)
        _check_int(name, "num_elites", num_elites, 1)
        _check_int(name, "num_samples", num_samples, num_elites, "num_elites")
        if not initial_std > 0:
            raise ValueError(f"{name}: initial_std must be > 0 (a fraction of the half range); got {initial_std}")
        if not min_std >= 0:
            raise ValueError(f"{name}: min_std must be >= 0 (a fraction of the half range); got {min_std}")
        if particle_reduction not in ("mean", "min"):
            raise ValueError(f"{name}: particle_reduction must be 'mean' or 'min'; got {particle_reduction!r}")
        if result_mode not in self.result_modes:
            raise ValueError(f"{name}: result_mode must be one of {self.result_modes}; got {result_mode!r}")

        self.action_shape = torch.Size(action_spec.shape)
        self.horizon = horizon
        self.num_samples = num_samples
        self.num_iterations = num_iterations
        self.num_elites = num_elites
        self.particle_reduction = particle_reduction
        self.result_mode = result_mode
        half_range = (high - low) / 2
        self.register_buffer("low", low.clone(), persistent=False)
        self.register_buffer("high", high.clone(), persistent=False)
        if initial_guess is None:
            centre = (low + high) / 2
        else:
            centre = torch.as_tensor(initial_guess, dtype=low.dtype, device=low.device)
            if centre.shape != self.action_shape or not torch.isfinite(centre).all():
                raise ValueError(f"{name}: initial_guess must be a finite tensor of shape {tuple(self.action_shape)}; "
                                 f"got {tuple(centre.shape)}")
            if ((centre < low) | (centre > high)).any():
                raise ValueError(f"{name}: initial_guess {centre} lies outside the action bounds")
        self.register_buffer("centre", centre.expand(self.action_shape).clone(), persistent=False)
        self.register_buffer("initial_std", initial_std * half_range, persistent=False)
        self.register_buffer("min_std", min_std * half_range, persistent=False)

    # --------------------------------------------------------------------- state
    def state_spec(self) -> Composite:
        """The spec of the warm start carried between calls (unbatched).

        ``mean`` ``[H, *A]``: the last plan's mean, before the shift; ``has_plan`` ``[1]``
        bool: whether ``mean`` holds a plan (False after a reset).
        """
        plan_shape = torch.Size([self.horizon, *self.action_shape])
        return Composite(
            mean=Unbounded(plan_shape, device=self.low.device, dtype=self.low.dtype),
            has_plan=Unbounded((1,), device=self.low.device, dtype=torch.bool),
        )

    def clip(self, actions: torch.Tensor) -> torch.Tensor:
        """``actions`` in the planner's dtype, clipped to its bounds: what it does to the extra
        samples it mixes in (an objective that reuses its work on them starts from the same)."""
        low = self.low.to(actions.device)
        return torch.clamp(actions.to(low.dtype), low, self.high.to(actions.device))

    # ---------------------------------------------------------------------- loop
    @torch.no_grad()
    def forward(
        self,
        objective: Objective,
        state: TensorDictBase | None = None,
        batch_size: int | None = None,
        *,
        extra_samples: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> PlanResult:
        """Plans for a batch of instances.

        Args:
            objective: maps actions ``[B, N, H, *A]`` to returns ``[B, N]`` or ``[B, N, P]``
                (``P`` particles, reduced with ``particle_reduction``); higher is better (pass
                ``lambda a: -cost(a)`` for a cost). A NaN return counts as ``-inf``.
            state: ``[B]`` the ``state`` of the previous `PlanResult` (keys of `state_spec`),
                or ``None`` for a fresh plan.
            batch_size: ``B`` when ``state`` is None.
            extra_samples: ``[B, M, H, *A]`` candidates (e.g. policy rollouts, as TD-MPC2
                mixes in) added to the samples of every iteration, clipped to the bounds: the
                last ``M`` candidates of every objective call, in this order (an objective may
                reuse what it computed for them once, as `TDMPC2Level` does).
            generator: the random generator (on the planner's device), for reproducibility.
        """
        batch, device = self._batch_and_device(state, batch_size, extra_samples)
        if device.type == "cpu":  # large models' temporaries stay with the process (`modules.heap`)
            keep_freed_memory()
        low, high = self.low.to(device), self.high.to(device)
        if extra_samples is not None:
            extra_samples = self.clip(extra_samples.to(device))

        mean, has_plan = self._warm_start(state, batch, device)
        std = self.initial_std.to(device).expand_as(mean)
        # iCEM carries elites across calls; the others start without any.
        elites = self._carried_elites(state, has_plan, mean, std, generator)
        elite_scores = None
        best_action = mean
        best_value = torch.full((batch,), float("-inf"), device=device, dtype=mean.dtype)
        for iteration in range(self.num_iterations):
            actions = torch.clamp(self._sample(iteration, mean, std, elites, generator), low, high)
            if extra_samples is not None:
                actions = torch.cat([actions, extra_samples], dim=1)
            scores = self._score(objective, actions)
            best_action, best_value = _keep_best(actions, scores, best_action, best_value)
            elite_scores, elite_index = torch.topk(scores, self.num_elites, dim=1)
            elites = _take(actions, elite_index)
            mean, std = self._refit(mean, std, elites, elite_scores)

        action = torch.clamp(self._select(mean, elites, elite_scores, best_action, generator), low, high)
        return PlanResult(
            action=action, mean=mean, std=std, value=best_value, state=self._final_state(mean, elites)
        )

    # ------------------------------------------------------- subclass hooks
    def _sample(
        self,
        iteration: int,
        mean: torch.Tensor,
        std: torch.Tensor,
        elites: torch.Tensor | None,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """Candidates ``[B, N_i, H, *A]`` for one iteration (clipped by the caller).

        ``elites`` are the previous iteration's elites, best first, or at the first iteration
        whatever `_carried_elites` returned.
        """
        noise = torch.randn(
            (mean.shape[0], self.num_samples, *mean.shape[1:]), generator=generator, device=mean.device,
            dtype=mean.dtype,
        )
        return mean.unsqueeze(1) + std.unsqueeze(1) * noise

    def _refit(
        self, mean: torch.Tensor, std: torch.Tensor, elites: torch.Tensor, elite_scores: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The new ``(mean, std)`` ``[B, H, *A]`` from the elites ``[B, K, H, *A]``, best first."""
        raise NotImplementedError(f"{type(self).__name__} must implement _refit")

    def _select(
        self,
        mean: torch.Tensor,
        elites: torch.Tensor,
        elite_scores: torch.Tensor,
        best_action: torch.Tensor,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """The plan to return, per ``result_mode``."""
        return best_action if self.result_mode == "best" else mean

    def _carried_elites(
        self,
        state: TensorDictBase | None,
        has_plan: torch.Tensor | None,
        mean: torch.Tensor,
        std: torch.Tensor,
        generator: torch.Generator | None,
    ) -> torch.Tensor | None:
        """Candidates carried from the previous call into the first iteration (none here)."""
        return None

    def _final_state(self, mean: torch.Tensor, elites: torch.Tensor) -> TensorDict:
        """The warm start for the next call: the unshifted mean, with ``has_plan`` set."""
        batch = mean.shape[0]
        has_plan = torch.ones(batch, 1, dtype=torch.bool, device=mean.device)
        return TensorDict({"mean": mean, "has_plan": has_plan}, batch_size=[batch], device=mean.device)

    # ----------------------------------------------------------------- helpers
    def _batch_and_device(
        self, state: TensorDictBase | None, batch_size: int | None, extra_samples: torch.Tensor | None
    ) -> tuple[int, torch.device]:
        name = type(self).__name__
        if state is not None:
            if state.batch_dims != 1:
                raise ValueError(f"{name} needs a state with one batch dimension [B]; got {state.batch_size}")
            batch = state.batch_size[0]
            if batch_size is not None and _as_int(batch_size) != batch:
                raise ValueError(f"{name}: batch_size={batch_size} disagrees with the state's batch {batch}")
            device = state.get("mean").device
        elif batch_size is not None:
            batch, device = _as_int(batch_size), self.low.device
        elif extra_samples is not None:
            batch, device = extra_samples.shape[0], extra_samples.device
        else:
            raise ValueError(f"{name} needs state=<TensorDict [B]> or batch_size=B to know how many instances to plan")
        if extra_samples is not None:
            plan_shape = (self.horizon, *self.action_shape)
            if extra_samples.dim() != 2 + len(plan_shape) or extra_samples.shape[0] != batch or \
                    tuple(extra_samples.shape[2:]) != plan_shape:
                raise ValueError(
                    f"{name}: extra_samples must have shape [B, M, H, *A] = [{batch}, M, {', '.join(map(str, plan_shape))}]; "
                    f"got {list(extra_samples.shape)}"
                )
        return batch, device

    def _warm_start(
        self, state: TensorDictBase | None, batch: int, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The initial mean ``[B, H, *A]`` and ``has_plan`` ``[B]`` (None without a state)."""
        centre = self.centre.to(device).expand(batch, self.horizon, *self.action_shape)
        if state is None:
            return centre.clone(), None
        previous = state.get("mean").to(device, centre.dtype)
        has_plan = state.get("has_plan").to(device, torch.bool).reshape(batch)
        shifted = torch.cat([previous[:, 1:], centre[:, :1]], dim=1)
        return torch.where(_per_instance(has_plan, centre), shifted, centre), has_plan

    def _score(self, objective: Objective, actions: torch.Tensor) -> torch.Tensor:
        """Returns ``[B, N]``: the objective reduced over particles, NaN mapped to ``-inf``."""
        scores = objective(actions)
        if not isinstance(scores, torch.Tensor) or scores.dim() not in (2, 3) or scores.shape[:2] != actions.shape[:2]:
            shape = list(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
            raise ValueError(
                f"{type(self).__name__}: the objective must map actions [B, N, H, *A] = {list(actions.shape)} "
                f"to returns [B, N] or [B, N, P]; got {shape}"
            )
        if scores.dim() == 3:
            scores = scores.mean(-1) if self.particle_reduction == "mean" else scores.amin(-1)
        # topk ranks NaN above everything: a diverging rollout must lose instead.
        return torch.where(torch.isnan(scores), float("-inf"), scores)


def _check_int(owner: str, name: str, value: int, minimum: int, minimum_name: str | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        bound = f"{minimum_name} ({minimum})" if minimum_name else str(minimum)
        raise ValueError(f"{owner}: {name} must be an int >= {bound}; got {value!r}")


def _as_int(batch_size) -> int:
    if isinstance(batch_size, int):
        return batch_size
    size = torch.Size(batch_size)
    if len(size) != 1:
        raise ValueError(f"planners take one batch dimension; got batch_size={batch_size}")
    return size[0]


def _per_instance(flag: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A ``[B]`` flag viewed to broadcast against ``like`` ``[B, ...]``."""
    return flag.reshape(flag.shape[0], *([1] * (like.dim() - 1)))


def _take(actions: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``actions[b, index[b, k]]`` for ``actions`` ``[B, N, ...]`` and ``index`` ``[B, K]``."""
    index = index.reshape(*index.shape, *([1] * (actions.dim() - 2))).expand(*index.shape, *actions.shape[2:])
    return torch.gather(actions, 1, index)


def _keep_best(
    actions: torch.Tensor, scores: torch.Tensor, best_action: torch.Tensor, best_value: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Updates the best candidate seen so far per instance, without leaving the device."""
    value, index = scores.max(dim=1)
    candidate = _take(actions, index.unsqueeze(1)).squeeze(1)
    improved = value > best_value
    return torch.where(_per_instance(improved, candidate), candidate, best_action), torch.where(
        improved, value, best_value
    )
