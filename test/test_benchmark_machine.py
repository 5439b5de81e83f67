"""`benchmarks/machine.py`: the matmul rate every benchmark prints beside its figure."""
from __future__ import annotations

import importlib.util
import math
import time
from pathlib import Path

import pytest
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


def test_matmul_flops_counts_forward_and_backward_through_tensordict_modules():
    """The count the benchmarks divide by their step time: 2 M K N per matmul, forward and
    backward (the weight's gradient; the input needs none), also inside a `TensorDictModule`
    (where torch's `FlopCounterMode` fails on its module tracker)."""
    from tensordict import TensorDict
    from tensordict.nn import TensorDictModule

    machine = _machine()
    module = TensorDictModule(torch.nn.Linear(32, 16), in_keys=["x"], out_keys=["y"])
    data = TensorDict({"x": torch.randn(64, 32)}, batch_size=[64])
    with machine.MatmulFlops() as counted:
        module(data)["y"].sum().backward()
    assert counted.total == 2 * (2 * 64 * 32 * 16)
    with machine.MatmulFlops() as elementwise:
        torch.randn(64, 32).exp().sum()
    assert elementwise.total == 0
    line = machine.share_line("acting", 2e9, 0.5, 8e9)
    assert line == "acting: 2.0 GFLOP of matmuls, 4.0 GFLOP/s, 50% of the float32 matmul rate"


def test_matmul_flops_counts_the_onednn_linear(monkeypatch):
    """The TD-MPC2 networks' linears may run through oneDNN (`modules.cpu_linear`): counted as
    the BLAS's, the input's gradient included when it is asked for."""
    from torchrl_layered.modules import cpu_linear

    if cpu_linear._onednn_linear_op() is None:
        pytest.skip("this torch build has no oneDNN")
    monkeypatch.setattr(cpu_linear, "_ONEDNN", True)
    monkeypatch.setattr(cpu_linear, "_ONEDNN_MIN_MACS", 0)
    machine = _machine()
    layer = cpu_linear.Linear(32, 16)
    x = torch.randn(64, 32, requires_grad=True)
    with machine.MatmulFlops() as counted:
        layer(x).sum().backward()
    assert counted.total == 3 * (2 * 64 * 32 * 16)  # forward, input gradient, weight gradient
