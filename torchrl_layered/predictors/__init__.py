"""Predictors (world models in an encoder's latent) and their factories."""
from torchrl_layered.modules.encoders import EncoderNet, FixedEncoder, IdentityEncoder
from torchrl_layered.modules.predictor import KnownModel, Predictor, RewardPredictor
from torchrl_layered.predictors.factory import get_default_predictor_factory

__all__ = [
    "Predictor", "RewardPredictor", "KnownModel", "IdentityEncoder", "FixedEncoder", "EncoderNet",
    "get_default_predictor_factory",
]
