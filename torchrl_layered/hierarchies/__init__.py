"""Ready-made hierarchies, registered by name for the training app (``hierarchy=NAME``)."""
from torchrl_layered.hierarchies.registry import HIERARCHIES, make_hierarchy, register_hierarchy
from torchrl_layered.hierarchies.skills import cpu_tdmpc2_config, planner_over_dads, planner_over_splates
from torchrl_layered.hierarchies.standard import (
    dqn_hierarchy,
    planner_hierarchy,
    random_hierarchy,
    sac_hierarchy,
    tdmpc2_hierarchy,
)

__all__ = [
    "HIERARCHIES", "make_hierarchy", "register_hierarchy", "cpu_tdmpc2_config", "planner_over_splates",
    "planner_over_dads", "random_hierarchy", "planner_hierarchy", "tdmpc2_hierarchy", "sac_hierarchy", "dqn_hierarchy",
]
