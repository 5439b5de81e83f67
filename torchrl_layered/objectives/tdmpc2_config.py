"""TD-MPC2 hyperparameters as one plain, editable dict, with the paper's model-size presets."""
from __future__ import annotations

import copy
import math
from typing import Any

from torchrl_layered.objectives.discount import check_discount_per
from torchrl_layered.modules.precision import autocast_dtype

#: Widths and depths per model size (millions of parameters), as in Hansen et al. (2024).
MODEL_SIZES: dict[int, dict[str, int]] = {
    1: dict(enc_dim=256, mlp_dim=384, latent_dim=128, num_enc_layers=2, num_q=2),
    5: dict(enc_dim=256, mlp_dim=512, latent_dim=512, num_enc_layers=2, num_q=5),
    19: dict(enc_dim=1024, mlp_dim=1024, latent_dim=768, num_enc_layers=3, num_q=5),
    48: dict(enc_dim=1792, mlp_dim=1792, latent_dim=768, num_enc_layers=4, num_q=5),
    317: dict(enc_dim=4096, mlp_dim=4096, latent_dim=1376, num_enc_layers=5, num_q=8),
}

_DEFAULTS: dict[str, Any] = {
    # architecture (None: taken from the model_size preset)
    "model_size": 5,
    "enc_dim": None,
    "mlp_dim": None,
    "latent_dim": None,
    "num_enc_layers": None,
    "num_q": None,
    "simnorm_dim": 8,
    "dropout": 0.01,
    "num_bins": 101,
    "vmin": -10.0,
    "vmax": 10.0,
    "log_std_min": -10.0,
    "log_std_max": 2.0,
    # learning
    "batch_size": 256,
    "horizon": 3,
    "rho": 0.5,
    "lr": 3e-4,
    "enc_lr_scale": 0.3,
    "grad_clip_norm": 20.0,
    "tau": 0.01,
    "consistency_coef": 20.0,
    "reward_coef": 0.1,
    "value_coef": 0.1,
    "termination_coef": 0.05,
    "entropy_coef": 1e-4,  # weighs the action-size-scaled log-prob of `TDMPC2WorldModel.pi`, as officially
    "gamma": 0.99,  # per env step, as every level's gamma (see objectives/discount.py)
    "discount_per": "env_step",
    "buffer_size": 1_000_000,
    "episodic": True,
    # planning (MPPI)
    "mpc": True,
    "num_iterations": 6,
    "num_samples": 512,  # candidates per iteration, the num_pi_trajs policy-prior rollouts included
    "num_elites": 64,
    "num_pi_trajs": 24,
    "min_std": 0.05,
    "max_std": 2.0,
    "temperature": 2.0,  # divides the scores, as MPPIPlanner's (official TD-MPC2's 0.5 multiplies them)
    # speed
    "compile": False,  # compile the planning estimate (`TDMPC2Level.estimate_value`) with torch.compile
    "planning_dtype": "float32",  # "bfloat16": plan under autocast (`modules.precision`), for AMX CPUs and GPUs
    "update_dtype": "float32",  # "bfloat16": the update's loss forward under autocast (`modules.precision`)
}


def get_default_tdmpc2_config() -> dict[str, Any]:
    """A fresh copy of the default config; edit it freely (e.g. ``cfg["gamma"] = 0.95``)."""
    return copy.deepcopy(_DEFAULTS)


#: Official TD-MPC2 / LayeredRL names of entries, accepted in a config and renamed (LayeredRL's
#: ``discount_factor`` is a one-element list).
SPELLINGS = {"discount_factor": "gamma", "discount": "gamma", "iterations": "num_iterations"}


def _rename_spellings(config: dict[str, Any]) -> dict[str, Any]:
    config = dict(config)
    for old, new in SPELLINGS.items():
        if old not in config:
            continue
        value = config.pop(old)
        if isinstance(value, (list, tuple)):
            if len(value) != 1:
                raise ValueError(f"{old} must hold one value (single task); got {list(value)}")
            value = value[0]
        # a config from get_default_tdmpc2_config() carries the default under the new name
        if new in config and config[new] not in (value, _DEFAULTS[new]):
            raise ValueError(f"TD-MPC2 config sets both {new}={config[new]!r} and {old}={value!r} ({old} is "
                             f"another name for {new}); keep {new}")
        config[new] = value
    return config


def resolve_tdmpc2_config(config: dict[str, Any] | None = None, **overrides) -> dict[str, Any]:
    """Fills unset architecture entries from the ``model_size`` preset and checks the values.

    Accepts a dict or an OmegaConf config; returns a plain dict.
    """
    cfg = get_default_tdmpc2_config()
    if config is not None:
        if hasattr(config, "items") and not isinstance(config, dict):
            from omegaconf import OmegaConf

            config = OmegaConf.to_container(config, resolve=True)
        config = _rename_spellings(dict(config))
        unknown = set(config) - set(cfg)
        if unknown:
            raise ValueError(f"unknown TD-MPC2 config entries {sorted(unknown)}; known: {sorted(cfg)}")
        cfg.update(copy.deepcopy(dict(config)))
    cfg.update(overrides)
    if cfg["model_size"] not in MODEL_SIZES:
        raise ValueError(f"model_size must be one of {sorted(MODEL_SIZES)}; got {cfg['model_size']!r}")
    for key, value in MODEL_SIZES[cfg["model_size"]].items():
        if cfg[key] is None:
            cfg[key] = value
    cfg["gamma"] = float(cfg["gamma"])
    if not 0.0 < cfg["gamma"] <= 1.0:
        raise ValueError(f"gamma must lie in (0, 1]; got {cfg['gamma']}")
    if not 0 < cfg["temperature"] < math.inf:
        raise ValueError(f"temperature must be a finite number > 0; got {cfg['temperature']}")
    check_discount_per(cfg["discount_per"], "TD-MPC2 config")
    if cfg["latent_dim"] % cfg["simnorm_dim"]:
        raise ValueError(f"latent_dim ({cfg['latent_dim']}) must be a multiple of simnorm_dim ({cfg['simnorm_dim']})")
    if cfg["horizon"] < 1:
        raise ValueError(f"horizon must be >= 1; got {cfg['horizon']}")
    for key in ("num_samples", "num_elites", "num_pi_trajs"):
        if isinstance(cfg[key], bool) or not isinstance(cfg[key], int):  # as the planners check
            raise TypeError(f"{key} must be an int; got {cfg[key]!r}")
    if not 1 <= cfg["num_elites"] <= cfg["num_samples"]:
        raise ValueError(f"num_elites must lie in [1, num_samples={cfg['num_samples']}]; got {cfg['num_elites']}")
    if not 0 <= cfg["num_pi_trajs"] <= cfg["num_samples"] - cfg["num_elites"]:
        raise ValueError(
            f"num_pi_trajs must lie in [0, num_samples - num_elites] = [0, {cfg['num_samples'] - cfg['num_elites']}]: "
            f"num_samples={cfg['num_samples']} counts the policy-prior rollouts too, and the sampled rest must hold "
            f"num_elites={cfg['num_elites']}; got num_pi_trajs={cfg['num_pi_trajs']}"
        )
    if not isinstance(cfg["compile"], bool):
        raise TypeError(f"compile must be a bool; got {cfg['compile']!r}")
    autocast_dtype(cfg["planning_dtype"], "TD-MPC2 config")
    autocast_dtype(cfg["update_dtype"], "TD-MPC2 config", "update_dtype")
    return cfg


def cpu_tdmpc2_config(**overrides) -> dict[str, Any]:
    """A TD-MPC2 config small enough to train on a CPU; ``overrides`` win.

    The ``model_size`` 1 preset narrowed to MLPs of 128, a latent of 32 and an encoder of 64
    (2-D maze skills need no more; each update costs about a quarter of the 256/64 variant),
    batches of 64 sub-trajectories of 3 steps, and a lighter MPPI (128 samples, 3 iterations).
    """
    cfg = get_default_tdmpc2_config()
    cfg.update(model_size=1, enc_dim=64, mlp_dim=128, latent_dim=32, num_q=2, batch_size=64, horizon=3,
               num_samples=128, num_iterations=3, num_elites=16, num_pi_trajs=8)
    cfg.update(overrides)
    return cfg
