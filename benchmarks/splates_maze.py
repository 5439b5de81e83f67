"""Learning curve of a planner over SPlaTES skills on Maze2D-Medium-v0 (CPU budget).

Trains `planner_over_splates` (iCEM, horizon 15, 256 samples, 6 iterations over SPlaTES skills
of 10 steps) on ``--num-envs`` instances for ``--frames`` env steps, or until ``--minutes`` of
wall time, evaluating every ``--eval-every`` env steps on separate instances (one 500-step
episode each, deterministic; success = the goal was reached within the episode, as the
reference's ``test_success_in_ep``; final success = within the goal radius at the last step).
Writes a PNG of the curve and a JSON of the figures next to it, and prints them.

    python benchmarks/splates_maze.py [--frames 24000] [--minutes 28] [--eval-every 4000] [--seed 0]
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from torchrl.collectors import Collector
from torchrl.envs import Compose, RewardSum, TransformedEnv

from torchrl_layered.envs import make_env
from torchrl_layered.hierarchies import planner_over_splates
from torchrl_layered.trainers.evaluate import evaluate


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    env = make_env(args.env, args.num_envs)
    env.set_seed(args.seed)
    hierarchy = planner_over_splates(env, **json.loads(args.hierarchy_kwargs))
    eval_env = TransformedEnv(make_env(args.env, args.eval_envs), Compose(hierarchy.make_transform(), RewardSum()))
    collector = Collector(env, hierarchy, frames_per_batch=args.frames_per_batch, total_frames=args.frames,
                          auto_register_policy_transforms=True)
    curve = dict(frames=[], minutes=[], eval_success=[], eval_final_success=[], eval_return=[], train_success=[],
                 intrinsic_reward=[])
    frames, next_eval, start = 0, args.eval_every, time.perf_counter()
    train_success, metrics = [], {}

    def record() -> None:
        result = evaluate(hierarchy, eval_env, max_steps=600, seed=args.seed + 10_000)
        recent = train_success[-2 * args.num_envs:]
        row = dict(frames=frames, minutes=round((time.perf_counter() - start) / 60, 2),
                   eval_success=result.success_rate, eval_final_success=result.final_success_rate,
                   eval_return=result.mean_return,
                   train_success=sum(recent) / len(recent) if recent else math.nan,
                   intrinsic_reward=metrics.get("level1/intrinsic_reward", math.nan))
        for key, value in row.items():
            curve[key].append(value)
        print(json.dumps(row), flush=True)

    record()  # the untrained hierarchy: the baseline
    for batch in collector:
        frames += batch.numel()
        hierarchy.extend(batch)
        metrics = hierarchy.learn() or metrics
        done = batch["next", "done"].squeeze(-1)
        if bool(done.any()):
            train_success += batch["next", "success"].reshape(done.shape)[done].float().tolist()
        out_of_time = (time.perf_counter() - start) / 60 > args.minutes
        if frames >= next_eval or out_of_time or frames >= args.frames:
            next_eval += args.eval_every
            record()
        if out_of_time:
            break
    collector.shutdown()
    if getattr(args, "save", None):
        torch.save(hierarchy.state_dict(), args.save)
    best = max((s for s in curve["eval_success"][1:] if s is not None), default=0.0)
    return dict(env=args.env, num_envs=args.num_envs, seed=args.seed, frames=frames,
                minutes=round((time.perf_counter() - start) / 60, 2), best_eval_success=best,
                first_success_frames=next((f for f, s in zip(curve["frames"], curve["eval_success"]) if s and s > 0), None),
                curve=curve)


def plot(result: dict, path: Path) -> None:
    from matplotlib.figure import Figure

    curve = result["curve"]
    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(curve["frames"], curve["eval_success"], "o-", label="eval: goal reached")
    ax.plot(curve["frames"], curve["eval_final_success"], "^-", label="eval: at the goal at the end")
    ax.plot(curve["frames"], curve["train_success"], "s--", alpha=0.6, label="train success (recent episodes)")
    ax.set_xlabel("env steps")
    ax.set_ylabel("success rate")
    ax.set_ylim(-0.05, 1.05)
    ax2 = ax.twinx()
    ax2.plot(curve["frames"], curve["eval_return"], "x:", color="gray", label="eval return")
    ax2.set_ylabel("eval return")
    ax.set_title(f"planner over SPlaTES, {result['env']}, {result['num_envs']} envs, {result['minutes']} min CPU")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="Maze2D-Medium-v0")
    parser.add_argument("--num-envs", type=int, default=4)
    parser.add_argument("--eval-envs", type=int, default=16)
    parser.add_argument("--frames", type=int, default=24_000)
    parser.add_argument("--frames-per-batch", type=int, default=400)
    parser.add_argument("--eval-every", type=int, default=4_000)
    parser.add_argument("--minutes", type=float, default=28.0, help="stop (after a last evaluation) past this wall time")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results/splates_maze.png")
    parser.add_argument("--hierarchy-kwargs", default="{}", help="JSON keyword arguments of planner_over_splates")
    parser.add_argument("--save", default=None, help="write the trained hierarchy's state_dict here")
    args = parser.parse_args()
    result = run(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    plot(result, out)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    from machine import machine_line  # a sibling script; this module is also imported by path

    print(machine_line())
    print(json.dumps({k: v for k, v in result.items() if k != "curve"}))
    print(f"wrote {out} and {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
