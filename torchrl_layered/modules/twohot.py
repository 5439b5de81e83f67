"""Discrete regression in symlog space (two-hot targets), as TD-MPC2 and DreamerV3 use."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def symlog(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.log1p(x.abs())


def symexp(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.expm1(x.abs())


class TwoHot(nn.Module):
    """Encodes scalars as two-hot vectors over ``num_bins`` bins in symlog space, and decodes logits.

    Regressing a distribution over bins with cross-entropy is robust to the scale of rewards
    and values, which vary by orders of magnitude across tasks.
    """

    def __init__(self, num_bins: int = 101, vmin: float = -10.0, vmax: float = 10.0):
        super().__init__()
        if num_bins < 2:
            raise ValueError(f"TwoHot needs num_bins >= 2; got {num_bins}")
        self.num_bins, self.vmin, self.vmax = num_bins, vmin, vmax
        self.bin_size = (vmax - vmin) / (num_bins - 1)
        self.register_buffer("bins", torch.linspace(vmin, vmax, num_bins), persistent=False)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``[*, 1]`` scalars -> ``[*, num_bins]`` two-hot targets."""
        x = symlog(x).clamp(self.vmin, self.vmax)
        position = (x - self.vmin) / self.bin_size
        low = position.floor().clamp(max=self.num_bins - 2)
        upper_weight = position - low
        target = torch.zeros(*x.shape[:-1], self.num_bins, device=x.device, dtype=x.dtype)
        target.scatter_(-1, low.long(), 1.0 - upper_weight)
        target.scatter_add_(-1, low.long() + 1, upper_weight)
        return target

    def decode(self, logits: torch.Tensor) -> torch.Tensor:
        """``[*, num_bins]`` logits -> ``[*, 1]`` expected scalar."""
        return symexp((F.softmax(logits, -1) * self.bins).sum(-1, keepdim=True))

    def cross_entropy(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``[*]`` cross-entropy between logits ``[*, num_bins]`` and the two-hot encoding of ``x [*, 1]``."""
        return -(self.encode(x) * F.log_softmax(logits, -1)).sum(-1)
