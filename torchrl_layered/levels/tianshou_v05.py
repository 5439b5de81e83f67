"""LayeredRL's Tianshou 0.5 config shape, translated into the Tianshou 2.x layout `TianshouLevel` builds.

LayeredRL configs build one 0.5 policy that also learns: ``policy`` (a partial of e.g.
``tianshou.policy.SACPolicy``) is called with ``policy_dynamic_args``, whose placeholders name
the networks (``__actor__``, ``__critic_<i>__``) and torch optimisers built from ``optims``
(``__actor_optim__``, ``__critic_optim_<i>__``). Tianshou 2.x splits that object into a
``Policy`` (acting) and an ``Algorithm`` (learning, with optimiser *factories*). This module
maps one onto the other: class paths, argument names (``critic1`` -> ``critic``,
``discount_factor`` -> ``gamma``, ``estimation_step`` -> ``n_step_return_horizon``, ...),
optimisers, LayeredRL's ``alpha`` and ``eps`` entries and its ``layeredrl.nets`` networks.
What 2.x cannot express is refused with the reason.
"""
from __future__ import annotations

import copy
from typing import Any, Mapping

#: 0.5 (and LayeredRL) classes moved or renamed in Tianshou 2.x.
CLASS_RENAMES = {
    "tianshou.utils.net.continuous.ActorProb": "tianshou.utils.net.continuous.ContinuousActorProbabilistic",
    "tianshou.utils.net.continuous.Actor": "tianshou.utils.net.continuous.ContinuousActorDeterministic",
    "tianshou.utils.net.continuous.Critic": "tianshou.utils.net.continuous.ContinuousCritic",
    "tianshou.utils.net.discrete.Actor": "tianshou.utils.net.discrete.DiscreteActor",
    "tianshou.utils.net.discrete.Critic": "tianshou.utils.net.discrete.DiscreteCritic",
    "layeredrl.nets.ConcatNet": "torchrl_layered.nets.ConcatNet",
    "layeredrl.nets.Critic": "torchrl_layered.nets.Critic",
}

_SAC_ALGORITHM_ARGS = {"actor_optim": "policy_optim", "critic1": "critic", "critic1_optim": "critic_optim",
                       "critic2": "critic2", "critic2_optim": "critic2_optim", "tau": "tau", "gamma": "gamma",
                       "alpha": "alpha", "estimation_step": "n_step_return_horizon"}
_TD3_ALGORITHM_ARGS = {**{k: v for k, v in _SAC_ALGORITHM_ARGS.items() if k != "alpha"},
                       "policy_noise": "policy_noise", "update_actor_freq": "update_actor_freq",
                       "noise_clip": "noise_clip"}

#: 0.5 policy -> (2.x policy, 2.x algorithm, the 0.5 arguments the 2.x policy takes,
#: 0.5 argument -> 2.x algorithm argument).
POLICIES: dict[str, tuple[str, str, tuple[str, ...], dict[str, str]]] = {
    "tianshou.policy.SACPolicy": (
        "tianshou.algorithm.modelfree.sac.SACPolicy", "tianshou.algorithm.SAC",
        ("actor", "exploration_noise", "deterministic_eval", "action_scaling", "action_space"),
        _SAC_ALGORITHM_ARGS),
    "tianshou.policy.DiscreteSACPolicy": (
        "tianshou.algorithm.modelfree.discrete_sac.DiscreteSACPolicy", "tianshou.algorithm.DiscreteSAC",
        ("actor", "deterministic_eval", "action_space"),
        _SAC_ALGORITHM_ARGS),
    "tianshou.policy.TD3Policy": (
        "tianshou.algorithm.modelfree.ddpg.ContinuousDeterministicPolicy", "tianshou.algorithm.TD3",
        ("actor", "exploration_noise", "action_scaling", "action_bound_method", "action_space"),
        _TD3_ALGORITHM_ARGS),
    "tianshou.policy.DDPGPolicy": (
        "tianshou.algorithm.modelfree.ddpg.ContinuousDeterministicPolicy", "tianshou.algorithm.DDPG",
        ("actor", "exploration_noise", "action_scaling", "action_bound_method", "action_space"),
        {"actor_optim": "policy_optim", "critic": "critic", "critic_optim": "critic_optim", "tau": "tau",
         "gamma": "gamma", "estimation_step": "n_step_return_horizon"}),
    "tianshou.policy.DQNPolicy": (
        "tianshou.algorithm.modelfree.dqn.DiscreteQLearningPolicy", "tianshou.algorithm.DQN",
        ("model", "action_space"),
        {"optim": "optim", "discount_factor": "gamma", "estimation_step": "n_step_return_horizon",
         "target_update_freq": "target_update_freq", "is_double": "is_double", "clip_loss_grad": "huber_loss_delta"}),
}
#: 0.5 on-policy policies: their 2.x algorithm, named in the refusal.
ON_POLICY = {"PGPolicy": "Reinforce", "A2CPolicy": "A2C", "PPOPolicy": "PPO", "NPGPolicy": "NPG",
             "TRPOPolicy": "TRPO"}
#: 0.5 arguments with no 2.x counterpart that are harmless at their default.
_DROPPED_AT_DEFAULT = {"reward_normalization": False, "lr_scheduler": None, "observation_space": None}

_OPTIMIZER_FACTORIES = {
    "torch.optim.Adam": "torchrl_layered.levels.tianshou_adam.FusedAdamOptimizerFactory",
    "torch.optim.RMSprop": "tianshou.algorithm.optim.RMSpropOptimizerFactory",
}


def is_v05_config(config: Mapping) -> bool:
    """Whether ``config`` has LayeredRL's 0.5 shape (``policy_dynamic_args`` or ``optims``)."""
    return "policy_dynamic_args" in config or "optims" in config


def replacement_hint(target: str) -> str | None:
    """What replaces a 0.5-only class path in Tianshou 2.x (``None`` if it is not one)."""
    if target in POLICIES:
        policy, algorithm, _, _ = POLICIES[target]
        return f"{target} is Tianshou 0.5; in 2.x it is a policy, {policy}, learning with an algorithm, {algorithm}"
    if target in CLASS_RENAMES:
        return f"{target} is Tianshou 0.5 / LayeredRL; use {CLASS_RENAMES[target]}"
    name = target.rsplit(".", 1)[-1]
    if target.startswith("tianshou.policy.") and name in ON_POLICY:
        return (f"{target} is Tianshou 0.5; in 2.x it is tianshou.algorithm.{ON_POLICY[name]}, an on-policy "
                "algorithm, which TianshouLevel does not support")
    if target.startswith("tianshou.policy."):
        return f"{target} is Tianshou 0.5; 2.x policies live in tianshou.algorithm.* (see tianshou.algorithm.__all__)"
    return None


def _optimizer_factory(entry: Any, path: str) -> dict:
    if not isinstance(entry, Mapping) or "_target_" not in entry:
        raise ValueError(f"tianshou_config.{path} must be an optimiser entry such as {{_target_: torch.optim.Adam, lr: 1e-3}}")
    kwargs = {k: v for k, v in entry.items() if k not in ("_target_", "_partial_", "params")}
    target = entry["_target_"]
    if target in _OPTIMIZER_FACTORIES:
        return {"_target_": _OPTIMIZER_FACTORIES[target], **kwargs}
    if str(target).startswith("tianshou.algorithm.optim."):
        return dict(entry)
    return {"_target_": "tianshou.algorithm.optim.TorchOptimizerFactory",
            "optim_class": {"_target_": "hydra.utils.get_class", "path": target}, **kwargs}


def _mapping(value: Any, name: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"tianshou_config.{name} must be a mapping; got {type(value).__name__}")
    return dict(value)


def _rename_classes(node: Any) -> Any:
    if isinstance(node, Mapping):
        out = {k: _rename_classes(v) for k, v in node.items()}
        target = out.get("_target_")
        if isinstance(target, str) and target in CLASS_RENAMES:
            out["_target_"] = CLASS_RENAMES[target]
        if "_target_" in out and not str(out["_target_"]).startswith("torchrl_layered."):
            out.pop("device", None)  # 2.x networks take no device; the level moves them
        return out
    if isinstance(node, list):
        return [_rename_classes(v) for v in node]
    return node


def _alpha(entry: Mapping) -> dict:
    missing = {"initial_log_alpha", "optim"} - set(entry)
    if missing:
        raise ValueError(f"tianshou_config.alpha needs initial_log_alpha, optim and target_entropy; missing {sorted(missing)}")
    target_entropy = entry.get("target_entropy", "__target_entropy__")
    if not isinstance(target_entropy, (int, float)):
        target_entropy = "__target_entropy__"
    return {"_target_": "tianshou.algorithm.modelfree.sac.AutoAlpha", "target_entropy": target_entropy,
            "log_alpha": float(entry["initial_log_alpha"]), "optim": _optimizer_factory(entry["optim"], "alpha.optim")}


def from_v05_config(config: Mapping) -> dict:
    """The Tianshou 2.x config (`TianshouLevel`'s layout) equivalent to a LayeredRL / Tianshou 0.5 one.

    Raises:
        ValueError: a policy class with no off-policy 2.x counterpart, an argument 2.x has no
            place for (``reward_normalization=True``, ``lr_scheduler``,
            ``learning_rate_schedule``), or a malformed ``optims`` / ``alpha`` entry.
    """
    config = _rename_classes(copy.deepcopy(dict(config)))
    if "learning_rate_schedule" in config:
        raise ValueError("tianshou_config.learning_rate_schedule (LayeredRL) has no TianshouLevel counterpart: give "
                         "the optimiser factory an lr scheduler instead (tianshou.algorithm.optim.LRSchedulerFactory*)")
    policy_entry = _mapping(config.pop("policy", None), "policy")
    target = policy_entry.pop("_target_", None)
    policy_entry.pop("_partial_", None)
    if target not in POLICIES:
        hint = replacement_hint(str(target)) or f"{target!r} is not a Tianshou 0.5 policy this translation knows"
        raise ValueError(f"tianshou_config.policy: {hint}. Known: {', '.join(POLICIES)}; or write the 2.x layout "
                         "(see default_sac_config())")
    policy_class, algorithm_class, policy_args, algorithm_args = POLICIES[target]
    dynamic = _mapping(config.pop("policy_dynamic_args", None), "policy_dynamic_args")
    arguments = {**policy_entry, **dynamic}

    optims = _mapping(config.pop("optims", None), "optims")
    n_critics = config.get("n_critics", 1)
    n_critics = n_critics if isinstance(n_critics, int) and not isinstance(n_critics, bool) else 1  # check_config refuses it
    placeholders = {}
    if "actor_optim" in optims:
        placeholders["__actor_optim__"] = _optimizer_factory(optims["actor_optim"], "optims.actor_optim")
    if "critic_optim" in optims:
        factory = _optimizer_factory(optims["critic_optim"], "optims.critic_optim")
        placeholders.update({f"__critic_optim_{i}__": dict(factory) for i in range(n_critics)})
    alpha = config.pop("alpha", None)
    if alpha is not None:
        placeholders["__alpha__"] = _alpha(alpha)

    policy: dict[str, Any] = {"_target_": policy_class}
    algorithm: dict[str, Any] = {"_target_": algorithm_class, "policy": "__policy__"}
    for name, value in arguments.items():
        value = placeholders.get(value, value) if isinstance(value, str) else value
        if name in policy_args:
            policy[name] = value
        elif name in algorithm_args:
            if name == "clip_loss_grad":
                value = 1.0 if value else None  # 0.5 clipped the loss gradient with a unit Huber loss
            algorithm[algorithm_args[name]] = value
        elif name in _DROPPED_AT_DEFAULT and value == _DROPPED_AT_DEFAULT[name]:
            continue
        else:
            raise ValueError(f"tianshou_config: {target} argument {name}={value!r} has no Tianshou 2.x counterpart in "
                             f"{policy_class} or {algorithm_class}; remove it")
    policy.setdefault("action_space", "__action_space__")
    policy["observation_space"] = "__observation_space__"
    config["policy"], config["algorithm"] = policy, algorithm

    eps = config.pop("eps", None)
    if eps is not None:  # LayeredRL sets one constant epsilon
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0.0 <= eps <= 1.0:
            raise ValueError(f"tianshou_config.eps must be a number in [0, 1] (a constant epsilon); got {eps!r}")
        config["exploration"] = {"eps_start": float(eps), "eps_end": float(eps), "eps_decay_steps": 0}
    return config
