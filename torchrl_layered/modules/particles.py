"""`spread_particles`: one row per particle from one row per candidate."""
from __future__ import annotations

import torch


def spread_particles(x: torch.Tensor, particles: int) -> torch.Tensor:
    """``x [M, m, *]`` -> ``[M, m * particles, *]``: each row repeated for its ``particles``
    consecutive particles (the layout `Predictor.returns` rolls out: candidate-major). Callers check
    ``particles`` at their door (`check_particles`)."""
    if particles == 1:
        return x
    lead, m = x.shape[0], x.shape[1]
    return x.unsqueeze(2).expand(lead, m, particles, *x.shape[2:]).reshape(lead, m * particles, *x.shape[2:])


def check_particles(particles: int, owner: str = "particles") -> None:
    """Refuses a particle count that is not an int >= 1."""
    if isinstance(particles, bool) or not isinstance(particles, int) or particles < 1:
        raise ValueError(f"{owner}: particles must be an int >= 1; got {particles!r}")
