"""Env steps per second of a random hierarchy (3 levels; ``--levels``) through `Collector`, next to
a plain `RandomPolicy` on the same envs: the hierarchy's overhead as a ratio, measured in one run
(alternating rounds, median ratio), and as the time it adds to each batched env step.

The added time grows little with the number of instances (the option bookkeeping works on
``[num_envs, num_levels]`` tensors, a few dozen small ops and carried entries a step), so the
ratio falls as the env's own step grows: run it with ``--num-envs 32`` or ``128`` to see it.

``--floor`` also times the hierarchy's carried entries alone, in its key layout, with no
option arithmetic and a `RandomPolicy` acting: what TorchRL's handling of those entries (the
input clone, ``step_mdp``, the batch) costs by itself, the floor under any option bookkeeping
that keeps its state in the TensorDict; the rest of the hierarchy's cost is the transform's
arithmetic and the levels' forward.

``--levels 1`` times a one-level hierarchy: what the option bookkeeping costs a flat level (a
`TianshouLevel`, say) that sits in a `Hierarchy` of its own.

    python benchmarks/hierarchy_overhead.py [--num-envs 8] [--levels 3] [--frames 40000] [--rounds 3] [--floor]

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
from torchrl_layered.hierarchy.transform import STEP_OUTPUTS, HierarchyTransform
from torchrl_layered.keys import LEVELS
from torchrl_layered.unchecked import unchecked_tensordict


class CarriedEntriesOnly(HierarchyTransform):
    """The hierarchy's carried entries and layout without its arithmetic: each step's outputs
    are the held values, written as the real transform writes them."""

    @classmethod
    def of(cls, hierarchy: Hierarchy) -> CarriedEntriesOnly:
        """The hierarchy's own transform (`Hierarchy.make_transform`: its specs and keys) with this step."""
        transform = hierarchy.make_transform()
        transform.__class__ = cls
        return transform

    def _step(self, tensordict, next_tensordict):
        state = tensordict.get(LEVELS)
        next_tensordict.set(LEVELS, unchecked_tensordict({key: state.get(key) for key in STEP_OUTPUTS},
                                                         state.batch_size))
        return next_tensordict


def random_hierarchy(env, num_levels: int) -> Hierarchy:
    """``num_levels`` `RandomLevel`s over ``env``: each below the top takes a 4-d option and hands control
    back after 5 of its own steps (the lowest: a 2-d option, 3 steps); one level alone acts on the env."""
    lower = [RandomLevel(input_spec=Bounded(-1.0, 1.0, shape=(4,)), control_interval=5)
             for _ in range(num_levels - 2)]
    if num_levels > 1:
        lower.append(RandomLevel(input_spec=Bounded(-1.0, 1.0, shape=(2,)), control_interval=3))
    return Hierarchy([RandomLevel(), *lower], env=env)


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
    parser.add_argument("--levels", type=int, default=3, help="the hierarchy's depth")
    parser.add_argument("--frames", type=int, default=None, help="env steps per run (default: 5000 batched steps)")
    parser.add_argument("--frames-per-batch", type=int, default=None, help="default: 100 batched steps")
    parser.add_argument("--rounds", type=int, default=3, help="alternating plain / hierarchy runs")
    parser.add_argument("--floor", action="store_true",
                        help="also time the carried entries alone (no option arithmetic, a RandomPolicy)")
    args = parser.parse_args()
    frames = 5000 * args.num_envs if args.frames is None else args.frames
    frames_per_batch = 100 * args.num_envs if args.frames_per_batch is None else args.frames_per_batch
    if min(args.num_envs, args.levels, args.rounds, frames_per_batch) < 1 or frames < 2 * frames_per_batch:
        parser.error("--num-envs, --levels, --rounds and --frames-per-batch must be >= 1, and --frames at least two batches "
                     "(the first is a warm-up, not timed)")
    torch.set_num_threads(1)

    base = make_env("Pendulum-v1", args.num_envs)
    env = make_env("Pendulum-v1", args.num_envs)
    hierarchy = random_hierarchy(env, args.levels)
    layered_env = TransformedEnv(env, hierarchy.make_transform())
    carried_env = None
    if args.floor:
        carried_env = TransformedEnv(make_env("Pendulum-v1", args.num_envs), CarriedEntriesOnly.of(hierarchy))
    print(machine_line())
    print(f"{args.num_envs} x Pendulum-v1, {frames} frames per run")
    ratios, added, floors = [], [], []
    for _ in range(args.rounds):  # alternating, so that a change in the machine's speed hits both
        plain = steps_per_second(base, RandomPolicy(base.full_action_spec), frames, frames_per_batch)
        layered = steps_per_second(layered_env, hierarchy, frames, frames_per_batch)
        ratios.append(plain / layered)
        # per batched step of all instances
        added.append(1e6 * args.num_envs * (1 / layered - 1 / plain))
        line = (f"plain RandomPolicy {plain:8.0f} env steps/s, {args.levels}-level RandomLevel {layered:8.0f}: "
                f"{plain / layered:.2f}x, "
                f"+{added[-1]:.0f} us per batched step")
        if carried_env is not None:
            carried = steps_per_second(carried_env, RandomPolicy(carried_env.full_action_spec), frames, frames_per_batch)
            floors.append(plain / carried)
            line += f"; carried entries alone {carried:8.0f}: {plain / carried:.2f}x"
        print(line)
    print(f"hierarchy cost (median ratio): {statistics.median(ratios):.2f}x, "
          f"+{statistics.median(added):.0f} us per batched step of {args.num_envs} instances")
    if floors:
        print(f"carried entries alone (median ratio): {statistics.median(floors):.2f}x; the option arithmetic and "
              f"the levels' forward: the remaining {statistics.median(ratios) - statistics.median(floors):.2f}x")


if __name__ == "__main__":
    main()
