"""TD-MPC2's activations, Mish and SimNorm, written for speed on the CPU.

The same functions as ``nn.Mish`` and a softmax over groups, to float32 rounding, computed with
fewer transcendental passes: torch 2.13's CPU Mish kernel takes ~2.7 ms on a [2144, 512]
batch where this one takes ~0.9 ms (AVX2), and a softmax over groups of 8 takes ~11 ms where the
written-out one takes ~2 ms. Together they were a third of a TD-MPC2 planning step. With
gradients each saves what its backward needs in the forward (Mish its derivative, the softmax
its output), so that the backward is one or two cheap passes: forward and backward of Mish
6.4-7.3 -> 2.7-3.8 ms on [2048, 512], of SimNorm 11-17 -> 5.6-6.9 ms (2 threads, AVX2).
"""
from __future__ import annotations

import math
import time

import torch
from torch import nn
from torch.autograd.function import once_differentiable

#: Above this, tanh(softplus(x)) is 1 in float32 (and exp(2x) would overflow).
_LINEAR_FROM = 20.0
_LOG2_E = math.log2(math.e)
#: Whether ``e^x`` is faster as ``2^(x log2 e)`` on this CPU; None until measured (`_measure_exp_via_exp2`).
#: torch's CPU kernels differ by CPU more than by instruction set: exp2 runs at about twice the rate
#: of exp on AVX2 CPUs and on an AMD EPYC with AVX-512 (mul and exp2 0.20 ms against exp 0.46 ms on
#: [2048, 512], 2 threads), while an Intel CPU with AVX-512 and AMX took exp the faster.
_EXP_VIA_EXP2: bool | None = None
#: exp2 (with its scaling pass) must beat exp by this factor to be taken: where the two are close the
#: choice would otherwise flip between processes with the timing noise, and results with it (by ulps).
_EXP2_MARGIN = 1.25


def _measure_exp_via_exp2(size: tuple[int, int] = (256, 1024), repeats: int = 5) -> bool:
    """Times ``exp`` against the scaling pass and ``exp2`` on a CPU tensor of ``size`` (best of
    ``repeats``, alternating; ~2 ms): True where exp2 is faster by `_EXP2_MARGIN`."""
    x = torch.linspace(-8.0, 8.0, size[0] * size[1]).reshape(size)
    out = torch.empty_like(x)
    best = {"exp": float("inf"), "exp2": float("inf")}
    for _ in range(repeats):
        for name in best:
            start = time.perf_counter()
            if name == "exp":
                torch.exp(x, out=out)
            else:
                torch.mul(x, _LOG2_E, out=out).exp2_()
            best[name] = min(best[name], time.perf_counter() - start)
    return best["exp2"] * _EXP2_MARGIN < best["exp"]


def _via_exp2(x: torch.Tensor) -> bool:
    """Whether to take ``e^x`` as ``2^(x log2 e)`` for ``x``: on a CPU where that measured faster
    (once per process). Compiled, inductor fuses the exp with its neighbours: plain exp."""
    global _EXP_VIA_EXP2
    if x.device.type != "cpu" or torch.compiler.is_compiling():
        return False
    if _EXP_VIA_EXP2 is None:
        _EXP_VIA_EXP2 = _measure_exp_via_exp2()
    return _EXP_VIA_EXP2


def _exp_in_place(x: torch.Tensor) -> torch.Tensor:
    """``e^x`` written into ``x``: as ``2^(x log2 e)`` where that is faster (`_via_exp2`)."""
    return x.mul_(_LOG2_E).exp2_() if _via_exp2(x) else x.exp_()


def _exp(x: torch.Tensor) -> torch.Tensor:
    """``e^x`` in a new tensor, the faster way for the device (`_exp_in_place`)."""
    return torch.mul(x, _LOG2_E).exp2_() if _via_exp2(x) else torch.exp(x)


def _mish_no_grad(x: torch.Tensor) -> torch.Tensor:
    """``x - 2x / ((e^x + 1)^2 + 1)``: Mish with one exp and in-place passes over one temporary.

    No clamp: past x ~ 44 the square overflows to inf and ``2x / inf`` is 0, so the result is
    ``x``, as Mish is there in float32 (and bfloat16, of the same range), up to x ~ 1.7e38, where
    ``2x`` overflows too (nan, as for x = inf).
    """
    q = _exp(x).add_(1).square_().add_(1)
    return torch.addcdiv(x, x, q, value=-2, out=q)  # into the temporary: one allocation, not two


class _Mish(torch.autograd.Function):
    """Mish whose forward also computes its derivative, so that the backward is one product.

    With ``w = e^x``, ``p = w + 1`` and ``r = 1 / (p^2 + 1)``: ``mish(x) = x (1 - 2r)`` and
    ``mish'(x) = 1 - 2r + 4 x w p r^2``. The derivative costs a few cheap passes in the forward
    and is saved in place of the input (the same memory). With torch's fused Mish backward,
    which recomputes tanh, softplus and sigmoid, forward and backward took about twice as long.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        clamped = x.clamp(max=_LINEAR_FROM)  # beyond it, mish(x) = x and mish'(x) = 1 in float32
        w = _exp(clamped)
        p = w + 1
        wp = w.mul_(p)
        r = p.square_().add_(1).reciprocal_()
        out = torch.addcmul(x, x, r, value=-2)
        derivative = wp.mul_(r).mul_(clamped).mul_(4).sub_(2).mul_(r).add_(1)
        ctx.save_for_backward(derivative)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (derivative,) = ctx.saved_tensors
        return grad * derivative


def mish(x: torch.Tensor) -> torch.Tensor:
    """``x * tanh(softplus(x))``, computed as ``x - 2x / ((e^x + 1)^2 + 1)`` (the same function):
    one exp and in-place passes over one temporary. With gradients, the forward also saves the
    derivative, so that the backward is one product (`_Mish`)."""
    if torch.is_grad_enabled() and x.requires_grad:
        return _Mish.apply(x)
    return _mish_no_grad(x)


class Mish(nn.Module):
    """``nn.Mish``, faster (`mish`); no parameters, so state dicts are unchanged."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return mish(x)


def _group_softmax(groups: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dim of ``groups``, with one exp pass over one temporary."""
    e = _exp_in_place(groups - groups.amax(-1, keepdim=True))
    return e.div_(e.sum(-1, keepdim=True))


class _GroupSoftmax(torch.autograd.Function):
    """`_group_softmax` whose backward is ``y * (g - sum(g y))`` from the saved output: autograd
    through the written-out softmax also differentiated the max it subtracts (whose gradient
    cancels) and took 2.5x as long."""

    @staticmethod
    def forward(ctx, groups: torch.Tensor) -> torch.Tensor:
        y = _group_softmax(groups)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (y,) = ctx.saved_tensors
        return (grad - (grad * y).sum(-1, keepdim=True)).mul_(y)


class SimNorm(nn.Module):
    """Splits the last dim into groups of ``dim`` entries and softmaxes each group."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        groups = x.unflatten(-1, (-1, self.dim))
        if torch.is_grad_enabled() and x.requires_grad:
            return _GroupSoftmax.apply(groups).flatten(-2)
        return _group_softmax(groups).flatten(-2)
