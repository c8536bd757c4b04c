"""Pure linen modules, one file a family; `build(config.model)` picks one by name."""

from __future__ import annotations

import flax.linen as nn
import ml_collections

from zoo.models.cnn import CNN
from zoo.registry import construct

MODELS: dict[str, type[nn.Module]] = {
    'cnn': CNN,
}


def build(config: ml_collections.ConfigDict) -> nn.Module:
  """config.name picks the module; every other key is a module attribute."""
  return construct(MODELS, config, 'model')


__all__ = ['CNN', 'MODELS', 'build']
