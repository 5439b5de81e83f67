"""Levels: the layers of a hierarchy, each a TensorDict module."""
from torchrl_layered.levels.base import Level, LevelKeys
from torchrl_layered.levels.dads import DADSLevel
from torchrl_layered.levels.planner import PlannerLevel
from torchrl_layered.levels.simple import ActionSequenceLevel, ConstantLevel, RandomLevel
from torchrl_layered.levels.skill import SkillLevel
from torchrl_layered.levels.splates import SPlaTESLevel
from torchrl_layered.levels.tdmpc2 import TDMPC2Level

__all__ = [
    "Level", "LevelKeys", "PlannerLevel", "TDMPC2Level", "SkillLevel", "DADSLevel", "SPlaTESLevel",
    "RandomLevel", "ConstantLevel", "ActionSequenceLevel",
]

# TianshouLevel imports tianshou (about a second), so it loads on first use
_TIANSHOU_EXPORTS = {
    "TianshouLevel": "torchrl_layered.levels.tianshou",
    "default_sac_config": "torchrl_layered.levels.tianshou_config",
    "default_dqn_config": "torchrl_layered.levels.tianshou_config",
    "FusedAdamOptimizerFactory": "torchrl_layered.levels.tianshou_adam",
}
__all__ += list(_TIANSHOU_EXPORTS)


def __getattr__(name: str):
    if name in _TIANSHOU_EXPORTS:
        import importlib

        return getattr(importlib.import_module(_TIANSHOU_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
