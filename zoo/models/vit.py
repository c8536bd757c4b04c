"""Vision Transformer (Dosovitskiy et al. 2021) in big_vision's plain form (Beyer et al. 2022):
patch embedding, fixed 2-D sinusoidal positions, the zoo's pre-LN encoder blocks, global average pooling."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from zoo.models.layers import Dropout
from zoo.models.transformer import encoder_blocks, layer_norm

VIT_POOLINGS = ('gap', 'cls')


def sincos_2d_positions(height: int, width: int, dim: int, temperature: float = 10_000.0) -> np.ndarray:
  """f32[height * width, dim], row-major over the patch grid: [sin(x w), cos(x w), sin(y w), cos(y w)]
  with w = temperature^(-i / (dim/4 - 1)), i < dim/4 (big_vision's posemb_sincos_2d)."""
  if dim % 4:
    raise ValueError(f'2-D sinusoidal positions need d_model divisible by 4; got {dim}.')
  y, x = np.mgrid[:height, :width].astype(np.float64)
  omega = 1.0 / temperature ** (np.arange(dim // 4, dtype=np.float64) / max(dim // 4 - 1, 1))
  y, x = y.reshape(-1, 1) * omega, x.reshape(-1, 1) * omega
  return np.concatenate([np.sin(x), np.cos(x), np.sin(y), np.cos(y)], axis=1).astype(np.float32)


class ViT(nn.Module):
  """ViT-B/16 by default (86 M params at 1000 classes; 17.6 G multiply-adds per 224 px image forward).

  Attributes:
    num_classes: output logits.
    patch_size: square patches, embedded by one strided convolution.
    d_model, num_layers, num_heads, d_ff: encoder sizes (B: 768, 12, 12, 3072; S: 384, 12, 6, 1536).
    dropout_rate: dropout in the blocks (big_vision: 0).
    pooling: 'gap' (mean over patches) or 'cls' (a learned class token, prepended).
    scan_layers, remat: see zoo.models.transformer.encoder_blocks.
    attention: the attention kernel, see zoo.kernels.attention.
  The head's kernel starts at zero (big_vision's head_zeroinit).
  """
  num_classes: int = 1000
  patch_size: int = 16
  d_model: int = 768
  num_layers: int = 12
  num_heads: int = 12
  d_ff: int = 3072
  dropout_rate: float = 0.0
  pooling: str = 'gap'
  scan_layers: bool = False
  remat: str = 'none'
  attention: str = 'auto'

  @nn.compact
  def __call__(self, images: jax.Array, *, train: bool) -> jax.Array:
    """images: f32[B, H, W, C] (H, W divisible by patch_size) -> logits f32[B, num_classes]."""
    if images.ndim != 4:
      raise ValueError(f'ViT takes images f32[batch, height, width, channels]; got shape {images.shape}.')
    if images.shape[1] % self.patch_size or images.shape[2] % self.patch_size:
      raise ValueError(f'Image size {images.shape[1:3]} is not divisible by patch_size={self.patch_size}.')
    if self.pooling not in VIT_POOLINGS:
      raise ValueError(f'pooling={self.pooling!r}; use one of: {", ".join(VIT_POOLINGS)}.')
    patch = (self.patch_size, self.patch_size)
    x = nn.Conv(self.d_model, patch, strides=patch, padding='VALID', name='embedding',
                kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(),
                                                         ('conv_height', 'conv_width', 'conv_in', 'embed')),
                bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ('embed',)))(images)
    batch, height, width, dim = x.shape
    x = x.reshape(batch, height * width, dim) + jnp.asarray(sincos_2d_positions(height, width, dim), x.dtype)
    if self.pooling == 'cls':
      token = self.param('cls', nn.with_logical_partitioning(nn.initializers.zeros_init(), (None, None, 'embed')),
                         (1, 1, dim))
      x = jnp.concatenate([jnp.broadcast_to(token.astype(x.dtype), (batch, 1, dim)), x], axis=1)
    x = Dropout(self.dropout_rate, deterministic=not train)(x)
    x = encoder_blocks(x, jnp.ones(x.shape[:2], bool), train=train, num_layers=self.num_layers,
                       scan_layers=self.scan_layers, remat=self.remat, num_heads=self.num_heads, d_ff=self.d_ff,
                       dropout_rate=self.dropout_rate, attention=self.attention)
    x = layer_norm()(x)
    pooled = x.mean(axis=1) if self.pooling == 'gap' else x[:, 0]
    return nn.Dense(self.num_classes, name='head',
                    kernel_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ('embed', 'classes')),
                    bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ('classes',)))(pooled)
