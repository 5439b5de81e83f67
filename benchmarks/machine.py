"""The machine's dense float32 matmul rate, printed beside every benchmark's figure.

Shared machines change speed between sittings; a figure means something only next to the
matmul rate measured in the same run (and a ratio only between runs that alternate).

    from machine import machine_line; print(machine_line())
"""
from __future__ import annotations

import time

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_flops_per_second(device: torch.device | str = "cpu", size: int = 1024, repeats: int = 5,
                            dtype: torch.dtype = torch.float32, budget_s: float = 2.0) -> float:
    """FLOP/s of a ``size x size`` matmul in ``dtype`` on the current thread count, best of three rounds.

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
    for _ in range(2):
        a @ b
    synchronize(device)
    best = float("inf")
    for _ in range(3):  # the machine's speed, not its worst moment
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 * repeats / best


def machine_line(device: torch.device | str = "cpu", size: int = 1024) -> str:
    """One line: the float32 and bfloat16 matmul rates, the device, the thread count and, on a
    CPU, the vector instructions torch's kernels use (sittings on AVX2 and AVX-512 machines rank
    elementwise work against matmuls differently; bfloat16 pays only where it is the faster)."""
    device = torch.device(device)
    repeats = 20 if device.type == "cuda" else 5
    rate = matmul_flops_per_second(device, size, repeats)
    bf16 = matmul_flops_per_second(device, size, repeats, torch.bfloat16)
    kernels = f", {torch.backends.cpu.get_cpu_capability()}" if device.type == "cpu" else ""
    return f"machine: {rate / 1e9:.1f} GFLOP/s dense float32 matmul, {bf16 / 1e9:.1f} bfloat16 (up to {size}x{size}, " \
           f"{device}, {torch.get_num_threads()} threads{kernels})"
