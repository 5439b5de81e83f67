"""Tianshou networks under LayeredRL's names, for `TianshouLevel` configs written for LayeredRL.

A `TianshouLevel` policy sees one flat vector (the observation, then the level input), so the
networks here are plain tianshou 2.x networks whose input size is worked out from LayeredRL's
placeholders (``__mapped_env_obs_shape__``, ``__level_input_dim__``, ``__level_state_dims__``).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from tianshou.utils.net.common import Net
from tianshou.utils.net.continuous import ContinuousCritic


class ConcatNet(Net):
    """A tianshou ``Net`` over the observation, the level input and level-state entries, concatenated.

    Args:
        mapped_env_obs_shape: shape of the (mapped) observation.
        level_input_dim: width of the level input (0 at the top).
        level_state_dims: widths of extra level-state entries: ``{}`` (``__level_state_dims__``),
            as `TianshouLevel`'s policy sees no level state.
        scale_remaining_steps: accepted for LayeredRL configs and ignored: there is no
            remaining-steps entry to scale.
        **kwargs: ``Net``'s arguments (``hidden_sizes``, ``action_shape``, ``concat``, ...).
    """

    def __init__(self, mapped_env_obs_shape: int | Sequence[int], level_input_dim: int = 0,
                 level_state_dims: Mapping[str, int] | None = None, scale_remaining_steps: float = 1.0,
                 **kwargs: Any) -> None:
        kwargs.pop("device", None)  # tianshou 2.x networks are moved with .to(); the level does that
        if level_state_dims:
            raise ValueError(f"ConcatNet: TianshouLevel's policy sees no level state, so level_state_dims must be "
                             f"empty (__level_state_dims__); got {dict(level_state_dims)}")
        super().__init__(state_shape=int(np.prod(mapped_env_obs_shape)) + int(level_input_dim), **kwargs)


class Critic(ContinuousCritic):
    """A continuous critic whose output layer starts at zero, so first Q estimates are unbiased by init.

    Args:
        preprocess_net: the network over ``(observation, action)``, e.g. a `ConcatNet` with
            ``concat=True``.
        **kwargs: ``ContinuousCritic``'s other arguments.
    """

    def __init__(self, preprocess_net: torch.nn.Module, **kwargs: Any) -> None:
        kwargs.pop("device", None)
        super().__init__(preprocess_net=preprocess_net, **kwargs)
        last = [m for m in self.last.modules() if isinstance(m, torch.nn.Linear)][-1]
        torch.nn.init.zeros_(last.weight)
