"""TorchRL `LossModule`s of the levels."""
from torchrl_layered.objectives.dads import DADSLoss
from torchrl_layered.objectives.ensemble import EnsembleModelLoss
from torchrl_layered.objectives.predictor import RewardPredictorLoss
from torchrl_layered.objectives.soft_update import ForeachSoftUpdate
from torchrl_layered.objectives.skill_rewards import DADSReward, SkillReward, SPlaTESReward
from torchrl_layered.objectives.splates import SPlaTESLoss
from torchrl_layered.objectives.tdmpc2 import TDMPC2Loss

__all__ = [
    "EnsembleModelLoss", "RewardPredictorLoss", "TDMPC2Loss", "DADSLoss", "SPlaTESLoss",
    "SkillReward", "DADSReward", "SPlaTESReward", "ForeachSoftUpdate",
]
