"""Time of one `PlannerLevel` plan call (CEM over a learned ensemble), and its collector throughput.

The workload of the reference library's CEM benchmark: InvertedPendulum-v5 x 6, CEM (elite
ratio 0.05, momentum 0.5, initial std the action range), a `RewardPredictor` (ensemble of
``--members`` with ``--hidden`` widths, reward and value heads [128, 128]), ``--particles`` per
member, 2 updates per env step when learning. The reference's nets use ReLU where ours default
to SiLU: ``--activation ReLU`` runs the same arithmetic as the reference. Defaults are the
small planner row; the PETS-size row is

    python benchmarks/planner_level_speed.py --samples 512 --horizon 10 --members 5 --particles 4 \
        --hidden 200 200 200

``--collect-steps N`` adds env steps/s through the TorchRL collector without and with
learning (chunks of N batched steps). ``--rollout-chunk 0`` rolls every candidate out at once
(the layout before chunked rollouts), to measure what chunking buys; ``--compile`` compiles the
rollout and the updates (``PlannerLevel(compile=True)``; the compilation falls in the warm-up
calls and the first collector batch). ``--serve`` answers sampled plan calls as a worker of
`paired.py` (timed in alternation with another library's) instead of printing figures; with
``--collect-steps N`` it answers collector batches of N batched steps (``--learn``: each stored
and learnt from).
"""
from __future__ import annotations

import argparse
import statistics
import time
from functools import partial

import torch
from torchrl.envs import ExplorationType, TransformedEnv, set_exploration_type

import paired
from machine import MatmulFlops, machine_line, matmul_rates, share_line, synchronize
from torchrl_layered import Hierarchy
from torchrl_layered.collectors import make_collector
from torchrl_layered.envs import make_env
from torchrl_layered.levels import PlannerLevel
from torchrl_layered.predictors import default_predictor_factory


def build(args) -> tuple[Hierarchy, PlannerLevel, object]:
    env = make_env(args.env, args.num_envs, device=args.device)
    action_range = float((env.action_spec.space.high - env.action_spec.space.low).max())
    factory = partial(default_predictor_factory, num_members=args.members, hidden_sizes=tuple(args.hidden),
                      rollout_chunk=args.rollout_chunk or None, activation=args.activation)
    level = PlannerLevel(
        predictor_factory=factory, planner=args.planner, horizon=args.horizon, num_samples=args.samples,
        num_iterations=args.iterations,
        planner_kwargs=dict(elite_ratio=args.elite_ratio, momentum=0.5, initial_sigma=action_range),
        particles=args.particles, warm_up_steps=0, buffer_size=24_000, num_updates=2, compile=args.compile,
        planning_dtype=args.planning_dtype,
    )
    return Hierarchy([level], env=env), level, env


def time_plan_calls(hierarchy: Hierarchy, env, warmup: int, repeats: int,
                    exploration: ExplorationType) -> tuple[list[float], int]:
    """Seconds of each plan call for all instances (the level's whole acting step), and the
    matmul FLOPs of one more call, untimed.

    ``ExplorationType.RANDOM`` plans as in training (sampled model predictions per particle),
    ``DETERMINISTIC`` as in evaluation (mean predictions).
    """
    td = TransformedEnv(env, hierarchy.make_transform()).reset()
    times = []
    with torch.no_grad(), set_exploration_type(exploration):
        for i in range(warmup + repeats):
            start = time.perf_counter()
            hierarchy(td.clone())
            synchronize(td.device)
            if i >= warmup:
                times.append(time.perf_counter() - start)
        with MatmulFlops() as flops:
            hierarchy(td.clone())
    return times, flops.total


def serve(hierarchy: Hierarchy, env, warmup: int) -> None:
    """Sampled plan calls on request, as a worker of `paired.py` (`paired.serve`)."""
    td = TransformedEnv(env, hierarchy.make_transform()).reset()

    def timed_call() -> float:
        data = td.clone()
        start = time.perf_counter()
        hierarchy(data)
        synchronize(td.device)
        return time.perf_counter() - start

    with torch.no_grad(), set_exploration_type(ExplorationType.RANDOM):
        for _ in range(warmup):
            hierarchy(td.clone())
        paired.serve(timed_call)


def serve_collector(hierarchy: Hierarchy, env, steps: int, learn: bool) -> None:
    """Collector batches of ``steps`` batched env steps on request (each stored and learnt from
    with ``learn``), as a worker of `paired.py`."""
    frames = steps * env.batch_size[0]
    hierarchy.train(learn)
    batches = iter(make_collector(env, hierarchy, frames_per_batch=frames, total_frames=-1))

    def timed_call() -> float:
        start = time.perf_counter()
        batch = next(batches)
        if learn:
            hierarchy.extend(batch)
            hierarchy.learn()
        return time.perf_counter() - start

    for _ in range(2):  # one-off costs (allocation, the first updates)
        timed_call()
    paired.serve(timed_call)


def collect_rate(hierarchy: Hierarchy, env, steps: int, chunks: int, learn: bool) -> float:
    """Median env steps/s over ``chunks`` batches of ``steps`` batched steps."""
    frames = steps * env.batch_size[0]
    collector = make_collector(env, hierarchy, frames_per_batch=frames, total_frames=frames * (chunks + 1))
    rates, start = [], time.perf_counter()
    for i, batch in enumerate(collector):
        if learn:
            hierarchy.extend(batch)
            hierarchy.learn()
        now = time.perf_counter()
        if i > 0:  # the first batch includes one-off costs
            rates.append(frames / (now - start))
        start = now
    collector.shutdown()
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="InvertedPendulum-v5")
    parser.add_argument("--num-envs", type=int, default=6)
    parser.add_argument("--planner", default="cem", choices=["cem", "icem", "mppi"])
    parser.add_argument("--samples", type=int, default=128)
    parser.add_argument("--iterations", type=int, default=6)
    parser.add_argument("--horizon", type=int, default=3)
    parser.add_argument("--elite-ratio", type=float, default=0.05)
    parser.add_argument("--members", type=int, default=1)
    parser.add_argument("--particles", type=int, default=1)
    parser.add_argument("--hidden", type=int, nargs="+", default=[128, 128])
    parser.add_argument("--activation", default="SiLU", choices=["SiLU", "ReLU"],
                        help="of the ensemble and heads (the reference library's nets use ReLU)")
    parser.add_argument("--rollout-chunk", type=int, default=1024, help="0: no chunking")
    parser.add_argument("--compile", action="store_true", help="PlannerLevel(compile=True)")
    parser.add_argument("--planning-dtype", default="float32", choices=["float32", "bfloat16"],
                        help="PlannerLevel(planning_dtype=...)")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--collect-steps", type=int, default=0, help="batched env steps per collector batch")
    parser.add_argument("--chunks", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--serve", action="store_true", help="answer sampled plan calls (with --collect-steps: "
                        "collector batches) as a worker of paired.py")
    parser.add_argument("--learn", action="store_true", help="with --serve --collect-steps: learn from each batch")
    args = parser.parse_args()
    if args.learn and not (args.serve and args.collect_steps):
        parser.error("--learn goes with --serve --collect-steps N (the printed run times both)")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    hierarchy, level, env = build(args)
    if args.serve and args.collect_steps:
        serve_collector(hierarchy, env, args.collect_steps, args.learn)
        return
    if args.serve:
        serve(hierarchy, env, args.warmup)
        return
    params = sum(p.numel() for p in level.predictor.parameters())
    rates = matmul_rates(args.device)
    print(machine_line(args.device, rates=rates))
    print(f"{args.num_envs} x {args.env}, {args.planner.upper()} {args.samples} samples x {args.iterations} iterations, "
          f"horizon {args.horizon}, {args.members} members x {args.particles} particles, hidden {args.hidden}, "
          f"{args.activation}, predictor {params} parameters, rollout chunk {args.rollout_chunk or 'none'}"
          f"{', compiled' if args.compile else ''}, planning in {args.planning_dtype}")
    for name, exploration in [("sampled (training)", ExplorationType.RANDOM),
                              ("deterministic (evaluation)", ExplorationType.DETERMINISTIC)]:
        times, flops = time_plan_calls(hierarchy, env, args.warmup, args.repeats, exploration)
        print(f"plan call, {name}: median {1e3 * statistics.median(times):.2f} ms, min {1e3 * min(times):.2f} ms "
              f"({args.repeats} calls)")
        print(share_line(f"plan call, {name}", flops, statistics.median(times), rates[0]))
    if args.collect_steps:
        for learn in (False, True):
            hierarchy.train(learn)
            rate = collect_rate(hierarchy, env, args.collect_steps, args.chunks, learn)
            print(f"collector, learning {'on ' if learn else 'off'}: {rate:.1f} env steps/s")


if __name__ == "__main__":
    main()
