"""Time of one planner call on a model-rollout objective, next to the machine's dense-matmul speed.

The objective is the library's own `RewardPredictor`: a `ProbabilisticEnsemble` (batched
weights, one matmul per layer for all members, one particle per member) with reward and value
heads, rolled out over the horizon. The ratio of the FLOP/s a planner call achieves to the
FLOP/s of one large matmul, measured in the same run, says how much of the machine the
planning loop and the model leave on the table.

    python benchmarks/planner_speed.py [--device cuda] [--planners cem icem mppi] [--repeats 10]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torchrl.data import Bounded

from machine import matmul_flops_per_second, synchronize
from torchrl_layered.predictors.encoders import IdentityEncoder
from torchrl_layered.predictors.predictor import RewardPredictor
from torchrl_layered.planners import CEMPlanner, ICEMPlanner, MPPIPlanner


def predictor_objective(predictor: RewardPredictor, start: torch.Tensor):
    """Scores candidates with the predictor's discounted returns (reward and value heads), ``[B, N, M]``."""
    state, context = predictor.encode(start)

    def objective(actions: torch.Tensor) -> torch.Tensor:
        return predictor.returns(state, context, actions, particles=1, gamma=0.99, deterministic=False)

    return objective


def flops_per_sequence(predictor: RewardPredictor, horizon: int) -> int:
    """2 x multiply-adds of every linear layer one candidate costs over the horizon (all members)."""
    members = predictor.model.num_elites
    ensemble = sum(layer.weight.shape[1] * layer.weight.shape[2] for layer in [*predictor.model.layers, predictor.model.head])
    linear = lambda net: sum(m.in_features * m.out_features for m in net.modules() if isinstance(m, torch.nn.Linear))  # noqa: E731
    per_member = horizon * (ensemble + linear(predictor.reward)) + linear(predictor.value)
    return 2 * per_member * members


def time_planner(planner, objective, batch: int, device: torch.device, repeats: int) -> tuple[list[float], int]:
    """Seconds of each call (after two warm-up calls) and candidate sequences scored per call."""
    scored = [0]

    def counted(actions: torch.Tensor) -> torch.Tensor:
        scored[0] += actions.shape[0] * actions.shape[1]
        return objective(actions)

    generator = torch.Generator(device=device).manual_seed(0)
    for _ in range(2):
        planner(counted, batch_size=batch, generator=generator)
    synchronize(device)
    scored[0] = 0
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        planner(counted, batch_size=batch, generator=generator)
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times, scored[0] // repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--planners", nargs="+", default=["cem", "icem", "mppi"], choices=["cem", "icem", "mppi"])
    parser.add_argument("--batch", type=int, default=4, help="instances planned at once")
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--elites", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=6)
    parser.add_argument("--horizon", type=int, default=10)
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--hidden", type=int, nargs="+", default=[200, 200, 200])
    parser.add_argument("--state-dim", type=int, default=8)
    parser.add_argument("--action-dim", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--matmul-size", type=int, default=2048)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)

    spec = Bounded(-1.0, 1.0, shape=(args.action_dim,), device=device)
    sizes = (spec, args.horizon, args.samples, args.iterations, args.elites)
    planners = {"cem": CEMPlanner(*sizes), "icem": ICEMPlanner(*sizes), "mppi": MPPIPlanner(*sizes)}
    predictor = RewardPredictor(IdentityEncoder(args.state_dim), args.action_dim, num_members=args.members,
                                hidden_sizes=args.hidden).to(device)
    objective = predictor_objective(predictor, torch.randn(args.batch, args.state_dim, device=device))
    peak = matmul_flops_per_second(device, args.matmul_size, repeats=20 if device.type == "cuda" else 5)

    print(f"device {device}: B={args.batch}, N={args.samples}, K={args.elites}, {args.iterations} iterations, "
          f"H={args.horizon}; RewardPredictor: {args.members}-member ensemble {args.hidden} + reward/value heads, "
          f"state {args.state_dim}, action {args.action_dim}")
    print(f"dense float32 matmul {args.matmul_size}x{args.matmul_size}: {peak / 1e9:9.1f} GFLOP/s")
    print(f"{'planner':8} {'mean ms':>9} {'median ms':>10} {'loop ms':>8} {'seqs/call':>10} {'GFLOP/call':>11} "
          f"{'GFLOP/s':>9} {'of matmul':>10}")
    for name in args.planners:
        times, sequences = time_planner(planners[name], objective, args.batch, device, args.repeats)
        # The same planner on a free objective: the cost of the planning loop itself.
        loop_times, _ = time_planner(planners[name], lambda a: a.sum((-2, -1)), args.batch, device, args.repeats)
        seconds = sum(times) / len(times)
        flops = sequences * flops_per_sequence(predictor, args.horizon)
        print(f"{name:8} {seconds * 1e3:9.2f} {statistics.median(times) * 1e3:10.2f} "
              f"{statistics.median(loop_times) * 1e3:8.2f} {sequences:10d} {flops / 1e9:11.2f} "
              f"{flops / seconds / 1e9:9.1f} {flops / seconds / peak:9.1%}")
    print("GFLOP/s and 'of matmul' use the mean time; 'loop ms' is the median call on a free objective.")

if __name__ == "__main__":
    main()
