"""``python -m torchrl_layered.train``: trains a hierarchy from a Hydra command line.

    python -m torchrl_layered.train                                   # planner on Pendulum
    python -m torchrl_layered.train hierarchy=random env=maze2d_medium collector.total_frames=20000
    python -m torchrl_layered.train resume=outputs/planner-pendulum/<date>   # continue a run

Config groups: ``hierarchy=`` (the registered hierarchies; options ``hierarchy.kwargs.*``, with
the factory's defaults), ``env=`` (configs/env/), ``logger=`` (configs/logger/); every other key
and its default is declared in `TrainConfig` (trainers/config.py). A bad value, an unusable
checkpoint or a run folder already in use stops the app with one line, ``error: <key> ...``, and
exit code 2, before anything is built or written; a run whose state goes non-finite stops with
one line and exit code 3.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from torchrl_layered.levels.validation import InvalidDataError
from torchrl_layered.trainers import train
from torchrl_layered.trainers.checkpoint import CheckpointError
from torchrl_layered.trainers.config import (
    GROUPS,
    ConfigError,
    compose_config,
    group_options,
    parse_config,
    register_configs,
)
from torchrl_layered.trainers.finite import RunStoppedError
from torchrl_layered.trainers.trainer import check_output_dir, read_resume

#: The exit code of a run refused for a bad setting, checkpoint or run folder.
EXIT_BAD_CONFIG = 2
#: The exit code of a run stopped because its state went non-finite or a level refused its data.
EXIT_RUN_STOPPED = 3

# train.yaml's defaults list names ConfigStore nodes (TrainConfig's defaults, one per registered
# hierarchy): they must be stored before Hydra composes; `main` stores them again, so that a
# hierarchy registered after this import is an option too.
register_configs()


def check_overrides(overrides: list[str]) -> str | None:
    """Composes and checks the config of command-line ``overrides``; returns a one-line message if it is bad.

    It runs before Hydra starts the job, so a bad value (or an unusable ``resume=``
    checkpoint, or a ``hydra.run.dir=`` that already holds a run) stops the app before
    anything is built or written. Hydra reports an unknown config-group option or key in
    several lines; this says it in one, naming the key. Flags (``--help``, ``-m``, ...) are
    left to Hydra.
    """
    if any(arg.startswith("-") for arg in overrides):
        return None
    for arg in overrides:
        key, sep, value = arg.partition("=")
        key = key.lstrip("+~")
        if sep and key in GROUPS and value and not any(c in value for c in ",[]()"):
            options = group_options(key)
            if value not in options:
                return f"{key}={value} is not a known {key} config; choose one of: {', '.join(options)}"
    try:
        cfg = compose_config(overrides)
    except Exception as err:  # noqa: BLE001 - Hydra's own message, made one line
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        detail = next((line for line in lines[1:] if line.startswith("Key ")), "")
        return " ".join(filter(None, [lines[0] if lines else type(err).__name__, detail]))
    try:
        run_dir = _run_dir(overrides)
        if run_dir is not None:
            check_output_dir(run_dir)
        read_resume(parse_config(cfg))
    except (ConfigError, CheckpointError) as err:
        return str(err)
    return None


def _run_dir(overrides: list[str]) -> Path | None:
    """The ``hydra.run.dir=`` given on the command line, if it is a plain path."""
    for arg in overrides:
        key, _, value = arg.partition("=")
        if key.lstrip("+~") == "hydra.run.dir" and value and "${" not in value:
            return Path(value)
    return None


def fail(message: str, code: int = EXIT_BAD_CONFIG) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def _remove_if_unused(output_dir: Path, log_name: str) -> None:
    """Removes a run folder that holds only what Hydra wrote before the job, and the empty folders above it."""
    hydra_files = {".hydra", log_name}
    if not output_dir.is_dir() or not {p.name for p in output_dir.iterdir()} <= hydra_files:
        return
    shutil.rmtree(output_dir)
    cwd = Path.cwd().resolve()
    for parent in output_dir.resolve().parents:
        if cwd not in parent.parents:
            break
        try:
            parent.rmdir()
        except OSError:  # not empty
            break


@hydra.main(config_path="configs", config_name="train", version_base="1.3")
def run(cfg: DictConfig) -> None:
    hydra_config = HydraConfig.get()
    output_dir = Path(hydra_config.runtime.output_dir)
    try:
        train(cfg, output_dir)
    except (ConfigError, CheckpointError) as err:
        _remove_if_unused(output_dir, f"{hydra_config.job.name}.log")
        fail(str(err))
    except (RunStoppedError, InvalidDataError) as err:
        fail(" ".join(str(err).split()), EXIT_RUN_STOPPED)


def main() -> None:
    register_configs()
    message = check_overrides(sys.argv[1:])
    if message is not None:
        fail(message)
    run()


if __name__ == "__main__":
    main()
