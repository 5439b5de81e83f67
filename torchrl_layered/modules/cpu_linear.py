"""Float32 linear layers on the CPU through oneDNN where it measured faster than the BLAS.

torch multiplies float32 matrices on the CPU with its BLAS (MKL's sgemm). On an AMD EPYC with
AVX-512 that ran TD-MPC2's planning shapes ([2048, 512] x [512, 512]) at 130-150 GFLOP/s,
where oneDNN's linear kernel, which torch ships for its compiled CPU code, ran them at ~190
(2 threads; 1.07-1.2x at 256-768 rows). On other CPUs MKL may be the faster, so the choice
is timed once per process at the first large float32 CPU linear (`_measure_onednn`);
compiled code and autocast keep torch's own linear. With gradients, the forward and the
input's gradient go through oneDNN and the weight's gradient through the BLAS (faster there
for its transposed operands).
"""
from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

#: Whether oneDNN's linear is faster on this CPU; None until measured (`_measure_onednn`).
_ONEDNN: bool | None = None
#: The BLAS must beat oneDNN by this factor to keep the products: where the two are close the
#: choice would otherwise flip between processes with the timing noise (and results with it, by
#: ulps). oneDNN is the side given the benefit of the doubt: on the AMD EPYC its lead at the
#: measured size was 1.12-1.43x later in every process, but measured at a process's start it fell
#: below 1.15x in one process in three, which then ran its products through the slower kernel.
_BLAS_MARGIN = 1.15
#: Fewer inputs than this stay with the BLAS: [1024, 5] x [5, 200] took oneDNN 90 us against 60.
_ONEDNN_MIN_IN = 16
#: So do smaller products (rows x inputs x outputs): oneDNN's ~20 us a call more than the BLAS's
#: outweighs its faster kernel below about [768, 128] x [128, 128] (equal there; [64, 128] x [128, 128]
#: 53 us against 25, [768, 128] x [128, 1] 41 against 17).
_ONEDNN_MIN_MACS = 1 << 24


def _onednn_linear_op():
    """torch's oneDNN linear op, or None in a build without it."""
    try:
        return torch.ops.mkldnn._linear_pointwise if torch.backends.mkldnn.is_available() else None
    except (AttributeError, RuntimeError):
        return None


def _onednn(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def _measure_onednn(size: tuple[int, int, int] = (2048, 512, 512), repeats: int = 5,
                    clock=time.perf_counter) -> bool:
    """Times the BLAS's and oneDNN's linear on a ``[rows, in] x [in, out]`` product, ``repeats``
    alternating pairs (60-120 ms): True unless the BLAS is faster by `_BLAS_MARGIN` (the median of
    the pairs' ratios, so that a slow moment of the machine counts against both kernels alike).

    The size is TD-MPC2's planning product: on the AMD EPYC oneDNN's lead there is 1.1-1.7x
    (1 and 2 threads) where at 768 rows it is 1.0-1.2x, too close to decide the same way in
    every process."""
    if _onednn_linear_op() is None:
        return False
    rows, fan_in, fan_out = size
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(rows, fan_in, generator=generator)
    weight = torch.randn(fan_out, fan_in, generator=generator)
    bias = torch.randn(fan_out, generator=generator)
    try:
        for kernel in (F.linear, _onednn):  # warm-up: the first call sets up its kernel
            kernel(x, weight, bias)
    except RuntimeError:
        return False
    ratios = []
    for _ in range(repeats):
        start = clock()
        F.linear(x, weight, bias)
        middle = clock()
        _onednn(x, weight, bias)
        ratios.append((middle - start) / max(clock() - middle, 1e-9))
    return statistics.median(ratios) * _BLAS_MARGIN >= 1.0


def _takes_onednn(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> bool:
    """Whether ``x @ weight.T`` goes through oneDNN: float32 on a CPU where it measured faster (once
    per process), eager and outside autocast, for products from `_ONEDNN_MIN_IN` inputs and
    `_ONEDNN_MIN_MACS` multiply-adds, with a dense weight or the transpose of one (a slice of a
    weight's columns took oneDNN ~14 ms for four rows). Operands that do not fit together go to
    ``F.linear``, whose error names the shapes (oneDNN's does not)."""
    global _ONEDNN
    if (weight.dim() != 2 or x.dim() == 0 or x.shape[-1] != weight.shape[1]
            or (bias is not None and bias.numel() != weight.shape[0])
            or x.device.type != "cpu" or x.dtype != torch.float32 or weight.dtype != torch.float32
            or torch.compiler.is_compiling() or torch.is_autocast_enabled("cpu")
            or x.shape[-1] < _ONEDNN_MIN_IN or x.numel() * weight.shape[0] < _ONEDNN_MIN_MACS
            or not (weight.is_contiguous() or weight.t().is_contiguous())):
        return False
    if _ONEDNN is None:
        with torch.no_grad():
            _ONEDNN = _measure_onednn()
    return _ONEDNN


class _OneDNNLinear(torch.autograd.Function):
    """``x @ weight.T + bias`` with oneDNN's forward and input gradient, the BLAS's weight gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _onednn(x, weight, bias)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = _onednn(grad, weight.t(), None)
        if ctx.needs_input_grad[1] or (ctx.has_bias and ctx.needs_input_grad[2]):
            flat_grad = grad.reshape(-1, grad.shape[-1])
            if ctx.needs_input_grad[1]:
                grad_weight = flat_grad.t().mm(x.reshape(-1, x.shape[-1]))
            if ctx.has_bias and ctx.needs_input_grad[2]:
                grad_bias = flat_grad.sum(0)
        return grad_x, grad_weight, grad_bias


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)``, through oneDNN on a CPU where that measured faster (`_takes_onednn`)."""
    if not _takes_onednn(x, weight, bias):
        return F.linear(x, weight, bias)
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad
                                    or (bias is not None and bias.requires_grad)):
        return _OneDNNLinear.apply(x, weight, bias)
    return _onednn(x, weight, bias)


def addmm_into(bias: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``torch.addmm(bias, x, weight, out=out)`` for a weight stored ``[in, out]``, without gradients;
    where oneDNN is taken (`_takes_onednn`) its result is a new tensor, not ``out``."""
    if _takes_onednn(x, weight.t(), bias):
        return _onednn(x, weight.t(), bias.reshape(-1))
    return torch.addmm(bias, x, weight, out=out)


class Linear(nn.Linear):
    """``nn.Linear`` through `linear`: the same parameters and state dict, the faster CPU kernel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)
