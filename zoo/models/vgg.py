"""VGG with BatchNorm (Simonyan & Zisserman 2015; torchvision's vgg16_bn): stacked 3x3 convolutions."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from zoo.models.layers import Dropout, conv, dense, maybe_remat
from zoo.models.resnet import batch_norm

VGG16 = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


class ConvBlock(nn.Module):
  """conv3x3 (no bias) - BatchNorm - ReLU."""
  features: int
  batch_norm_axis_name: str | None = None

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    """x: f32[B, H, W, C] -> f32[B, H, W, features]. (train may be positional, for nn.remat.)"""
    x = conv(self.features, (3, 3), use_bias=False)(x)
    return nn.relu(batch_norm(train, self.batch_norm_axis_name)(x))


class VGG(nn.Module):
  """VGG-16 by default: five stages of ConvBlocks, each followed by 2x2 max pooling, then
  flatten -> dense 4096 -> ReLU -> dropout -> dense 4096 -> ReLU -> dropout -> dense classifier.
  138 M params at 224 px and 1000 classes (the first dense layer alone, 7*7*512 x 4096, holds 103 M);
  15.5 G multiply-adds per 224 px image forward. The first dense layer's size follows the input
  resolution (1 x 1 x 512 at 32 px).

  Attributes:
    num_classes: output logits.
    stages: conv widths per stage.
    dense_width: width of the two hidden dense layers.
    dropout_rate: dropout after each hidden dense layer.
    batch_norm_axis_name: under pmap, the device axis to average batch statistics over.
    remat: rematerialisation policy per ConvBlock (layers.REMAT_POLICIES).
  """
  num_classes: int = 1000
  stages: Sequence[Sequence[int]] = VGG16
  dense_width: int = 4096
  dropout_rate: float = 0.5
  batch_norm_axis_name: str | None = None
  remat: str = 'none'

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    """x: f32[B, H, W, C] (H, W divisible by 2^len(stages)) -> logits f32[B, num_classes]."""
    if x.ndim != 4:
      raise ValueError(f'VGG takes images f32[batch, height, width, channels]; got shape {x.shape}.')
    block_cls = maybe_remat(ConvBlock, self.remat, static_argnums=(2,))
    index = 0
    for widths in self.stages:
      for width in widths:
        x = block_cls(width, batch_norm_axis_name=self.batch_norm_axis_name, name=f'ConvBlock_{index}')(x, train)
        index += 1
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = x.reshape(x.shape[0], -1)
    x = Dropout(self.dropout_rate, deterministic=not train)(nn.relu(dense(self.dense_width, ('embed', 'mlp'))(x)))
    x = Dropout(self.dropout_rate, deterministic=not train)(nn.relu(dense(self.dense_width, ('mlp', 'embed'))(x)))
    return dense(self.num_classes, ('embed', 'classes'))(x)
