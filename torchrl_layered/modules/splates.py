"""The SPlaTES world model: TD-MPC2 conditioned on (time in skill, skill start, skill).

SPlaTES skills last a fixed number of steps and are rewarded for where they end relative to
where they started. So reward, Q and policy see the conditioning vector
``[k / CI, s_start, skill]`` (``k`` the step within the skill, ``s_start`` the parent's
encoding of the skill's start), embedded by the goal encoder; dynamics and termination do not
(the skill doesn't change the physics). With ``raw_conditioning`` the heads read it as it is,
as the reference's do: Q and policy ``[k / CI, s_start, skill]``, the reward
``[s_start, skill]`` (a step's reward does not depend on how far into the skill it lies).
Two heads are added: ``V_avg(z, s_start)``, the value of a state where a new skill starts,
averaged over skills (the bootstrap at skill boundaries), and a latent converter
``z -> s_start`` that lets planning read the parent's encoding off an imagined latent.
"""
from __future__ import annotations

from typing import Any

import torch

from torchrl_layered.modules.tdmpc2 import TDMPC2WorldModel, mlp, mlp_on, weight_init


class SPlaTESWorldModel(TDMPC2WorldModel):
    """`TDMPC2WorldModel` whose goal is ``[k / CI, s_start, skill]``, plus ``V_avg`` and a latent converter.

    Args:
        obs_dim, action_dim: sizes of the observation and of the action.
        config: a resolved TD-MPC2 config.
        skill_dim: size of the skill.
        start_dim: size of the parent's latent state (the skill start's encoding).
        raw_conditioning: feed the conditioning to the heads unembedded, as the reference does.
    """

    def __init__(self, obs_dim: int, action_dim: int, config: dict[str, Any], skill_dim: int, start_dim: int,
                 raw_conditioning: bool = False):
        super().__init__(obs_dim, action_dim, config, goal_dim=1 + start_dim + skill_dim, raw_goal=raw_conditioning)
        self.skill_dim, self.start_dim = skill_dim, start_dim
        self.raw_conditioning = raw_conditioning
        latent, mlp_dim = config["latent_dim"], config["mlp_dim"]
        if raw_conditioning:  # the reward reads [z, a, s_start, skill]: no k / CI
            self.reward = mlp(latent + action_dim + start_dim + skill_dim, [mlp_dim, mlp_dim], config["num_bins"], zero_last=True)
            self.reward.apply(weight_init)
            with torch.no_grad():  # initialised as the TD-MPC2 reward head: predicting 0
                self.reward[-1].weight.zero_()
        self.avg_value = mlp(latent + start_dim, [mlp_dim, mlp_dim], config["num_bins"], zero_last=True)
        self.converter = mlp(latent, [mlp_dim], start_dim)

    def reward_logits(self, z, a, zg=None) -> torch.Tensor:
        """Two-hot reward logits; with ``raw_conditioning`` from ``[z, a, s_start, skill]``
        (``zg``, the whole conditioning, starts with ``k / CI``)."""
        return mlp_on(self.reward, z, a, zg[..., 1:] if self.raw_conditioning else zg)

    @staticmethod
    def conditioning(progress: torch.Tensor, start: torch.Tensor, skill: torch.Tensor) -> torch.Tensor:
        """``[k / CI, s_start, skill]`` (``progress`` = ``k / CI``, shape ``[*, 1]``)."""
        return torch.cat([progress.to(start.dtype), start, skill.to(start.dtype)], -1)

    def avg_value_logits(self, z: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
        """Two-hot logits of ``V_avg(z, s_start)``: the value where a new skill starts."""
        return self.avg_value(torch.cat([z, start], -1))

    def avg_value_of(self, z: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
        """``V_avg(z, s_start)`` decoded, ``[*, 1]``."""
        return self.two_hot.decode(self.avg_value_logits(z, start))

    def to_start(self, z: torch.Tensor) -> torch.Tensor:
        """The parent's latent state estimated from a TD-MPC2 latent."""
        return self.converter(z)
