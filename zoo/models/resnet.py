"""ResNets: a small one (basic blocks) for 28x28 and 32x32 images, and ResNet-50 (bottleneck blocks, v1.5)."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from zoo.models.layers import conv, dense, maybe_remat, norm_param_init


def batch_norm(train: bool, axis_name: str | None, zero_scale: bool = False) -> nn.BatchNorm:
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
    y = nn.relu(batch_norm(train, self.batch_norm_axis_name)(y))
    y = conv(self.features, (3, 3), use_bias=False)(y)
    y = batch_norm(train, self.batch_norm_axis_name, zero_scale=True)(y)
    if x.shape != y.shape:
      x = conv(self.features, (1, 1), strides=self.strides, use_bias=False, name='shortcut_conv')(x)
      x = batch_norm(train, self.batch_norm_axis_name)(x)
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
    x = nn.relu(batch_norm(train, self.batch_norm_axis_name)(x))
    for stage, (blocks, width) in enumerate(zip(self.stage_sizes, self.widths)):
      for block in range(blocks):
        x = BasicBlock(width, strides=2 if stage > 0 and block == 0 else 1,
                       batch_norm_axis_name=self.batch_norm_axis_name)(x, train=train)
    x = x.mean(axis=(1, 2))
    return dense(self.num_classes, ('embed', 'classes'))(x)


class BottleneckBlock(nn.Module):
  """conv1x1-BN-ReLU, conv3x3 (stride here: v1.5)-BN-ReLU, conv1x1 to 4 x features-BN, plus a shortcut
  (1x1 conv + BN when the shape changes), then ReLU. The last BN's scale starts at zero (block = identity)."""
  features: int
  strides: int = 1
  batch_norm_axis_name: str | None = None

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    """x: f32[B, H, W, C] -> f32[B, H/strides, W/strides, 4 * features]. (train may be positional, for nn.remat.)"""
    y = conv(self.features, (1, 1), use_bias=False)(x)
    y = nn.relu(batch_norm(train, self.batch_norm_axis_name)(y))
    y = conv(self.features, (3, 3), strides=self.strides, use_bias=False)(y)
    y = nn.relu(batch_norm(train, self.batch_norm_axis_name)(y))
    y = conv(4 * self.features, (1, 1), use_bias=False)(y)
    y = batch_norm(train, self.batch_norm_axis_name, zero_scale=True)(y)
    if x.shape != y.shape:
      x = conv(4 * self.features, (1, 1), strides=self.strides, use_bias=False, name='shortcut_conv')(x)
      x = batch_norm(train, self.batch_norm_axis_name)(x)
    return nn.relu(x + y)


class BottleneckResNet(nn.Module):
  """ResNet-50 by default (He et al. 2016, v1.5 strides as in the Flax ImageNet example and torchvision):
  7x7/2 stem, 3x3/2 max pool, stages of BottleneckBlocks (stride 2 in the first block of every stage but
  the first), global average pooling and a dense classifier. 25.6 M params at 1000 classes; 4.1 G
  multiply-adds per 224 px image forward. stage_sizes (3, 4, 23, 3) gives ResNet-101, (3, 8, 36, 3) ResNet-152.

  Attributes:
    num_classes: output logits.
    stage_sizes: blocks per stage.
    widths: inner channels per stage (blocks output 4x).
    batch_norm_axis_name: under pmap, the device axis to average batch statistics over.
    remat: rematerialisation policy per block (layers.REMAT_POLICIES).
  """
  num_classes: int = 1000
  stage_sizes: Sequence[int] = (3, 4, 6, 3)
  widths: Sequence[int] = (64, 128, 256, 512)
  batch_norm_axis_name: str | None = None
  remat: str = 'none'

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    """x: f32[B, H, W, C] -> logits f32[B, num_classes]."""
    if x.ndim != 4:
      raise ValueError(f'BottleneckResNet takes images f32[batch, height, width, channels]; got shape {x.shape}.')
    if len(self.stage_sizes) != len(self.widths):
      raise ValueError(f'stage_sizes {tuple(self.stage_sizes)} and widths {tuple(self.widths)} differ in length.')
    x = conv(self.widths[0], (7, 7), strides=2, padding=((3, 3), (3, 3)), use_bias=False, name='stem')(x)
    x = nn.relu(batch_norm(train, self.batch_norm_axis_name)(x))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding='SAME')
    block_cls = maybe_remat(BottleneckBlock, self.remat, static_argnums=(2,))
    index = 0
    for stage, (blocks, width) in enumerate(zip(self.stage_sizes, self.widths)):
      for block in range(blocks):
        x = block_cls(width, strides=2 if stage > 0 and block == 0 else 1,
                      batch_norm_axis_name=self.batch_norm_axis_name, name=f'BottleneckBlock_{index}')(x, train)
        index += 1
    x = x.mean(axis=(1, 2))
    return dense(self.num_classes, ('embed', 'classes'))(x)
