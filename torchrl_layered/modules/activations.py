"""TD-MPC2's activations, Mish and SimNorm, written for speed on the CPU.

The same functions as ``nn.Mish`` and a softmax over groups, to float32 rounding, computed with
fewer transcendental passes: torch 2.13's CPU Mish kernel takes ~2.7 ms on a [2144, 512]
batch where this one takes ~0.9 ms (with gradients it keeps torch's fused backward: forward
and backward 3.8 ms against 4.9 ms on 2 threads), and a softmax over groups of 8 takes ~11 ms
where the written-out one takes ~2 ms. Together they were a third of a TD-MPC2 planning step.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.autograd.function import once_differentiable

#: Above this, tanh(softplus(x)) is 1 in float32 (and exp(2x) would overflow).
_LINEAR_FROM = 20.0


def _mish_no_grad(x: torch.Tensor) -> torch.Tensor:
    """``x - 2x / ((e^x + 1)^2 + 1)``: Mish with one exp and in-place passes over one temporary."""
    q = x.clamp(max=_LINEAR_FROM).exp_().add_(1).square_().add_(1)
    return torch.addcdiv(x, x, q, value=-2)


class _Mish(torch.autograd.Function):
    """Mish whose forward is `_mish_no_grad` and whose backward is torch's fused Mish backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return _mish_no_grad(x)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return torch.ops.aten.mish_backward(grad, x)


def mish(x: torch.Tensor) -> torch.Tensor:
    """``x * tanh(softplus(x))``, computed as ``x - 2x / ((e^x + 1)^2 + 1)`` (the same function):
    one exp and in-place passes over one temporary. With gradients, the backward is torch's
    fused Mish backward."""
    if torch.is_grad_enabled() and x.requires_grad:
        return _Mish.apply(x)
    return _mish_no_grad(x)


class Mish(nn.Module):
    """``nn.Mish``, faster (`mish`); no parameters, so state dicts are unchanged."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return mish(x)


class SimNorm(nn.Module):
    """Splits the last dim into groups of ``dim`` entries and softmaxes each group."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        groups = x.unflatten(-1, (-1, self.dim))
        shifted = groups - groups.amax(-1, keepdim=True)
        if torch.is_grad_enabled() and x.requires_grad:
            e = shifted.exp()
            return (e / e.sum(-1, keepdim=True)).flatten(-2)
        e = shifted.exp_()
        return e.div_(e.sum(-1, keepdim=True)).flatten(-2)
