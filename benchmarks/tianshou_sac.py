"""Wall time of a `TianshouLevel` SAC run on InvertedPendulum-v5 with learning on.

The run of the learning test: 3 batched instances, 15,000 env steps, the default SAC config
([64, 64] networks, Adam 1e-3, tau 0.02), two updates of batch 128 per vector step (3 env
steps), i.e. 10,000 updates. It reports the wall time, env steps per second (collection and
updates together), the time in updates, and the deterministic evaluation return (5
instances, first episode, max 1000) and the whole process's time (imports, set-up and evaluation
included), the figure to set beside the reference's whole test.

``--reference-settings`` runs the reference library's flat SAC test instead: [32, 32] networks,
a fixed temperature 0.2, Adam 3e-3, tau 0.005, a 5,000-transition buffer and one update of
batch 64 per env step (15,000 updates).

    python benchmarks/tianshou_sac.py [--steps 15000] [--num-envs 3] [--threads 1] [--seed 0]
    python benchmarks/tianshou_sac.py --reference-settings
"""
from __future__ import annotations

import time

_STARTED = time.perf_counter()  # the process's whole time is reported beside the training time

import argparse  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torchrl.collectors import Collector  # noqa: E402
from torchrl.envs import TransformedEnv  # noqa: E402

from torchrl_layered import Hierarchy  # noqa: E402
from torchrl_layered.envs import make_env  # noqa: E402
from torchrl_layered.levels import TianshouLevel, default_sac_config  # noqa: E402

ENV = "InvertedPendulum-v5"


def evaluate(hierarchy: Hierarchy, num_envs: int = 5, seed: int = 1000, max_steps: int = 1000) -> float:
    """Mean return of each instance's first episode, acting deterministically (eval mode)."""
    env = make_env(ENV, num_envs)
    env.set_seed(seed)
    hierarchy.eval()
    with torch.no_grad():
        rollout = TransformedEnv(env, hierarchy.make_transform()).rollout(max_steps, hierarchy, break_when_any_done=False)
    hierarchy.train()
    reward, done = rollout["next", "reward"][..., 0], rollout["next", "done"][..., 0].long()
    first_episode = (done.cumsum(-1) - done) == 0
    return float((reward * first_episode).sum(-1).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=15_000)
    parser.add_argument("--num-envs", type=int, default=3)
    parser.add_argument("--frames-per-batch", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for these small nets)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--update-interval", type=int, default=3, help="new transitions per update round")
    parser.add_argument("--num-updates", type=int, default=2, help="updates per round")
    parser.add_argument("--hidden-sizes", type=int, nargs="+", default=[64, 64])
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--tau", type=float, default=0.02)
    parser.add_argument("--alpha", default="auto", help='"auto" or a fixed temperature')
    parser.add_argument("--buffer-size", type=int, default=100_000)
    parser.add_argument("--reference-settings", action="store_true", help="the reference library's flat SAC test")
    args = parser.parse_args()
    if args.reference_settings:
        args.hidden_sizes, args.lr, args.tau, args.alpha = [32, 32], 3e-3, 0.005, "0.2"
        args.buffer_size, args.batch_size, args.update_interval, args.num_updates = 5000, 64, 1, 1
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)

    env = make_env(ENV, args.num_envs)
    env.set_seed(args.seed)
    config = default_sac_config(hidden_sizes=args.hidden_sizes, lr=args.lr, tau=args.tau,
                                alpha=args.alpha if args.alpha == "auto" else float(args.alpha))
    level = TianshouLevel(config, buffer_size=args.buffer_size, batch_size=args.batch_size,
                          update_interval=args.update_interval, num_updates=args.num_updates)
    hierarchy = Hierarchy([level], env=env)
    collector = Collector(env, hierarchy, frames_per_batch=args.frames_per_batch, total_frames=args.steps,
                          auto_register_policy_transforms=True)
    learn_time = 0.0
    start = time.perf_counter()
    for batch in collector:
        hierarchy.extend(batch)
        t = time.perf_counter()
        hierarchy.learn()
        learn_time += time.perf_counter() - t
    wall = time.perf_counter() - start
    collector.shutdown()
    from machine import machine_line  # a sibling script; this module is also imported by path

    print(machine_line())
    print(f"{ENV}: {args.steps} env steps, {args.num_envs} instances, {level.num_gradient_updates} updates of batch "
          f"{args.batch_size}, hidden {args.hidden_sizes}, alpha {args.alpha}, {args.threads} thread(s)")
    print(f"wall time {wall:.1f} s, {args.steps / wall:.0f} env steps/s (updates {learn_time:.1f} s, "
          f"{1e3 * learn_time / max(1, level.num_gradient_updates):.2f} ms each)")
    print(f"evaluation return (mean of 5 first episodes): {evaluate(hierarchy):.0f}")
    print(f"whole process {time.perf_counter() - _STARTED:.1f} s (imports, set-up, training, evaluation)")


if __name__ == "__main__":
    main()
