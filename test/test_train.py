"""The training app: every shipped hierarchy/env pair runs, a resumed run continues its counters, bad settings fail in one line."""
from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import PLANNING_DTYPES, without_process_group
import torchrl_layered.train as app
from torchrl_layered.hierarchy import Hierarchy
from torchrl_layered.trainers import CheckpointError, ConfigError, compose_config, parse_config, read_checkpoint, train
from torchrl_layered.trainers.checkpoint import hierarchy_buffers, restore_hierarchy
from torchrl_layered.trainers.config import group_options
from torchrl_layered.trainers.trainer import build_env, build_hierarchy

#: A run of a few batches of short episodes.
TINY = [
    "collector.num_envs=2", "collector.frames_per_batch=20", "collector.total_frames=40",
    "env.max_episode_steps=10", "eval.episodes=2", "eval.interval_frames=20",
    "checkpoint.interval_frames=20", "progress_bar=false",
]
#: Small-budget values for hierarchy options, applied where a hierarchy config has the option.
SMALL_KWARGS = {
    "warm_up_steps": 10, "num_samples": 16, "num_iterations": 2, "horizon": 3, "num_members": 2,
    "hidden_sizes": "[16]", "head_sizes": "[16]", "batch_size": 16,
    # tdmpc2's TD-MPC2 config, smaller still than its factory's CPU preset (TDMPC2_HIERARCHY_CONFIG)
    "config": "{model_size:1,enc_dim:32,mlp_dim:32,latent_dim:16,batch_size:16,num_samples:16,num_iterations:2,"
              "num_elites:4,num_pi_trajs:2}",
}
#: Pairs that cannot work (a continuous-action level on a discrete env): they must fail clearly instead.
INCOMPATIBLE = {("planner", "cartpole"), ("tdmpc2", "cartpole"), ("sac", "cartpole")} | {
    ("dqn", env) for env in ("pendulum", "inverted_pendulum", "maze2d_medium", "maze2d_open")
} | {(skills, env) for skills in ("planner_splates", "planner_dads") for env in ("pendulum", "cartpole", "inverted_pendulum")}
NEEDS = {"inverted_pendulum": "mujoco"}


def small(hierarchy: str) -> list[str]:
    """Overrides that shrink the named hierarchy's options to the small budget."""
    kwargs = compose_config([f"hierarchy={hierarchy}"]).hierarchy.get("kwargs") or {}
    return [f"hierarchy.kwargs.{k}={v}" for k, v in SMALL_KWARGS.items() if k in kwargs]


def tiny_config(hierarchy: str = "planner", env: str = "pendulum", *extra: str):
    return compose_config([f"hierarchy={hierarchy}", f"env={env}", *TINY, *small(hierarchy), *extra])


PAIRS = [(h, e) for h in group_options("hierarchy") for e in group_options("env") if (h, e) not in INCOMPATIBLE]


@pytest.mark.parametrize("hierarchy,env", PAIRS)
def test_every_shipped_hierarchy_env_pair_trains_and_leaves_logs_checkpoint_and_plot(hierarchy, env, tmp_path):
    if env in NEEDS and importlib.util.find_spec(NEEDS[env]) is None:
        pytest.skip(f"env={env} needs {NEEDS[env]}")
    result = train(tiny_config(hierarchy, env), tmp_path)
    assert result["frames"] == 40
    assert result["plot"] == tmp_path / "learning_curve.png" and result["plot"].stat().st_size > 1000
    scalars = {p.relative_to(tmp_path).as_posix().split("/scalars/")[-1] for p in tmp_path.rglob("*.csv")}
    assert {"train/episodes.csv", "eval/return.csv"} <= scalars, scalars
    if env.startswith("maze2d"):
        assert "eval/success_rate.csv" in scalars
    folder, state = read_checkpoint(tmp_path)
    assert folder.name == "frames_0000000040" and state["progress"]["frames"] == 40
    assert len(list((tmp_path / "checkpoints").glob("frames_*"))) == 2  # checkpoint.keep


@pytest.mark.parametrize("hierarchy,env", sorted(INCOMPATIBLE))
def test_an_incompatible_pair_fails_with_a_clear_error(hierarchy, env, tmp_path):
    with pytest.raises(ConfigError, match=rf"hierarchy '{hierarchy}' cannot be built for env .*(cannot feed the env|goal-based env)"):
        train(tiny_config(hierarchy, env), tmp_path)


def test_resume_continues_frames_episodes_level_counters_and_buffers(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    out = train(tiny_config("planner", "pendulum", "checkpoint.save_buffers=true"), first)
    assert (out["frames"], out["episodes"]) == (40, 4)
    resumed = train(tiny_config("planner", "pendulum", "checkpoint.save_buffers=true", "collector.total_frames=80",
                                f"resume={first}"), second)
    assert (resumed["frames"], resumed["episodes"]) == (80, 8)
    _, state = read_checkpoint(second)
    progress = state["progress"]
    assert progress["eval_frames"] == [0, 20, 40, 60, 80]  # the first run's evaluations carry over
    assert progress["train_frames"][:4] == read_checkpoint(first)[1]["progress"]["train_frames"]
    steps = [int(line.split(",")[0]) for line in
             next(second.rglob("train/episodes.csv")).read_text().splitlines()]
    assert steps == [60, 80]  # the resumed run logs from where the first stopped, not from 0
    # the level's counters and replay buffer hold both runs' data
    config = parse_config(tiny_config("planner", "pendulum"))
    hierarchy = build_hierarchy(config, build_env(config, 2))
    restore_hierarchy(*read_checkpoint(second), hierarchy)
    level = hierarchy.levels[0]
    assert level.n_transitions == level.env_steps == 80
    assert len(hierarchy_buffers(hierarchy)["level0.replay_buffer"]) == 80


@pytest.mark.parametrize("backend", ["multiprocess", "ray", "distributed"])
def test_one_setting_moves_a_run_to_workers_that_learn_in_the_driver(backend, tmp_path):
    if backend == "ray":
        pytest.importorskip("ray")
    if backend == "distributed":
        without_process_group()
    workers = ["collector.workers=2", "collector.frames_per_batch=40", "collector.total_frames=80"]
    result = train(tiny_config("planner", "pendulum", f"collector.backend={backend}", *workers), tmp_path)
    assert (result["frames"], result["episodes"]) == (80, 8)  # 2 workers x 2 envs, episodes of 10 steps
    _, state = read_checkpoint(tmp_path)
    assert state["progress"]["eval_frames"] == [0, 40, 80]  # in the driver, on its own env
    config = parse_config(tiny_config("planner", "pendulum"))
    hierarchy = build_hierarchy(config, build_env(config, 2))
    restore_hierarchy(*read_checkpoint(tmp_path), hierarchy)
    level = hierarchy.levels[0]
    assert level.env_steps == 80 and level.num_gradient_updates > 0  # every worker's data, learned from here


def test_workers_that_deliver_batches_as_they_come_train_the_same_frames(tmp_path):
    workers = ["collector.backend=multiprocess", "collector.workers=2", "collector.sync=false"]
    result = train(tiny_config("planner", "pendulum", *workers, "collector.total_frames=80"), tmp_path)
    assert result["frames"] == 80 and result["episodes"] == 8  # batches of 20 from either worker


def test_a_run_with_workers_resumes_where_it_stopped(tmp_path):
    workers = ["collector.backend=multiprocess", "collector.workers=2", "collector.frames_per_batch=40"]
    train(tiny_config("planner", "pendulum", *workers, "collector.total_frames=40"), tmp_path / "first")
    resumed = train(tiny_config("planner", "pendulum", *workers, "collector.total_frames=120",
                                f"resume={tmp_path / 'first'}"), tmp_path / "second")
    assert (resumed["frames"], resumed["episodes"]) == (120, 12)


def test_a_missing_ray_stops_the_app_in_one_line_that_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["train", "collector.backend=ray", "collector.workers=2"])
    with pytest.raises(SystemExit) as exit_info:
        app.main()
    assert exit_info.value.code == app.EXIT_BAD_CONFIG
    err = capsys.readouterr().err
    assert err == "error: collector.backend=ray: the 'ray' collector backend needs Ray: pip install " \
                  "'torchrl-layered[ray]' (or pip install ray)\n", err


def test_a_corrupt_checkpoint_is_refused_and_left_as_it_is(tmp_path):
    train(tiny_config(), tmp_path / "run")
    state_file = tmp_path / "run" / "checkpoints" / "frames_0000000040" / "state.pt"
    state_file.write_bytes(state_file.read_bytes()[:1000])
    before = {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}
    with pytest.raises(CheckpointError, match="state.pt does not match its sha256 .*corrupt or truncated"):
        train(tiny_config("planner", "pendulum", "collector.total_frames=80", f"resume={tmp_path / 'run'}"),
              tmp_path / "resumed")
    assert {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()} == before
    assert not (tmp_path / "resumed").exists()


def test_a_checkpoint_of_another_run_is_refused(tmp_path):
    train(tiny_config(), tmp_path / "run")
    with pytest.raises(CheckpointError, match="written by hierarchy=planner on env Pendulum-v1, not hierarchy=random"):
        train(tiny_config("random", "pendulum", "collector.total_frames=80", f"resume={tmp_path / 'run'}"),
              tmp_path / "a")
    with pytest.raises(CheckpointError, match="does not fit this hierarchy"):
        train(tiny_config("planner", "pendulum", "collector.total_frames=80", "hierarchy.kwargs.hidden_sizes=[8]",
                          "resume_override=true", f"resume={tmp_path / 'run'}"), tmp_path / "b")
    with pytest.raises(ConfigError, match="total_frames must be above the checkpoint's 40 frames to train further; got 40"):
        train(tiny_config("planner", "pendulum", f"resume={tmp_path / 'run'}"), tmp_path / "c")


BAD = [
    (["collector.total_frames=-5"], "collector.total_frames must be > 0; got -5"),
    (["collector.total_frames=0"], "collector.total_frames must be > 0; got 0"),
    (["collector.frames_per_batch=401"], "collector.frames_per_batch must be a multiple of collector.num_envs=4"),
    (["eval.episodes=-1"], "eval.episodes must be >= 0; got -1"),
    (["env=atari_pong"], "env=atari_pong is not a known env config; choose one of: cartpole,"),
    (["env.name=NoSuchEnv-v0"], "env.name 'NoSuchEnv-v0' is not a registered gymnasium env"),
    (["hierarchy=bogus"], "hierarchy=bogus is not a known hierarchy config"),
    (["hierarchy.name=bogus"], "hierarchy.name 'bogus' is not a known hierarchy"),
    (["+hierarchy.kwargs.bogus=1"], "hierarchy.kwargs.bogus is not an option of hierarchy 'planner'"),
    (["logger=bogus"], "logger=bogus is not a known logger config"),
    (["logger.backend=bogus"], "logger.backend must be one of ['csv', 'tensorboard', 'wandb']; got 'bogus'"),
    (["colector.total_frames=5"], "Could not override 'colector.total_frames'"),
    (["device=gpu"], "device must be a torch device"),
    (["resume=/no/such/run"], "resume path '/no/such/run' does not exist"),
    (["+collector.foo=1"], "collector.foo is not a known key; the keys of collector are: num_envs, frames_per_batch,"),
    (["+foo=1"], "foo is not a known key; the top-level keys are: hierarchy, env,"),
    (["hierarchy.kwargs.batch_size=0"], "hierarchy.kwargs.batch_size must be an integer > 0; got 0"),
    (["hierarchy.kwargs.horizon=abc"], "hierarchy.kwargs.horizon must be an integer (hierarchy 'planner'); got 'abc'"),
    (["hierarchy.kwargs.gamma=2.0"], "hierarchy.kwargs.gamma must be a number in (0, 1]; got 2.0"),
    (["hierarchy.kwargs.hidden_sizes=[16,0]"], "hierarchy.kwargs.hidden_sizes entries must be an integer > 0"),
    (["hierarchy=tdmpc2", "+hierarchy.kwargs.config.lr=-1"], "hierarchy.kwargs.config.lr must be a number > 0; got -1"),
    (["hierarchy=tdmpc2", "hierarchy.kwargs.config={lr:-1}"], "hierarchy.kwargs.config.lr must be a number > 0; got -1"),
    (["hierarchy=tdmpc2", "+hierarchy.kwargs.config.planning_dtype=fp8"],
     "planning_dtype must be one of ['bfloat16', 'float32']; got 'fp8'"),
    (["hierarchy=tdmpc2", "+hierarchy.kwargs.config.update_dtype=fp8"],
     "update_dtype must be one of ['bfloat16', 'float32']; got 'fp8'"),
    (["hierarchy.kwargs.planning_dtype=half"],
     "PlannerLevel: planning_dtype must be one of ['bfloat16', 'float32']; got 'half'"),
    (["collector.backend=slurm"], "collector.backend must be one of local, multiprocess, ray, distributed; got 'slurm'"),
    (["collector.workers=2"], "collector.workers=2 needs a backend with workers: collector.backend=multiprocess"),
    (["collector.backend=ray", "collector.workers=0"], "collector.workers must be > 0; got 0"),
    (["collector.backend=multiprocess", "collector.workers=3"],
     "collector.frames_per_batch must be a multiple of collector.num_envs=4 x collector.workers=3; got 400"),
    (["collector.backend=ray", "collector.workers=2", "collector.backend_kwargs=5"],
     "collector.backend_kwargs must be a mapping of keyword arguments; got 5"),
    (["collector.backend=ray", "collector.workers=2", "+collector.backend_kwargs.frames_per_batch=80"],
     "collector.backend_kwargs.frames_per_batch is set by the app from collector.frames_per_batch"),
]


@pytest.mark.parametrize("argv,message", BAD, ids=[b[0][-1] for b in BAD])
def test_a_bad_setting_stops_the_app_with_one_line_naming_the_key(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["train", *argv])
    with pytest.raises(SystemExit) as exit_info:
        app.main()
    assert exit_info.value.code == app.EXIT_BAD_CONFIG
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == []  # refused before anything was written


def test_an_unusable_checkpoint_stops_the_app_before_hydra_writes_anything(tmp_path, monkeypatch, capsys):
    (tmp_path / "old" / "checkpoints" / "frames_0000000040").mkdir(parents=True)
    (tmp_path / "old" / "checkpoints" / "frames_0000000040" / "state.pt").write_bytes(b"garbage")
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    monkeypatch.setattr(sys, "argv", ["train", f"resume={tmp_path / 'old'}"])
    with pytest.raises(SystemExit) as exit_info:
        app.main()
    assert exit_info.value.code == app.EXIT_BAD_CONFIG
    assert "frames_0000000040/manifest.json is missing" in capsys.readouterr().err
    assert list((tmp_path / "work").iterdir()) == []


def run_main(monkeypatch, *argv: str) -> int:
    """Runs the app in this process with ``argv``; returns its exit code (0 when it returns)."""
    monkeypatch.setattr(sys, "argv", ["train", *argv])
    with pytest.raises(SystemExit) as exit_info:
        app.main()
        sys.exit(0)
    return exit_info.value.code


#: A random-hierarchy run of two batches, without evaluation.
QUICK = ["hierarchy=random", "collector.num_envs=2", "collector.frames_per_batch=20", "collector.total_frames=40",
         "env.max_episode_steps=10", "eval.episodes=0", "progress_bar=false"]


def test_a_checkpoint_with_a_flipped_byte_stops_the_app_in_one_line_naming_the_file(tmp_path, monkeypatch, capsys):
    train(compose_config(QUICK), tmp_path / "run")
    state_file = tmp_path / "run" / "checkpoints" / "frames_0000000040" / "state.pt"
    data = bytearray(state_file.read_bytes())
    data[-100] ^= 1
    state_file.write_bytes(bytes(data))
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    assert run_main(monkeypatch, *QUICK, "collector.total_frames=80", f"resume={tmp_path / 'run'}") == 2
    assert capsys.readouterr().err == (f"error: resume: {state_file} does not match its sha256 in manifest.json; "
                                       "the file is corrupt or truncated\n")
    assert list((tmp_path / "work").iterdir()) == []


def test_resume_with_changed_hyperparameters_stops_the_app_in_one_line(tmp_path, monkeypatch, capsys):
    train(compose_config(QUICK), tmp_path / "run")
    monkeypatch.chdir(tmp_path)
    code = run_main(monkeypatch, *QUICK, "collector.total_frames=80", "hierarchy.kwargs.option_dim=3",
                    f"resume={tmp_path / 'run'}")
    assert code == app.EXIT_BAD_CONFIG
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "hierarchy.kwargs.option_dim: 2 -> 3" in err and "resume_override=true" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_a_run_dir_that_holds_a_run_is_refused_before_hydra_writes_into_it(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    assert run_main(monkeypatch, *QUICK, f"hydra.run.dir={run}") == 0
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert run_main(monkeypatch, *QUICK, f"hydra.run.dir={run}") == app.EXIT_BAD_CONFIG
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {run} already holds a run (checkpoints/, logs/)")
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before  # .hydra/ included


def test_a_setting_refused_inside_the_job_leaves_no_run_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run_main(monkeypatch, *QUICK, "+env.kwargs.no_such_option=1") == app.EXIT_BAD_CONFIG
    assert "env.name 'Pendulum-v1' cannot be built" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # Hydra's outputs/<hierarchy-env>/<date>/.hydra removed


def test_a_run_whose_state_goes_non_finite_exits_with_code_3_in_one_line(tmp_path, monkeypatch, capsys):
    learn = Hierarchy.learn

    def learn_then_corrupt(self):
        metrics = learn(self)
        self.levels[0].predictor.model.head.bias.data.fill_(math.inf)
        return metrics

    monkeypatch.setattr(Hierarchy, "learn", learn_then_corrupt)
    run = tmp_path / "run"
    argv = [*TINY, *small("planner"), "eval.episodes=0", f"hydra.run.dir={run}"]
    assert run_main(monkeypatch, *argv) == app.EXIT_RUN_STOPPED == 3
    err = capsys.readouterr().err
    assert err == ("error: level 0 (PlannerLevel) state went non-finite at frame 20 (predictor.model.head.bias); "
                   "the run stopped, last good checkpoint: none\n")
    assert not (run / "checkpoints").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_device_cuda_without_cuda_is_refused():
    with pytest.raises(ConfigError, match="device 'cuda' asks for CUDA"):
        parse_config(compose_config(["device=cuda"]))


def run_app(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torchrl_layered.train", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_the_command_line_trains_the_default_and_prints_the_plot_path(tmp_path):
    result = run_app(*TINY, *small("planner"), f"hydra.run.dir={tmp_path}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "learning_curve.png").stat().st_size > 1000
    assert f"learning curve: {tmp_path / 'learning_curve.png'}" in result.stdout
    assert list(tmp_path.rglob("*.csv")), "the csv logger wrote nothing"
    assert (tmp_path / "checkpoints" / "frames_0000000040" / "state.pt").is_file()


def test_the_command_line_refuses_a_bad_value_in_one_line_without_a_traceback(tmp_path):
    result = run_app("collector.total_frames=-5", cwd=tmp_path)
    assert result.returncode == app.EXIT_BAD_CONFIG
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == "error: collector.total_frames must be > 0; got -5"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.learning(minutes=4)
@pytest.mark.parametrize("planning_dtype", PLANNING_DTYPES)
def test_the_default_run_learns_to_hold_the_pendulum_up(tmp_path, planning_dtype):
    result = train(compose_config(["progress_bar=false", f"hierarchy.kwargs.planning_dtype={planning_dtype}"]), tmp_path)
    _, state = read_checkpoint(tmp_path)
    first_eval = state["progress"]["eval_returns"][0]
    print(f"default run, planning in {planning_dtype}: eval returns {state['progress']['eval_returns']}, final train return {result['train_return']:.1f}")
    # random actions score about -1200, the untrained planner about -1600
    assert result["eval_return"] > -400 and result["train_return"] > -400, (first_eval, result)


def test_the_trainers_package_leaves_matplotlib_until_a_plot_is_drawn(tmp_path):
    """`trainers.plot` imports matplotlib in `plot_learning_curve`, so training and evaluating need not."""
    code = ("import sys\n"
            "import torchrl_layered.trainers\n"
            "from torchrl_layered.trainers.plot import plot_learning_curve\n"
            "before = 'matplotlib' in sys.modules\n"
            f"path = plot_learning_curve({str(tmp_path / 'curve.png')!r}, 't', [0, 1], [1.0, 2.0])\n"
            "print(before, 'matplotlib' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-2:] == ["False", "True"]
    assert (tmp_path / "curve.png").stat().st_size > 0
