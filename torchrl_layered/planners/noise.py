"""Coloured (power-law) Gaussian noise along one axis, for temporally correlated action samples.

White noise averages out over a horizon, so a planner sampling it rarely proposes sequences
that push consistently in one direction; noise whose power spectral density falls as
``1 / f**beta`` keeps neighbouring steps correlated (Pinneri et al. 2020, iCEM).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch


def colored_noise(
    shape: Sequence[int],
    beta: float,
    *,
    dim: int = -1,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Gaussian noise of unit variance whose spectrum along ``dim`` is ``∝ 1 / f**beta``.

    White Gaussian noise is generated over twice the length of ``dim``, its spectrum is shaped
    with an FFT and the first half is kept: a series of one period would wrap around (its last
    step correlated with its first), which is a poor prior for an action sequence. Every entry
    has exactly unit variance (the scale is the filter's energy, not a sample estimate), and
    entries are independent across all the other dimensions.

    Args:
        shape: the shape of the noise; ``shape[dim]`` is the time axis.
        beta: the spectral exponent: 0 white, 1 pink, 2 red (Brownian-like).
        dim: the time axis.
        generator: the random generator (on ``device``), for reproducible noise.
        device: where to create the noise.
        dtype: a floating dtype.
    """
    shape = torch.Size(shape)
    if len(shape) == 0:
        raise ValueError("colored_noise needs at least one dimension (the time axis); got shape ()")
    dim = dim % len(shape)
    steps = shape[dim]
    if beta == 0 or steps <= 1:
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)

    period = 2 * steps
    others = shape[:dim] + shape[dim + 1:]
    white = torch.randn(*others, period, generator=generator, device=device, dtype=dtype)
    freqs = torch.fft.rfftfreq(period, device=white.device, dtype=dtype)
    # The DC bin gets the lowest non-zero frequency's power instead of an infinite one.
    freqs[0] = freqs[1]
    gain = freqs.pow(-beta / 2.0)
    # Per-entry variance of a circular filter: the mean squared gain over the full (two-sided)
    # spectrum; for an even period the DC and Nyquist bins appear once, the others twice.
    energy = (gain[0] ** 2 + gain[-1] ** 2 + 2.0 * gain[1:-1].pow(2).sum()) / period
    noise = torch.fft.irfft(torch.fft.rfft(white, dim=-1) * gain, n=period, dim=-1)[..., :steps]
    return (noise / energy.sqrt()).movedim(-1, dim)
