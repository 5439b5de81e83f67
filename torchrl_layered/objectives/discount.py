"""How every level discounts an option: the one rule, declared here.

``gamma`` is a discount per env step. A semi-MDP transition that lasted ``duration`` env
steps bootstraps with ``gamma ** duration`` (``discount_per="env_step"``, the default: the
textbook semi-MDP rule), so options cut short (a child handing control back early, an
episode ending inside an option) are discounted for the time they took. The option's reward
is its summed env reward. ``discount_per="option"`` is the reference library's rule:
``gamma`` per option, whatever its length. For options of a fixed length ``d`` both agree
when the per-option ``gamma`` equals the per-step one to the power ``d``.

Planning ``H`` options ahead with a model that predicts no durations discounts each option
by ``gamma ** mean_duration``, the mean duration of the level's stored transitions (exact for
fixed-length options, and 1 for the lowest level).
"""
from __future__ import annotations

from typing import Literal

import torch

#: The discount rules a level accepts (see the module docstring).
DiscountPer = Literal["env_step", "option"]
DISCOUNT_PER = ("env_step", "option")


def check_discount_per(value: str, owner: str) -> str:
    if value not in DISCOUNT_PER:
        raise ValueError(f"{owner}: discount_per must be one of {DISCOUNT_PER}; got {value!r}")
    return value


def option_discount(gamma: float, duration: torch.Tensor, discount_per: DiscountPer = "env_step") -> torch.Tensor:
    """The bootstrap discount of transitions that lasted ``duration`` env steps (same shape, float)."""
    duration = duration.to(torch.get_default_dtype() if not duration.is_floating_point() else duration.dtype)
    if discount_per == "option":
        return torch.full_like(duration, gamma)
    return torch.as_tensor(gamma, dtype=duration.dtype, device=duration.device) ** duration


def planning_discount(gamma: float, mean_duration: float, discount_per: DiscountPer = "env_step") -> float:
    """The discount per planned option: ``gamma ** mean_duration`` (per env step) or ``gamma`` (per option)."""
    return gamma if discount_per == "option" else gamma ** max(mean_duration, 1.0)
