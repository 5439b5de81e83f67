"""Learning curves of a planner over learned skills (SPlaTES or DADS) on Maze2D-Medium-v0 (CPU budget).

Trains `planner_over_splates` (``--skills splates``: iCEM, horizon 15, 256 samples, 6 iterations
over SPlaTES skills of 10 steps) or `planner_over_dads` (``--skills dads``: CEM over DADS skills
of one step) on ``--num-envs`` instances for ``--frames`` env steps, or until ``--minutes`` of
wall time, evaluating every ``--eval-every`` env steps on separate instances (one 500-step
episode each, deterministic) for three figures: reached (the goal was within its radius at
some step, as the reference's ``test_success_in_ep``), held (within the radius at the last
step) and the mean return. Each seed writes ``{skills}_seed{N}.json`` into ``--out-dir``;
``--report`` reads every such file there and writes the table (``skills_maze.md``) and the plot
(``skills_maze.png``) of all of them, so that seeds can run as separate processes.

    python benchmarks/skills_maze.py --skills splates --seeds 0 1 2 [--frames 80000] [--minutes 45]
    python benchmarks/skills_maze.py --skills dads --seeds 0 --eval-envs 8 --eval-every 16000 --minutes 43
    python benchmarks/skills_maze.py --report

DADS plans at every env step (its skills last one), so an evaluation costs it minutes: the
second line evaluates it less often, on 8 episodes, and stops at the wall time SPlaTES took.
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
from torchrl_layered.hierarchies import planner_over_dads, planner_over_splates
from torchrl_layered.trainers.evaluate import evaluate

HIERARCHIES = {"splates": planner_over_splates, "dads": planner_over_dads}
CURVE_KEYS = ("frames", "minutes", "reached", "held", "eval_return", "train_success")


def run(args) -> dict:
    """Trains and evaluates one seed; returns its settings, curve and wall time."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    env = make_env(args.env, args.num_envs, **json.loads(getattr(args, "train_env_kwargs", "{}")))
    env.set_seed(args.seed)
    hierarchy = HIERARCHIES[args.skills](env, **json.loads(args.hierarchy_kwargs))
    eval_env = TransformedEnv(make_env(args.env, args.eval_envs), Compose(hierarchy.make_transform(), RewardSum()))
    collector = Collector(env, hierarchy, frames_per_batch=args.frames_per_batch, total_frames=args.frames,
                          auto_register_policy_transforms=True)
    curve = {key: [] for key in CURVE_KEYS}
    frames, next_eval, start = 0, args.eval_every, time.perf_counter()
    train_success = []

    def record() -> None:
        result = evaluate(hierarchy, eval_env, max_steps=600, seed=args.seed + 10_000)
        recent = train_success[-2 * args.num_envs:]
        row = dict(frames=frames, minutes=round((time.perf_counter() - start) / 60, 2),
                   reached=result.success_rate, held=result.final_success_rate, eval_return=result.mean_return,
                   train_success=sum(recent) / len(recent) if recent else math.nan)
        for key, value in row.items():
            curve[key].append(value)
        print(json.dumps(row), flush=True)

    record()  # the untrained hierarchy: the baseline
    for batch in collector:
        frames += batch.numel()
        hierarchy.extend(batch)
        hierarchy.learn()
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
    return dict(skills=args.skills, env=args.env, num_envs=args.num_envs, eval_episodes=args.eval_envs,
                eval_every=args.eval_every, seed=args.seed, threads=args.threads,
                hierarchy_kwargs=json.loads(args.hierarchy_kwargs),
                train_env_kwargs=json.loads(getattr(args, "train_env_kwargs", "{}")), budget_frames=args.frames,
                budget_minutes=args.minutes, frames=frames, minutes=round((time.perf_counter() - start) / 60, 2),
                final=dict(reached=curve["reached"][-1], held=curve["held"][-1], eval_return=curve["eval_return"][-1]),
                curve=curve)


def load_runs(out_dir: Path) -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted(out_dir.glob("*_seed*.json"))]


def report(runs: list[dict], out_dir: Path) -> str:
    """A markdown table of the final figures per run (and the plot beside it)."""
    lines = ["| skills | seed | env steps | minutes | eval episodes | reached | held | return |",
             "|---|---|---|---|---|---|---|---|"]
    for r in sorted(runs, key=lambda r: (r["skills"], r["seed"])):
        f, c = r["final"], r["curve"]
        lines.append(f"| {r['skills']} | {r['seed']} | {r['frames']} | {r['minutes']} | {r['eval_episodes']} | {f['reached']:.3f} "
                     f"(untrained {c['reached'][0]:.3f}) | {f['held']:.3f} (untrained {c['held'][0]:.3f}) | "
                     f"{f['eval_return']:.1f} (untrained {c['eval_return'][0]:.1f}) |")
    table = "\n".join(lines)
    (out_dir / "skills_maze.md").write_text(table + "\n")
    plot(runs, out_dir / "skills_maze.png")
    return table


def plot(runs: list[dict], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 3.8))
    axes = fig.subplots(1, 3)
    colors = {"splates": "tab:blue", "dads": "tab:orange"}
    for r in runs:
        c = r["curve"]
        for ax, key in zip(axes, ("reached", "held", "eval_return")):
            ax.plot(c["frames"], c[key], marker="osd^v"[r["seed"] % 5], ls=("-", "--", ":")[r["seed"] % 3], ms=3,
                    color=colors.get(r["skills"], "gray"), alpha=0.8, label=f"{r['skills']} seed {r['seed']}")
    for ax, title in zip(axes, ("goal reached (eval)", "at the goal at the last step (eval)", "eval return")):
        ax.set_title(title)
        ax.set_xlabel("env steps")
    axes[0].set_ylim(-0.05, 1.05)
    axes[1].set_ylim(-0.05, 1.05)
    # the bar the benchmark is held to: 12 of 16 goals reached and 8 of 16 held
    axes[0].axhline(12 / 16, color="k", ls="--", lw=0.8)
    axes[1].axhline(8 / 16, color="k", ls="--", lw=0.8)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"planner over learned skills, {runs[0]['env']}, {runs[0]['num_envs']} envs")
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skills", choices=sorted(HIERARCHIES), default="splates")
    parser.add_argument("--env", default="Maze2D-Medium-v0")
    parser.add_argument("--num-envs", type=int, default=4)
    parser.add_argument("--eval-envs", type=int, default=16)
    parser.add_argument("--frames", type=int, default=80_000)
    parser.add_argument("--frames-per-batch", type=int, default=400)
    parser.add_argument("--eval-every", type=int, default=8_000)
    parser.add_argument("--minutes", type=float, default=45.0, help="stop (after a last evaluation) past this wall time")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out-dir", default="benchmarks/results/skills_maze")
    parser.add_argument("--hierarchy-kwargs", default="{}", help="JSON keyword arguments of the hierarchy")
    parser.add_argument("--train-env-kwargs", default="{}",
                        help='JSON keyword arguments of the training env (e.g. {"terminate_on_success": true}); '
                             "the evaluation env keeps the defaults")
    parser.add_argument("--save", default=None, help="write the trained hierarchy's state_dict here (one seed)")
    parser.add_argument("--report", action="store_true", help="only tabulate and plot the runs in --out-dir")
    args = parser.parse_args()
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    from machine import machine_line  # a sibling script; this module is also imported by path

    if not args.report:
        torch.set_num_threads(args.threads)
        print(machine_line())
        for seed in args.seeds:
            args.seed = seed
            result = run(args)
            path = out_dir / f"{args.skills}_seed{seed}.json"
            path.write_text(json.dumps(result, indent=1))
            print(json.dumps({k: v for k, v in result.items() if k != "curve"}))
            print(f"wrote {path}")
    print(report(load_runs(out_dir), out_dir))


if __name__ == "__main__":
    main()
