"""iCEM's executed action: the first action of the best sequence found (the paper) or of the final mean.

Trains the default app hierarchy (`hierarchy=planner env=pendulum`: a `PlannerLevel` with
iCEM over a learned ensemble) with each choice, same seeds and budget, and prints the
evaluation returns per seed beside the machine's matmul rate.

    python benchmarks/icem_result_mode.py [--seeds 0 1] [--frames 1600]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from machine import machine_line
from torchrl_layered.planners import ICEMPlanner
from torchrl_layered.trainers import compose_config, train


def run(result_mode: str, seed: int, frames: int) -> dict:
    overrides = [
        "hierarchy=planner", "env=pendulum", f"seed={seed}", f"collector.total_frames={frames}", "progress_bar=false",
        "eval.interval_frames=800", "num_threads=1",
    ]
    ICEMPlanner.__init__.__kwdefaults__["result_mode"] = result_mode  # the app builds its planner with the default
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        result = train(compose_config(overrides), Path(out) / "run")
        return {"eval_return": result["eval_return"], "seconds": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--frames", type=int, default=1600)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(machine_line())
    results = {}
    for mode in ("best", "mean"):
        for seed in args.seeds:
            results[f"{mode}/seed{seed}"] = run(mode, seed, args.frames)
            print(mode, seed, json.dumps(results[f"{mode}/seed{seed}"]), flush=True)
    for mode in ("best", "mean"):
        returns = [results[f"{mode}/seed{s}"]["eval_return"] for s in args.seeds]
        print(f"{mode}: mean eval return {sum(returns) / len(returns):.1f} over seeds {args.seeds}: {returns}")


if __name__ == "__main__":
    main()
