"""`DADSLevel`: skills learned with the DADS reward (Sharma et al., 2020) under the parent's model."""
from __future__ import annotations

from typing import Any

import torch
from tensordict import TensorDictBase

from torchrl_layered.levels.skill import SkillLevel
from torchrl_layered.objectives.dads import DADSLoss
from torchrl_layered.objectives.skill_rewards import DADSReward


class DADSLevel(SkillLevel):
    """A skill-conditioned TD-MPC2 agent rewarded by DADS in the parent's predictor space.

    The skill (the parent's option, in ``[-1, 1]^skill_dim``) plays the role of the TD-MPC2
    goal: the goal encoder embeds it for reward, Q and policy. The skill-dynamics model is the
    parent's predictor (e.g. a `PlannerLevel`'s `RewardPredictor`), which learns
    ``q(s' | s, c, z)`` from the parent's own transitions (start, skill, end). `DADSLoss`
    recomputes the intrinsic reward for every sampled batch (normalised, shifted by
    ``reward_offset``); TD targets bootstrap with the transition's own skill. A skill lasts
    ``control_interval`` steps, or ends earlier with probability ``termination_probability``
    per step.

    Args:
        skill_dim: size of the skill.
        config: the TD-MPC2 config (`get_default_tdmpc2_config`).
        control_interval: steps per skill.
        termination_probability: the chance per step of handing control back early.
        reward: the reward's settings, a `DADSReward` (or a dict); its fields (``fixed_std``,
            ``n_skill_samples``, ...) may also be given as keyword arguments. The
            symmetry-breaking prior's duration counts this level's transitions.
        **kwargs: of `TDMPC2Level` (``warm_up_steps``, ``update_interval``, ``use_policy``, ...).
    """

    reward_settings = DADSReward

    def __init__(
        self,
        skill_dim: int = 2,
        config: dict[str, Any] | None = None,
        *,
        control_interval: int | None = 1,
        termination_probability: float = 0.0,
        reward: DADSReward | dict[str, Any] | None = None,
        **kwargs,
    ):
        if kwargs.get("desired_goal_slice") is not None or kwargs.get("use_her"):
            raise ValueError("DADSLevel conditions on its skill; it takes no desired_goal_slice or use_her")
        if not 0.0 <= termination_probability <= 1.0:
            raise ValueError(f"DADSLevel: termination_probability must lie in [0, 1]; got {termination_probability}")
        super().__init__(skill_dim, config, reward=reward, control_interval=control_interval, input_as_goal=True,
                         **kwargs)
        self.termination_probability = termination_probability

    def make_loss(self) -> DADSLoss:
        return DADSLoss(self.world_model, self.skill_model, self.cfg, reward=self.reward, hold_switch=self.move_switch)

    def is_done(self, tensordict: TensorDictBase) -> torch.Tensor:
        done = super().is_done(tensordict)
        if self.termination_probability > 0:
            steps = tensordict.get("steps")
            done = done | (torch.rand(steps.shape, device=steps.device) < self.termination_probability)
        return done
