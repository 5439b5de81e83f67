"""Encoders: split an observation into a latent state (what a model predicts) and a context.

The context is episode-constant information (e.g. a desired goal): a predictor conditions on
it but does not predict it.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class Encoder(nn.Module):
    """Base class: ``forward(obs) -> (state, context)`` with sizes ``latent_state_dim``, ``context_dim``."""

    latent_state_dim: int
    context_dim: int


class IdentityEncoder(Encoder):
    """The observation is the state; no context."""

    def __init__(self, obs_dim: int):
        super().__init__()
        self.latent_state_dim, self.context_dim = obs_dim, 0

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return obs, obs[..., :0]


class FixedEncoder(Encoder):
    """Picks fixed observation entries as state and others as context (a masking encoder).

    Args:
        state_indices: observation entries that form the state (e.g. the achieved goal).
        context_indices: observation entries that form the context (e.g. the desired goal).
    """

    def __init__(self, state_indices: Sequence[int], context_indices: Sequence[int] = ()):
        super().__init__()
        self.register_buffer("state_indices", torch.as_tensor(list(state_indices), dtype=torch.long))
        self.register_buffer("context_indices", torch.as_tensor(list(context_indices), dtype=torch.long))
        self.latent_state_dim, self.context_dim = len(self.state_indices), len(self.context_indices)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return obs[..., self.state_indices], obs[..., self.context_indices]


class EncoderNet(Encoder):
    """Learned linear maps from the observation to a latent state and a context.

    Two bias-free linear maps: cheap, and a predictor can learn which directions are
    predictable (state) and which are constant within an episode (context).
    """

    def __init__(self, obs_dim: int, latent_state_dim: int, context_dim: int = 0):
        super().__init__()
        self.latent_state_dim, self.context_dim = latent_state_dim, context_dim
        self.state_map = nn.Linear(obs_dim, latent_state_dim, bias=False)
        self.context_map = nn.Linear(obs_dim, context_dim, bias=False)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.state_map(obs), self.context_map(obs)
