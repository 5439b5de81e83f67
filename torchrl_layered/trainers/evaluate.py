"""Evaluation: one episode per env instance with the hierarchy in eval mode."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torchrl.envs import EnvBase
from torchrl.envs.utils import ExplorationType, set_exploration_type

from torchrl_layered.hierarchy import Hierarchy


@dataclass
class EvalResult:
    """What `evaluate` measured."""

    mean_return: float
    """Mean return of the episodes that ended (NaN if none did)."""
    success_rate: float | None
    """Fraction of the ended episodes in which ``("next", "success")`` was true at some step: the
    goal was reached (None: the env reports no such flag)."""
    final_success_rate: float | None
    """Fraction of the ended episodes with ``("next", "success")`` true at their last step: the
    goal was reached and held until the end (None: no such flag)."""
    episodes: int
    """Episodes that ended within the step budget."""


@torch.no_grad()
def evaluate(hierarchy: Hierarchy, env: EnvBase, *, max_steps: int = 10_000, seed: int | None = None) -> EvalResult:
    """Runs one episode in each instance of ``env`` with ``hierarchy`` in eval mode.

    ``env`` carries its own `HierarchyTransform` and a ``RewardSum``, so the training env's
    option state is untouched; the hierarchy stores nothing in eval mode, and the global
    RNG is forked so that evaluating does not change what training samples next.

    Args:
        hierarchy: the policy; put back in its previous train/eval mode afterwards.
        env: a batched env with ``hierarchy.make_transform()`` and ``RewardSum()`` appended.
        max_steps: stop after this many steps even if some episodes have not ended.
        seed: reseed ``env`` first, so that every evaluation starts from the same states.
    """
    was_training = hierarchy.training
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    hierarchy.eval()
    try:
        with torch.random.fork_rng(devices=devices), set_exploration_type(ExplorationType.DETERMINISTIC):
            if seed is not None:
                env.set_seed(seed)
            td = env.reset()
            n = env.batch_size.numel()
            finished = torch.zeros(n, dtype=torch.bool, device=td.device)
            returns = torch.zeros(n, device=td.device)
            reached = torch.zeros(n, dtype=torch.bool, device=td.device)
            final = torch.zeros(n, dtype=torch.bool, device=td.device)
            has_success = None
            for _ in range(max_steps):
                td = hierarchy(td)
                td, td_next = env.step_and_maybe_reset(td)
                done = td.get(("next", "done")).reshape(n) & ~finished
                returns = torch.where(done, td.get(("next", "episode_reward")).reshape(n).to(returns.dtype), returns)
                flag = td.get(("next", "success"), None)
                has_success = flag is not None
                if has_success:
                    flag = flag.reshape(n).to(torch.bool)
                    reached |= flag & ~finished
                    final = torch.where(done, flag, final)
                finished |= done
                if bool(finished.all()):
                    break
                td = td_next
    finally:
        hierarchy.train(was_training)
    count = int(finished.sum())
    mean_return = float(returns[finished].mean()) if count else math.nan

    def rate(success: torch.Tensor) -> float | None:
        if not has_success:
            return None
        return float(success[finished].float().mean()) if count else math.nan

    return EvalResult(mean_return=mean_return, success_rate=rate(reached), final_success_rate=rate(final), episodes=count)
