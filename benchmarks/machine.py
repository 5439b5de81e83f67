"""The machine's dense float32 matmul rate, printed beside every benchmark's figure.

Shared machines change speed between sittings; a figure means something only next to the
matmul rate measured in the same run (and a ratio only between runs that alternate).

    from machine import machine_line; print(machine_line())

`MatmulFlops` counts the matmul work of a step, so that a benchmark can print the rate it
reaches beside the machine's (`share_line`).
"""
from __future__ import annotations

import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from torchrl_layered.modules.cpu_linear import _onednn_linear_op


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_flops_per_second(device: torch.device | str = "cpu", size: int = 1024, repeats: int = 5,
                            dtype: torch.dtype = torch.float32, budget_s: float = 2.0) -> float:
    """FLOP/s of a ``size x size`` matmul in ``dtype`` on the current thread count, best of three rounds
    (on a CPU in float32, of the BLAS and oneDNN's linear, as `modules.cpu_linear` chooses between them).

    A dtype the CPU has no fast kernels for (bfloat16 without AVX-512 BF16 or AMX runs at ~1
    GFLOP/s) would take minutes at full size: the matrices shrink until one call's time lets the
    rounds fit in about ``budget_s``.
    """
    device = torch.device(device)
    probe = torch.randn(256, 256, device=device, dtype=dtype)
    probe @ probe
    synchronize(device)
    start = time.perf_counter()
    probe @ probe
    synchronize(device)
    per_flop = (time.perf_counter() - start) / (2 * 256**3)
    while size > 256 and per_flop * 2 * size**3 * (3 * repeats + 2) > budget_s:
        size //= 2
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    kernels = [torch.matmul]
    if device.type == "cpu" and dtype == torch.float32 and _onednn_linear_op() is not None:
        kernels.append(lambda x, y: _onednn_linear_op()(x, y, None, "none", [], ""))  # see modules/cpu_linear.py
    best = float("inf")
    for kernel in kernels:  # the faster of torch's kernels sets the rate
        for _ in range(2):
            kernel(a, b)
        synchronize(device)
        for _ in range(3):  # the machine's speed, not its worst moment
            start = time.perf_counter()
            for _ in range(repeats):
                kernel(a, b)
            synchronize(device)
            best = min(best, time.perf_counter() - start)
    return 2 * size**3 * repeats / best


def matmul_rates(device: torch.device | str = "cpu", size: int = 1024) -> tuple[float, float]:
    """The float32 and bfloat16 matmul FLOP/s (`matmul_flops_per_second`)."""
    device = torch.device(device)
    repeats = 20 if device.type == "cuda" else 5
    return (matmul_flops_per_second(device, size, repeats),
            matmul_flops_per_second(device, size, repeats, torch.bfloat16))


def machine_line(device: torch.device | str = "cpu", size: int = 1024, rates: tuple[float, float] | None = None) -> str:
    """One line: the float32 and bfloat16 matmul rates (measured here unless ``rates`` gives
    them), the device, the thread count and, on a CPU, the vector instructions torch's kernels
    use (sittings on AVX2 and AVX-512 machines rank elementwise work against matmuls
    differently; bfloat16 pays only where it is the faster)."""
    device = torch.device(device)
    rate, bf16 = matmul_rates(device, size) if rates is None else rates
    kernels = f", {torch.backends.cpu.get_cpu_capability()}" if device.type == "cpu" else ""
    return f"machine: {rate / 1e9:.1f} GFLOP/s dense float32 matmul, {bf16 / 1e9:.1f} bfloat16 (up to {size}x{size}, " \
           f"{device}, {torch.get_num_threads()} threads{kernels})"


class MatmulFlops(TorchDispatchMode):
    """Counts the FLOPs of the matmuls (and convolutions) run inside it, forward and backward,
    with torch's own formulas (`torch.utils.flop_counter`), into ``total``.

    torch's `FlopCounterMode` also attributes the work to modules, and its module tracker
    fails on TensorDict modules (their ``==`` returns a TensorDict), so the formulas are
    applied here without it. Elementwise work is not counted: the rate a step reaches against
    the matmul rate shows how much of its time the matmuls take.
    """

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.total += formula(*args, **kwargs, out_val=out)
        elif func._overloadpacket is _ONEDNN_LINEAR:  # x [*, in], weight [out, in]
            self.total += 2 * args[0].numel() * args[1].shape[0]
        return out


_ONEDNN_LINEAR = getattr(torch.ops.mkldnn, "_linear_pointwise", None) if _onednn_linear_op() is not None else None


def share_line(name: str, flops: float, seconds: float, rate: float) -> str:
    """``name``: the matmul GFLOP per step, the GFLOP/s it reaches and its share of ``rate``
    (the machine's float32 matmul FLOP/s)."""
    reached = flops / seconds
    return f"{name}: {flops / 1e9:.1f} GFLOP of matmuls, {reached / 1e9:.1f} GFLOP/s, {reached / rate:.0%} of the float32 matmul rate"
