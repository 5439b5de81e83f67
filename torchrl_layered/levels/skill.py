"""`SkillLevel`: what the skill-discovery levels (DADS, SPlaTES) share.

A skill level is a skill-conditioned TD-MPC2 agent below a parent whose predictor is its
model of skill outcomes: the skill (the parent's option, in ``[-1, 1]^skill_dim``) is what
the level is asked to do, and its reward, recomputed per batch by its loss, says how
predictably and distinctly the skill's outcome matched it under that predictor.
"""
from __future__ import annotations

from typing import Any, ClassVar

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
        **kwargs: of `TDMPC2Level`.
    """

    layeredrl_spellings = {"skill_space_dim": "skill_dim"}
    #: The settings class of the level's reward; its fields are keyword arguments of the level.
    reward_settings: ClassVar[type[SkillReward]] = SkillReward

    @classmethod
    def keyword_settings(cls) -> tuple[type, ...]:
        return (cls.reward_settings,)

    def __init__(self, skill_dim: int = 2, config: dict[str, Any] | None = None, *,
                 reward: SkillReward | dict[str, Any] | None = None, **kwargs):
        name = type(self).__name__
        if not isinstance(skill_dim, int) or isinstance(skill_dim, bool) or skill_dim < 1:
            raise ValueError(f"{name} needs an int skill_dim >= 1; got {skill_dim!r}")
        settings = self.reward_settings.resolve(reward, split_reward_settings(self.reward_settings, kwargs), name)
        super().__init__(config, **kwargs)
        self.skill_dim = skill_dim
        #: The reward's settings, shared with the loss (frozen).
        self.reward = settings
        self._skill_model: list = []

    def get_input_spec(self) -> Bounded:
        return Bounded(-1.0, 1.0, shape=(self.skill_dim,))

    def initialize(self, observation_spec: TensorSpec, action_spec: TensorSpec, parent: Level | None = None) -> None:
        # a reference, not a submodule: the parent owns and trains it
        self._skill_model = [parent_predictor(self, parent, observation_spec)]
        super().initialize(observation_spec, action_spec, parent)

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
