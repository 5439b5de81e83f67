"""The training loop: collector -> level buffers -> level updates -> logs -> evaluation -> checkpoints -> plot."""
from __future__ import annotations

import functools
import math
import random
import time
from dataclasses import asdict, dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Mapping

import gymnasium as gym
import numpy as np
import torch
from tensordict import TensorDictBase
from torchrl.envs import EnvBase, RewardSum, Transform
from torchrl.record.loggers import Logger, get_logger
from tqdm import tqdm

from torchrl_layered.collectors import make_collector, runs_in_workers
from torchrl_layered.envs import make_env
from torchrl_layered.hierarchy import Hierarchy
from torchrl_layered.levels.validation import InvalidDataError
from torchrl_layered.trainers.checkpoint import (
    CheckpointError,
    checkpoint_frames,
    hierarchy_buffers,
    read_checkpoint,
    restore_hierarchy,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from torchrl_layered.trainers.config import RESUMABLE, ConfigError, TrainConfig, hierarchy_defaults, parse_config
from torchrl_layered.trainers.evaluate import EvalResult, evaluate
from torchrl_layered.trainers.finite import RunStoppedError, check_finite, stopped
from torchrl_layered.hierarchies import HIERARCHIES, make_hierarchy
from torchrl_layered.trainers.plot import plot_learning_curve

#: Offset of the evaluation env's seed from the training seed.
EVAL_SEED_OFFSET = 10_000
#: What in a run folder shows that a run already wrote there.
RUN_MARKERS = ("checkpoints", "logs")


@dataclass
class Progress:
    """The run's counters and curves: what a checkpoint carries so that a resumed run continues them."""

    frames: int = 0
    """Env steps collected so far (all instances)."""
    episodes: int = 0
    """Training episodes ended so far."""
    batches: int = 0
    """Collector batches so far."""
    train_frames: list[int] = field(default_factory=list)
    """For each ended training episode: the frame count at its end."""
    train_returns: list[float] = field(default_factory=list)
    """For each ended training episode: its return."""
    train_success: list[float] = field(default_factory=list)
    """For each ended training episode: its success flag at the last step (envs that report one)."""
    eval_frames: list[int] = field(default_factory=list)
    """The frame counts at which evaluations ran."""
    eval_returns: list[float] = field(default_factory=list)
    """The mean return of each evaluation."""
    eval_success: list[float] = field(default_factory=list)
    """The success rate of each evaluation (envs that report success)."""

    def record_episodes(self, batch: TensorDictBase) -> tuple[list[float], list[float]]:
        """Adds the episodes that end in ``batch`` (``[num_envs, T]``, or ``[workers, num_envs, T]``);
        returns their returns and successes."""
        done = batch.get(("next", "done")).squeeze(-1)
        if not bool(done.any()):
            return [], []
        rows = done.reshape(-1, done.shape[-1]) if done.dim() > 1 else done.reshape(1, -1)  # workers x envs, T
        steps = rows.nonzero()[:, 1]
        ended_at = (self.frames + (steps + 1) * rows.shape[0]).tolist()
        returns = batch.get(("next", "episode_reward")).squeeze(-1)[done].tolist()
        flag = batch.get(("next", "success"), None)
        success = flag.reshape(done.shape)[done].float().tolist() if flag is not None else []
        order = sorted(range(len(returns)), key=ended_at.__getitem__)
        self.train_frames += [ended_at[i] for i in order]
        self.train_returns += [returns[i] for i in order]
        self.train_success += [success[i] for i in order] if success else []
        self.episodes += len(returns)
        return returns, success

    def record_eval(self, result: EvalResult) -> None:
        self.eval_frames.append(self.frames)
        self.eval_returns.append(result.mean_return)
        if result.success_rate is not None:
            self.eval_success.append(result.success_rate)

    def recent_return(self, n: int = 10, since: int = 0) -> float:
        """The mean return of the last ``n`` episodes among those after the first ``since``."""
        recent = self.train_returns[since:][-n:]
        return sum(recent) / len(recent) if recent else math.nan

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Progress:
        return cls(**{k: (list(v) if isinstance(v, (list, tuple)) else int(v)) for k, v in state.items()})


# ---------------------------------------------------------------------- building
def build_env(config: TrainConfig, num_envs: int, *, asynchronous: bool = False) -> EnvBase:
    """The batched env of the run (``make_env``), or a `ConfigError` that says why it cannot be built."""
    kwargs = dict(config.env.kwargs)
    if config.env.max_episode_steps is not None:
        kwargs["max_episode_steps"] = config.env.max_episode_steps
    try:
        return make_env(config.env.name, num_envs, asynchronous=asynchronous, device=config.device, **kwargs)
    except (gym.error.Error, ImportError, TypeError, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"env.name {config.env.name!r} cannot be built: {reason}") from None


def training_env(config: TrainConfig, seed: int, transform: Transform) -> EnvBase:
    """A worker's training env: the run's env seeded with ``seed``, carrying the option state
    (a copy of ``transform``) and the episode return."""
    env = build_env(config, config.collector.num_envs, asynchronous=config.collector.asynchronous)
    env.set_seed(seed)
    return env.append_transform(transform.clone()).append_transform(RewardSum())


def build_collector(config: TrainConfig, env: EnvBase, hierarchy: Hierarchy, frames: int = 0):
    """The run's collector: over ``env`` (``backend=local``), or over env constructors that each
    worker calls, seeded apart (``seed + frames + worker * num_envs``); ``frames`` are already collected."""
    collector = config.collector
    if collector.backend == "local":
        env = env.append_transform(hierarchy.make_transform()).append_transform(RewardSum())
        return make_collector(env, hierarchy, frames_per_batch=collector.frames_per_batch,
                              total_frames=collector.total_frames, device=config.device, trust_policy=True)
    transform = hierarchy.make_transform()
    envs = [functools.partial(training_env, config, config.seed + frames + w * collector.num_envs, transform)
            for w in range(collector.workers)]
    kwargs = {"sync": collector.sync, **collector.backend_kwargs}
    return make_collector(envs, hierarchy, backend=collector.backend, workers=collector.workers,
                          frames_per_batch=collector.frames_per_batch, total_frames=collector.total_frames - frames,
                          device=config.device, **kwargs)


def build_hierarchy(config: TrainConfig, env: EnvBase) -> Hierarchy:
    """The configured hierarchy for ``env``, on the run's device, or a `ConfigError` that says why not."""
    name = config.hierarchy.name
    try:
        hierarchy = make_hierarchy(name, env, **config.hierarchy.kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"hierarchy {name!r} cannot be built for env {config.env.name!r}: {err}") from None
    return hierarchy.to(config.device)


def build_logger(config: TrainConfig, output_dir: Path) -> Logger:
    """A TorchRL logger writing under ``output_dir/logs``."""
    experiment = f"{config.hierarchy.name}-{config.env.name}"
    kwargs = {}
    if config.logger.backend == "wandb":
        kwargs["wandb_kwargs"] = {"project": config.logger.project, **config.logger.kwargs}
    return get_logger(config.logger.backend, str(output_dir / "logs"), experiment, **kwargs)


def flat_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"collector.total_frames": 3200, ...}``: the nested config as dotted keys, values as scalars or strings."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            flat.update(flat_config(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return flat


def _close_logger(logger: Logger) -> None:
    experiment = getattr(logger, "experiment", None)
    for method in ("flush", "close", "finish"):
        if callable(getattr(experiment, method, None)):
            getattr(experiment, method)()


def read_resume(config: TrainConfig) -> tuple[Path, dict[str, Any]] | None:
    """The checkpoint to resume from (folder and state), checked against this run; None without ``resume``."""
    if config.resume is None:
        return None
    folder, state = read_checkpoint(config.resume)
    missing = sorted({"run", "hierarchy", "collector", "progress", "rng"} - set(state))
    if missing:
        raise CheckpointError(f"resume: the checkpoint in {folder} lacks {missing}; it was not written by this app")
    run = state["run"]
    if (run.get("hierarchy"), run.get("env")) != (config.hierarchy.name, config.env.name):
        raise CheckpointError(
            f"resume: the checkpoint in {folder} was written by hierarchy={run.get('hierarchy')} on env "
            f"{run.get('env')}, not hierarchy={config.hierarchy.name} on env {config.env.name}; pass the same "
            "hierarchy= and env= as the run that wrote it"
        )
    changed = changed_settings(config, state)
    if changed and not config.resume_override:
        raise ConfigError(
            f"resume: settings differ from the checkpoint's run: {'; '.join(changed)}; pass the values it was "
            "trained with, or resume_override=true to apply the new ones"
        )
    frames = state["progress"]["frames"]
    if frames >= config.collector.total_frames:
        raise ConfigError(
            f"collector.total_frames must be above the checkpoint's {frames} frames to train further; "
            f"got {config.collector.total_frames}"
        )
    return folder, state


def changed_settings(config: TrainConfig, state: Mapping[str, Any]) -> list[str]:
    """``key: old -> new`` for each setting that differs from the checkpoint's run, `RESUMABLE` keys aside."""
    old = state["run"].get("config")
    if not isinstance(old, Mapping):
        return []
    new = flat_config(asdict(config))
    # a run that left a hierarchy option out ran with the factory's default (older runs saved only some)
    factory = HIERARCHIES.get(config.hierarchy.name)
    defaults = flat_config(hierarchy_defaults(factory), "hierarchy.kwargs.") if factory is not None else {}

    def show(flat: Mapping[str, Any], key: str) -> str:
        return repr(flat[key]) if key in flat else "(unset)"

    def same(key: str) -> bool:
        if key not in old and key in defaults:
            return show(new, key) == show(defaults, key)
        return show(old, key) == show(new, key)

    return [
        f"{key}: {show(old, key)} -> {show(new, key)}"
        for key in sorted(set(old) | set(new))
        if not same(key) and not any(fnmatchcase(key, p) for p in RESUMABLE)
    ]


def check_output_dir(output_dir: Path) -> None:
    """Refuses a run folder another run already wrote to, so that its checkpoints and logs stay its own."""
    found = [name for name in RUN_MARKERS if (Path(output_dir) / name).exists()]
    if found:
        raise ConfigError(
            f"{output_dir} already holds a run ({', '.join(f'{n}/' for n in found)}); choose a new hydra.run.dir, "
            f"or continue that run with resume={output_dir} (it writes to a new folder)"
        )


# ---------------------------------------------------------------------- training
def train(cfg: TrainConfig | Mapping, output_dir: str | Path) -> dict[str, Any]:
    """Trains the configured hierarchy, writing logs, checkpoints and a learning-curve PNG to ``output_dir``.

    Args:
        cfg: a `TrainConfig`, or a composed Hydra config (checked with `parse_config`).
        output_dir: the run folder.

    Returns:
        The final counters and results (``frames``, ``episodes``, ``train_return``,
        ``eval_return``, ``eval_success``, ``plot``, ``checkpoint``).

    Raises:
        ConfigError: a bad setting (checked before anything is built).
        CheckpointError: ``resume`` points at a checkpoint that is unreadable or from another run.
        RunStoppedError: a level's state went non-finite, or a level refused its data; the last
            good checkpoint is left as the latest.
    """
    config = cfg if isinstance(cfg, TrainConfig) else parse_config(cfg)
    output_dir = Path(output_dir)
    check_output_dir(output_dir)
    checkpoint = read_resume(config)
    progress = Progress.from_state(checkpoint[1]["progress"]) if checkpoint else Progress()
    if checkpoint is not None and config.resume_override:
        changed = changed_settings(config, checkpoint[1])
        if changed:
            print(f"resume_override: applying settings that differ from the checkpoint's run: {'; '.join(changed)}")

    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    random.seed(config.seed)
    local = config.collector.backend == "local"
    # with workers this env only gives the hierarchy its specs; each worker builds its own
    env = build_env(config, config.collector.num_envs, asynchronous=config.collector.asynchronous and local)
    env.set_seed(config.seed + progress.frames)  # a resumed run meets new episodes
    hierarchy = build_hierarchy(config, env)
    if checkpoint is not None:
        restore_hierarchy(checkpoint[0], checkpoint[1], hierarchy)
        set_rng_state(checkpoint[1]["rng"])
    eval_env = None
    if config.eval.episodes:
        eval_env = build_env(config, config.eval.episodes)
        eval_env = eval_env.append_transform(hierarchy.make_transform()).append_transform(RewardSum())
    if not local:
        env.close()
    collector = build_collector(config, env, hierarchy, progress.frames)
    if checkpoint is not None and local:
        collector.load_state_dict(checkpoint[1]["collector"], strict=False)
    push_weights = runs_in_workers(type(collector))

    output_dir.mkdir(parents=True, exist_ok=True)
    logger = build_logger(config, output_dir)
    logger.log_hparams(flat_config(asdict(config)))
    title = f"{config.hierarchy.name} on {config.env.name}"
    checkpoint_dir = output_dir / "checkpoints"
    last_checkpoint: Path | None = None
    last_good = checkpoint[0] if checkpoint is not None else None  # where to continue if the run stops

    def run_eval() -> None:
        result = evaluate(hierarchy, eval_env, max_steps=config.eval.max_steps, seed=config.seed + EVAL_SEED_OFFSET)
        progress.record_eval(result)
        logger.log_scalar("eval/return", result.mean_return, step=progress.frames)
        if result.success_rate is not None:
            logger.log_scalar("eval/success_rate", result.success_rate, step=progress.frames)
            logger.log_scalar("eval/final_success_rate", result.final_success_rate, step=progress.frames)

    def save() -> Path:
        state = {
            "run": {"hierarchy": config.hierarchy.name, "env": config.env.name, "config": flat_config(asdict(config))},
            "hierarchy": hierarchy.state_dict(),
            # the collector's own counters, as its state_dict has them (it may be shut down by now)
            "collector": {"frames": progress.frames, "iter": progress.batches - 1},
            "progress": progress.state_dict(),
            "rng": rng_state(),
        }
        buffers = hierarchy_buffers(hierarchy) if config.checkpoint.save_buffers else None
        return save_checkpoint(checkpoint_dir, progress.frames, state, buffers, keep=config.checkpoint.keep)

    def next_multiple(interval: int) -> float:
        return (progress.frames // interval + 1) * interval if interval else math.inf

    bar = tqdm(total=config.collector.total_frames, initial=progress.frames, desc=title, unit="frame",
               disable=not config.progress_bar, dynamic_ncols=True)
    if eval_env is not None and (not progress.eval_frames or progress.eval_frames[-1] != progress.frames):
        run_eval()
    next_eval = next_multiple(config.eval.interval_frames)
    next_save = next_multiple(config.checkpoint.interval_frames)
    start_time, start_frames = time.perf_counter(), progress.frames
    start_returns, start_evals, start_success = (
        len(progress.train_returns), len(progress.eval_returns), len(progress.eval_success))
    metrics: dict[str, float] = {}
    try:
        for batch in collector:
            hierarchy.extend(batch)
            metrics = hierarchy.learn()
            if push_weights:  # the workers act with what was just learned, warm-up clocks included
                collector.update_policy_weights_()
            returns, success = progress.record_episodes(batch)
            progress.frames += batch.numel()
            progress.batches += 1
            check_finite(hierarchy, progress.frames, last_good)
            sps = (progress.frames - start_frames) / max(time.perf_counter() - start_time, 1e-9)
            for name, value in metrics.items():
                logger.log_scalar(name, value, step=progress.frames)
            logger.log_scalar("train/sps", sps, step=progress.frames)
            logger.log_scalar("train/episodes", progress.episodes, step=progress.frames)
            if returns:
                logger.log_scalar("train/return", sum(returns) / len(returns), step=progress.frames)
            if success:
                logger.log_scalar("train/success_rate", sum(success) / len(success), step=progress.frames)
            if eval_env is not None and progress.frames >= next_eval:
                run_eval()
                next_eval = next_multiple(config.eval.interval_frames)
            if progress.frames >= next_save:
                last_checkpoint = last_good = save()
                next_save = next_multiple(config.checkpoint.interval_frames)
            postfix = {"return": f"{progress.recent_return():.1f}"}
            if progress.train_success:
                recent = progress.train_success[-10:]
                postfix["success"] = f"{sum(recent) / len(recent):.2f}"
            if progress.eval_returns:
                postfix["eval"] = f"{progress.eval_returns[-1]:.1f}"
            postfix["sps"] = f"{sps:.0f}"
            bar.set_postfix(postfix, refresh=False)
            bar.update(batch.numel())
    except InvalidDataError as err:
        reason = " ".join(str(err).split())
        raise RunStoppedError(f"{reason} (at frame {progress.frames}); {stopped(last_good)}") from err
    finally:
        bar.close()
        collector.shutdown()
    if eval_env is not None:
        if progress.eval_frames[-1] != progress.frames:
            run_eval()
        eval_env.close()
    if last_checkpoint is None or checkpoint_frames(last_checkpoint) != progress.frames:
        last_checkpoint = save()
    _close_logger(logger)
    plot = plot_learning_curve(
        output_dir / "learning_curve.png", title, progress.train_frames, progress.train_returns,
        progress.eval_frames, progress.eval_returns, progress.eval_success or None,
    )
    # what this run measured: a resumed run does not report the checkpoint's evaluations as its own
    eval_returns, eval_success = progress.eval_returns[start_evals:], progress.eval_success[start_success:]
    result = {
        "frames": progress.frames,
        "episodes": progress.episodes,
        "train_return": progress.recent_return(since=start_returns),
        "eval_return": eval_returns[-1] if eval_returns else math.nan,
        "eval_success": eval_success[-1] if eval_success else None,
        "plot": plot,
        "checkpoint": last_checkpoint,
        **metrics,
    }
    summary = (f"frames {progress.frames}, episodes {progress.episodes}, "
               f"train return (last 10) {result['train_return']:.1f}")
    if eval_returns:
        summary += f", eval return {result['eval_return']:.1f}"
    if result["eval_success"] is not None:
        summary += f", eval success {result['eval_success']:.2f}"
    print(summary)
    print(f"checkpoint: {last_checkpoint}")
    print(f"logs: {output_dir / 'logs'}")
    print(f"learning curve: {plot}")
    return result
