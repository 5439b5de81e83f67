"""``python -m torchrl_layered.train``: trains a hierarchy from a Hydra command line.

    python -m torchrl_layered.train                                   # planner on Pendulum
    python -m torchrl_layered.train hierarchy=random env=maze2d_medium collector.total_frames=20000
    python -m torchrl_layered.train resume=outputs/planner-pendulum/<date>   # continue a run

Config groups: ``hierarchy=`` (configs/hierarchy/), ``env=`` (configs/env/), ``logger=``
(configs/logger/). A bad value stops the app with one line, ``error: <key> ...``, and exit
code 2, before anything is built.
"""
from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from torchrl_layered.trainers import train
from torchrl_layered.trainers.checkpoint import CheckpointError
from torchrl_layered.trainers.config import CONFIG_DIR, ConfigError, compose_config, parse_config
from torchrl_layered.trainers.trainer import read_resume

#: The exit code of a run refused for a bad setting or checkpoint.
EXIT_BAD_CONFIG = 2


def check_overrides(overrides: list[str]) -> str | None:
    """Composes and checks the config of command-line ``overrides``; returns a one-line message if it is bad.

    It runs before Hydra starts the job, so a bad value (or an unusable ``resume=``
    checkpoint) stops the app before anything is built or written. Hydra reports an unknown
    config-group option or key in several lines; this says it in one, naming the key.
    Flags (``--help``, ``-m``, ...) are left to Hydra.
    """
    if any(arg.startswith("-") for arg in overrides):
        return None
    for arg in overrides:
        key, sep, value = arg.partition("=")
        key = key.lstrip("+~")
        group = CONFIG_DIR / key
        if sep and group.is_dir() and value and not any(c in value for c in ",[]()"):
            options = sorted(p.stem for p in group.glob("*.yaml"))
            if value not in options:
                return f"{key}={value} is not a known {key} config; choose one of: {', '.join(options)}"
    try:
        cfg = compose_config(overrides)
    except Exception as err:  # noqa: BLE001 - Hydra's own message, made one line
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        detail = next((line for line in lines[1:] if line.startswith("Key ")), "")
        return " ".join(filter(None, [lines[0] if lines else type(err).__name__, detail]))
    try:
        read_resume(parse_config(cfg))
    except (ConfigError, CheckpointError) as err:
        return str(err)
    return None


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(EXIT_BAD_CONFIG)


@hydra.main(config_path="configs", config_name="train", version_base="1.3")
def run(cfg: DictConfig) -> None:
    try:
        train(cfg, Path(HydraConfig.get().runtime.output_dir))
    except (ConfigError, CheckpointError) as err:
        fail(str(err))


def main() -> None:
    message = check_overrides(sys.argv[1:])
    if message is not None:
        fail(message)
    run()


if __name__ == "__main__":
    main()
