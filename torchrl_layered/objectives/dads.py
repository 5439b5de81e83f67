"""`DADSLoss`: TD-MPC2 on the DADS intrinsic reward of Sharma et al. (2020), in a parent's model space.

DADS rewards a skill ``z`` for transitions that the skill-dynamics model ``q(s' | s, c, z)``
predicts well for ``z`` and badly for other skills: predictable and diverse skills. Here the
skill-dynamics model is the parent level's predictor (it learns ``q`` from its own semi-MDP
transitions: start, skill, end), and the reward is recomputed for every sampled batch, so it
always follows the current model.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from tensordict import TensorDictBase
from tensordict.nn import dispatch
from torchrl_layered.modules.tdmpc2 import TDMPC2WorldModel
from torchrl_layered.objectives.skill_rewards import (
    DADSReward,
    RunningMeanVar,
    SymmetryBreakingPrior,
    sample_skill_prior,
    skill_log_ratio,
)
from torchrl_layered.objectives.tdmpc2 import TDMPC2Loss


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
        reward: the reward's settings, a `DADSReward` (or a dict of its fields); its fields may
            also be passed as keyword arguments, which win. ``symmetry_breaking_steps`` counts
            the steps that the level writes to ``symmetry_breaking.step``.
        generator: draws the prior skills (for reproducible rewards); the global RNG if None.
        hold_switch: ``[1]``, appended to the skills the parent's model scores when the parent's
            options carry a hold switch (`SkillLevel` ``hold=True``).
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
        reward: DADSReward | dict[str, Any] | None = None,
        generator: torch.Generator | None = None,
        hold_switch: torch.Tensor | None = None,
        **reward_settings: Any,
    ):
        super().__init__(world_model, config)
        if world_model.goal_dim < 1:
            raise ValueError("DADSLoss needs a world model conditioned on the skill (goal_dim = skill size > 0)")
        #: The reward's settings (a frozen `DADSReward`).
        self.settings = DADSReward.resolve(reward, reward_settings, "DADSLoss")
        self._predictor = [predictor]  # referenced, not a submodule: the parent trains it
        self.skill_dim = world_model.goal_dim
        self.reward_norm = RunningMeanVar(self.settings.norm_momentum)
        self.symmetry_breaking = SymmetryBreakingPrior(predictor.latent_state_dim, self.skill_dim,
                                                       self.settings.symmetry_breaking_steps)
        self.generator = generator
        #: Appended to every skill the parent's model scores: its hold switch set to "move"
        #: (`SkillLevel` with ``hold=True``), or None when the parent's options are skills alone.
        self.hold_switch = hold_switch

    @property
    def in_keys(self):
        keys = self.tensor_keys
        return [keys.observation, keys.action, keys.goal, keys.next_observation, keys.terminated]

    @property
    def predictor(self):
        """The parent's predictor (the skill-dynamics model)."""
        return self._predictor[0]

    def prior_skills(self, device) -> torch.Tensor:
        return sample_skill_prior(self.settings.n_skill_samples, self.skill_dim, device=device, generator=self.generator)

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
            fixed_std=self.settings.fixed_std, clip_low=self.settings.reward_clipping_low,
            clip_high=self.settings.reward_clipping_high, symmetry_breaking=self.symmetry_breaking,
            switch=self.hold_switch,
        )
        return (reward * self.settings.reward_scale).reshape(lead)

    @dispatch
    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        keys = self.tensor_keys
        raw = self.intrinsic_reward(tensordict.get(keys.observation), tensordict.get(keys.goal),
                                    tensordict.get(keys.next_observation))
        reward = self.reward_norm(raw, update=self.training) + self.settings.reward_offset
        td = tensordict.copy()
        td.set(keys.reward, reward.unsqueeze(-1).to(torch.float32))
        out = super().forward(td)
        out.set("intrinsic_reward", raw.mean().detach())
        out.set("intrinsic_reward_std", raw.std().detach() if raw.numel() > 1 else torch.zeros(()))
        return out
