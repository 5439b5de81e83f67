"""Predictors (world models in an encoder's latent), their encoders and their factories."""
from torchrl_layered.predictors.encoders import Encoder, EncoderNet, FixedEncoder, IdentityEncoder
from torchrl_layered.predictors.factory import (
    PredictorFactory,
    build_predictor,
    default_predictor_factory,
    get_default_predictor_factory,
)
from torchrl_layered.predictors.predictor import KnownModel, Predictor, RewardPredictor

__all__ = [
    "Predictor", "RewardPredictor", "KnownModel", "Encoder", "IdentityEncoder", "FixedEncoder", "EncoderNet",
    "PredictorFactory", "build_predictor", "default_predictor_factory", "get_default_predictor_factory",
]
