"""What the DADS and SPlaTES skill rewards share: their settings, the skill prior, the
contrastive log-ratio, the symmetry-breaking prior and the running reward normaliser.

Both losses score a skill ``z`` by how much better the parent's model of skill outcomes
``q(x | s, c, z)`` predicts the outcome ``x`` for ``z`` than for skills drawn from the prior
(`skill_log_ratio`). Their settings are typed objects (`DADSReward`, `SPlaTESReward`),
declared once here and shared by the loss, the level and the ready-made hierarchies.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import nn

from torchrl_layered.modules.ensemble import check_outcomes

Settings = TypeVar("Settings", bound="SkillReward")


@dataclass(frozen=True)
class SkillReward:
    """Settings every contrastive skill reward takes."""

    n_skill_samples: int = 100
    """``L``: skills drawn from the prior for the contrastive denominator."""
    fixed_std: float = 1.0
    """The std of ``q`` in the parent model's normalised target space (the density's width)."""
    reward_clipping_low: float = -50.0
    """The floor of the log-ratio."""
    reward_clipping_high: float = 50.0
    """The ceiling of the log-ratio."""
    reward_offset: float = 1.0
    """Added after normalisation (a positive reward keeps skills alive, as in LayeredRL)."""
    norm_momentum: float = 0.005
    """The momentum of the running reward normaliser (`RunningMeanVar`)."""
    symmetry_breaking_steps: int = 0
    """The duration of the `SymmetryBreakingPrior` in the level's transitions (0: none)."""

    def __post_init__(self):
        name = type(self).__name__
        for f in dataclasses.fields(self):  # each value of its field's kind: a bool, an int, a finite number
            value, kind = getattr(self, f.name), type(f.default)
            if kind is bool and not isinstance(value, bool):
                raise ValueError(f"{name}: {f.name} must be true or false; got {value!r}")
            if kind is float and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value)):
                raise ValueError(f"{name}: {f.name} must be a finite number; got {value!r}")
        if not isinstance(self.n_skill_samples, int) or self.n_skill_samples < 1:
            raise ValueError(f"{name}: n_skill_samples must be an int >= 1; got {self.n_skill_samples!r}")
        if not (math.isfinite(self.fixed_std) and self.fixed_std > 0):
            raise ValueError(f"{name}: fixed_std must be finite and > 0; got {self.fixed_std!r}")
        if not self.reward_clipping_low < self.reward_clipping_high:
            raise ValueError(f"{name}: need reward_clipping_low < reward_clipping_high; got "
                             f"{self.reward_clipping_low}, {self.reward_clipping_high}")
        if not 0.0 < self.norm_momentum <= 1.0:
            raise ValueError(f"{name}: norm_momentum must lie in (0, 1]; got {self.norm_momentum!r}")
        if not isinstance(self.symmetry_breaking_steps, int) or self.symmetry_breaking_steps < 0:
            raise ValueError(f"{name}: symmetry_breaking_steps must be an int >= 0; got {self.symmetry_breaking_steps!r}")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The settings' names (also accepted as keyword arguments by the levels and losses)."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def resolve(cls: type[Settings], settings: Settings | dict[str, Any] | None, overrides: dict[str, Any],
                owner: str) -> Settings:
        """``settings`` (an instance, a dict or ``None`` for the defaults) with ``overrides`` applied.

        Raises ``TypeError`` naming ``owner`` for a name that is not a setting.
        """
        if isinstance(settings, dict):
            settings, overrides = None, {**settings, **overrides}
        if settings is None:
            settings = cls()
        elif not isinstance(settings, cls):
            raise TypeError(f"{owner}: reward= must be a {cls.__name__} or a dict; got {type(settings).__name__}")
        unknown = sorted(set(overrides) - set(cls.names()))
        if unknown:
            raise TypeError(f"{owner}: unknown reward setting(s) {unknown}; {cls.__name__} has {list(cls.names())}")
        return dataclasses.replace(settings, **overrides) if overrides else settings


@dataclass(frozen=True)
class DADSReward(SkillReward):
    """Settings of the DADS reward (Sharma et al., 2020): the log-ratio at every step."""

    reward_scale: float = 1.0
    """Multiplies the log-ratio before normalisation."""


@dataclass(frozen=True)
class SPlaTESReward(SkillReward):
    """Settings of the SPlaTES reward (Gürtler & Martius, 2025): the log-ratio of where a skill ends."""

    fixed_std: float = 0.1
    """The std of ``q`` in the parent model's normalised target space (the density's width)."""
    potential_clipping_low: float = -50.0
    """The floor of the potential ``Phi``."""
    potential_diff_reward: bool = False
    """Pay ``Phi(o_{t+1}) - Phi(o_t)`` at every step instead of ``Phi`` at the skill's end."""
    inter_skill_bootstrap: bool = True
    """Bootstrap from the skill-averaged value ``V_avg`` at skill boundaries (else from Q with the
    old skill and the new start)."""
    converter_coef: float = 1.0
    """Weight of the latent converter's loss."""


def split_reward_settings(cls: type[SkillReward], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Pops the names of ``cls``'s settings out of ``kwargs`` and returns them."""
    return {name: kwargs.pop(name) for name in cls.names() if name in kwargs}


def sample_skill_prior(num: int, skill_dim: int, *, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
    """``num`` skills from the uniform prior on ``[-1, 1]^skill_dim``, ``[num, skill_dim]``."""
    return torch.rand(num, skill_dim, device=device, generator=generator) * 2 - 1


class SymmetryBreakingPrior(nn.Module):
    """A fixed random linear model of skill outcomes that a skill reward starts from.

    Early on, the parent's model has seen only undifferentiated skills, so it predicts the
    same outcome for every skill and the contrastive reward is flat: nothing tells skills
    apart. This prior says that skill ``z`` moves the (normalised) state by ``scale * W z``
    with ``W`` a random orthonormal map, which gives each skill its own direction to start
    from (as LayeredRL's "symmetry-breaking start"). The reward uses the mixture
    ``w q_prior + (1 - w) q_model`` with ``w = 1`` for the first half of ``duration`` steps,
    then falling linearly to 0 at ``duration``; the level advances ``step``.

    Args:
        state_dim, skill_dim: sizes of the parent's latent state and of the skill.
        duration: steps (the level's transitions) until the learned model alone is used.
        scale: the prior's move per unit of skill, in normalised state units.
        seed: seeds ``W``.
    """

    def __init__(self, state_dim: int, skill_dim: int, duration: int, scale: float = 1.0, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        raw = torch.randn(max(state_dim, skill_dim), min(state_dim, skill_dim), generator=generator)
        q, _ = torch.linalg.qr(raw)  # orthonormal columns
        directions = q if state_dim >= skill_dim else q.T
        self.register_buffer("directions", scale * directions)  # [state_dim, skill_dim]
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.duration = duration

    def weight(self) -> float:
        """The prior's share of the mixture now."""
        if self.duration <= 0:
            return 0.0
        half = self.duration / 2
        return float(min(1.0, max(0.0, (self.duration - int(self.step)) / half)))

    def log_prob(self, model, state, skill, target, std: float) -> torch.Tensor:
        """``log q_prior(target | state, skill)`` in the model's normalised target space, ``[N]``."""
        delta = model.normalized_target(state, target) if hasattr(model, "normalized_target") else target - state
        mean = skill @ self.directions.T.to(skill.dtype)
        return torch.distributions.Normal(mean, std).log_prob(delta).sum(-1)


def skill_log_ratio(
    predictor,
    state: torch.Tensor,
    context: torch.Tensor,
    skill: torch.Tensor,
    target: torch.Tensor,
    prior_skills: torch.Tensor,
    *,
    fixed_std: float,
    clip_low: float,
    clip_high: float,
    symmetry_breaking: SymmetryBreakingPrior | None = None,
    switch: torch.Tensor | None = None,
) -> torch.Tensor:
    """``log q(x|s,c,z) - log((sum_i q(x|s,c,z_i) + q(x|s,c,z)) / (L + 1))`` for rows ``[N]``.

    ``q`` is ``predictor.model.log_prob`` with the fixed std ``fixed_std`` in the model's
    normalised target space; the ``L`` prior skills ``[L, d]`` are shared by all rows. The
    log-sum-exp keeps it finite where densities underflow; NaN and -inf become ``clip_low``,
    +inf ``clip_high``, and the result is clamped to ``[clip_low, clip_high]``.

    Args:
        predictor: has ``model.log_prob(state, action, next_state, context, std=, normalized=)``.
        state, context: the encoding ``(s, c)`` of the start, ``[N, d_s]`` and ``[N, d_c]``.
        skill: ``[N, d]`` the skill whose outcome is scored.
        target: ``[N, d_s]`` the encoded outcome ``x``, or ``[*K, N, d_s]``: ``K`` outcomes per
            row scored under one prediction (the model runs once), for a result ``[*K, N]``.
        prior_skills: ``[L, d]`` the contrastive samples ``z_i``.
        symmetry_breaking: mixes a `SymmetryBreakingPrior` into ``q`` while its weight is > 0.
        switch: ``[k]`` entries appended to every skill the model scores (the parent's hold
            switch, set to "move"), for a model whose actions are ``d + k`` wide.
    """
    check_outcomes(state, target, "skill_log_ratio")
    n, num_prior = state.shape[0], prior_skills.shape[0]
    if n == 0:
        return state.new_zeros(0)
    skills = torch.cat([skill[:, None].to(state.dtype), prior_skills[None].to(state.dtype).expand(n, -1, -1)], 1)
    rows = num_prior + 1

    def repeat(x: torch.Tensor) -> torch.Tensor:
        return x[:, None].expand(n, rows, x.shape[-1]).reshape(n * rows, x.shape[-1])

    context = repeat(context) if context is not None and context.shape[-1] else None
    flat_skills = skills.reshape(n * rows, -1)
    outcomes = target.shape[:-2]
    target = target[..., None, :].expand(*outcomes, n, rows, target.shape[-1]).reshape(*outcomes, n * rows, -1)
    weight = symmetry_breaking.weight() if symmetry_breaking is not None else 0.0
    with torch.no_grad():
        if weight < 1:
            actions = flat_skills if switch is None else torch.cat(
                [flat_skills, switch.to(flat_skills).expand(flat_skills.shape[0], -1)], -1)
            log_q = predictor.model.log_prob(
                repeat(state), actions, target, context, std=fixed_std, normalized=True
            ).reshape(*outcomes, n, rows)
        if weight > 0:
            log_prior = symmetry_breaking.log_prob(
                predictor.model, repeat(state), flat_skills, target, fixed_std).reshape(*outcomes, n, rows)
            log_q = log_prior if weight >= 1 else torch.logaddexp(
                log_q + math.log(1 - weight), log_prior + math.log(weight))
    ratio = log_q[..., 0] - (log_q.logsumexp(-1) - math.log(rows))
    ratio = torch.nan_to_num(ratio, nan=clip_low, posinf=clip_high, neginf=clip_low)
    return ratio.clamp(clip_low, clip_high)


class RunningMeanVar(nn.Module):
    """Normalises a scalar signal with running mean and variance (EMA, initialised from the first batch)."""

    def __init__(self, momentum: float = 0.005, eps: float = 1e-5):
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.register_buffer("mean", torch.zeros(()))
        self.register_buffer("var", torch.ones(()))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

    def forward(self, x: torch.Tensor, update: bool = True) -> torch.Tensor:
        if update and x.numel() > 1:
            with torch.no_grad():
                m = self.momentum if bool(self.initialized) else 1.0
                self.mean.lerp_(x.mean().to(self.mean.dtype), m)
                self.var.lerp_(x.var().to(self.var.dtype), m)
                self.initialized.fill_(True)
        return (x - self.mean) / (self.var + self.eps).sqrt()
