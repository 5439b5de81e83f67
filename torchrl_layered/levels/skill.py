"""`SkillLevel`: what the skill-discovery levels (DADS, SPlaTES) share.

A skill level is a skill-conditioned TD-MPC2 agent below a parent whose predictor is its
model of skill outcomes: the skill (the parent's option, in ``[-1, 1]^skill_dim``) is what
the level is asked to do, and its reward, recomputed per batch by its loss, says how
predictably and distinctly the skill's outcome matched it under that predictor.

With ``hold=True`` the option has one more coordinate, the hold switch: past
``hold_threshold`` the level outputs its hold action for the option instead of a skill. Learned
skills all move (standing still is neither diverse nor, for SPlaTES, a displacement the reward
pays for), so without it a planner above can reach a goal but not stay there.
"""
from __future__ import annotations

from typing import Any, ClassVar, Sequence

import torch
from tensordict import TensorDictBase
from torchrl.data import Bounded, TensorSpec

from torchrl_layered.levels.base import Level
from torchrl_layered.levels.tdmpc2 import TDMPC2Level
from torchrl_layered.objectives.skill_rewards import SkillReward, split_reward_settings


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


class SkillLevel(TDMPC2Level):
    """Base class of skill levels: the skill input, the parent's predictor, the reward settings.

    Subclasses name their reward's settings class (``reward_settings``, a `SkillReward`) and
    build their loss from ``self.reward``. The symmetry-breaking prior of the loss counts this
    level's transitions; its weight is reported while it lasts.

    Args:
        skill_dim: size of the skill.
        config: the TD-MPC2 config (`get_default_tdmpc2_config`).
        reward: the reward's settings (an instance of ``reward_settings`` or a dict of its
            fields); each field may also be given as a keyword argument, which wins.
        hold: add the hold switch to the option (``level_input`` of ``skill_dim + 1`` entries).
            Held steps are not stored for skill learning (the parent still learns from them
            that a hold stays put), and the skill reward scores skills with the switch off.
        hold_threshold: the switch is on where its coordinate exceeds this (in ``(-1, 1)``;
            0.5 makes a quarter of uniformly drawn options holds).
        hold_action: what the level outputs while holding, in the action spec's units; the
            middle of the action bounds (zero velocity for a velocity-controlled agent) if None.
        **kwargs: of `TDMPC2Level`.
    """

    layeredrl_spellings = {"skill_space_dim": "skill_dim"}
    #: The settings class of the level's reward; its fields are keyword arguments of the level.
    reward_settings: ClassVar[type[SkillReward]] = SkillReward

    @classmethod
    def keyword_settings(cls) -> tuple[type, ...]:
        return (cls.reward_settings,)

    def __init__(self, skill_dim: int = 2, config: dict[str, Any] | None = None, *,
                 reward: SkillReward | dict[str, Any] | None = None, hold: bool = False, hold_threshold: float = 0.5,
                 hold_action: Sequence[float] | torch.Tensor | None = None, **kwargs):
        name = type(self).__name__
        if not isinstance(skill_dim, int) or isinstance(skill_dim, bool) or skill_dim < 1:
            raise ValueError(f"{name} needs an int skill_dim >= 1; got {skill_dim!r}")
        if not isinstance(hold, bool):
            raise ValueError(f"{name}: hold must be True or False; got {hold!r}")
        if isinstance(hold_threshold, bool) or not isinstance(hold_threshold, (int, float)) or not -1 < hold_threshold < 1:
            raise ValueError(f"{name}: hold_threshold must be a number in (-1, 1) (the switch's range); got {hold_threshold!r}")
        if hold_action is not None:
            hold_action = torch.as_tensor(hold_action, dtype=torch.float32)
            if hold_action.dim() != 1 or not bool(torch.isfinite(hold_action).all()):
                raise ValueError(f"{name}: hold_action must be a finite 1-D action; got {hold_action.tolist()}")
        settings = self.reward_settings.resolve(reward, split_reward_settings(self.reward_settings, kwargs), name)
        super().__init__(config, **kwargs)
        self.skill_dim = skill_dim
        self.hold, self.hold_threshold, self._hold_action = hold, float(hold_threshold), hold_action
        #: The reward's settings, shared with the loss (frozen).
        self.reward = settings
        self._skill_model: list = []

    def get_input_spec(self) -> Bounded:
        return Bounded(-1.0, 1.0, shape=(self.skill_dim + self.hold,))

    def initialize(self, observation_spec: TensorSpec, action_spec: TensorSpec, parent: Level | None = None) -> None:
        if self._hold_action is not None and self._hold_action.shape != action_spec.shape:
            raise ValueError(f"{type(self).__name__}: hold_action has shape {tuple(self._hold_action.shape)} but "
                             f"the action spec {tuple(action_spec.shape)}")
        # a reference, not a submodule: the parent owns and trains it
        self._skill_model = [parent_predictor(self, parent, observation_spec)]
        super().initialize(observation_spec, action_spec, parent)

    def _model_dims(self, obs_dim: int, input_dim: int) -> tuple[int, int, int]:
        return super()._model_dims(obs_dim, input_dim - self.hold)  # the agent sees the skill, not the switch

    # ------------------------------------------------------------------ hold
    @property
    def move_switch(self) -> torch.Tensor | None:
        """The switch value ``[1]`` the skill reward appends to skills (the middle of the "move"
        range, so the parent's model is queried where it saw moves); None without ``hold``."""
        if not self.hold:
            return None
        return torch.tensor([(self.hold_threshold - 1) / 2])

    def holding(self, level_input: torch.Tensor) -> torch.Tensor | None:
        """Rows ``[n]`` whose option holds, or None without ``hold``."""
        if not self.hold:
            return None
        return level_input.reshape(level_input.shape[0], -1)[:, self.skill_dim] > self.hold_threshold

    def hold_action(self, device=None) -> torch.Tensor:
        """The action ``[*action_shape]`` output while holding."""
        if self._hold_action is not None:
            return self._hold_action.to(device=device, dtype=self.action_spec.dtype)
        space = self.action_spec.space
        return ((space.low + space.high) / 2).to(device=device, dtype=self.action_spec.dtype)

    def _act(self, acting: TensorDictBase, everyone: TensorDictBase) -> torch.Tensor:
        if not self.hold:
            return super()._act(acting, everyone)
        level_input = acting.get("level_input")
        holding = self.holding(level_input)
        acting.set("level_input", level_input[:, : self.skill_dim])  # the skill part drives the agent
        action = super()._act(acting, everyone)
        return torch.where(holding[:, None], self.hold_action(action.device).to(action.dtype), action)

    def record(self, accepted: TensorDictBase | None) -> None:
        """Stores the skill steps of ``accepted``, without the switch; held steps are left out."""
        if accepted is None or not self.hold:
            return super().record(accepted)
        accepted = accepted.reshape(-1)
        level_input = accepted.get("level_input")
        moving = ~self.holding(level_input)
        if not bool(moving.any()):
            return None
        kept = accepted[moving]
        kept.set("level_input", level_input[moving][:, : self.skill_dim])
        return super().record(kept)

    @property
    def skill_model(self):
        """The parent's predictor (referenced: it is not part of this level's state dict).

        Not called ``predictor``: a level below must not mistake it for a model of its own skills.
        """
        return self._skill_model[0]

    def learn(self) -> dict[str, float]:
        self.loss.symmetry_breaking.step.fill_(self.n_transitions)
        metrics = super().learn()
        if metrics and self.loss.symmetry_breaking.duration > 0:
            metrics["symmetry_breaking_weight"] = self.loss.symmetry_breaking.weight()
        return metrics
