"""TD-MPC2 configuration: ``get_default_tdmpc2_config()`` and the model-size presets."""
from torchrl_layered.tdmpc2.config import MODEL_SIZES, get_default_tdmpc2_config, resolve_tdmpc2_config

__all__ = ["MODEL_SIZES", "get_default_tdmpc2_config", "resolve_tdmpc2_config"]
