"""Turns a batch of primitive env steps into one level's semi-MDP transitions."""
from __future__ import annotations

from typing import Callable

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.utils import NestedKey

from torchrl_layered.keys import (
    ACTING,
    DURATION,
    INSTANCE,
    OPTION_INDEX,
    OPTION_REWARD,
    TRAJ_IDS,
    TRANSITION_STATE,
    stacked_key,
)
from torchrl_layered.errors import InvalidDataError


def next_key(key: NestedKey) -> tuple:
    """``key`` under ``"next"``."""
    return ("next", *((key,) if isinstance(key, str) else key))


def check_option_state(batch: TensorDictBase, num_levels: int, level_keys: list[NestedKey]) -> None:
    """Refuses a batch that was not collected by a hierarchy of ``num_levels`` levels with its transform.

    ``level_keys`` are the entries the levels' transitions are read from (their held actions
    and start observations). Raises `InvalidDataError` saying what is missing and how to fix it.
    """
    how = ("collect with the hierarchy's transform: TransformedEnv(env, hierarchy.make_transform()), "
           "Collector(..., auto_register_policy_transforms=True) (TorchRL 0.13 and later), or "
           "torchrl_layered.collectors.make_collector(env, hierarchy, ...)")
    stacked = [("next", *stacked_key(name)) for name in (ACTING, DURATION, OPTION_REWARD)] + [stacked_key(OPTION_INDEX)]
    for key in stacked:
        value = batch.get(key, None)
        if value is None:
            raise InvalidDataError(f"Hierarchy.transitions: the batch has no option state {key!r}; {how}")
        if value.shape[-1] != num_levels or value.shape[:-1] != batch.batch_size:
            raise InvalidDataError(
                f"Hierarchy.transitions: the batch's option state {key!r} has shape {tuple(value.shape)}, not "
                f"{tuple(batch.batch_size) + (num_levels,)} ({num_levels} levels): it was collected by another hierarchy"
            )
    if batch.get(("next", "terminated"), None) is None:
        raise InvalidDataError(
            "Hierarchy.transitions: the batch has no ('next', 'terminated'), so a truncated episode could not be told "
            "from a terminated one (levels bootstrap the first, not the second); give the env a terminated entry "
            "(TorchRL envs have one in their done_spec)"
        )
    for key in [("next", "done"), *level_keys]:
        if batch.get(key, None) is None:
            raise InvalidDataError(f"Hierarchy.transitions: the batch lacks {key!r}; was it collected by another hierarchy?")


def level_transitions(
    batch: TensorDictBase,
    index: int,
    *,
    action_key: NestedKey,
    level_input_key: NestedKey | None,
    start_observation_key: NestedKey | None,
    observation_key: NestedKey = "observation",
    obs_map: Callable[[torch.Tensor], torch.Tensor] | None = None,
    state_key: NestedKey | None = None,
) -> TensorDict:
    """The semi-MDP transitions of level ``index`` whose option ended within ``batch``.

    ``batch`` is any collector output (leading dims ``[*B, T]``, e.g. several workers). A
    transition is read off the row where the option ended: the transform carried the option's
    start observation, summed reward and duration up to there, and the level's action and its
    input are held constant throughout the option. The lowest level's options last one step,
    so its start observation is the row's own (``start_observation_key=None``).

    Returns a flat TensorDict ``[N]`` (instance by instance, each in time order) with
    ``observation``, ``level_input`` (below the top), ``action``, ``instance`` (the env
    instance, flat over the leading dims), ``option_index`` (the option's index in its episode), the collector's
    ``("collector", "traj_ids")`` when the batch has them, ``level_state`` (the level's own
    carried entries as its ``get_action`` left them when it chose the action, when
    ``state_key`` is given and the batch has them: e.g. a skill's start and step, so that a
    reward can be recomputed later), and ``("next", ...)``: ``observation``, ``reward``,
    ``duration``, ``terminated``, ``truncated``, ``done``.
    """
    mask = batch.get(("next", *stacked_key(ACTING)))[..., index]
    done = batch.get(("next", "done"))[mask]
    terminated = batch.get(("next", "terminated"))[mask]
    truncated = batch.get(("next", "truncated"), None)
    truncated = torch.zeros_like(done) if truncated is None else truncated[mask]
    next_obs = batch.get(next_key(observation_key))[mask]
    if start_observation_key is None:
        start_obs = batch.get(observation_key)[mask]
        if obs_map is not None:
            start_obs = obs_map(start_obs)
    else:
        start_obs = batch.get(start_observation_key)[mask]
    if obs_map is not None:
        next_obs = obs_map(next_obs)
    data = {
        "observation": start_obs,
        "action": batch.get(action_key)[mask],
        "next": {
            "observation": next_obs,
            "reward": batch.get(("next", *stacked_key(OPTION_REWARD)))[..., index : index + 1][mask],
            "duration": batch.get(("next", *stacked_key(DURATION)))[..., index : index + 1][mask],
            "terminated": terminated,
            "truncated": truncated,
            "done": done,
        },
    }
    if level_input_key is not None:
        data["level_input"] = batch.get(level_input_key)[mask]
    data[OPTION_INDEX] = batch.get(stacked_key(OPTION_INDEX))[..., index][mask]
    # the env instance (flat over the leading dims) each transition comes from
    instances = torch.arange(mask[..., 0].numel(), device=mask.device).reshape(mask.shape[:-1])
    data[INSTANCE] = instances.unsqueeze(-1).expand(mask.shape)[mask]
    # the level acts only at an option's start, so the row where it ends still holds that state
    level_state = batch.get(state_key, None) if state_key is not None else None
    if level_state is not None:
        data[TRANSITION_STATE] = level_state[mask]
    traj_ids = batch.get(TRAJ_IDS, None)
    if traj_ids is not None:
        data[TRAJ_IDS] = traj_ids[mask.to(traj_ids.device)]  # the collector keeps its ids on its own device
    return TensorDict(data, batch_size=[done.shape[0]], device=batch.device)
