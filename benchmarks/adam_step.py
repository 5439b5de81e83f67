"""Time of one Adam step on the levels' parameter sets: the per-parameter loop, foreach, fused.

The parameter sets are those the levels optimise: a `PlannerLevel`'s predictor (a 5-member
ensemble with reward and value heads, [128, 128]) and the CPU TD-MPC2 world model and policy
(`cpu_tdmpc2_config`). Gradients are random; only the optimiser's own work is timed.

    python benchmarks/adam_step.py [--steps 300] [--threads 1]
"""
from __future__ import annotations

import argparse
import time

import torch

from machine import matmul_flops_per_second
from torchrl_layered.modules.tdmpc2 import TDMPC2WorldModel
from torchrl_layered.objectives.predictor import RewardPredictorLoss
from torchrl_layered.objectives.tdmpc2_config import cpu_tdmpc2_config, resolve_tdmpc2_config
from torchrl_layered.predictors import IdentityEncoder, RewardPredictor


def parameter_sets() -> dict[str, list[torch.Tensor]]:
    predictor = RewardPredictor(IdentityEncoder(3), 1, num_members=5, hidden_sizes=(128, 128), head_sizes=(128, 128))
    world_model = TDMPC2WorldModel(3, 1, resolve_tdmpc2_config(cpu_tdmpc2_config()))
    return {
        "planner predictor (5 x [128, 128])": list(RewardPredictorLoss(predictor).parameters()),
        "TD-MPC2 world model + policy (CPU config)": list(world_model.parameters()),
    }


def step_ms(params: list[torch.Tensor], steps: int, **kwargs) -> float:
    for p in params:
        p.grad = torch.randn_like(p)
    optimizer = torch.optim.Adam(params, lr=1e-3, **kwargs)
    for _ in range(10):
        optimizer.step()
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(steps):
            optimizer.step()
        best = min(best, (time.perf_counter() - start) / steps)
    return 1e3 * best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"machine: {matmul_flops_per_second(torch.device('cpu'), 1024, 5) / 1e9:.1f} GFLOP/s dense matmul "
          f"({args.threads} thread(s)), torch {torch.__version__}")
    print("| parameters | tensors | numbers | loop (ms) | foreach (ms) | fused (ms) | fused vs loop |")
    print("|---|---|---|---|---|---|---|")
    for name, params in parameter_sets().items():
        loop = step_ms(params, args.steps, foreach=False)
        foreach = step_ms(params, args.steps, foreach=True)
        fused = step_ms(params, args.steps, fused=True)
        print(f"| {name} | {len(params)} | {sum(p.numel() for p in params):,} | {loop:.3f} | {foreach:.3f} | "
              f"{fused:.3f} | {loop / fused:.1f}x |")


if __name__ == "__main__":
    main()
