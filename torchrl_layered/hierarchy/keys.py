"""Names of the per-level entries that a hierarchy keeps in the tensordict.

Level ``k`` (0 = top) keeps its option state under ``("levels", "k", name)`` so that any
number of levels share one tensordict without clashes, and TorchRL's ``step_mdp`` carries the
state from one step to the next like any other state entry.
"""
from __future__ import annotations

from tensordict.utils import NestedKey

LEVELS = "levels"

ACTION = "action"
LEVEL_DONE = "level_done"
ACTING = "acting"
STEPS = "steps"
DURATION = "duration"
OPTION_REWARD = "option_reward"
START_OBSERVATION = "start_observation"

#: Entries of level k's option state, carried between env steps by the transform.
STATE_NAMES = (ACTION, LEVEL_DONE, ACTING, STEPS, DURATION, OPTION_REWARD, START_OBSERVATION)


def level_key(index: int, name: str) -> NestedKey:
    """The nested key of entry ``name`` of level ``index``."""
    return (LEVELS, str(index), name)
