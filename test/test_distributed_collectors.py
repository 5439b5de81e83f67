"""A hierarchy collected by workers in other processes: Ray actors and torch.distributed workers.

Each backend gets the same checks: the semi-MDP transitions equal the pure-Python reference,
what the driver learns (weights and the warm-up clock) reaches the workers' next batch, and
shutting the collector down leaves none of its processes behind.
"""
from __future__ import annotations

import functools
import os
import pickle
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from torchrl.data import Bounded

from helpers import assert_matches_reference, echo_hierarchy, learning_stack, without_process_group
from torchrl_layered import Hierarchy
from torchrl_layered.collectors import backend_collector_cls, make_collector
from torchrl_layered.envs import make_env
from torchrl_layered.levels import ConstantLevel, PlannerLevel

HERE = os.path.dirname(os.path.abspath(__file__))
# a worker that never reports back fails its test instead of stalling the suite
pytestmark = pytest.mark.timeout(300, method="thread")


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster of 2 CPUs whose workers can import the test helpers."""
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": HERE, "OMP_NUM_THREADS": "1"}})
    yield ray
    ray.shutdown()


@pytest.fixture(params=["multiprocess", "ray", "distributed"])
def backend(request):
    if request.param == "ray":
        request.getfixturevalue("ray_cluster")
    elif request.param == "distributed":
        if not torch.distributed.is_available():
            pytest.skip("this torch build has no torch.distributed")
        without_process_group()
    return request.param


def worker_pids(collector, backend: str) -> list[int]:
    """The process ids of the collector's workers."""
    if backend == "ray":
        import ray

        return ray.get([actor.__ray_call__.remote(lambda self: os.getpid()) for actor in collector.remote_collectors])
    processes = collector.jobs if backend == "distributed" else collector.procs
    return [p.pid for p in processes]


def running(pid: int) -> bool:
    """Whether process ``pid`` still runs (an exited child its parent has not reaped yet does not)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):  # gone before the open, or between the open and the read
        return False


def all_gone(pids: list[int], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while any(running(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def test_transitions_of_two_workers_match_the_reference(backend):
    make = functools.partial(make_env, "CartPole-v1", 2)
    hierarchy = echo_hierarchy(make())
    collector = make_collector(make, hierarchy, backend=backend, workers=2, frames_per_batch=80, total_frames=240)
    try:
        assert collector.num_workers == 2
        pids = worker_pids(collector, backend)
        batches = [batch.clone() for batch in collector]
    finally:
        collector.shutdown()
    assert len(batches) == 3 and all(tuple(b.shape) == (2, 2, 20) for b in batches)  # [workers, envs, T]
    assert_matches_reference(hierarchy, batches)
    assert len(set(pids)) == 2 and os.getpid() not in pids
    assert all_gone(pids), "the workers outlived the collector's shutdown"


def learning_hierarchy(env) -> Hierarchy:
    """A constant top level over a planner that learns its model, with a warm-up of 60 env steps."""
    planner = PlannerLevel(horizon=2, num_samples=16, num_iterations=2, warm_up_steps=60, batch_size=16,
                           input_spec=Bounded(-1.0, 1.0, shape=(1,)), control_interval=4, use_value=False)
    return Hierarchy([ConstantLevel([0.25]), planner], env=env)


def test_what_the_driver_learns_reaches_the_workers_next_batch(backend):
    make = functools.partial(make_env, "Pendulum-v1", 2)
    hierarchy = learning_hierarchy(make())
    top, planner = hierarchy.levels
    collector = make_collector(make, hierarchy, backend=backend, workers=2, frames_per_batch=40, total_frames=160)
    seen, random_mode, env_steps = [], [], []
    try:
        for i, batch in enumerate(collector):
            seen.append(batch["levels", "0", "action"].unique().tolist())
            random_mode.append(batch["levels", "1", "state", "random_mode"].reshape(-1).tolist())
            hierarchy.extend(batch)
            hierarchy.learn()
            env_steps.append(planner.env_steps)
            top.value.fill_(-0.5 if i == 0 else 0.75)  # a parameter the driver changes...
            collector.update_policy_weights_()  # ...pushed to the workers with what was learned
    finally:
        collector.shutdown()
    assert seen[0] == [0.25] and seen[1] == [-0.5] and seen[2] == [0.75] and seen[3] == [0.75]
    # the warm-up clock advances in the driver (40 env steps a batch) and steers the workers' acting:
    # random during the first 60 steps the planner's data covers, planning after
    assert env_steps == [40, 80, 120, 160]
    assert all(random_mode[0]) and all(random_mode[1])  # the driver had seen 40 env steps before batch 2
    planned = [not any(flags) for flags in random_mode[2:]]
    assert planned == [True, True], random_mode
    assert planner.num_gradient_updates > 0  # the planner learned in the driver


KINDS = [("planner", 1), ("tdmpc2", 1), ("sac", 1), ("dads", 1), ("splates", 1)]


@pytest.mark.parametrize("kind,depth", KINDS, ids=[k for k, _ in KINDS])
def test_every_learning_level_crosses_to_a_worker_acting_as_in_the_driver(kind, depth):
    """What a worker receives (the pickled hierarchy) acts as the driver's does, without its data."""
    torch.manual_seed(0)
    env = make_env("Pendulum-v1", 2)
    hierarchy = Hierarchy(learning_stack(kind, depth), env=env)
    collector = make_collector(env, hierarchy, frames_per_batch=60, total_frames=60)
    batch = next(iter(collector))
    collector.shutdown()
    hierarchy.extend(batch)
    stored = len(hierarchy.levels[depth].replay_buffer)
    copy = pickle.loads(pickle.dumps(hierarchy))
    assert all(level.replay_buffer is None for level in copy.levels)
    assert len(hierarchy.levels[depth].replay_buffer) == stored > 0  # the driver's data stays
    assert copy.levels[depth].env_steps == hierarchy.levels[depth].env_steps > 0  # the clocks travel
    step = batch[:, -1].exclude("next")
    actions = []
    for h in (hierarchy, copy):
        h.eval()
        torch.manual_seed(1)
        actions.append(h(step.clone())["action"])
    torch.testing.assert_close(actions[0], actions[1])


def test_backends_build_the_collector_of_their_kind():
    assert backend_collector_cls("local").__name__ in ("Collector", "SyncDataCollector")
    assert backend_collector_cls("multiprocess").__name__ in ("MultiSyncCollector", "MultiSyncDataCollector")
    assert backend_collector_cls("multiprocess", sync=False).__name__ in ("MultiAsyncCollector",
                                                                           "MultiaSyncDataCollector")
    with pytest.raises(ValueError, match="unknown collector backend 'slurm'.*local, multiprocess, ray, distributed"):
        backend_collector_cls("slurm")


def test_a_missing_ray_is_named_with_the_line_that_installs_it(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    with pytest.raises(ImportError, match=r"pip install 'torchrl-layered\[ray\]'"):
        backend_collector_cls("ray")


@pytest.mark.parametrize("shut_down", [True, False], ids=["shut-down", "left-running"])
def test_a_script_with_multiprocess_workers_exits(shut_down):
    script = textwrap.dedent(f"""
        import functools
        from helpers import echo_hierarchy
        from torchrl_layered.collectors import make_collector
        from torchrl_layered.envs import make_env

        if __name__ == "__main__":
            make = functools.partial(make_env, "CartPole-v1", 2)
            collector = make_collector(make, echo_hierarchy(make()), backend="multiprocess", workers=2,
                                       frames_per_batch=40, total_frames=80)
            batches = [batch.numel() for batch in collector]
            if {shut_down}:
                collector.shutdown()
            print("collected", sum(batches))
    """)
    root = os.path.dirname(HERE)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, HERE, os.environ.get("PYTHONPATH", "")])}
    try:
        done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=150)
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"the script did not exit within 150 s; it printed: {err.stdout!s:.2000}")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "collected 80" in done.stdout


@pytest.mark.parametrize("backend", ["multiprocess", "ray", "distributed"])
def test_backends_with_workers_refuse_an_env_instance(backend):
    env = make_env("Pendulum-v1", 2)
    hierarchy = echo_hierarchy(env)
    with pytest.raises(TypeError, match="builds its envs in the workers: pass an env constructor"):
        make_collector(env, hierarchy, backend=backend, workers=2, frames_per_batch=40, total_frames=40)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"backend": "local", "workers": 2}, ValueError, "backend 'local' runs one env in this process"),
        ({"backend": "ray", "workers": 0}, ValueError, "workers >= 1"),
        ({"backend": "cluster"}, ValueError, "unknown collector backend 'cluster'"),
        ({"workers": 2}, TypeError, "workers only with a backend"),
    ],
)
def test_bad_backend_settings_are_refused(kwargs, error, match):
    make = functools.partial(make_env, "Pendulum-v1", 2)
    with pytest.raises(error, match=match):
        make_collector(make, echo_hierarchy(make()), frames_per_batch=40, total_frames=40, **kwargs)


def test_the_distributed_backend_refuses_a_process_that_already_has_a_process_group(monkeypatch):
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    with pytest.raises(RuntimeError, match="already has one .*destroy_process_group"):
        backend_collector_cls("distributed")


def test_one_constructor_per_worker_must_match_workers():
    make = functools.partial(make_env, "Pendulum-v1", 2)
    with pytest.raises(ValueError, match="3 env constructors for workers=2"):
        make_collector([make] * 3, echo_hierarchy(make()), backend="multiprocess", workers=2, frames_per_batch=40,
                       total_frames=40)
