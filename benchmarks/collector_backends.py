"""Env steps per second of the app's default planner hierarchy collected in this process, by 1 and
2 workers of each backend (``multiprocess``, ``ray``, ``distributed``), and what the transport costs.

Workload: ``make_hierarchy("planner", env)`` (the app's default hierarchy, its default options)
on ``Pendulum-v1``, ``--num-envs`` instances per worker, past its warm-up (it plans at every step),
acting only: learning stays in the driver whatever the backend, so what workers change is the
acting throughput. Each worker runs one thread. Per backend it prints

- env steps/s with 1 and 2 workers, and their ratio to the local collector (same envs per worker);
- the transport per batch: a batch's wall time with a random hierarchy (acting costs ~nothing)
  minus the local collector's (whose envs are one worker's), i.e. what moving a batch and
  coordinating the workers costs;
- ``update_policy_weights_()``: the time to push the planner hierarchy's weights to the workers.

    python benchmarks/collector_backends.py [--num-envs 4] [--batches 6] [--backends multiprocess,ray,distributed]
"""
from __future__ import annotations

import argparse
import functools
import os
import statistics
import time

import torch
from torchrl.data import Bounded

from machine import machine_line
from torchrl_layered import Hierarchy, RandomLevel
from torchrl_layered.collectors import make_collector
from torchrl_layered.envs import make_env
from torchrl_layered.hierarchies import make_hierarchy

ENV = "Pendulum-v1"


def worker_env(num_envs: int):
    torch.set_num_threads(1)
    return make_env(ENV, num_envs)


def planner_hierarchy(env) -> Hierarchy:
    hierarchy = make_hierarchy("planner", env)
    for level in hierarchy.levels:
        level.env_steps = level.warm_up_steps  # past the warm-up: the workers plan at every step
    return hierarchy


def random_hierarchy(env) -> Hierarchy:
    return Hierarchy([RandomLevel(), RandomLevel(input_spec=Bounded(-1.0, 1.0, shape=(2,)), control_interval=5)],
                     env=env)


def timed(backend: str, workers: int, build, num_envs: int, steps_per_batch: int, batches: int,
          push: bool = False) -> tuple[float, float, float]:
    """(env steps/s, seconds per batch, seconds per weight push) over ``batches`` batches after a first."""
    make = functools.partial(worker_env, num_envs)
    hierarchy = build(make_env(ENV, num_envs))
    frames = steps_per_batch * num_envs * workers
    kwargs = {"backend": backend, "workers": workers} if backend != "local" else {}
    env = make if backend != "local" else make()
    collector = make_collector(env, hierarchy, frames_per_batch=frames, total_frames=frames * (batches + 1),
                               **kwargs)
    iterator = iter(collector)
    next(iterator)  # start-up and the first batch, not timed
    times, pushes = [], []
    start = time.perf_counter()
    for _ in iterator:
        now = time.perf_counter()
        times.append(now - start)
        if push and backend != "local":
            collector.update_policy_weights_()
            pushes.append(time.perf_counter() - now)
        start = time.perf_counter()
    collector.shutdown()
    per_batch = statistics.median(times)
    return frames / per_batch, per_batch, statistics.median(pushes) if pushes else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-envs", type=int, default=4, help="env instances per worker")
    parser.add_argument("--steps-per-batch", type=int, default=25, help="env steps per instance and batch")
    parser.add_argument("--batches", type=int, default=6, help="timed batches per configuration")
    parser.add_argument("--backends", default="multiprocess,ray,distributed")
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    backends = args.backends.split(",")
    if "ray" in backends:
        import ray

        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    print(machine_line())
    print(f"{ENV}, {args.num_envs} instances per worker, {args.steps_per_batch} steps per instance and batch, "
          f"{os.cpu_count()} cores")
    common = (args.num_envs, args.steps_per_batch, args.batches)
    local_sps, local_batch, _ = timed("local", 1, planner_hierarchy, *common)
    _, local_random, _ = timed("local", 1, random_hierarchy, *common)
    print(f"local: planner {local_sps:.1f} env steps/s; random hierarchy {1e3 * local_random:.1f} ms per batch")
    print("| backend | workers | planner env steps/s | vs local | transport per batch | weight push |")
    print("|---|---|---|---|---|---|")
    print(f"| local | 1 | {local_sps:.1f} | 1.00x | - | - |")
    for backend in backends:
        for workers in (1, 2):
            sps, _, push = timed(backend, workers, planner_hierarchy, *common, push=True)
            _, random_batch, _ = timed(backend, workers, random_hierarchy, *common)
            # each worker steps as many envs as the local collector, at the same time as the others
            transport = random_batch - local_random
            print(f"| {backend} | {workers} | {sps:.1f} | {sps / local_sps:.2f}x | {1e3 * transport:.0f} ms | "
                  f"{1e3 * push:.0f} ms |", flush=True)
    if "ray" in backends:
        ray.shutdown()


if __name__ == "__main__":
    main()
