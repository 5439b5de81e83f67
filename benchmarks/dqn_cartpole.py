"""How often a `TianshouLevel` DQN solves CartPole-v1: the reference library's acceptance run.

The workload of the reference's flat-learning test: 3 batched CartPole-v1 instances, 15,000
env steps, then a deterministic evaluation (5 instances, first episode, at most 500 steps)
that must return more than 200. Each run is a fresh level; ``--seeds`` fixes torch, numpy
and env seeds per run, ``--unseeded`` leaves them to chance as the reference's test does.
Settings not given on the command line are `default_dqn_config`'s and `TianshouLevel`'s.

    python benchmarks/dqn_cartpole.py --unseeded 10 [--jobs 2] [--json out.json]
    python benchmarks/dqn_cartpole.py --seeds 0 1 2 --target-update-freq 100
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time

import numpy as np
import torch
from torchrl.envs import RewardSum, TransformedEnv

from torchrl_layered import Hierarchy
from torchrl_layered.collectors import make_collector
from torchrl_layered.envs import make_env
from torchrl_layered.levels import TianshouLevel, default_dqn_config
from torchrl_layered.trainers.evaluate import evaluate

ENV = "CartPole-v1"
PASS = 200.0


def run(seed: int | None, config: dict, level_kwargs: dict, steps: int, num_envs: int) -> dict:
    """Trains one level for ``steps`` env steps and returns its evaluation return and wall time."""
    torch.set_num_threads(1)
    if seed is not None:
        torch.manual_seed(seed)
        np.random.seed(seed)
    env = make_env(ENV, num_envs)
    if seed is not None:
        env.set_seed(seed)
    level = TianshouLevel(config, **level_kwargs)
    hierarchy = Hierarchy([level], env=env)
    collector = make_collector(env, hierarchy, frames_per_batch=100 * num_envs, total_frames=steps)
    start = time.perf_counter()
    for batch in collector:
        hierarchy.extend(batch)
        hierarchy.learn()
    collector.shutdown()
    wall = time.perf_counter() - start
    eval_env = TransformedEnv(make_env(ENV, 5), hierarchy.make_transform())
    eval_env.append_transform(RewardSum())
    score = evaluate(hierarchy, eval_env, max_steps=500, seed=1000 if seed is None else 1000 + seed).mean_return
    return {"seed": seed, "return": score, "wall_s": wall, "updates": level.num_gradient_updates}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    runs = parser.add_mutually_exclusive_group(required=True)
    runs.add_argument("--seeds", type=int, nargs="+", help="fixed seeds, one run each")
    runs.add_argument("--unseeded", type=int, help="this many runs without fixed seeds")
    parser.add_argument("--steps", type=int, default=15_000)
    parser.add_argument("--num-envs", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel (one thread each)")
    parser.add_argument("--json", help="write the runs and settings here")
    defaults = default_dqn_config()
    algorithm, exploration = defaults["algorithm"], defaults["exploration"]
    parser.add_argument("--lr", type=float, default=algorithm["optim"]["lr"])
    parser.add_argument("--gamma", type=float, default=algorithm["gamma"])
    parser.add_argument("--target-update-freq", type=int, default=algorithm["target_update_freq"])
    parser.add_argument("--huber-loss-delta", type=float, default=algorithm["huber_loss_delta"])
    parser.add_argument("--hidden-sizes", type=int, nargs="+", default=defaults["model"]["hidden_sizes"])
    parser.add_argument("--eps-start", type=float, default=exploration["eps_start"])
    parser.add_argument("--eps-end", type=float, default=exploration["eps_end"])
    parser.add_argument("--eps-decay-steps", type=int, default=exploration["eps_decay_steps"])
    parser.add_argument("--batch-size", type=int, default=None, help="TianshouLevel's default if not given")
    parser.add_argument("--update-interval", type=int, default=None)
    parser.add_argument("--num-updates", type=int, default=None)
    parser.add_argument("--buffer-size", type=int, default=None)
    args = parser.parse_args()

    config = default_dqn_config(
        hidden_sizes=args.hidden_sizes, lr=args.lr, gamma=args.gamma, target_update_freq=args.target_update_freq,
        huber_loss_delta=args.huber_loss_delta, eps_start=args.eps_start, eps_end=args.eps_end,
        eps_decay_steps=args.eps_decay_steps,
    )
    level_kwargs = {k: v for k, v in [("batch_size", args.batch_size), ("update_interval", args.update_interval),
                                      ("num_updates", args.num_updates), ("buffer_size", args.buffer_size)]
                    if v is not None}
    seeds = args.seeds if args.seeds is not None else [None] * args.unseeded
    jobs = [(seed, config, level_kwargs, args.steps, args.num_envs) for seed in seeds]
    print(f"{ENV}: {len(jobs)} run(s) of {args.steps} env steps on {args.num_envs} instances; level {level_kwargs}")
    from machine import matmul_flops_per_second  # noqa: E402 (a sibling script)
    print(f"machine: {matmul_flops_per_second(torch.device('cpu'), 1024, 5) / 1e9:.1f} GFLOP/s dense matmul (1 thread)")
    if args.jobs > 1:
        with mp.get_context("spawn").Pool(args.jobs) as pool:
            results = pool.starmap(run, jobs)
    else:
        results = [run(*job) for job in jobs]
    for r in results:
        print(f"seed {r['seed']}: return {r['return']:.0f} ({r['wall_s']:.0f} s, {r['updates']} updates)")
    passed = sum(r["return"] > PASS for r in results)
    print(f"passed {passed}/{len(results)} (return > {PASS:.0f}); "
          f"median return {np.median([r['return'] for r in results]):.0f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"settings": vars(args), "config": config, "level": level_kwargs, "runs": results}, f, indent=1)


if __name__ == "__main__":
    main()
