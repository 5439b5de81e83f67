"""`modules.heap`: glibc keeps freed memory (raised malloc thresholds), once, unless the user decides."""
from __future__ import annotations

import pytest
import torch
from torchrl.data import Bounded

from torchrl_layered.modules import heap
from torchrl_layered.planners import CEMPlanner


class FakeGlibc:
    def __init__(self):
        self.calls = []

    def mallopt(self, param, value):
        self.calls.append((param, value))
        return 1


@pytest.fixture
def glibc(monkeypatch):
    """A fresh process's state, with a glibc that records what is set."""
    libc = FakeGlibc()
    monkeypatch.setattr(heap, "_KEPT", None)
    monkeypatch.setattr(heap, "_glibc", lambda: libc)
    for name in (heap.OPT_OUT_VARIABLE, "GLIBC_TUNABLES", *heap._USER_SETTINGS):
        monkeypatch.delenv(name, raising=False)
    return libc


def test_the_thresholds_are_raised_once_per_process(glibc):
    assert heap.keep_freed_memory() is True
    assert heap.keep_freed_memory() is True
    assert sorted(glibc.calls) == sorted([(-3, heap.MMAP_THRESHOLD), (-1, heap.TRIM_THRESHOLD), (-2, heap.TOP_PAD)])
    assert heap.TRIM_THRESHOLD >= heap.MMAP_THRESHOLD  # what the heap serves, it may keep


@pytest.mark.parametrize("variable, value", [
    ("TORCHRL_LAYERED_KEEP_FREED_MEMORY", "0"),  # the opt-out
    ("MALLOC_TRIM_THRESHOLD_", "1048576"),  # the user's own malloc settings stand
    ("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=1048576"),
])
def test_nothing_is_set_where_the_user_decides(glibc, monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    assert heap.keep_freed_memory() is False
    assert glibc.calls == []


def test_nothing_is_set_without_glibc(monkeypatch):
    monkeypatch.setattr(heap, "_KEPT", None)
    monkeypatch.setattr(heap, "_glibc", lambda: None)
    monkeypatch.delenv(heap.OPT_OUT_VARIABLE, raising=False)
    assert heap.keep_freed_memory() is False


def test_a_refused_setting_reports_false(glibc, monkeypatch):
    monkeypatch.setattr(glibc, "mallopt", lambda param, value: 0)
    assert heap.keep_freed_memory() is False


def test_the_first_cpu_plan_sets_it(monkeypatch):
    calls = []
    monkeypatch.setattr("torchrl_layered.planners.base.keep_freed_memory", lambda: calls.append(1) or True)
    planner = CEMPlanner(Bounded(-1.0, 1.0, shape=(1,)), horizon=2, num_samples=8, num_iterations=1, num_elites=2)
    planner(lambda a: -a.pow(2).sum((-2, -1)), batch_size=2)
    assert calls == [1]


def test_this_process_runs_with_it_where_glibc_is_the_c_library():
    """The real call: on glibc every mallopt is accepted (elsewhere nothing is set)."""
    kept = heap.keep_freed_memory()
    assert kept is (heap._glibc() is not None and not heap._user_decides())
    assert bool(torch.ones(3).sum() == 3)  # the process allocates as before
