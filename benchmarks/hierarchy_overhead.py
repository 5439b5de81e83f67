"""Env steps per second of a 3-level random hierarchy through `Collector`, next to a plain
`RandomPolicy` on the same envs: the hierarchy's overhead as a ratio, measured in one run
(alternating rounds, median ratio), and as the time it adds to each batched env step.

The added time grows little with the number of instances (the option bookkeeping works on
``[num_envs, num_levels]`` tensors, a few dozen small ops and carried entries a step), so the
ratio falls as the env's own step grows: run it with ``--num-envs 32`` or ``128`` to see it.

    python benchmarks/hierarchy_overhead.py [--num-envs 8] [--frames 40000] [--rounds 3]

``--frames`` defaults to 5000 batched steps and ``--frames-per-batch`` to 100.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torchrl.collectors import Collector
from torchrl.data import Bounded
from torchrl.envs import TransformedEnv
from torchrl.envs.utils import RandomPolicy

from machine import machine_line
from torchrl_layered import Hierarchy, RandomLevel
from torchrl_layered.envs import make_env


def steps_per_second(env, policy, frames: int, frames_per_batch: int) -> float:
    collector = Collector(env, policy, frames_per_batch=frames_per_batch, total_frames=frames,
                          auto_register_policy_transforms=False)
    iterator = iter(collector)
    next(iterator)  # warm-up batch, not timed
    start = time.perf_counter()
    collected = sum(batch.numel() for batch in iterator)
    elapsed = time.perf_counter() - start
    collector.shutdown()
    return collected / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--frames", type=int, default=None, help="env steps per run (default: 5000 batched steps)")
    parser.add_argument("--frames-per-batch", type=int, default=None, help="default: 100 batched steps")
    parser.add_argument("--rounds", type=int, default=3, help="alternating plain / hierarchy runs")
    args = parser.parse_args()
    frames = 5000 * args.num_envs if args.frames is None else args.frames
    frames_per_batch = 100 * args.num_envs if args.frames_per_batch is None else args.frames_per_batch
    if min(args.num_envs, args.rounds, frames_per_batch) < 1 or frames < 2 * frames_per_batch:
        parser.error("--num-envs, --rounds and --frames-per-batch must be >= 1, and --frames at least two batches "
                     "(the first is a warm-up, not timed)")
    torch.set_num_threads(1)

    base = make_env("Pendulum-v1", args.num_envs)
    env = make_env("Pendulum-v1", args.num_envs)
    hierarchy = Hierarchy(
        [
            RandomLevel(),
            RandomLevel(input_spec=Bounded(-1.0, 1.0, shape=(4,)), control_interval=5),
            RandomLevel(input_spec=Bounded(-1.0, 1.0, shape=(2,)), control_interval=3),
        ],
        env=env,
    )
    layered_env = TransformedEnv(env, hierarchy.make_transform())
    print(machine_line())
    print(f"{args.num_envs} x Pendulum-v1, {frames} frames per run")
    ratios, added = [], []
    for _ in range(args.rounds):  # alternating, so that a change in the machine's speed hits both
        plain = steps_per_second(base, RandomPolicy(base.full_action_spec), frames, frames_per_batch)
        layered = steps_per_second(layered_env, hierarchy, frames, frames_per_batch)
        ratios.append(plain / layered)
        # per batched step of all instances
        added.append(1e6 * args.num_envs * (1 / layered - 1 / plain))
        print(f"plain RandomPolicy {plain:8.0f} env steps/s, 3-level RandomLevel {layered:8.0f}: {plain / layered:.2f}x, "
              f"+{added[-1]:.0f} us per batched step")
    print(f"hierarchy cost (median ratio): {statistics.median(ratios):.2f}x, "
          f"+{statistics.median(added):.0f} us per batched step of {args.num_envs} instances")


if __name__ == "__main__":
    main()
