"""What learning levels share: their update schedule and their gradient-step loop."""
from __future__ import annotations

from typing import Callable, Iterable

import torch
from tensordict import TensorDictBase
from torchrl.objectives import LossModule, SoftUpdate

from torchrl_layered.objectives.grad_clip import finite_clipped_norms


class UpdateSchedule:
    """``num_updates`` gradient steps per ``update_interval`` new transitions, once warmed up.

    Transitions seen during the warm-up are not owed updates afterwards, so the end of the
    warm-up brings no burst of updates.
    """

    def __init__(self, update_interval: int = 1, num_updates: int = 1):
        if update_interval < 1 or num_updates < 0:
            raise ValueError(f"need update_interval >= 1 and num_updates >= 0; got {update_interval}, {num_updates}")
        self.update_interval, self.num_updates = update_interval, num_updates
        self.learned = 0

    def pending(self, n_transitions: int) -> int:
        """Rounds of updates that ``n_transitions`` would make due now (nothing is marked)."""
        return (n_transitions - self.learned) // self.update_interval

    def due(self, n_transitions: int, warmed_up: bool) -> int:
        """How many gradient steps are due now (and marks them as taken)."""
        if not warmed_up:
            self.learned = n_transitions
            return 0
        rounds = self.pending(n_transitions)
        self.learned += rounds * self.update_interval
        return rounds * self.num_updates


def gradient_steps(
    loss: LossModule,
    optimizer: torch.optim.Optimizer,
    target_updater: SoftUpdate | None,
    batches: Iterable[TensorDictBase],
    max_grad_norm: float,
    *,
    forward: Callable[[TensorDictBase], TensorDictBase] | None = None,
) -> dict[str, float]:
    """A step on the sum of the ``loss_*`` entries per batch; returns every entry averaged over the applied steps.

    A step whose loss or gradient norm is not finite is skipped, never applied (neither the
    optimiser nor the target moves), and counted in ``skipped_steps``; ``grad_norm`` is the
    mean norm before clipping. Finiteness is read once per step: a host sync, the price of
    never letting one bad batch poison the parameters and the optimiser's moments.
    ``forward`` computes the losses in place of ``loss`` itself (e.g. a compiled ``loss.forward``).
    """
    totals: dict[str, torch.Tensor] = {}
    params = list(loss.parameters())  # once per round: a LossModule walks its modules to list them
    applied = num = 0
    for batch in batches:
        num += 1
        losses = (forward or loss)(batch)
        total = sum(v for k, v in losses.items() if k.startswith("loss_"))
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        norms = finite_clipped_norms([params], max_grad_norm, total)
        if norms is None:
            optimizer.zero_grad(set_to_none=True)
            continue
        grad_norm = norms[0]
        optimizer.step()
        if target_updater is not None:
            target_updater.step()
        applied += 1
        for key, value in {**losses, "grad_norm": grad_norm}.items():
            totals[key] = totals.get(key, 0.0) + value.detach()
    metrics = {key: float(value) / applied for key, value in totals.items()}
    metrics["skipped_steps"] = float(num - applied)
    return metrics
