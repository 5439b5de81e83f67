"""``python -m torchrl_layered.train``: trains a hierarchy from a Hydra command line.

    python -m torchrl_layered.train hierarchy=random env=pendulum collector.total_frames=20000
"""
from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from torchrl_layered.trainers import train


@hydra.main(config_path="configs", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    train(cfg, Path(HydraConfig.get().runtime.output_dir))


if __name__ == "__main__":
    main()
