"""Two workloads timed call by call in alternation, each in a resident process: the median paired ratio.

On a shared machine whose speed drifts by up to 2x from minute to minute, two benchmark runs
one after the other compare the machine's moments as much as the code. Here both workloads are
set up once, in their own process (their own Python environment, e.g. the reference library's),
and timed in alternating short rounds, the order swapped every round; the ratio of each round's
two medians is taken and the median of those ratios printed, with its range.

A worker is any command that sets up its workload, prints a line ``ready`` (other lines before
it are ignored), and then, for every line ``N`` it reads, runs ``N`` calls and prints the median
seconds of one call (`serve` is that side, for a function that times one call).
``planner_level_speed.py --serve`` is ours for the plan call:

    python benchmarks/paired.py --rounds 24 --calls 5 --processes 4 \\
        --baseline "/path/to/reference/venv/bin/python reference_plan_worker.py" \\
        --candidate "python benchmarks/planner_level_speed.py --threads 2 --activation ReLU --serve"

A process keeps its speed for its whole life, and that speed can depend on where its memory
landed: on a 2-core AMD EPYC machine the small CEM call ran at 14.3 ms in some processes and at
18 ms in others, two threads only, the same bimodality showing in a bare chain of two matmuls;
with address-space randomisation off (``setarch -R``) every process ran the fast mode.
``--processes P`` spreads the rounds over ``P`` pairs of fresh workers, one pair after the
other, so that the median ratio covers several draws of both sides instead of one.
"""
from __future__ import annotations

import argparse
import math
import shlex
import statistics
import subprocess
import sys
from typing import Callable


class Worker:
    """A resident worker process (the protocol above)."""

    def __init__(self, command: str, name: str):
        self.name = name
        self.process = subprocess.Popen(shlex.split(command), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, text=True)
        while True:
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError(f"paired: the {name} worker exited before printing 'ready' (run its command "
                                   f"alone to see why): {command}")
            if line.strip() == "ready":
                return

    def call(self, calls: int) -> float:
        """The median seconds of one call over ``calls`` calls."""
        self.process.stdin.write(f"{calls}\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        try:
            seconds = float(line)
        except ValueError:
            seconds = math.nan
        if not math.isfinite(seconds) or seconds <= 0:
            raise RuntimeError(f"paired: the {self.name} worker answered {line.strip()!r}, not a positive number of "
                               "seconds")
        return seconds

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)


def serve(timed_call: Callable[[], float]) -> None:
    """The worker's side: prints ``ready``, then for every line ``N`` read from stdin, the median of
    ``N`` calls of ``timed_call`` (each returns the seconds of the call it timed)."""
    print("ready", flush=True)
    for line in sys.stdin:
        print(statistics.median(timed_call() for _ in range(int(line))), flush=True)


def paired_times(baseline: Worker, candidate: Worker, rounds: int, calls: int) -> tuple[list[float], list[float]]:
    """Per round, the two workers' median call times, the order swapped every round."""
    base, cand = [], []
    for i in range(rounds):
        if i % 2:
            cand.append(candidate.call(calls))
            base.append(baseline.call(calls))
        else:
            base.append(baseline.call(calls))
            cand.append(candidate.call(calls))
    return base, cand


def process_rounds(rounds: int, processes: int) -> list[int]:
    """How many of ``rounds`` each of ``processes`` successive worker pairs runs (as even as can be)."""
    return [rounds // processes + (i < rounds % processes) for i in range(processes)]


def run_pair(baseline: str, candidate: str, rounds: int, calls: int) -> tuple[list[float], list[float]]:
    """`paired_times` of a fresh pair of workers; both are stopped afterwards, whichever failed."""
    workers = []
    try:
        workers.append(Worker(baseline, "baseline"))
        workers.append(Worker(candidate, "candidate"))
        return paired_times(*workers, rounds, calls)
    finally:
        for worker in workers:
            worker.process.kill()
            worker.process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="the worker command of the workload compared against")
    parser.add_argument("--candidate", required=True, help="the worker command of the workload timed")
    parser.add_argument("--rounds", type=int, default=24)
    parser.add_argument("--calls", type=int, default=5, help="calls per worker and round")
    parser.add_argument("--processes", type=int, default=1,
                        help="successive pairs of fresh workers the rounds are spread over (see above)")
    args = parser.parse_args()
    if args.rounds < 1 or args.calls < 1 or args.processes < 1:
        parser.error("--rounds, --calls and --processes must be >= 1")
    if args.processes > args.rounds:
        parser.error(f"--processes ({args.processes}) cannot exceed --rounds ({args.rounds}): each pair runs a round at least")
    base, cand, per_process = [], [], []
    for rounds in process_rounds(args.rounds, args.processes):
        b, c = run_pair(args.baseline, args.candidate, rounds, args.calls)
        base += b
        cand += c
        per_process.append(statistics.median(x / y for x, y in zip(b, c)))
    ratios = [b / c for b, c in zip(base, cand)]
    print("baseline  ms:", " ".join(f"{1e3 * t:.1f}" for t in base))
    print("candidate ms:", " ".join(f"{1e3 * t:.1f}" for t in cand))
    print(f"baseline {1e3 * statistics.median(base):.1f} ms, candidate {1e3 * statistics.median(cand):.1f} ms (medians); "
          f"candidate faster by {statistics.median(ratios):.2f}x (median of {args.rounds} paired rounds, "
          f"{min(ratios):.2f}-{max(ratios):.2f})")
    if args.processes > 1:
        print(f"per process pair (median ratio): {' '.join(f'{r:.2f}x' for r in per_process)}")


if __name__ == "__main__":
    main()
