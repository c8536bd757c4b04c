"""Pure linen modules, one file a family; `build(config.model)` picks one by name."""

from __future__ import annotations

import flax.linen as nn
import ml_collections

from zoo.models.cnn import CNN
from zoo.models.mlp import MLP
from zoo.models.resnet import ResNet
from zoo.models.rnn import RNNClassifier, RNNLanguageModel
from zoo.models.transformer import TransformerEncoder
from zoo.models.vae import VAE
from zoo.registry import construct

MODELS: dict[str, type[nn.Module]] = {
    'mlp': MLP,
    'cnn': CNN,
    'resnet': ResNet,
    'rnn_classifier': RNNClassifier,
    'rnn_lm': RNNLanguageModel,
    'transformer': TransformerEncoder,
    'vae': VAE,
}


def build(config: ml_collections.ConfigDict) -> nn.Module:
  """config.name picks the module; every other key is a module attribute."""
  return construct(MODELS, config, 'model')


__all__ = ['CNN', 'MLP', 'MODELS', 'RNNClassifier', 'RNNLanguageModel', 'ResNet', 'TransformerEncoder', 'VAE',
           'build']
