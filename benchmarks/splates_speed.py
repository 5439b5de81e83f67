"""Env steps per second of a learning planner over SPlaTES skills, split into acting and learning.

Settings of the issue: `planner_over_splates` on Maze2D-Medium-v0 with 4 instances, iCEM with
256 samples, 6 iterations and horizon 15 (planning at every planner decision: no random
phases), both levels learning (the planner's predictor every 2 of its transitions, the
skills every 2 env steps). Timed over ``--steps`` batched env steps after a warm-up batch
that fills the buffers; ``--skill-mpc`` makes the skills act with MPPI instead of their
policy prior.

    python benchmarks/splates_speed.py [--steps 200] [--skill-mpc] [--threads 1] [--planning-dtype bfloat16]
        [--update-dtype bfloat16]

``--reference-settings`` runs the reference library's example instead (its `bench_splates.py`):
2 instances, the skills on the default-size TD-MPC2 config planning with MPPI at every env
step and learning once per 4 of their transitions, the planner level still in its random
warm-up (it acts randomly and does not learn yet), no hold switch, and the skills' heads
reading their conditioning as the reference's do (``raw_conditioning``).
"""
from __future__ import annotations

import argparse
import json
import time

import torch
from torchrl.collectors import Collector

from torchrl_layered.envs import make_env
from torchrl_layered.hierarchies import planner_over_splates
from torchrl_layered.tdmpc2 import get_default_tdmpc2_config
from machine import MatmulFlops, machine_line, matmul_rates, share_line

#: A warm-up that never ends: the level acts randomly and does not learn for the whole run.
NEVER = 10**9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-envs", type=int, default=4)
    parser.add_argument("--steps", type=int, default=200, help="timed batched env steps")
    parser.add_argument("--skill-mpc", action="store_true", help="skills plan with MPPI instead of the policy prior")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--reference-settings", action="store_true", help="the reference example's workload")
    parser.add_argument("--planning-dtype", default="float32", choices=["float32", "bfloat16"],
                        help="the skills' planning precision (the TD-MPC2 config's planning_dtype)")
    parser.add_argument("--update-dtype", default="float32", choices=["float32", "bfloat16"],
                        help="the precision of the skills' update forward (the TD-MPC2 config's update_dtype)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    env = make_env("Maze2D-Medium-v0", args.num_envs, device=args.device)
    if args.reference_settings:
        args.skill_mpc = True
        # no hold switch (the reference has none, and held steps are not learned from) and
        # skills that learn for ever, as the reference's
        settings = dict(warm_up_steps=NEVER, skill_warm_up_steps=400, skill_update_interval=4, hold=False,
                        skill_learning_steps=None,
                        tdmpc2={**get_default_tdmpc2_config(), "planning_dtype": args.planning_dtype,
                                "update_dtype": args.update_dtype},
                        skill_level=dict(raw_conditioning=True))
    else:
        settings = dict(warm_up_steps=0, skill_warm_up_steps=0, planner_level=dict(alternate_with_noise=False),
                        tdmpc2=dict(planning_dtype=args.planning_dtype, update_dtype=args.update_dtype))
    hierarchy = planner_over_splates(
        env, use_policy=not args.skill_mpc, num_samples=256, num_iterations=6, horizon=15, **settings,
    ).to(args.device)
    top, skills = hierarchy.levels
    steps_per_batch = 10  # one planner decision per instance per batch
    frames = args.num_envs * steps_per_batch
    batches = max(1, args.steps // steps_per_batch)
    # untimed until every level that will plan has the data its warm-up asks for (the skills
    # store fewer transitions than env steps, so a fixed number of batches is not enough)
    warming = [level for level in (top, skills) if level.warm_up_steps < NEVER]
    collector = Collector(env, hierarchy, frames_per_batch=frames, total_frames=-1,
                          auto_register_policy_transforms=True, device=args.device)
    act = learn = 0.0
    timed_batches = 0
    tick = time.perf_counter()
    iterator = iter(collector)
    for batch in iterator:
        collected = time.perf_counter()
        timing = all(level.warmed_up for level in warming)
        hierarchy.extend(batch)
        hierarchy.learn()
        done = time.perf_counter()
        if timing:
            act += collected - tick
            learn += done - collected
            timed_batches += 1
            if timed_batches == batches:
                break
        tick = time.perf_counter()
    # one more batch, untimed, to count its matmul work
    with MatmulFlops() as act_flops:
        batch = next(iterator)
    with MatmulFlops() as learn_flops:
        hierarchy.extend(batch)
        hierarchy.learn()
    collector.shutdown()
    timed = batches * frames
    result = dict(
        num_envs=args.num_envs, device=args.device, threads=args.threads, planning_dtype=args.planning_dtype,
        update_dtype=args.update_dtype,
        skills_act_with="MPPI" if args.skill_mpc else "policy prior",
        env_steps=timed, env_steps_per_s=round(timed / (act + learn), 2),
        acting_s_per_env_step=round(act / timed, 5), learning_s_per_env_step=round(learn / timed, 5),
        planner_updates=top.num_gradient_updates, skill_updates=skills.num_gradient_updates,
    )
    rates = matmul_rates(args.device)
    print(machine_line(args.device, rates=rates))
    model_params = sum(p.numel() for p in skills.world_model.parameters())
    target_params = sum(p.numel() for p in skills.world_model.qs.parameters())  # the loss's target Qs
    print(f"skill world model: {model_params} parameters, {model_params + target_params} with the target Qs "
          f"(the reference's count)")
    print(json.dumps(result))
    print(share_line("acting, per env step", act_flops.total / frames, act / timed, rates[0]))
    print(share_line("learning, per env step", learn_flops.total / frames, learn / timed, rates[0]))


if __name__ == "__main__":
    main()
