"""The Flax-examples CNN: conv32-pool-conv64-pool-dense256-dense10."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from zoo.models.layers import Dropout, conv, dense


class CNN(nn.Module):
  """Small convolutional classifier (Flax `examples/mnist`).

  Each stage is a 3x3 convolution, ReLU and 2x2 average pooling; then one
  hidden dense layer with ReLU (and optional dropout) and the class logits.

  Attributes:
    num_classes: number of output logits.
    features: output channels of each convolution stage.
    hidden: width of the hidden dense layer.
    dropout_rate: dropout before the output layer (train only).
  """
  num_classes: int = 10
  features: Sequence[int] = (32, 64)
  hidden: int = 256
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    """x: f32[B, H, W, C] -> logits f32[B, num_classes]."""
    if x.ndim != 4:
      raise ValueError(f'CNN takes images f32[batch, height, width, channels]; got shape {x.shape}. '
                       'Add the missing axes, e.g. x[..., None] for one channel.')
    for features in self.features:
      x = conv(features, (3, 3))(x)
      x = nn.relu(x)
      x = nn.avg_pool(x, window_shape=(2, 2), strides=(2, 2))
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(dense(self.hidden, ('embed', 'mlp'))(x))
    x = Dropout(self.dropout_rate, deterministic=not train)(x)
    return dense(self.num_classes, ('mlp', 'classes'))(x)
