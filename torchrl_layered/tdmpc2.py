"""TD-MPC2 configuration under LayeredRL's path: ``get_default_tdmpc2_config()`` and the model-size presets.

The config lives with the TD-MPC2 loss, in `torchrl_layered.objectives.tdmpc2_config`.
"""
from torchrl_layered.objectives.tdmpc2_config import MODEL_SIZES, get_default_tdmpc2_config, resolve_tdmpc2_config

__all__ = ["MODEL_SIZES", "get_default_tdmpc2_config", "resolve_tdmpc2_config"]
