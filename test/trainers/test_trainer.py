"""`trainers/trainer.py`: a run stops on non-finite state, refuses changed settings and used folders, reports what it measured."""
from __future__ import annotations

import math

import pytest
import torch
from torchrl.envs import Transform

from torchrl_layered.hierarchy import Hierarchy
from torchrl_layered.levels.validation import InvalidDataError
from torchrl_layered.trainers import ConfigError, compose_config, read_checkpoint, train
from torchrl_layered.trainers import trainer
from torchrl_layered.trainers.finite import RunStoppedError, first_nonfinite

#: A planner run of 20-frame batches, a checkpoint after each, the two latest kept.
PLANNER = [
    "hierarchy=planner", "collector.num_envs=2", "collector.frames_per_batch=20", "collector.total_frames=100",
    "env.max_episode_steps=10", "eval.episodes=0", "checkpoint.interval_frames=20", "checkpoint.keep=2",
    "progress_bar=false", "hierarchy.kwargs.warm_up_steps=10", "hierarchy.kwargs.num_samples=8",
    "hierarchy.kwargs.num_iterations=1", "hierarchy.kwargs.horizon=2", "hierarchy.kwargs.num_members=1",
    "hierarchy.kwargs.hidden_sizes=[8]", "hierarchy.kwargs.head_sizes=[8]", "hierarchy.kwargs.batch_size=8",
]
#: A random-hierarchy run of a few batches.
RANDOM = [
    "hierarchy=random", "collector.num_envs=2", "collector.frames_per_batch=20", "collector.total_frames=40",
    "env.max_episode_steps=10", "eval.episodes=2", "eval.interval_frames=20", "progress_bar=false",
]


def good_checkpoints(run) -> list[str]:
    """The checkpoints left in a run folder; each must load and hold finite state."""
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    for name in names:
        _, state = read_checkpoint(run / "checkpoints" / name)
        assert first_nonfinite(state["hierarchy"]) is None, name
    return names


# ------------------------------------------------------------------ non-finite state
def test_a_run_whose_state_goes_non_finite_stops_and_keeps_its_good_checkpoints(tmp_path, monkeypatch):
    learn = Hierarchy.learn

    def learn_then_corrupt(self):
        metrics = learn(self)
        if self.levels[0].env_steps >= 60:  # the third batch
            self.levels[0].predictor.model.layers[0].weight.data[0, 0, 0] = math.nan
        return metrics

    monkeypatch.setattr(Hierarchy, "learn", learn_then_corrupt)
    with pytest.raises(RunStoppedError) as stop:
        train(compose_config(PLANNER), tmp_path)
    last_good = tmp_path / "checkpoints" / "frames_0000000040"
    assert str(stop.value) == (
        "level 0 (PlannerLevel) state went non-finite at frame 60 (predictor.model.layers.0.weight); "
        f"the run stopped, last good checkpoint: {last_good}"
    )
    assert good_checkpoints(tmp_path) == ["frames_0000000020", "frames_0000000040"]


class NaNRewardFrom(Transform):
    """Makes every reward NaN from the ``step``-th (batched) step on: a broken sensor."""

    def __init__(self, step: int):
        super().__init__()
        self.step, self.count = step, 0

    def _step(self, tensordict, next_tensordict):
        self.count += 1
        if self.count >= self.step:
            next_tensordict.set("reward", torch.full_like(next_tensordict.get("reward"), math.nan))
        return next_tensordict


def test_a_nan_reward_stops_the_run_and_pruning_keeps_the_last_good_checkpoints(tmp_path, monkeypatch):
    build_env = trainer.build_env
    monkeypatch.setattr(trainer, "build_env", lambda *a, **k: build_env(*a, **k).append_transform(NaNRewardFrom(25)))
    with pytest.raises(RunStoppedError, match="the run stopped, last good checkpoint: ") as stop:
        train(compose_config(PLANNER), tmp_path)
    names = good_checkpoints(tmp_path)
    assert len(names) == 2 and str(stop.value).endswith(str(tmp_path / "checkpoints" / names[-1]))


def test_a_level_that_refuses_its_data_stops_the_run_in_one_line(tmp_path, monkeypatch):
    def refuse(self, batch):
        raise InvalidDataError("level 1 (RandomLevel) got a non-finite ('next', 'reward')\n(2 of 20 entries)")

    monkeypatch.setattr(Hierarchy, "extend", refuse)
    with pytest.raises(RunStoppedError) as stop:
        train(compose_config(RANDOM), tmp_path)
    assert str(stop.value) == ("level 1 (RandomLevel) got a non-finite ('next', 'reward') (2 of 20 entries) "
                               "(at frame 0); the run stopped, last good checkpoint: none")


# ------------------------------------------------------------------ resume
def test_resume_refuses_changed_settings_naming_old_and_new_values(tmp_path):
    train(compose_config(RANDOM), tmp_path / "run")
    resume = [*RANDOM, "collector.total_frames=80", f"resume={tmp_path / 'run'}"]
    with pytest.raises(ConfigError) as refused:
        train(compose_config([*resume, "hierarchy.kwargs.control_interval=5", "seed=3", "+env.kwargs.g=9.0"]),
              tmp_path / "changed")
    assert str(refused.value) == (
        "resume: settings differ from the checkpoint's run: env.kwargs.g: (unset) -> 9.0; "
        "hierarchy.kwargs.control_interval: 10 -> 5; seed: 0 -> 3; pass the values it was trained with, "
        "or resume_override=true to apply the new ones"
    )
    assert not (tmp_path / "changed").exists()
    # what extends or observes a run may change
    out = train(compose_config([*resume, "eval.episodes=3", "checkpoint.keep=1", "num_threads=2"]), tmp_path / "more")
    assert out["frames"] == 80


def test_resume_override_applies_changed_settings_and_says_so(tmp_path, capsys):
    train(compose_config(RANDOM), tmp_path / "run")
    out = train(compose_config([*RANDOM, "collector.total_frames=80", f"resume={tmp_path / 'run'}",
                                "hierarchy.kwargs.control_interval=5", "resume_override=true"]), tmp_path / "b")
    assert out["frames"] == 80
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("resume_override")]
    assert lines == ["resume_override: applying settings that differ from the checkpoint's run: "
                     "hierarchy.kwargs.control_interval: 10 -> 5"]
    _, state = read_checkpoint(tmp_path / "b")
    assert state["run"]["config"]["hierarchy.kwargs.control_interval"] == 5


def test_a_resumed_run_without_evaluation_reports_only_what_it_measured(tmp_path, capsys):
    first = train(compose_config(RANDOM), tmp_path / "run")
    assert not math.isnan(first["eval_return"])
    capsys.readouterr()
    out = train(compose_config([*RANDOM, "collector.total_frames=80", "eval.episodes=0", f"resume={tmp_path / 'run'}"]),
                tmp_path / "resumed")
    assert math.isnan(out["eval_return"]) and out["eval_success"] is None
    summary = capsys.readouterr().out.splitlines()[0]
    assert summary.startswith("frames 80, episodes 8, train return (last 10) ") and "eval" not in summary
    _, state = read_checkpoint(tmp_path / "resumed")
    assert state["progress"]["eval_frames"] == [0, 20, 40]  # the curve still carries the first run's


# ------------------------------------------------------------------ run folders
def test_a_folder_that_holds_a_run_is_refused_and_left_as_it_is(tmp_path):
    train(compose_config(RANDOM), tmp_path / "run")
    before = {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}
    with pytest.raises(ConfigError) as refused:
        train(compose_config(RANDOM), tmp_path / "run")
    assert str(refused.value) == (
        f"{tmp_path / 'run'} already holds a run (checkpoints/, logs/); choose a new hydra.run.dir, "
        f"or continue that run with resume={tmp_path / 'run'} (it writes to a new folder)"
    )
    assert {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()} == before
