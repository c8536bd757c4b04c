"""A small ResNet (basic blocks) for 28x28 and 32x32 images."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from zoo.models.layers import conv, dense, norm_param_init


def _batch_norm(train: bool, axis_name: str | None, zero_scale: bool = False) -> nn.BatchNorm:
  scale = nn.initializers.zeros if zero_scale else nn.initializers.ones
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, axis_name=axis_name,
                      scale_init=norm_param_init(scale, 'conv_out'),
                      bias_init=norm_param_init(nn.initializers.zeros, 'conv_out'))


class BasicBlock(nn.Module):
  """conv3x3-BN-ReLU-conv3x3-BN plus a shortcut (1x1 conv + BN when the shape changes), then ReLU.

  The last BN's scale starts at zero, so each block starts as the identity.
  """
  features: int
  strides: int = 1
  batch_norm_axis_name: str | None = None

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    """x: f32[B, H, W, C] -> f32[B, H/strides, W/strides, features]."""
    y = conv(self.features, (3, 3), strides=self.strides, use_bias=False)(x)
    y = nn.relu(_batch_norm(train, self.batch_norm_axis_name)(y))
    y = conv(self.features, (3, 3), use_bias=False)(y)
    y = _batch_norm(train, self.batch_norm_axis_name, zero_scale=True)(y)
    if x.shape != y.shape:
      x = conv(self.features, (1, 1), strides=self.strides, use_bias=False, name='shortcut_conv')(x)
      x = _batch_norm(train, self.batch_norm_axis_name)(x)
    return nn.relu(x + y)


class ResNet(nn.Module):
  """3x3 stem, stages of BasicBlocks (stride 2 at the start of every stage but the first),
  global average pooling and a dense classifier. BatchNorm statistics live in 'batch_stats'.

  Attributes:
    num_classes: output logits.
    stage_sizes: blocks per stage.
    widths: channels per stage.
    batch_norm_axis_name: under pmap, the device axis to average batch statistics over.
  """
  num_classes: int = 10
  stage_sizes: Sequence[int] = (2, 2, 2)
  widths: Sequence[int] = (32, 64, 128)
  batch_norm_axis_name: str | None = None

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    """x: f32[B, H, W, C] -> logits f32[B, num_classes]."""
    if x.ndim != 4:
      raise ValueError(f'ResNet takes images f32[batch, height, width, channels]; got shape {x.shape}. '
                       'Add the missing axes, e.g. x[..., None] for one channel.')
    if len(self.stage_sizes) != len(self.widths):
      raise ValueError(f'stage_sizes {tuple(self.stage_sizes)} and widths {tuple(self.widths)} differ in length.')
    x = conv(self.widths[0], (3, 3), use_bias=False, name='stem')(x)
    x = nn.relu(_batch_norm(train, self.batch_norm_axis_name)(x))
    for stage, (blocks, width) in enumerate(zip(self.stage_sizes, self.widths)):
      for block in range(blocks):
        x = BasicBlock(width, strides=2 if stage > 0 and block == 0 else 1,
                       batch_norm_axis_name=self.batch_norm_axis_name)(x, train=train)
    x = x.mean(axis=(1, 2))
    return dense(self.num_classes, ('embed', 'classes'))(x)
