"""Tianshou configs for `TianshouLevel`: layout, placeholders, checks, building and defaults.

A config is a dict (or an OmegaConf / Hydra config) whose objects are ``_target_`` entries
for `hydra.utils.instantiate`. Its top-level keys:

* **components** (``actor``, ``critic``, ``model``, or any other name): a mapping with a
  ``_target_`` (typically a network), built first, in the order they appear. ``__<name>__``
  refers to the built object in every later entry. ``critic`` is built ``n_critics`` times
  (separate instances): ``__critic_0__``, ``__critic_1__``, ...
* ``n_critics``: how many critics to build from ``critic`` (default 1).
* ``policy`` (optional): the tianshou `Policy`, built after the components; ``__policy__``
  refers to it. It may instead be written inline as ``algorithm.policy``.
* ``algorithm`` (required): the tianshou algorithm (``SAC``, ``DQN``, ``TD3``, ...), built
  last. Its optimisers are ``OptimizerFactory`` entries (``AdamOptimizerFactory``, ...).
* ``exploration`` (optional, epsilon-greedy policies such as DQN's): ``eps_start``,
  ``eps_end``, ``eps_decay_steps``: epsilon decays linearly over that many env steps.
* Any other key without ``_target_`` is ignored (a place for values to interpolate,
  e.g. ``hidden_sizes: [64, 64]`` and ``${hidden_sizes}``).

Before building, exact-match strings are replaced, recursively through dicts and lists.
From the level's specs (the policy sees one flat vector: the observation, then the level
input, one-hot when it is discrete):

==========================  ===============================================================
``__obs_dim__``             flat observation size + level-input size (the network input)
``__obs_shape__``           ``[__obs_dim__]``
``__action_dim__``          flat action size (Box), or the number of actions (discrete)
``__action_shape__``        the action shape as a list (Box), or the number of actions
``__num_actions__``         the number of actions (discrete action specs only)
``__action_space__``        a gymnasium ``Box`` (Bounded) or ``Discrete`` (Categorical)
``__observation_space__``   ``Box(-inf, inf, [__obs_dim__])``: what the policy sees
``__target_entropy__``      ``-action_dim`` (Box) or ``0.98 * log(n)`` (discrete)
``__device__``              the device of the action spec, as a string
==========================  ===============================================================

LayeredRL's network placeholders are filled too (for `torchrl_layered.nets.ConcatNet`):
``__mapped_env_obs_shape__`` (the observation shape), ``__level_input_dim__`` (the level
input's width) and ``__level_state_dims__`` (``{}``: the policy sees no level state). A config
in LayeredRL's Tianshou 0.5 shape (``optims``, ``policy_dynamic_args``) is translated first
(`torchrl_layered.levels.tianshou_v05`).

and the objects built earlier: ``__actor__``, ``__critic_<i>__``, ``__model__``, any other
``__<component>__``, and ``__policy__``. Networks are built on the CPU and moved to
the level's device afterwards. Example (SAC; see `default_sac_config` for the full one)::

    actor:  {_target_: tianshou.utils.net.continuous.ContinuousActorProbabilistic,
             preprocess_net: {_target_: tianshou.utils.net.common.Net, state_shape: __obs_dim__,
                              hidden_sizes: [64, 64]},
             action_shape: __action_shape__, unbounded: true, conditioned_sigma: true}
    critic: {_target_: tianshou.utils.net.continuous.ContinuousCritic,
             preprocess_net: {_target_: tianshou.utils.net.common.Net, state_shape: __obs_dim__,
                              action_shape: __action_shape__, hidden_sizes: [64, 64], concat: true}}
    n_critics: 2
    policy: {_target_: tianshou.algorithm.modelfree.sac.SACPolicy, actor: __actor__,
             action_space: __action_space__, observation_space: __observation_space__}
    algorithm: {_target_: tianshou.algorithm.SAC, policy: __policy__, critic: __critic_0__,
                critic2: __critic_1__, policy_optim: {_target_: ...AdamOptimizerFactory, lr: 1.0e-3},
                critic_optim: {...}, critic2_optim: {...}, gamma: 0.99, tau: 0.005}
"""
from __future__ import annotations

import contextlib
import copy
import math
import re
import threading
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import gymnasium as gym
import numpy as np
import torch
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from tianshou.algorithm.algorithm_base import Policy
from torchrl.data import Bounded, Categorical, TensorSpec

from torchrl_layered.levels.tianshou_v05 import from_v05_config, is_v05_config, replacement_hint

#: Top-level keys with a fixed meaning (everything else is a component or a plain value).
RESERVED_KEYS = ("policy", "algorithm", "n_critics", "exploration")
#: Components that must be objects (a ``_target_`` entry) when present.
OBJECT_COMPONENTS = ("actor", "critic", "model")
#: Keys of the ``exploration`` section.
EXPLORATION_KEYS = ("eps_start", "eps_end", "eps_decay_steps")
#: Placeholders filled from the level's specs (see the module docstring).
SPEC_PLACEHOLDERS = (
    "__obs_dim__",
    "__obs_shape__",
    "__action_dim__",
    "__action_shape__",
    "__num_actions__",
    "__action_space__",
    "__observation_space__",
    "__target_entropy__",
    "__device__",
    "__mapped_env_obs_shape__",
    "__level_input_dim__",
    "__level_state_dims__",
)
_PLACEHOLDER = re.compile(r"__[A-Za-z0-9_]+__")


@dataclass
class BuildPlan:
    """What a checked config builds, in order.

    Attributes:
        components: names of the top-level components, in build order (``critic`` once).
        n_critics: how many critics are built from ``critic``.
        exploration: the epsilon schedule, or ``None``.
    """

    components: list[str]
    n_critics: int
    exploration: dict[str, float] | None


# --------------------------------------------------------------------------- helpers
def to_plain_config(config: Any) -> dict:
    """A deep, plain-``dict`` copy of a dict or OmegaConf config (interpolations resolved).

    A config in LayeredRL's Tianshou 0.5 shape comes back translated to the 2.x layout.
    """
    if isinstance(config, DictConfig):
        config = OmegaConf.to_container(config, resolve=True)
    if isinstance(config, Mapping):
        return from_v05_config(config) if is_v05_config(config) else copy.deepcopy(dict(config))
    raise TypeError(
        f"tianshou_config must be a dict or an OmegaConf DictConfig; got {type(config).__name__} "
        "(e.g. TianshouLevel(tianshou_config=default_sac_config()))"
    )


def _walk(node: Any, path: str) -> Iterator[tuple[str, Any]]:
    """Yields ``(key_path, value)`` for every node, through dicts and lists."""
    yield path, node
    if isinstance(node, Mapping):
        for key, value in node.items():
            yield from _walk(value, f"{path}.{key}")
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from _walk(value, f"{path}[{i}]")


def is_placeholder(value: Any) -> bool:
    return isinstance(value, str) and _PLACEHOLDER.fullmatch(value) is not None


def substitute(node: Any, values: Mapping[str, Any]) -> Any:
    """Replaces exact-match placeholder strings found in ``values``, through dicts and lists."""
    if isinstance(node, Mapping):
        return {key: substitute(value, values) for key, value in node.items()}
    if isinstance(node, list):
        return [substitute(value, values) for value in node]
    if isinstance(node, str) and node in values:
        return values[node]
    return node


def _has_target(node: Any) -> bool:
    return isinstance(node, Mapping) and "_target_" in node


def _locate(target: Any, path: str) -> Any:
    if not isinstance(target, str):
        return target
    try:
        return get_class(target)
    except Exception as err:  # hydra raises ImportError/ValueError variants
        hint = replacement_hint(target)
        reason = hint if hint is not None else f"it cannot be imported ({err})"
        raise ValueError(f"tianshou_config: {path}._target_ = {target!r}: {reason}") from None


# --------------------------------------------------------------------------- checks
def check_config(config: dict) -> BuildPlan:
    """Checks a plain config before any spec is known; returns what it builds.

    Raises:
        ValueError: a missing ``algorithm``, a component or optimiser without ``_target_``,
            an unknown placeholder or one used before its object is built, a bad
            ``exploration`` section, an on-policy algorithm, or an n-step horizon > 1.
    """
    if "algorithm" not in config:
        raise ValueError(
            "tianshou_config has no 'algorithm' entry: add one with a _target_, e.g. "
            "algorithm: {_target_: tianshou.algorithm.SAC, ...} (see default_sac_config())"
        )
    for name in ("algorithm", "policy", *OBJECT_COMPONENTS):
        if name in config and not _has_target(config[name]):
            raise ValueError(
                f"tianshou_config.{name} has no '_target_': give the class to build, e.g. "
                f"{name}: {{_target_: {_EXAMPLE_TARGETS[name]}, ...}}"
            )
    for path, value in _walk(config, "tianshou_config"):
        hint = replacement_hint(value) if path.endswith("._target_") and isinstance(value, str) else None
        if hint is not None:
            raise ValueError(f"{path}: {hint}")
    components = [k for k, v in config.items() if k not in RESERVED_KEYS and _has_target(v)]
    for name in components:
        if f"__{name}__" in SPEC_PLACEHOLDERS or name.startswith("critic_"):
            raise ValueError(f"tianshou_config.{name}: this component name clashes with a placeholder; rename it")
    n_critics = config.get("n_critics", 1)
    if not isinstance(n_critics, int) or isinstance(n_critics, bool) or n_critics < 1:
        raise ValueError(f"tianshou_config.n_critics must be a positive int; got {n_critics!r}")
    if "n_critics" in config and "critic" not in config:
        raise ValueError("tianshou_config sets n_critics but has no 'critic' entry to build them from")
    exploration = _check_exploration(config.get("exploration"))

    # each entry may refer to the spec placeholders and to the objects built before it
    known = set(SPEC_PLACEHOLDERS)
    for name in [*components, *(["policy"] if "policy" in config else []), "algorithm"]:
        _check_entry(config[name], name, known, n_critics)
        if name == "critic":
            known |= {f"__critic_{i}__" for i in range(n_critics)}
        else:
            known.add(f"__{name}__")

    _check_algorithm_class(config["algorithm"])
    return BuildPlan(components=components, n_critics=n_critics, exploration=exploration)


_EXAMPLE_TARGETS = {
    "algorithm": "tianshou.algorithm.SAC",
    "policy": "tianshou.algorithm.modelfree.sac.SACPolicy",
    "actor": "tianshou.utils.net.continuous.ContinuousActorProbabilistic",
    "critic": "tianshou.utils.net.continuous.ContinuousCritic",
    "model": "tianshou.utils.net.common.Net",
}


def _check_entry(entry: dict, name: str, known: set[str], n_critics: int) -> None:
    for path, value in _walk(entry, name):
        if is_placeholder(value) and value not in known:
            raise ValueError(f"tianshou_config.{path}: {_unknown_placeholder_hint(value, known, n_critics)}")
        key = path.rsplit(".", 1)[-1]
        if key.endswith("optim") and isinstance(value, Mapping) and "_target_" not in value:
            raise ValueError(
                f"tianshou_config.{path} has no '_target_': an optimiser is a factory entry, e.g. "
                "{_target_: tianshou.algorithm.optim.AdamOptimizerFactory, lr: 1.0e-3}"
            )


def _unknown_placeholder_hint(value: str, known: set[str], n_critics: int) -> str:
    match = re.fullmatch(r"__critic_(\d+)__", value)
    if match and "__critic_0__" in known:
        return (
            f"{value} does not exist: n_critics={n_critics} builds __critic_0__..__critic_{n_critics - 1}__; "
            f"set n_critics: {int(match.group(1)) + 1}"
        )
    later = value[2:-2]
    objects = sorted(k for k in known if k not in SPEC_PLACEHOLDERS)
    return (
        f"unknown placeholder {value!r} (or it refers to {later!r}, which is not built before this entry). "
        f"Spec placeholders: {', '.join(SPEC_PLACEHOLDERS)}; objects built so far: {', '.join(objects) or 'none'}. "
        "Components are built in config order, then policy, then algorithm."
    )


def _check_exploration(section: Any) -> dict[str, float] | None:
    if section is None:
        return None
    if not isinstance(section, Mapping) or set(section) != set(EXPLORATION_KEYS):
        got = sorted(section) if isinstance(section, Mapping) else type(section).__name__
        raise ValueError(f"tianshou_config.exploration needs exactly the keys {list(EXPLORATION_KEYS)}; got {got}")
    start, end, steps = (section[k] for k in EXPLORATION_KEYS)
    if not (0.0 <= end <= 1.0 and 0.0 <= start <= 1.0) or steps < 0:
        raise ValueError(
            f"tianshou_config.exploration: eps_start and eps_end must lie in [0, 1] and eps_decay_steps >= 0; got {dict(section)}"
        )
    return {k: float(section[k]) for k in EXPLORATION_KEYS}


def _check_algorithm_class(entry: dict) -> None:
    from tianshou.algorithm.algorithm_base import Algorithm, OnPolicyAlgorithm

    cls = _locate(entry["_target_"], "algorithm")
    if isinstance(cls, type) and issubclass(cls, OnPolicyAlgorithm):
        raise ValueError(
            f"TianshouLevel does not support on-policy algorithms ({cls.__name__}): they learn from whole "
            "trajectories just collected by the current policy (returns/GAE over consecutive steps of each "
            "instance, with the log-probs of acting time), while a level learns from a replay buffer of "
            "semi-MDP transitions that mixes instances and old policies. Use an off-policy algorithm "
            "(SAC, TD3, DDPG, DQN, ...)."
        )
    if isinstance(cls, type) and not issubclass(cls, Algorithm):
        raise ValueError(f"tianshou_config.algorithm._target_ must be a tianshou Algorithm; got {cls.__name__}")
    horizon = entry.get("n_step_return_horizon", 1)
    if horizon != 1:
        raise ValueError(
            f"tianshou_config.algorithm.n_step_return_horizon = {horizon}: TianshouLevel supports 1 only; "
            "its buffer holds single semi-MDP transitions (not consecutive steps), discounted with gamma ** duration"
        )


# --------------------------------------------------------------------------- building
def input_features_dim(input_spec: TensorSpec | None) -> int:
    """Width of the level input in the policy's input vector (one-hot for Categorical)."""
    if input_spec is None:
        return 0
    if isinstance(input_spec, Categorical):
        return int(input_spec.n) * max(1, int(input_spec.shape.numel()))
    return int(input_spec.shape.numel())


def spec_placeholders(observation_spec: TensorSpec, action_spec: TensorSpec, input_spec: TensorSpec | None) -> dict:
    """The values of the spec placeholders for a level (see the module docstring)."""
    obs_dim = int(observation_spec.shape.numel()) + input_features_dim(input_spec)
    device = action_spec.device if action_spec.device is not None else torch.device("cpu")
    values = {
        "__obs_dim__": obs_dim,
        "__obs_shape__": [obs_dim],
        "__observation_space__": gym.spaces.Box(-np.inf, np.inf, shape=(obs_dim,), dtype=np.float32),
        "__device__": str(device),
        "__mapped_env_obs_shape__": list(observation_spec.shape),
        "__level_input_dim__": input_features_dim(input_spec),
        "__level_state_dims__": {},
    }
    if isinstance(action_spec, Categorical):
        n = int(action_spec.n)
        values.update({
            "__action_dim__": n,
            "__action_shape__": n,
            "__num_actions__": n,
            "__action_space__": gym.spaces.Discrete(n),
            "__target_entropy__": 0.98 * math.log(n),
        })
    elif isinstance(action_spec, Bounded):
        low = action_spec.space.low.detach().cpu().numpy().astype(np.float32)
        high = action_spec.space.high.detach().cpu().numpy().astype(np.float32)
        values.update({
            "__action_dim__": int(action_spec.shape.numel()),
            "__action_shape__": list(action_spec.shape),
            "__action_space__": gym.spaces.Box(low, high, shape=tuple(action_spec.shape), dtype=np.float32),
            "__target_entropy__": -float(action_spec.shape.numel()),
        })
    else:
        raise TypeError(f"TianshouLevel supports Bounded and Categorical action specs; got {type(action_spec).__name__}")
    return values


def _instantiate(entry: dict, name: str) -> Any:
    try:
        return instantiate(entry, _convert_="all")
    except InstantiationException as err:
        raise ValueError(f"tianshou_config.{name}: could not build {entry.get('_target_')!r}: {err}") from err


_WARM_UP_LOCK = threading.RLock()  # re-entrant: a component may build a level of its own


@contextlib.contextmanager
def no_return_warm_up():
    """Tianshou's ``Policy.__init__`` compiles its numba GAE and n-step return kernels, ~1.8 s
    in each new process. A level computes its targets with `SMDPReturn` and takes no on-policy
    algorithm, so neither kernel runs; inside this context that eager compile is skipped (numba
    compiles a kernel on its first call, should anything call one later)."""
    with _WARM_UP_LOCK:  # read and swap under the lock: another thread's swap is never taken for tianshou's
        original = Policy.__dict__.get("_compile")
        if original is None:  # a tianshou without the warm-up
            yield
            return
        Policy._compile = staticmethod(_no_warm_up)
        try:
            yield
        finally:
            Policy._compile = original


def _no_warm_up() -> None:
    """`Policy._compile` while a level builds its algorithm (`no_return_warm_up`)."""


def build(config: dict, plan: BuildPlan, values: dict) -> tuple[Any, dict[str, Any]]:
    """Builds the components, the policy and the algorithm of a checked config.

    Returns ``(algorithm, built)`` where ``built`` maps each placeholder name to its object.
    Tianshou's eager compile of return kernels the level never calls is skipped (`no_return_warm_up`).
    """
    for path, value in _walk(config, "tianshou_config"):
        if value in SPEC_PLACEHOLDERS and value not in values:
            kind = "discrete (Categorical)" if value == "__num_actions__" else "supported"
            raise ValueError(f"{path}: {value} needs a {kind} action spec; use __action_dim__ / __action_shape__")
    config = substitute(config, values)
    built: dict[str, Any] = {}
    with no_return_warm_up():
        for name in plan.components:
            if name == "critic":
                for i in range(plan.n_critics):
                    built[f"__critic_{i}__"] = _instantiate(substitute(config["critic"], built), f"critic (#{i})")
            else:
                built[f"__{name}__"] = _instantiate(substitute(config[name], built), name)
        if "policy" in config:
            built["__policy__"] = _instantiate(substitute(config["policy"], built), "policy")
        algorithm = _instantiate(substitute(config["algorithm"], built), "algorithm")
    return algorithm, built


# --------------------------------------------------------------------------- defaults
_NET = "tianshou.utils.net.common.Net"
_ADAM = "torchrl_layered.levels.tianshou_adam.FusedAdamOptimizerFactory"


def default_sac_config(
    *,
    hidden_sizes: tuple[int, ...] | list[int] = (64, 64),
    lr: float = 1e-3,
    gamma: float = 0.99,
    tau: float = 0.02,
    alpha: float | str = "auto",
    n_critics: int = 2,
) -> dict:
    """A SAC config (a plain dict; the same as ``configs/level/sac.yaml`` by default).

    Args:
        hidden_sizes: widths of the actor's and critics' hidden layers.
        lr: Adam learning rate of the actor, the critics and the entropy temperature.
        gamma: discount per env step (a level discounts an option with ``gamma ** duration``).
        tau: Polyak coefficient of the target critics.
        alpha: ``"auto"`` (tuned towards ``-action_dim`` entropy) or a fixed temperature.
        n_critics: critics built from ``critic`` (SAC uses two: ``__critic_0__``, ``__critic_1__``).
    """
    hidden = list(hidden_sizes)
    adam = {"_target_": _ADAM, "lr": lr}
    if alpha == "auto":
        alpha_entry: Any = {
            "_target_": "tianshou.algorithm.modelfree.sac.AutoAlpha",
            "target_entropy": "__target_entropy__",
            "log_alpha": 0.0,
            "optim": dict(adam),
        }
    else:
        alpha_entry = float(alpha)
    return {
        "actor": {
            "_target_": "tianshou.utils.net.continuous.ContinuousActorProbabilistic",
            "preprocess_net": {"_target_": _NET, "state_shape": "__obs_dim__", "hidden_sizes": hidden},
            "action_shape": "__action_shape__",
            "unbounded": True,
            "conditioned_sigma": True,
        },
        "critic": {
            "_target_": "tianshou.utils.net.continuous.ContinuousCritic",
            "preprocess_net": {
                "_target_": _NET,
                "state_shape": "__obs_dim__",
                "action_shape": "__action_shape__",
                "hidden_sizes": list(hidden),
                "concat": True,
            },
        },
        "n_critics": n_critics,
        "policy": {
            "_target_": "tianshou.algorithm.modelfree.sac.SACPolicy",
            "actor": "__actor__",
            "action_space": "__action_space__",
            "observation_space": "__observation_space__",
        },
        "algorithm": {
            "_target_": "tianshou.algorithm.SAC",
            "policy": "__policy__",
            "policy_optim": dict(adam),
            "critic": "__critic_0__",
            "critic_optim": dict(adam),
            "critic2": "__critic_1__" if n_critics > 1 else None,
            "critic2_optim": dict(adam),
            "tau": tau,
            "gamma": gamma,
            "alpha": alpha_entry,
        },
    }


def default_dqn_config(
    *,
    hidden_sizes: tuple[int, ...] | list[int] = (64, 64),
    lr: float = 1e-3,
    gamma: float = 0.995,
    target_update_freq: int = 20,
    is_double: bool = True,
    huber_loss_delta: float | None = None,
    eps_start: float = 1.0,
    eps_end: float = 0.05,
    eps_decay_steps: int = 5000,
) -> dict:
    """A DQN config (a plain dict; the same as ``configs/level/dqn.yaml`` by default).

    Args:
        hidden_sizes: widths of the Q-network's hidden layers.
        lr: Adam learning rate.
        gamma: discount per env step (a level discounts an option with ``gamma ** duration``).
            0.995 rather than 0.99: on CartPole-v1 the runs that failed at 0.99 balanced the pole
            and drove the cart off the track (at x = -2.4 after 170-410 steps, pole upright), a
            failure too far ahead for 0.99 to weigh (`benchmarks/results/dqn_cartpole.md`).
        target_update_freq: updates between copies of the Q-network into the target network
            (a short period: Q has to grow to about ``1 / (1 - gamma)`` one copy at a time).
        is_double: double DQN targets (online argmax, target-network value).
        huber_loss_delta: the Huber loss threshold (``None``: squared loss).
        eps_start, eps_end, eps_decay_steps: epsilon-greedy exploration, decaying linearly
            from ``eps_start`` to ``eps_end`` over ``eps_decay_steps`` env steps.
    """
    return {
        "model": {
            "_target_": _NET,
            "state_shape": "__obs_dim__",
            "action_shape": "__num_actions__",
            "hidden_sizes": list(hidden_sizes),
        },
        "policy": {
            "_target_": "tianshou.algorithm.modelfree.dqn.DiscreteQLearningPolicy",
            "model": "__model__",
            "action_space": "__action_space__",
            "observation_space": "__observation_space__",
        },
        "algorithm": {
            "_target_": "tianshou.algorithm.DQN",
            "policy": "__policy__",
            "optim": {"_target_": _ADAM, "lr": lr},
            "gamma": gamma,
            "target_update_freq": target_update_freq,
            "is_double": is_double,
            "huber_loss_delta": huber_loss_delta,
        },
        "exploration": {"eps_start": eps_start, "eps_end": eps_end, "eps_decay_steps": eps_decay_steps},
    }
