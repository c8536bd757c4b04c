"""Pure linen modules, one file a family; `build(config.model)` picks one by name."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import ml_collections

from zoo.models.cnn import CNN
from zoo.models.mlp import MLP
from zoo.models.resnet import BottleneckResNet, ResNet
from zoo.models.rnn import RNNClassifier, RNNLanguageModel
from zoo.models.transformer import TransformerEncoder
from zoo.models.vae import VAE
from zoo.models.vgg import VGG
from zoo.models.vit import ViT
from zoo.registry import construct

MODELS: dict[str, type[nn.Module]] = {
    'mlp': MLP,
    'cnn': CNN,
    'resnet': ResNet,
    'bottleneck_resnet': BottleneckResNet,
    'rnn_classifier': RNNClassifier,
    'rnn_lm': RNNLanguageModel,
    'transformer': TransformerEncoder,
    'vae': VAE,
    'vgg': VGG,
    'vit': ViT,
}


def init_params(model: nn.Module, rng: jax.Array, *inputs: jax.Array, **kwargs: Any) -> dict:
  """model.init(rng, *inputs, train=False, **kwargs) as plain arrays: the variables (params, batch_stats, ...)
  without flax's LogicallyPartitioned boxes (nn.meta.unbox), so `.shape` and arithmetic work. Arrays keep
  the shardings they were made with; the logical axis names live on in `nn.get_partition_spec(model.init(...))`."""
  return nn.meta.unbox(model.init(rng, *inputs, train=False, **kwargs))


def build(config: ml_collections.ConfigDict) -> nn.Module:
  """config.name picks the module; every other key is a module attribute."""
  return construct(MODELS, config, 'model')


__all__ = ['CNN', 'MLP', 'MODELS', 'BottleneckResNet', 'RNNClassifier', 'RNNLanguageModel', 'ResNet',
           'TransformerEncoder', 'VAE', 'VGG', 'ViT', 'build', 'init_params']
