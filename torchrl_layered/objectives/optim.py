"""`adam` builds the levels' optimiser, `FusedAdam`: `torch.optim.Adam` on its fused kernels, with a lean step.

The default Adam on CPU loops over the parameters in Python (torch picks foreach or fused
kernels by default only on CUDA). The small networks of a level have many small tensors, so
that loop dominates a step: fused Adam updates them all in one pass, about 3x faster per step
on CPU (a planner's 5-member ensemble: 1.04 ms per step with the loop, 0.25 ms fused;
`benchmarks/results/adam.md`). Same update rule; where torch has no fused kernel for the
parameters (a device or dtype without one), the foreach path, then the loop, is used.
"""
from __future__ import annotations

from typing import Any, Iterable

import torch
from torch.optim.optimizer import Optimizer, _global_optimizer_post_hooks, _global_optimizer_pre_hooks

_ADAM_STEP = getattr(torch.optim.Adam.step, "__wrapped__", None) if getattr(torch.optim.Adam.step, "hooked", False) \
    else torch.optim.Adam.step
_FULL_STEP = Optimizer.profile_hook_step(_ADAM_STEP)  # torch's step with its hooks and profiler label


class FusedAdam(torch.optim.Adam):
    """``torch.optim.Adam(..., fused=True)`` whose plain steps go straight to the fused kernel.

    A step of torch's optimiser spends more time in Python than in the kernel when the tensors
    are small: a profiler label, hook lookups, grouping the tensors by device and dtype, and
    state checks run at every call (~0.1 ms a step in a SAC update on CPU, four steps per
    update). Once every parameter with a gradient has its state, a step here reads the lists
    and calls ``torch._fused_adam_`` (``_fused_adamw_`` for decoupled weight decay) as torch
    would; anything else (a closure, a hook, the profiler, a gradient scaler, amsgrad,
    ``capturable``, a tensor learning rate, mixed devices or dtypes, a first step) takes
    torch's own step. Same state, same state dict, same arithmetic.
    """

    def __init__(self, params: Any, **kwargs: Any):
        super().__init__(params, **{**kwargs, "fused": True})

    def step(self, closure=None):
        if closure is not None or _needs_torch_step(self):
            return _FULL_STEP(self, closure)
        lists = [_fused_lists(self.state, group) for group in self.param_groups]
        if any(group_lists is None for group_lists in lists):
            return _FULL_STEP(self, closure)
        with torch.no_grad():
            for group, group_lists in zip(self.param_groups, lists):
                if not group_lists[0]:
                    continue
                if group_lists[0][0].device.type != "cpu":
                    self._accelerator_graph_capture_health_check()  # refuses a CUDA graph capture, as torch
                params, grads, exp_avgs, exp_avg_sqs, steps = group_lists
                beta1, beta2 = group["betas"]
                torch._foreach_add_(steps, 1)
                kernel = torch._fused_adamw_ if group.get("decoupled_weight_decay") else torch._fused_adam_
                kernel(params, grads, exp_avgs, exp_avg_sqs, [], steps, amsgrad=False, lr=group["lr"],
                       beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"], eps=group["eps"],
                       maximize=group["maximize"], grad_scale=None, found_inf=None)
        return None

    step.hooked = True  # torch wraps an unhooked ``step`` in its profiler label and hooks; `_FULL_STEP` has them

    def zero_grad(self, set_to_none: bool = True) -> None:
        if not set_to_none or torch.autograd.profiler._is_profiler_enabled:
            return super().zero_grad(set_to_none)
        for group in self.param_groups:
            for p in group["params"]:
                p.grad = None
        return None


def _needs_torch_step(optimizer: FusedAdam) -> bool:
    """Whether something in play needs torch's own step: hooks, the profiler, a gradient scaler."""
    return bool(optimizer._optimizer_step_pre_hooks or optimizer._optimizer_step_post_hooks
                or _global_optimizer_pre_hooks or _global_optimizer_post_hooks
                or torch.autograd.profiler._is_profiler_enabled
                or getattr(optimizer, "grad_scale", None) is not None
                or getattr(optimizer, "found_inf", None) is not None)


def _fused_lists(state: dict, group: dict) -> tuple[list, list, list, list, list] | None:
    """The params, grads, moments and step counts of ``group`` for the fused kernel; None where torch's step is needed."""
    if group["amsgrad"] or group.get("capturable") or group.get("differentiable") or not group.get("fused") \
            or isinstance(group["lr"], torch.Tensor):
        return None
    params, grads, exp_avgs, exp_avg_sqs, steps = [], [], [], [], []
    for p in group["params"]:
        grad = p.grad
        if grad is None:
            continue
        s = state.get(p)
        if not s or grad.is_sparse or (params and (p.device != params[0].device or p.dtype != params[0].dtype)):
            return None
        params.append(p)
        grads.append(grad)
        exp_avgs.append(s["exp_avg"])
        exp_avg_sqs.append(s["exp_avg_sq"])
        steps.append(s["step"])
    return params, grads, exp_avgs, exp_avg_sqs, steps


def adam(params: Iterable[torch.Tensor] | Iterable[dict[str, Any]], **kwargs: Any) -> torch.optim.Adam:
    """``FusedAdam(params, **kwargs)`` where torch has fused kernels for ``params``, else foreach, else the loop."""
    params = list(params)
    try:
        return FusedAdam(params, **kwargs)
    except (RuntimeError, TypeError, ValueError):
        pass
    try:
        return torch.optim.Adam(params, foreach=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, **kwargs)
