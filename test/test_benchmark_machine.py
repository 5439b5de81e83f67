"""`benchmarks/machine.py`: the matmul rate every benchmark prints beside its figure."""
from __future__ import annotations

import importlib.util
import math
import time
from pathlib import Path

import torch


def _machine():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "machine.py"
    spec = importlib.util.spec_from_file_location("machine", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_matmul_probe_keeps_to_its_budget_for_a_dtype_without_fast_kernels():
    """bfloat16 on a CPU without bfloat16 matrix units runs at ~1 GFLOP/s: at 1024 x 1024 the
    rounds took ~40 s; the probe shrinks the matrices to stay near its budget."""
    machine = _machine()
    start = time.perf_counter()
    rate = machine.matmul_flops_per_second("cpu", 1024, 5, torch.bfloat16, budget_s=0.2)
    assert math.isfinite(rate) and rate > 0
    assert time.perf_counter() - start < 5.0
    line = machine.machine_line("cpu", size=256)
    assert line.startswith("machine: ") and "GFLOP/s dense float32 matmul" in line and "bfloat16" in line
