"""The training app's settings as one typed object, checked before anything is built.

Every default is declared once: the app's settings in the dataclasses below (`TrainConfig`
and its sections, each key with its docstring), a hierarchy's options in its factory's
signature (`torchrl_layered.hierarchies`). `register_configs` stores them in Hydra's
``ConfigStore`` (``train_defaults`` and the ``hierarchy`` group), which ``configs/train.yaml``
composes with the ``env`` and ``logger`` groups. `parse_config` turns the composed config into
a `TrainConfig` and refuses a bad value with a `ConfigError` whose message starts with the
key (``collector.total_frames must be > 0; got -5``), so the command line can print one line
instead of a traceback.
"""
from __future__ import annotations

import importlib.util
import inspect
from dataclasses import MISSING, Field, asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

#: The app's Hydra config folder (``train.yaml`` and the groups ``env/`` and ``logger/``; the
#: ``hierarchy`` group and ``train_defaults`` are stored by `register_configs`).
CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
#: The app's config groups (``hierarchy=NAME`` etc. on the command line).
GROUPS = ("hierarchy", "env", "logger")
#: The ``ConfigStore`` name of the node holding the dataclasses' defaults (first in train.yaml's defaults list).
DEFAULTS_NODE = "train_defaults"
#: The logger backends the app knows, and the package each needs.
LOGGER_PACKAGES = {"csv": None, "tensorboard": "tensorboard", "wandb": "wandb"}


class ConfigError(ValueError):
    """A bad setting; the message names the key: ``collector.total_frames must be > 0; got -5``."""


@dataclass
class EnvConfig:
    """The environment to train and evaluate on."""

    name: str
    """A registered gymnasium id (``Pendulum-v1``, ``Maze2D-Medium-v0``, ...)."""
    max_episode_steps: int | None = None
    """Overrides the env's time limit; ``None`` keeps the registered one."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Further keyword arguments of ``gym.make``."""


@dataclass
class HierarchyConfig:
    """Which ready-made hierarchy to build (`torchrl_layered.trainers.HIERARCHIES`)."""

    name: str
    """The registry name, e.g. ``random`` or ``planner``."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of the hierarchy's factory function."""


@dataclass
class CollectorConfig:
    """How data is collected."""

    num_envs: int = 4
    """Env instances stepped together (the batch of the env), in each worker."""
    frames_per_batch: int = 400
    """Env steps (over all instances and workers) per collector batch, a multiple of ``num_envs``
    times ``workers``: the levels update after each batch."""
    total_frames: int = 3200
    """Env steps to train for, over the whole run (a resumed run counts from the checkpoint)."""
    asynchronous: bool = False
    """Step the instances in subprocesses, one each (gymnasium ``AsyncVectorEnv``)."""
    backend: str = "local"
    """Where the envs are stepped and the hierarchy acts: ``local`` (this process),
    ``multiprocess`` (subprocesses: ``MultiSyncCollector``), ``ray`` (actors of a Ray cluster:
    ``RayCollector``; ``pip install 'torchrl-layered[ray]'``) or ``distributed`` (torch.distributed
    workers over gloo: ``DistributedCollector``). Learning and evaluation stay in this process,
    which sends the workers the levels' weights after each batch."""
    workers: int = 1
    """Processes (Ray actors) stepping ``num_envs`` instances each; 1 with ``backend=local``."""
    sync: bool = True
    """With workers: each batch holds every worker's share (``false``: whole batches as each worker
    delivers them, ``MultiAsyncCollector`` for ``multiprocess``)."""
    backend_kwargs: dict[str, Any] = field(default_factory=dict)
    """Further keyword arguments of the backend's TorchRL collector, e.g. ``ray_init_config:
    {address: auto}`` to join a running Ray cluster, or ``launcher: submitit`` and ``slurm_kwargs``
    for torch.distributed workers on Slurm."""


@dataclass
class EvalConfig:
    """Periodic evaluation in eval mode on a separate env."""

    episodes: int = 4
    """Episodes per evaluation, one per eval env instance; 0 turns evaluation off."""
    interval_frames: int = 800
    """Evaluate at the start and every this many training frames; 0: at the start and the end only."""
    max_steps: int = 10_000
    """Stop an evaluation after this many steps, even if some episodes have not ended."""


@dataclass
class CheckpointConfig:
    """Checkpoints written under ``<run dir>/checkpoints/frames_<N>/``."""

    interval_frames: int = 1600
    """Save every this many frames, and always at the end; 0: at the end only."""
    save_buffers: bool = False
    """Also save the levels' replay buffers (TorchRL ``dumps``), so a resumed run keeps its data."""
    keep: int = 2
    """How many of the latest checkpoints to keep (at least 1)."""


@dataclass
class LoggerConfig:
    """Where scalars go: a TorchRL logger."""

    backend: str = "csv"
    """``csv``, ``tensorboard`` or ``wandb``; chosen with ``logger=NAME`` (``configs/logger/``)."""
    project: str = "torchrl_layered"
    """The wandb project (ignored by the other backends)."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Further keyword arguments of the backend (``wandb.init`` for wandb, e.g. ``mode: offline``)."""


@dataclass
class TrainConfig:
    """Everything ``python -m torchrl_layered.train`` needs; the defaults here are the app's defaults.

    ``hierarchy`` and ``env`` have none of their own: they come from the config groups
    (``hierarchy=planner``, ``env=pendulum`` unless chosen otherwise).
    """

    hierarchy: HierarchyConfig
    """The hierarchy to train (``hierarchy=NAME``, options ``hierarchy.kwargs.*``)."""
    env: EnvConfig
    """The environment (``env=NAME``, see ``configs/env/``)."""
    collector: CollectorConfig = field(default_factory=CollectorConfig)
    """Data collection."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Evaluation."""
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    """Checkpoints."""
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    """Logging."""
    seed: int = 0
    """Seeds torch, numpy, python and the envs."""
    device: str = "cpu"
    """Where the levels run and the env writes its tensors (``cpu``, ``cuda``, ``cuda:N``)."""
    resume: str | None = None
    """A checkpoint folder, a ``checkpoints/`` folder or a run folder to continue from."""
    resume_override: bool = False
    """On ``resume``, apply settings that differ from the checkpoint's run (other than `RESUMABLE`)
    instead of refusing them: new hyperparameters, env options or seed for the continued run."""
    progress_bar: bool = True
    """Show a tqdm progress bar."""
    num_threads: int | None = 1
    """``torch.set_num_threads``: the small nets of these levels run fastest on one thread;
    ``None`` (``num_threads=null``) keeps torch's default."""


#: Keys (fnmatch patterns of the flattened config) that may differ from the checkpoint's run on
#: ``resume``: they extend or observe the run; any other difference needs ``resume_override=true``.
RESUMABLE = (
    "collector.total_frames", "collector.asynchronous", "collector.backend", "collector.sync",
    "collector.backend_kwargs.*", "eval.*", "checkpoint.*", "logger.*",
    "progress_bar", "num_threads", "device", "resume", "resume_override",
)


#: The config sections and the dataclass that declares each one's keys.
SECTIONS = {
    "hierarchy": HierarchyConfig, "env": EnvConfig, "collector": CollectorConfig, "eval": EvalConfig,
    "checkpoint": CheckpointConfig, "logger": LoggerConfig,
}


# ---------------------------------------------------------------------- Hydra's ConfigStore
def _field_default(f: Field) -> Any:
    """A dataclass field's default (a fresh one from its factory); ``MISSING`` if it has none."""
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING


def _plain(value: Any) -> Any:
    """``value`` as plain config data (dataclasses as dicts, tuples as lists); ``MISSING`` if it is not plain."""
    if is_dataclass(value) and not isinstance(value, type):
        value = asdict(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        items = [_plain(v) for v in value]
        return MISSING if any(v is MISSING for v in items) else items
    if isinstance(value, Mapping):
        items = {str(k): _plain(v) for k, v in value.items()}
        return MISSING if any(v is MISSING for v in items.values()) else items
    return MISSING


def train_defaults() -> dict[str, Any]:
    """`TrainConfig`'s defaults as a plain dict: every key that has one (not ``hierarchy``, ``env``: their groups')."""
    defaults = {f.name: _field_default(f) for f in fields(TrainConfig)}
    return {name: _plain(value) for name, value in defaults.items() if value is not MISSING}


def hierarchy_defaults(factory: Any) -> dict[str, Any]:
    """A hierarchy factory's options and their defaults, read from its signature (tuples as lists).

    The first parameter (the env) is left out, and so are ``*args``/``**kwargs``, options
    without a default and options whose default is not plain config data (a callable, say):
    the factory keeps those, and ``+hierarchy.kwargs.NAME=...`` still sets them.
    """
    params = list(inspect.signature(factory).parameters.values())[1:]
    defaults = {p.name: _plain(p.default) for p in params
                if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.default is not p.empty}
    return {name: value for name, value in defaults.items() if value is not MISSING}


def register_configs() -> None:
    """Stores the app's defaults in Hydra's ``ConfigStore``; idempotent, called before every composition.

    Stores `DEFAULTS_NODE`, `train_defaults` as a plain (untyped) config, so that `parse_config`,
    not a Hydra schema, refuses a bad value in one line; and one node per registered hierarchy in
    the ``hierarchy`` group, ``{name: NAME, kwargs: <the factory's keyword defaults>}``
    (`hierarchy_defaults`), so that ``hierarchy=NAME`` selects it and
    ``hierarchy.kwargs.OPTION=value`` sets any option without ``+``. A hierarchy registered later
    with `register_hierarchy` is selectable too, if it is registered before the app composes its
    config: before `compose_config`, or before ``torchrl_layered.train.main()`` (both call this).
    """
    from hydra.core.config_store import ConfigStore

    from torchrl_layered.hierarchies import HIERARCHIES

    store = ConfigStore.instance()
    store.store(name=DEFAULTS_NODE, node=train_defaults(), provider="torchrl_layered")
    for name, factory in HIERARCHIES.items():
        node = {"name": name, "kwargs": hierarchy_defaults(factory)}
        store.store(group="hierarchy", name=name, node=node, provider="torchrl_layered")


def group_options(group: str) -> list[str]:
    """The options of a config group (``hierarchy``, ``env``, ``logger``): its YAML files and ``ConfigStore`` nodes."""
    from hydra.core.config_store import ConfigStore

    register_configs()
    options = {p.stem for p in (CONFIG_DIR / group).glob("*.yaml")}
    try:
        options.update(name.removesuffix(".yaml") for name in ConfigStore.instance().list(group))
    except OSError:  # no node in that group
        pass
    return sorted(options)


# ---------------------------------------------------------------------- checks
def _get(section: Mapping, key: str, schema: type) -> Any:
    """``section[key]``, or the default ``schema`` (a config dataclass) declares for a key left out."""
    if key in section:
        return section[key]
    default = _field_default(next(f for f in fields(schema) if f.name == key))
    return None if default is MISSING else default


def _known_keys(section: Mapping, key: str, schema: type) -> None:
    """Refuses a key that ``schema`` (a config dataclass) does not declare, naming the known ones."""
    known = [f.name for f in fields(schema)]
    for name in section:
        if name not in known and not (schema is TrainConfig and name == "hydra"):
            where = f"{key}.{name}" if key else name
            section_name = f"the keys of {key}" if key else "the top-level keys"
            raise ConfigError(f"{where} is not a known key; {section_name} are: {', '.join(known)}")


def _int(value: Any, key: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key} must be an integer; got {value!r}")
    if value < minimum:
        bound = "> 0" if minimum == 1 else f">= {minimum}"
        raise ConfigError(f"{key} must be {bound}; got {value}")
    return value


def _bool(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false; got {value!r}")
    return value


def _str(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key} must be a non-empty string; got {value!r}")
    return value


def _dict(value: Any, key: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key} must be a mapping of keyword arguments; got {value!r}")
    return dict(value)


def _section(cfg: Mapping, key: str) -> Mapping:
    value = cfg.get(key)
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key} is missing or not a section; got {value!r}")
    return value


def _check_env(section: Mapping) -> EnvConfig:
    import gymnasium as gym

    import torchrl_layered.envs  # noqa: F401  (registers the Maze2D ids)

    name = _str(_get(section, "name", EnvConfig), "env.name")
    if name not in gym.registry:
        mazes = sorted(k for k in gym.registry if k.startswith("Maze2D"))
        raise ConfigError(
            f"env.name {name!r} is not a registered gymnasium env; pick a config with env=NAME "
            f"(see configs/env/) or a registered id such as Pendulum-v1 or {mazes[0] if mazes else 'CartPole-v1'}"
        )
    steps = _get(section, "max_episode_steps", EnvConfig)
    if steps is not None:
        steps = _int(steps, "env.max_episode_steps", 1)
    return EnvConfig(name=name, max_episode_steps=steps, kwargs=_dict(_get(section, "kwargs", EnvConfig), "env.kwargs"))


def _check_hierarchy(section: Mapping) -> HierarchyConfig:
    from torchrl_layered.hierarchies import HIERARCHIES
    from torchrl_layered.trainers.options import check_hierarchy_kwargs, check_option_values

    name = _str(_get(section, "name", HierarchyConfig), "hierarchy.name")
    if name not in HIERARCHIES:
        raise ConfigError(f"hierarchy.name {name!r} is not a known hierarchy; choose one of {sorted(HIERARCHIES)}")
    kwargs = _dict(_get(section, "kwargs", HierarchyConfig), "hierarchy.kwargs")
    check_hierarchy_kwargs(name, kwargs)
    check_option_values(name, HIERARCHIES[name], kwargs)
    return HierarchyConfig(name=name, kwargs=kwargs)


def _check_device(value: Any) -> str:
    import torch

    device = _str(value, "device")
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError(f"device must be a torch device such as cpu, cuda or cuda:1; got {device!r}") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} asks for CUDA, but torch.cuda.is_available() is False here")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ConfigError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif parsed.type not in ("cpu", "mps"):
        raise ConfigError(f"device must be cpu or cuda[:N]; got {device!r}")
    return device


def _check_backend(section: Mapping) -> tuple[str, int]:
    """``collector.backend`` and ``collector.workers``, the backend's package checked for."""
    from torchrl_layered.collectors import BACKENDS, backend_collector_cls

    backend = _str(_get(section, "backend", CollectorConfig), "collector.backend")
    if backend not in BACKENDS:
        raise ConfigError(f"collector.backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    workers = _int(_get(section, "workers", CollectorConfig), "collector.workers", 1)
    if backend == "local" and workers != 1:
        raise ConfigError(f"collector.workers={workers} needs a backend with workers: collector.backend=multiprocess, "
                          "ray or distributed")
    try:
        backend_collector_cls(backend)
    except ImportError as err:
        raise ConfigError(f"collector.backend={backend}: {err}") from None
    return backend, workers


#: Collector arguments the app sets from its own keys; ``collector.backend_kwargs`` may not repeat them.
APP_COLLECTOR_ARGUMENTS = {"frames_per_batch": "collector.frames_per_batch", "total_frames": "collector.total_frames",
                           "device": "device", "sync": "collector.sync", "backend": "collector.backend",
                           "workers": "collector.workers"}


def _check_backend_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    for name in kwargs:
        if name in APP_COLLECTOR_ARGUMENTS:
            raise ConfigError(f"collector.backend_kwargs.{name} is set by the app from {APP_COLLECTOR_ARGUMENTS[name]}; "
                              "set that key instead")
    return kwargs


def _check_logger(section: Mapping) -> LoggerConfig:
    backend = _str(_get(section, "backend", LoggerConfig), "logger.backend")
    if backend not in LOGGER_PACKAGES:
        raise ConfigError(f"logger.backend must be one of {sorted(LOGGER_PACKAGES)}; got {backend!r}")
    package = LOGGER_PACKAGES[backend]
    if package is not None and importlib.util.find_spec(package) is None:
        raise ConfigError(f"logger.backend {backend!r} needs the {package} package: pip install {package}")
    return LoggerConfig(
        backend=backend,
        project=_str(_get(section, "project", LoggerConfig), "logger.project"),
        kwargs=_dict(_get(section, "kwargs", LoggerConfig), "logger.kwargs"),
    )


def compose_config(overrides: Sequence[str] = ()):
    """The app's config (a ``DictConfig``) composed from command-line style ``overrides``, without running it.

    For notebooks and tests: ``train(compose_config(["env=maze2d_open"]), "outputs/run")``.
    ``hydra.*`` overrides are ignored (they only matter to the command line).
    """
    from hydra import compose, initialize_config_dir

    register_configs()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=[o for o in overrides if not o.lstrip("+~").startswith("hydra.")])


def parse_config(cfg: Mapping) -> TrainConfig:
    """Checks a composed config (a ``DictConfig`` or a plain mapping) and returns the typed settings.

    Raises:
        ConfigError: naming the first bad key, before anything is built.
    """
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    _known_keys(cfg, "", TrainConfig)
    for key, schema in SECTIONS.items():
        if isinstance(cfg.get(key), Mapping):
            _known_keys(cfg[key], key, schema)
    collector = _section(cfg, "collector")
    num_envs = _int(_get(collector, "num_envs", CollectorConfig), "collector.num_envs", 1)
    frames_per_batch = _int(_get(collector, "frames_per_batch", CollectorConfig), "collector.frames_per_batch", 1)
    backend, workers = _check_backend(collector)
    if frames_per_batch % (num_envs * workers):
        times = f" x collector.workers={workers}" if workers > 1 else ""
        raise ConfigError(
            f"collector.frames_per_batch must be a multiple of collector.num_envs={num_envs}{times}; "
            f"got {frames_per_batch}"
        )
    collector_config = CollectorConfig(
        num_envs=num_envs,
        frames_per_batch=frames_per_batch,
        total_frames=_int(_get(collector, "total_frames", CollectorConfig), "collector.total_frames", 1),
        asynchronous=_bool(_get(collector, "asynchronous", CollectorConfig), "collector.asynchronous"),
        backend=backend,
        workers=workers,
        sync=_bool(_get(collector, "sync", CollectorConfig), "collector.sync"),
        backend_kwargs=_check_backend_kwargs(_dict(_get(collector, "backend_kwargs", CollectorConfig),
                                                   "collector.backend_kwargs")),
    )
    evaluation = _section(cfg, "eval")
    eval_config = EvalConfig(
        episodes=_int(_get(evaluation, "episodes", EvalConfig), "eval.episodes", 0),
        interval_frames=_int(_get(evaluation, "interval_frames", EvalConfig), "eval.interval_frames", 0),
        max_steps=_int(_get(evaluation, "max_steps", EvalConfig), "eval.max_steps", 1),
    )
    checkpoint = _section(cfg, "checkpoint")
    checkpoint_config = CheckpointConfig(
        interval_frames=_int(_get(checkpoint, "interval_frames", CheckpointConfig), "checkpoint.interval_frames", 0),
        save_buffers=_bool(_get(checkpoint, "save_buffers", CheckpointConfig), "checkpoint.save_buffers"),
        keep=_int(_get(checkpoint, "keep", CheckpointConfig), "checkpoint.keep", 1),
    )
    resume = _get(cfg, "resume", TrainConfig)
    if resume is not None:
        resume = _str(resume, "resume")
        if not Path(resume).exists():
            raise ConfigError(f"resume path {resume!r} does not exist")
    num_threads = _get(cfg, "num_threads", TrainConfig)
    return TrainConfig(
        logger=_check_logger(_section(cfg, "logger")),
        collector=collector_config,
        eval=eval_config,
        checkpoint=checkpoint_config,
        seed=_int(_get(cfg, "seed", TrainConfig), "seed", 0),
        device=_check_device(_get(cfg, "device", TrainConfig)),
        resume=resume,
        resume_override=_bool(_get(cfg, "resume_override", TrainConfig), "resume_override"),
        progress_bar=_bool(_get(cfg, "progress_bar", TrainConfig), "progress_bar"),
        num_threads=None if num_threads is None else _int(num_threads, "num_threads", 1),
        env=_check_env(_section(cfg, "env")),
        hierarchy=_check_hierarchy(_section(cfg, "hierarchy")),
    )
