"""`SPlaTESLoss`: TD-MPC2 on the SPlaTES end-of-skill reward (Gürtler & Martius, 2025).

A SPlaTES skill runs for ``control_interval`` steps from a start ``o_start``. Its reward is
the contrastive potential of where it ends, under the parent's model of skill outcomes:

    Phi(x) = log q(x | s_start, c_start, z) - log((sum_i q(x | s_start, c_start, z_i) + q(x | ..., z)) / (L + 1))

paid at the last step of the skill (sparse), or as ``Phi(o_{t+1}) - Phi(o_t)`` at every step
(``potential_diff_reward``). High ``Phi`` means the skill's end is where the parent expects
it for this skill (predictable) and not where it expects other skills to end (diverse); as
it measures the displacement from the start over the whole skill, skills also move far
(temporally extended). The reward is recomputed for every sampled batch from the stored
skill start and step, so it follows the parent's current model.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from tensordict import TensorDictBase
from tensordict.nn import dispatch
from tensordict.utils import NestedKey

from torchrl_layered.modules.splates import SPlaTESWorldModel
from torchrl_layered.objectives.skill_rewards import (
    RunningMeanVar,
    SPlaTESReward,
    SymmetryBreakingPrior,
    sample_skill_prior,
    skill_log_ratio,
)
from torchrl_layered.objectives.tdmpc2 import TDMPC2Loss

SKILL_BOUNDARY = ("next", "skill_boundary")
NEXT_START_STATE = ("next", "start_state")


class SPlaTESLoss(TDMPC2Loss):
    """TD-MPC2 losses of the SPlaTES skill policy, plus its skill-averaged value and latent converter.

    Per batch of sub-trajectories ``[B, T]`` it:

    1. recomputes the reward (see the module doc), normalises it with a running mean and
       variance (momentum ``norm_momentum``, updated in training mode) and adds ``reward_offset``;
    2. conditions reward, Q and policy on ``g = [k / CI, s_start, skill]`` (``k`` the step
       within the skill, ``s_start`` the parent's encoding of the skill's start);
    3. bootstraps across skill boundaries from the skill-averaged value: the TD target is
       ``r + gamma * (1 - terminated) * B`` with ``B = V_avg(z', s_start')`` where the next step
       starts a new skill (``k' = 0``, ``s_start'`` = encoding of ``o'``) and
       ``B = min(two target Qs)(z', pi(z', g'), g')`` with ``g' = [k' / CI, s_start, skill]``
       elsewhere. The reward is kept on terminal steps (it is not multiplied by ``1 - terminated``);
    4. adds ``loss_avg_value``: ``V_avg(z, s)`` to ``min(two target Qs)(z, pi(z, g_u), g_u)`` at a
       skill ``u`` drawn from the prior and ``g_u = [0, s, u]`` (two-hot cross-entropy, detached
       latents, weight ``value_coef``), and ``loss_converter``: MSE of the latent converter to
       the parent's encoding ``s`` of the observation.

    The parent's predictor is only referenced, not owned (not in ``parameters()``).

    Args:
        world_model: a `SPlaTESWorldModel`.
        predictor: the parent's predictor: ``encode(obs) -> (state, context)`` and
            ``model.log_prob(...)`` (a `RewardPredictor`).
        config: the TD-MPC2 config.
        control_interval: ``CI``, the skill length in the level's own steps.
        reward: the reward's settings, a `SPlaTESReward` (or a dict of its fields); its fields
            may also be passed as keyword arguments, which win. ``symmetry_breaking_steps``
            counts the steps that the level writes to ``symmetry_breaking.step``.
        generator: draws the prior skills; the global RNG if None.
        hold_switch: ``[1]``, appended to the skills the parent's model scores when the parent's
            options carry a hold switch (`SkillLevel` ``hold=True``).
    """

    @dataclass
    class _AcceptedKeys(TDMPC2Loss._AcceptedKeys):
        """Keys: the TD-MPC2 ones, plus the skill, the skill's start observation and the step within it.

        ``parent_observation`` (and its ``next``) is what the parent's predictor encodes, where it
        differs from what the world model sees (``observation``); absent, ``observation`` serves both.
        """

        skill: NestedKey = "skill"
        skill_start: NestedKey = "skill_start"
        skill_step: NestedKey = "skill_step"
        parent_observation: NestedKey = "parent_observation"
        next_parent_observation: NestedKey = ("next", "parent_observation")

    default_keys = _AcceptedKeys
    tensor_keys: _AcceptedKeys

    def __init__(
        self,
        world_model: SPlaTESWorldModel,
        predictor,
        config: dict[str, Any] | None = None,
        *,
        control_interval: int = 10,
        reward: SPlaTESReward | dict[str, Any] | None = None,
        generator: torch.Generator | None = None,
        hold_switch: torch.Tensor | None = None,
        **reward_settings: Any,
    ):
        super().__init__(world_model, config)
        if not isinstance(control_interval, int) or control_interval < 1:
            raise ValueError(f"SPlaTESLoss needs an int control_interval >= 1; got {control_interval!r}")
        #: The reward's settings (a frozen `SPlaTESReward`).
        self.settings = SPlaTESReward.resolve(reward, reward_settings, "SPlaTESLoss")
        self._predictor = [predictor]  # referenced, not a submodule: the parent trains it
        self.skill_dim = world_model.skill_dim
        self.control_interval = control_interval
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
        return [keys.observation, keys.action, keys.next_observation, keys.terminated, keys.skill,
                keys.skill_start, keys.skill_step]

    @property
    def out_keys(self):
        return super().out_keys + ["loss_avg_value", "loss_converter"]

    @property
    def predictor(self):
        """The parent's predictor (the model of skill outcomes)."""
        return self._predictor[0]

    def prior_skills(self, device) -> torch.Tensor:
        return sample_skill_prior(self.settings.n_skill_samples, self.skill_dim, device=device, generator=self.generator)

    # ------------------------------------------------------------------ reward
    @torch.no_grad()
    def potential(self, start_observation, skill, observation, prior_skills) -> torch.Tensor:
        """``Phi(enc(o))`` for rows ``[N]`` (start ``[N, n]``, skill ``[N, d]``, observation ``[N, n]``);
        observations ``[K, N, n]`` give ``[K, N]`` from one prediction per row."""
        state, context = self.predictor.encode(start_observation.float())
        target, _ = self.predictor.encode(observation.float())
        return skill_log_ratio(
            self.predictor, state, context, skill.float(), target, prior_skills,
            fixed_std=self.settings.fixed_std, clip_low=self.settings.potential_clipping_low,
            clip_high=self.settings.reward_clipping_high,
            symmetry_breaking=self.symmetry_breaking, switch=self.hold_switch,
        )

    @torch.no_grad()
    def intrinsic_reward(
        self,
        skill_start: torch.Tensor,
        skill: torch.Tensor,
        skill_step: torch.Tensor,
        observation: torch.Tensor,
        next_observation: torch.Tensor,
        prior_skills: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The clipped SPlaTES reward ``[*]`` of transitions (before normalising).

        Args:
            skill_start: ``[*, n]`` the observation where the skill started.
            skill: ``[*, d]``.
            skill_step: ``[*, 1]`` the step ``k`` within the skill (0 at its start).
            observation, next_observation: ``[*, n]`` the transition's ``o_t`` and ``o_{t+1}``.
            prior_skills: ``[L, d]`` the contrastive samples (drawn from the prior if None).
        """
        lead = observation.shape[:-1]
        flat = lambda x: x.reshape(-1, x.shape[-1])  # noqa: E731
        start, skill, nxt = flat(skill_start), flat(skill), flat(next_observation)
        if prior_skills is None:
            prior_skills = self.prior_skills(observation.device)
        reward = torch.zeros(start.shape[0], device=observation.device, dtype=torch.float32)
        if self.settings.potential_diff_reward:
            # both ends of the step are scored under the same prediction from the skill's start
            after, before = self.potential(start, skill, torch.stack([nxt, flat(observation)]), prior_skills)
            reward = after - before
        else:  # sparse: only where this step ends the skill
            last = (skill_step.reshape(-1) == self.control_interval - 1).nonzero().squeeze(-1)
            reward[last] = self.potential(start[last], skill[last], nxt[last], prior_skills).to(reward.dtype)
        return reward.clamp(self.settings.reward_clipping_low, self.settings.reward_clipping_high).reshape(lead)

    # ------------------------------------------------------------------- loss
    def conditioning(self, skill_step: torch.Tensor, start_state: torch.Tensor, skill: torch.Tensor) -> torch.Tensor:
        """``[k / CI, s_start, skill]``."""
        return self.world_model.conditioning(skill_step.float() / self.control_interval, start_state, skill.float())

    def bootstrap_value(self, tensordict: TensorDictBase, next_z: torch.Tensor, next_zg: torch.Tensor | None) -> torch.Tensor:
        q = self.next_value(next_z, next_zg)
        if not self.settings.inter_skill_bootstrap:
            return q
        v_avg = self.world_model.avg_value_of(next_z, tensordict.get(NEXT_START_STATE))
        return torch.where(tensordict.get(SKILL_BOUNDARY), v_avg, q)

    @dispatch
    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        keys, wm = self.tensor_keys, self.world_model
        td = tensordict if tensordict.batch_dims >= 2 else tensordict.unsqueeze(-1)
        model_obs = td.get(keys.observation).float()
        obs = td.get(keys.parent_observation, model_obs).float()
        next_obs = td.get(keys.next_parent_observation, None)
        next_obs = td.get(keys.next_observation) if next_obs is None else next_obs
        next_obs = next_obs.float()
        skill, start_obs = td.get(keys.skill).float(), td.get(keys.skill_start).float()
        step = td.get(keys.skill_step).long()
        raw = self.intrinsic_reward(start_obs, skill, step, obs, next_obs)
        reward = self.reward_norm(raw, update=self.training) + self.settings.reward_offset

        with torch.no_grad():
            start_state, _ = self.predictor.encode(start_obs)
            state, _ = self.predictor.encode(obs)
            next_state, _ = self.predictor.encode(next_obs)
            next_step = (step + 1) % self.control_interval
            boundary = next_step == 0
            next_start = torch.where(boundary, next_state, start_state)
        td = td.copy()
        td.set(keys.reward, reward.unsqueeze(-1).to(torch.float32))
        td.set(keys.goal, self.conditioning(step, start_state, skill))
        td.set(keys.next_goal, self.conditioning(next_step, next_start, skill))
        td.set(SKILL_BOUNDARY, boundary)
        td.set(NEXT_START_STATE, next_state)
        out = super().forward(td)

        # V_avg: the value where a skill starts, averaged over skills drawn from the prior
        with torch.no_grad():
            z = wm.encode(model_obs)
            prior = sample_skill_prior(
                z[..., 0].numel(), self.skill_dim, device=z.device, generator=self.generator
            ).reshape(*z.shape[:-1], self.skill_dim)
            zg = wm.encode_goal(self.conditioning(torch.zeros_like(step), state, prior))
            avg_target = self.next_value(z, zg)
        avg_ce = wm.two_hot.cross_entropy(wm.avg_value_logits(z, state), avg_target)
        out.set("loss_avg_value", self.cfg["value_coef"] * avg_ce.mean())
        out.set("loss_converter", self.settings.converter_coef * F.mse_loss(wm.to_start(z), state))
        out.set("intrinsic_reward", raw.mean().detach())
        last = step.squeeze(-1) == self.control_interval - 1
        out.set("end_of_skill_reward", raw[last].mean().detach() if bool(last.any()) else torch.zeros(()))
        return out
