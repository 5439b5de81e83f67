"""Env steps per second of a learning `TDMPC2Level`, and the split between acting and updating.

Settings of the issue: 4 x Pendulum-v1, 1 update per env step, batch 256, horizon 3, MPPI with
512 samples and 6 iterations, the 5M preset; timed over ``--steps`` batched env steps after a
warm-up that fills the buffer.

    python benchmarks/tdmpc2_speed.py [--model-size 5] [--steps 40] [--compile] [--planning-dtype bfloat16]
        [--update-dtype bfloat16]

``--serve`` answers planning steps (the hierarchy's action for every instance, then the env
step; with ``--learn`` also storing the transitions and one update per transition) as a worker
of `paired.py`, timed in alternation with another library's.
"""
from __future__ import annotations

import argparse
import time

import torch
from torchrl.envs import TransformedEnv

import paired
from machine import MatmulFlops, machine_line, matmul_rates, share_line
from torchrl_layered import Hierarchy
from torchrl_layered.envs import make_env
from torchrl_layered.levels import TDMPC2Level
from torchrl_layered.tdmpc2 import get_default_tdmpc2_config


def serve(hierarchy: Hierarchy, env, td, learn_from=None) -> None:
    """Batched env steps on request, as a worker of `paired.py` (`paired.serve`): plan for every
    instance, step the env, and with ``learn_from`` store the transitions and learn from them."""
    state = {"td": td}

    def timed_call() -> float:
        start = time.perf_counter()
        if learn_from is None:
            with torch.no_grad():
                state["td"] = env.step_and_maybe_reset(hierarchy(state["td"]))[1]
        else:
            state["td"] = learn_from(hierarchy(state["td"]))
        return time.perf_counter() - start

    for _ in range(2):  # one-off costs (allocation, the kernel choice)
        timed_call()
    paired.serve(timed_call)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-envs", type=int, default=4)
    parser.add_argument("--model-size", type=int, default=5)
    parser.add_argument("--steps", type=int, default=40, help="timed batched env steps")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--planning-dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--update-dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--serve", action="store_true", help="answer planning steps as a worker of paired.py")
    parser.add_argument("--learn", action="store_true", help="with --serve: each step also stores and learns")
    args = parser.parse_args()
    if args.learn and not args.serve:
        parser.error("--learn goes with --serve (the printed run always learns)")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = get_default_tdmpc2_config()
    cfg.update(model_size=args.model_size, batch_size=256, horizon=3, num_samples=512, num_iterations=6,
               compile=args.compile, planning_dtype=args.planning_dtype, update_dtype=args.update_dtype)
    env = make_env("Pendulum-v1", args.num_envs, device=args.device)
    level = TDMPC2Level(cfg, warm_up_steps=0, update_interval=1, num_updates=1)
    hierarchy = Hierarchy([level], env=env).to(args.device)
    env = TransformedEnv(env, hierarchy.make_transform())

    # fill the buffer with random data so every timed step learns
    warm = env.rollout(30, break_when_any_done=False)
    warm["collector", "traj_ids"] = torch.arange(args.num_envs, device=args.device)[:, None].expand(warm.shape)
    hierarchy.extend(warm)
    level.schedule.learned = level.n_transitions

    def learn_from(td):
        td, root = env.step_and_maybe_reset(td)
        data = td.clone().unsqueeze(-1)
        data["collector", "traj_ids"] = torch.full(data.shape, 10**6, device=args.device) + torch.arange(
            args.num_envs, device=args.device)[:, None]
        hierarchy.extend(data)
        hierarchy.learn()
        return root

    td = env.reset()
    if args.serve:
        serve(hierarchy, env, td, learn_from if args.learn else None)
        return
    acting = updating = 0.0
    for step in range(args.steps + 2):
        start = time.perf_counter()
        td = hierarchy(td)
        mid = time.perf_counter()
        td = learn_from(td)
        end = time.perf_counter()
        if step >= 2:  # the first steps include one-off costs (compilation, allocation)
            acting += mid - start
            updating += end - mid
    total = acting + updating
    frames = args.steps * args.num_envs
    # one more step, untimed, to count its matmul work
    with MatmulFlops() as act_flops:
        td = hierarchy(td)
    with MatmulFlops() as update_flops:
        learn_from(td)
    rates = matmul_rates(args.device)
    print(machine_line(args.device, rates=rates))
    print(f"world model {sum(p.numel() for p in level.world_model.parameters())} parameters")
    print(f"{args.num_envs} x Pendulum-v1, model_size {args.model_size}, batch 256, horizon 3, MPPI 512 x 6, "
          f"1 update / env step, device {args.device}, {args.threads} threads, compile={args.compile}, "
          f"planning_dtype={args.planning_dtype}, update_dtype={args.update_dtype}")
    print(f"env steps/s (learning on): {frames / total:8.2f}")
    print(f"acting   : {1e3 * acting / args.steps:8.1f} ms per batched step ({acting / total:.0%})")
    print(f"updating : {1e3 * updating / args.steps:8.1f} ms per batched step ({updating / total:.0%}), "
          f"{1e3 * updating / frames:.1f} ms per update")
    print(share_line("acting", act_flops.total, acting / args.steps, rates[0]))
    print(share_line("updating", update_flops.total, updating / args.steps, rates[0]))


if __name__ == "__main__":
    main()
