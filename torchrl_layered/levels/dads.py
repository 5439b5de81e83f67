"""`DADSLevel`: skills learned with the DADS reward (Sharma et al., 2020) under the parent's model."""
from __future__ import annotations

from typing import Any

import torch
from tensordict import TensorDictBase
from torchrl.data import Bounded, TensorSpec

from torchrl_layered.levels.base import Level
from torchrl_layered.levels.tdmpc2 import TDMPC2Level
from torchrl_layered.objectives.dads import DADSLoss


def parent_predictor(level: Level, parent: Level | None, observation_spec: TensorSpec):
    """The parent's predictor, which a skill level uses as its model of skill outcomes.

    Raises a clear error when the parent has none (or one without a density), or when the
    parent sees observations of another shape (its encoder could not read this level's).
    """
    name = type(level).__name__
    predictor = getattr(parent, "predictor", None)
    if parent is None or predictor is None or not callable(getattr(predictor, "encode", None)):
        raise TypeError(f"{name} needs a parent with a predictor (e.g. PlannerLevel); got {type(parent).__name__}")
    if not callable(getattr(getattr(predictor, "model", None), "log_prob", None)):
        raise TypeError(
            f"{name} needs a parent with a predictor (e.g. PlannerLevel); got {type(parent).__name__} whose "
            f"predictor's model ({type(getattr(predictor, 'model', None)).__name__}) has no log_prob: give the "
            "parent a learned RewardPredictor (a ProbabilisticEnsemble)"
        )
    parent_spec = getattr(parent, "observation_spec", None)
    if parent_spec is not None and parent_spec.shape != observation_spec.shape:
        raise ValueError(
            f"{name} encodes its observations with the parent's predictor, but it sees shape "
            f"{tuple(observation_spec.shape)} and the parent {tuple(parent_spec.shape)}: give both the same obs map"
        )
    return predictor


class SkillPriorLearning:
    """For skill levels whose loss has a `SymmetryBreakingPrior`: its clock is the level's transitions.

    Mixed in before `TDMPC2Level`; also reports the prior's current weight while it lasts.
    """

    def learn(self) -> dict[str, float]:
        self.loss.symmetry_breaking.step.fill_(self.n_transitions)
        metrics = super().learn()
        if metrics and self.loss.symmetry_breaking.duration > 0:
            metrics["symmetry_breaking_weight"] = self.loss.symmetry_breaking.weight()
        return metrics


class DADSLevel(SkillPriorLearning, TDMPC2Level):
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
        n_skill_samples, fixed_std, reward_clipping_low, reward_clipping_high, reward_offset,
            reward_scale, norm_momentum, symmetry_breaking_steps: of `DADSLoss` (the
            symmetry-breaking prior's duration counts this level's transitions).
        **kwargs: of `TDMPC2Level` (``warm_up_steps``, ``update_interval``, ``use_policy``, ...).
    """

    layeredrl_spellings = {"skill_space_dim": "skill_dim"}

    def __init__(
        self,
        skill_dim: int = 2,
        config: dict[str, Any] | None = None,
        *,
        control_interval: int | None = 1,
        termination_probability: float = 0.0,
        n_skill_samples: int = 100,
        fixed_std: float = 1.0,
        reward_clipping_low: float = -50.0,
        reward_clipping_high: float = 50.0,
        reward_offset: float = 1.0,
        reward_scale: float = 1.0,
        norm_momentum: float = 0.005,
        symmetry_breaking_steps: int = 0,
        **kwargs,
    ):
        if kwargs.get("desired_goal_slice") is not None or kwargs.get("use_her"):
            raise ValueError("DADSLevel conditions on its skill; it takes no desired_goal_slice or use_her")
        if not 0.0 <= termination_probability <= 1.0:
            raise ValueError(f"DADSLevel: termination_probability must lie in [0, 1]; got {termination_probability}")
        if not isinstance(skill_dim, int) or skill_dim < 1:
            raise ValueError(f"DADSLevel needs an int skill_dim >= 1; got {skill_dim!r}")
        super().__init__(config, control_interval=control_interval, input_as_goal=True, **kwargs)
        self.skill_dim = skill_dim
        self.termination_probability = termination_probability
        self.reward_args = dict(
            n_skill_samples=n_skill_samples, fixed_std=fixed_std, reward_clipping_low=reward_clipping_low,
            reward_clipping_high=reward_clipping_high, reward_offset=reward_offset, reward_scale=reward_scale,
            norm_momentum=norm_momentum,
            symmetry_breaking_steps=symmetry_breaking_steps,
        )

    def get_input_spec(self) -> Bounded:
        return Bounded(-1.0, 1.0, shape=(self.skill_dim,))

    def initialize(self, observation_spec: TensorSpec, action_spec: TensorSpec, parent: Level | None = None) -> None:
        self._skill_model = [parent_predictor(self, parent, observation_spec)]  # a reference, not a submodule
        super().initialize(observation_spec, action_spec, parent)

    def make_loss(self) -> DADSLoss:
        return DADSLoss(self.world_model, self._skill_model[0], self.cfg, **self.reward_args)

    def is_done(self, tensordict: TensorDictBase) -> torch.Tensor:
        done = super().is_done(tensordict)
        if self.termination_probability > 0:
            steps = tensordict.get("steps")
            done = done | (torch.rand(steps.shape, device=steps.device) < self.termination_probability)
        return done
