"""`finite_clipped_norms`: gradient clipping as `torch.nn.utils.clip_grad_norm_`, with the
finiteness check of a guarded step, in one host read.

``clip_grad_norm_`` multiplies every gradient by ``min(1, max_norm / (norm + 1e-6))`` even where
that is 1 (it avoids a host read). A level's step reads its norms anyway, to skip a step whose
loss or gradients are not finite; reading there whether each group needs clipping too lets the
scaling pass run only where it changes something: a default-size TD-MPC2 update (5.5M
parameters, two groups) spent ~4 ms of ~250 in the two passes. Multiplying by 1 changes
nothing, so the gradients are bit for bit those of ``clip_grad_norm_``.
"""
from __future__ import annotations

from typing import Sequence

import torch

_TOTAL_NORM = getattr(torch.nn.utils, "get_total_norm", None)  # torch >= 2.6, with `clip_grads_with_norm_`


def finite_clipped_norms(groups: Sequence[Sequence[torch.Tensor]], max_norm: float,
                         loss: torch.Tensor) -> list[torch.Tensor] | None:
    """The 2-norm of each group's gradients before clipping; the groups whose norm is above
    ``max_norm`` scaled to it (each on its own, as ``clip_grad_norm_`` per group). None, with
    nothing scaled, where ``loss`` or a norm is not finite (on torch < 2.6, whose clipping always
    scales, the gradients are scaled already: the caller clears them either way)."""
    if _TOTAL_NORM is None:  # older torch: its own clipping, which always scales
        norms = [torch.nn.utils.clip_grad_norm_(group, max_norm) for group in groups]
        finite = torch.isfinite(loss) & torch.stack([torch.isfinite(n) for n in norms]).all()
        return norms if bool(finite) else None
    grads = [[p.grad for p in group if p.grad is not None] for group in groups]
    norms = [_TOTAL_NORM(g) if g else torch.zeros((), device=loss.device) for g in grads]
    flags = torch.stack([torch.isfinite(loss) & torch.stack([torch.isfinite(n) for n in norms]).all()]
                        + [n > max_norm for n in norms]).tolist()  # the one host read
    if not flags[0]:
        return None
    for group, norm, clip in zip(groups, norms, flags[1:]):
        if clip:
            torch.nn.utils.clip_grads_with_norm_(group, max_norm, norm)
    return norms
