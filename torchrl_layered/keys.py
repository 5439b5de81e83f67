"""Names of the tensordict entries that levels, the hierarchy and its transitions share.

They live below all three so that each reads the same names: the option state that the
hierarchy's transform carries in a collector's batch, and the layout of the semi-MDP
transitions that `Hierarchy.transitions` hands each level.

Flags and counters of all levels are stacked along a last dim of size ``num_levels``
(column ``k`` = level ``k``, 0 = top) under ``"levels"``: a handful of tensors whatever the
depth, so carrying them costs little. What differs in shape from level to level (the held
action, the option's start observation) lives under ``("levels", "k", name)``.
"""
from __future__ import annotations

from tensordict.utils import NestedKey

LEVELS = "levels"

#: Where collectors write the id of each episode (unique across workers).
TRAJ_IDS = ("collector", "traj_ids")

# stacked [*B, num_levels]
ACTING = "acting"
LEVEL_DONE = "level_done"
STEPS = "steps"
DURATION = "duration"
OPTION_REWARD = "option_reward"
OPTION_INDEX = "option_index"
STACKED_NAMES = (ACTING, LEVEL_DONE, STEPS, DURATION, OPTION_REWARD, OPTION_INDEX)

# per level
ACTION = "action"
START_OBSERVATION = "start_observation"
LEVEL_STATE = "state"


# a level's semi-MDP transitions (`Hierarchy.transitions`), beside observation, level_input, action, next
#: The env instance a transition comes from (flat over the batch's leading dims).
INSTANCE = "instance"
#: The level's own carried entries (`Level.get_state_spec`) as they were when it chose the action.
TRANSITION_STATE = "level_state"
#: Env steps the option lasted.
NEXT_DURATION = ("next", DURATION)


def stacked_key(name: str) -> NestedKey:
    """The key of the ``[*B, num_levels]`` tensor ``name`` (e.g. ``("levels", "acting")``)."""
    return (LEVELS, name)


def level_key(index: int, name: str) -> NestedKey:
    """The key of level ``index``'s own entry ``name`` (e.g. ``("levels", "0", "action")``)."""
    return (LEVELS, str(index), name)
