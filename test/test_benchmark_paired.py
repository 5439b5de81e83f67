"""`benchmarks/paired.py`: two resident workers timed in alternation, the ratio taken round by round."""
from __future__ import annotations

import importlib.util
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _paired():
    spec = importlib.util.spec_from_file_location("paired", BENCHMARKS / "paired.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _worker(seconds: list[float], log: str | None = None) -> str:
    """A worker that answers the rounds with ``seconds`` in turn (after a line of chatter), logging each request."""
    record = f"open({log!r}, 'a').write(line)" if log else "pass"
    code = (
        "import sys\n"
        "print('setting up'); print('ready', flush=True)\n"
        f"answers = iter({seconds!r})\n"
        "for line in sys.stdin:\n"
        f"    {record}\n"
        "    print(next(answers), flush=True)\n"
    )
    return f"{shlex.quote(sys.executable)} -c {shlex.quote(code)}"


def test_rounds_alternate_in_order_and_the_ratio_is_taken_per_round(tmp_path):
    paired = _paired()
    order = tmp_path / "order"
    baseline = paired.Worker(_worker([0.4, 0.2, 0.9], str(tmp_path / "a")), "baseline")
    candidate = paired.Worker(_worker([0.2, 0.1, 0.3], str(tmp_path / "b")), "candidate")
    original_call = paired.Worker.call

    def call(self, calls):
        with open(order, "a") as f:
            f.write(self.name + "\n")
        return original_call(self, calls)

    paired.Worker.call = call
    try:
        base, cand = paired.paired_times(baseline, candidate, rounds=3, calls=7)
    finally:
        paired.Worker.call = original_call
        baseline.close()
        candidate.close()
    assert base == [0.4, 0.2, 0.9] and cand == [0.2, 0.1, 0.3]
    # the order is swapped every round, so that neither side always runs after the other
    assert order.read_text().split() == ["baseline", "candidate", "candidate", "baseline", "baseline", "candidate"]
    assert (tmp_path / "a").read_text().split() == ["7", "7", "7"]


def test_the_command_line_prints_the_median_paired_ratio():
    out = subprocess.run(
        [sys.executable, str(BENCHMARKS / "paired.py"), "--rounds", "3", "--calls", "2",
         "--baseline", _worker([0.4, 0.3, 0.9]), "--candidate", _worker([0.2, 0.1, 0.3])],
        capture_output=True, text=True, check=True,
    ).stdout
    # ratios 2.0, 3.0, 3.0: median 3.0
    assert "candidate faster by 3.00x (median of 3 paired rounds, 2.00-3.00)" in out


def _process_worker(log: str) -> str:
    """A worker that answers every request with 0.1 and logs its process id per request."""
    code = (
        "import os, sys\n"
        "print('ready', flush=True)\n"
        "for line in sys.stdin:\n"
        f"    open({log!r}, 'a').write(str(os.getpid()) + '\\n')\n"
        "    print(0.1, flush=True)\n"
    )
    return f"{shlex.quote(sys.executable)} -c {shlex.quote(code)}"


def test_rounds_are_split_as_evenly_as_can_be_over_the_processes():
    paired = _paired()
    assert paired.process_rounds(10, 3) == [4, 3, 3]
    assert paired.process_rounds(6, 6) == [1] * 6
    assert paired.process_rounds(24, 1) == [24]
    assert sum(paired.process_rounds(25, 4)) == 25


def test_processes_spread_the_rounds_over_fresh_worker_pairs(tmp_path):
    """``--processes 3`` over 5 rounds: three successive baseline processes answer 2, 2 and 1 rounds, all pooled."""
    log = tmp_path / "pids"
    out = subprocess.run(
        [sys.executable, str(BENCHMARKS / "paired.py"), "--rounds", "5", "--calls", "1", "--processes", "3",
         "--baseline", _process_worker(str(log)), "--candidate", _worker([0.05] * 5)],
        capture_output=True, text=True, check=True, timeout=120,
    ).stdout
    pids = log.read_text().split()
    counts = [pids.count(pid) for pid in dict.fromkeys(pids)]  # requests per process, in the order they ran
    assert counts == [2, 2, 1]
    assert "candidate faster by 2.00x (median of 5 paired rounds, 2.00-2.00)" in out
    assert "per process pair (median ratio): 2.00x 2.00x 2.00x" in out


def test_more_processes_than_rounds_are_refused():
    done = subprocess.run([sys.executable, str(BENCHMARKS / "paired.py"), "--rounds", "2", "--processes", "3",
                           "--baseline", "x", "--candidate", "y"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--processes (3) cannot exceed --rounds (2)" in done.stderr


def test_a_worker_that_dies_before_it_is_ready_is_named():
    paired = _paired()
    with pytest.raises(RuntimeError, match="the baseline worker exited before printing 'ready'"):
        paired.Worker(f"{shlex.quote(sys.executable)} -c 'import sys; sys.exit(3)'", "baseline")


@pytest.mark.parametrize("answer", ["oops", "nan", "inf", "-0.5", "0"])
def test_an_answer_that_is_not_a_positive_number_of_seconds_is_refused(answer):
    paired = _paired()
    worker = paired.Worker(_worker([answer]), "candidate")
    with pytest.raises(RuntimeError, match=f"the candidate worker answered '{answer}', not a positive number"):
        worker.call(1)
    worker.process.kill()


def test_a_started_worker_is_stopped_when_the_other_fails(tmp_path):
    """The baseline starts, the candidate dies before it is ready: the run fails and leaves no process behind."""
    pid_file = tmp_path / "pid"
    baseline = (f"{shlex.quote(sys.executable)} -c "
                + shlex.quote(f"import os, sys, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); "
                              "print('ready', flush=True); time.sleep(600)"))
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "paired.py"), "--baseline", baseline,
         "--candidate", f"{shlex.quote(sys.executable)} -c 'import sys; sys.exit(3)'"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0 and "the candidate worker exited before printing 'ready'" in result.stderr
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):  # killed and reaped
        for _ in range(50):
            os.kill(pid, 0)
            time.sleep(0.1)


@pytest.mark.parametrize("script", ["planner_level_speed.py", "tdmpc2_speed.py"])
def test_learn_without_serving_is_refused(script):
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), "--learn"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and "--learn goes with --serve" in done.stderr


@pytest.mark.parametrize("script, arguments", [
    ("planner_level_speed.py", "--env Pendulum-v1 --num-envs 2 --samples 8 --iterations 1 --horizon 2 --hidden 8 "
                               "--warmup 1 --threads 1"),
    ("planner_level_speed.py", "--env Pendulum-v1 --num-envs 2 --samples 8 --iterations 1 --horizon 2 --hidden 8 "
                               "--threads 1 --collect-steps 3 --learn"),
    ("tdmpc2_speed.py", "--model-size 1 --num-envs 1 --threads 1 --device cpu"),
    ("tdmpc2_speed.py", "--model-size 1 --num-envs 1 --threads 1 --device cpu --learn"),
])
def test_the_benchmarks_serve_their_calls_as_workers(script, arguments):
    paired = _paired()
    worker = paired.Worker(f"{shlex.quote(sys.executable)} {shlex.quote(str(BENCHMARKS / script))} --serve {arguments}",
                           "candidate")
    try:
        seconds = [worker.call(2), worker.call(1)]
    finally:
        worker.close()
    assert all(0 < s < 30 for s in seconds) and worker.process.returncode == 0
