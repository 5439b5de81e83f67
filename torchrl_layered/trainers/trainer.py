"""The training loop: collector -> level buffers -> level updates -> logs -> plot."""
from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig
from torchrl.collectors import Collector
from torchrl.envs import Compose, RewardSum
from torchrl.record.loggers import get_logger
from tqdm import tqdm

from torchrl_layered.envs import make_env
from torchrl_layered.trainers.hierarchies import make_hierarchy
from torchrl_layered.trainers.plot import plot_returns


def train(cfg: DictConfig, output_dir: Path) -> dict[str, float]:
    """Trains ``cfg.hierarchy`` on ``cfg.env`` and returns the final metrics."""
    torch.manual_seed(cfg.seed)
    output_dir.mkdir(parents=True, exist_ok=True)
    env = make_env(cfg.env.name, cfg.collector.num_envs, device=cfg.device, **cfg.env.get("kwargs", {}))
    env.set_seed(cfg.seed)
    hierarchy = make_hierarchy(cfg.hierarchy.name, env, **cfg.hierarchy.get("kwargs", {}))
    env = env.append_transform(Compose(hierarchy.make_transform(), RewardSum()))
    collector = Collector(
        env,
        hierarchy,
        frames_per_batch=cfg.collector.frames_per_batch,
        total_frames=cfg.collector.total_frames,
        device=cfg.device,
        trust_policy=True,
        auto_register_policy_transforms=False,
    )
    logger = get_logger(cfg.logger.backend, logger_name=str(output_dir), experiment_name="train")
    frames, returns, metrics = 0, [], {}
    curve_frames: list[int] = []
    bar = tqdm(total=cfg.collector.total_frames, desc=f"{cfg.hierarchy.name} on {cfg.env.name}", unit="step")
    for batch in collector:
        frames += batch.numel()
        hierarchy.extend(batch)
        metrics = hierarchy.learn()
        done = batch["next", "done"].squeeze(-1)
        finished = batch["next", "episode_reward"][done].reshape(-1).tolist()
        returns += finished
        curve_frames += [frames] * len(finished)
        for name, value in metrics.items():
            logger.log_scalar(name, value, step=frames)
        if finished:
            logger.log_scalar("train/episode_return", sum(finished) / len(finished), step=frames)
        recent = returns[-10:]
        bar.set_postfix(episodes=len(returns), ret=f"{sum(recent) / len(recent):.1f}" if recent else "-")
        bar.update(batch.numel())
    bar.close()
    collector.shutdown()
    plot = plot_returns(curve_frames, returns, output_dir / "learning_curve.png", f"{cfg.hierarchy.name} on {cfg.env.name}")
    print(f"learning curve: {plot}")
    recent = returns[-10:]
    return {"frames": frames, "episodes": len(returns), "mean_return_last10": sum(recent) / max(len(recent), 1), **metrics}
