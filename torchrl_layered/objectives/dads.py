"""`DADSLoss`: TD-MPC2 on the DADS intrinsic reward of Sharma et al. (2020), in a parent's model space.

DADS rewards a skill ``z`` for transitions that the skill-dynamics model ``q(s' | s, c, z)``
predicts well for ``z`` and badly for other skills: predictable and diverse skills. Here the
skill-dynamics model is the parent level's predictor (it learns ``q`` from its own semi-MDP
transitions: start, skill, end), and the reward is recomputed for every sampled batch, so it
always follows the current model.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from tensordict import TensorDictBase
from tensordict.nn import dispatch
from tensordict.utils import NestedKey
from torch import nn

from torchrl_layered.modules.tdmpc2 import TDMPC2WorldModel
from torchrl_layered.objectives.tdmpc2 import TDMPC2Loss


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
        target: ``[N, d_s]`` the encoded outcome ``x``.
        prior_skills: ``[L, d]`` the contrastive samples ``z_i``.
        symmetry_breaking: mixes a `SymmetryBreakingPrior` into ``q`` while its weight is > 0.
    """
    n, num_prior = state.shape[0], prior_skills.shape[0]
    if n == 0:
        return state.new_zeros(0)
    skills = torch.cat([skill[:, None].to(state.dtype), prior_skills[None].to(state.dtype).expand(n, -1, -1)], 1)
    rows = num_prior + 1

    def repeat(x: torch.Tensor) -> torch.Tensor:
        return x[:, None].expand(n, rows, x.shape[-1]).reshape(n * rows, x.shape[-1])

    context = repeat(context) if context is not None and context.shape[-1] else None
    flat_skills = skills.reshape(n * rows, -1)
    weight = symmetry_breaking.weight() if symmetry_breaking is not None else 0.0
    with torch.no_grad():
        if weight < 1:
            log_q = predictor.model.log_prob(
                repeat(state), flat_skills, repeat(target), context, std=fixed_std, normalized=True
            ).reshape(n, rows)
        if weight > 0:
            log_prior = symmetry_breaking.log_prob(
                predictor.model, repeat(state), flat_skills, repeat(target), fixed_std).reshape(n, rows)
            log_q = log_prior if weight >= 1 else torch.logaddexp(
                log_q + math.log(1 - weight), log_prior + math.log(weight))
    ratio = log_q[:, 0] - (log_q.logsumexp(-1) - math.log(rows))
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


class DADSLoss(TDMPC2Loss):
    """The TD-MPC2 losses of a skill-conditioned agent on the DADS reward, recomputed per batch.

    For a transition ``(o, z, o')`` with ``(s, c) = enc(o)`` and ``s' = enc(o')`` under the
    parent's predictor, the intrinsic reward is `skill_log_ratio` of ``s'`` (``L =
    n_skill_samples`` skills from the uniform prior), times ``reward_scale``; it is normalised
    with a running mean and variance (momentum ``norm_momentum``, updated in training mode)
    and shifted by ``reward_offset`` before the TD-MPC2 update uses it. The skill is the
    TD-MPC2 goal (``goal`` key): the goal encoder embeds it for reward, Q and policy.

    The parent's predictor is only referenced, not owned: its parameters are not in this
    loss's ``parameters()`` nor its state dict.

    Args:
        world_model: a goal-conditioned `TDMPC2WorldModel` (``goal_dim`` = skill size).
        predictor: the skill-dynamics model: ``encode(obs) -> (state, context)`` and
            ``model.log_prob(...)`` (a `RewardPredictor`).
        config: the TD-MPC2 config.
        n_skill_samples: ``L``, prior skills in the contrastive denominator.
        fixed_std: the std of ``q`` in the model's normalised target space.
        reward_clipping_low, reward_clipping_high: the reward's clip range.
        reward_offset: added after normalisation.
        reward_scale: multiplies the raw reward.
        norm_momentum: the running normaliser's momentum.
        symmetry_breaking_steps: the duration of the `SymmetryBreakingPrior` (0: none), in the
            steps that the level writes to ``symmetry_breaking.step``.
        generator: draws the prior skills (for reproducible rewards); the global RNG if None.
    """

    @dataclass
    class _AcceptedKeys(TDMPC2Loss._AcceptedKeys):
        """Keys: the TD-MPC2 ones, ``goal`` being the skill; ``observation`` is what the parent encodes."""

    default_keys = _AcceptedKeys
    tensor_keys: _AcceptedKeys

    def __init__(
        self,
        world_model: TDMPC2WorldModel,
        predictor,
        config: dict[str, Any] | None = None,
        *,
        n_skill_samples: int = 100,
        fixed_std: float = 1.0,
        reward_clipping_low: float = -50.0,
        reward_clipping_high: float = 50.0,
        reward_offset: float = 1.0,
        reward_scale: float = 1.0,
        norm_momentum: float = 0.005,
        symmetry_breaking_steps: int = 0,
        generator: torch.Generator | None = None,
    ):
        super().__init__(world_model, config)
        if world_model.goal_dim < 1:
            raise ValueError("DADSLoss needs a world model conditioned on the skill (goal_dim = skill size > 0)")
        if n_skill_samples < 1:
            raise ValueError(f"DADSLoss needs n_skill_samples >= 1; got {n_skill_samples}")
        self._predictor = [predictor]  # referenced, not a submodule: the parent trains it
        self.skill_dim = world_model.goal_dim
        self.n_skill_samples = n_skill_samples
        self.fixed_std = fixed_std
        self.clip_low, self.clip_high = reward_clipping_low, reward_clipping_high
        self.reward_offset, self.reward_scale = reward_offset, reward_scale
        self.reward_norm = RunningMeanVar(norm_momentum)
        self.symmetry_breaking = SymmetryBreakingPrior(predictor.latent_state_dim, self.skill_dim, symmetry_breaking_steps)
        self.generator = generator

    @property
    def in_keys(self):
        keys = self.tensor_keys
        return [keys.observation, keys.action, keys.goal, keys.next_observation, keys.terminated]

    @property
    def predictor(self):
        """The parent's predictor (the skill-dynamics model)."""
        return self._predictor[0]

    def prior_skills(self, device) -> torch.Tensor:
        return sample_skill_prior(self.n_skill_samples, self.skill_dim, device=device, generator=self.generator)

    @torch.no_grad()
    def intrinsic_reward(
        self, observation: torch.Tensor, skill: torch.Tensor, next_observation: torch.Tensor,
        prior_skills: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The clipped DADS reward ``[*]`` of transitions ``(o [*, n], z [*, d], o' [*, n])`` (before normalising)."""
        lead = observation.shape[:-1]
        flat = lambda x: x.reshape(-1, x.shape[-1]).float()  # noqa: E731
        state, context = self.predictor.encode(flat(observation))
        next_state, _ = self.predictor.encode(flat(next_observation))
        if prior_skills is None:
            prior_skills = self.prior_skills(observation.device)
        reward = skill_log_ratio(
            self.predictor, state, context, flat(skill), next_state, prior_skills,
            fixed_std=self.fixed_std, clip_low=self.clip_low, clip_high=self.clip_high,
            symmetry_breaking=self.symmetry_breaking,
        )
        return (reward * self.reward_scale).reshape(lead)

    @dispatch
    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        keys = self.tensor_keys
        raw = self.intrinsic_reward(tensordict.get(keys.observation), tensordict.get(keys.goal),
                                    tensordict.get(keys.next_observation))
        reward = self.reward_norm(raw, update=self.training) + self.reward_offset
        td = tensordict.copy()
        td.set(keys.reward, reward.unsqueeze(-1).to(torch.float32))
        out = super().forward(td)
        out.set("intrinsic_reward", raw.mean().detach())
        out.set("intrinsic_reward_std", raw.std().detach() if raw.numel() > 1 else torch.zeros(()))
        return out
