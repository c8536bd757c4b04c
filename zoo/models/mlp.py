"""Multi-layer perceptron classifier."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from zoo.models.layers import ACTIVATIONS, Dropout, dense, norm_param_init


class MLP(nn.Module):
  """Flattens the input, then dense -> [BatchNorm] -> activation -> [dropout] per hidden layer.

  Hidden kernels alternate logical axes ('embed', 'mlp') / ('mlp', 'embed'),
  so consecutive layers can be tensor-parallel without resharding.

  Attributes:
    num_classes: output logits.
    widths: hidden layer widths.
    activation: 'relu', 'gelu', 'tanh', 'silu' or 'elu'.
    dropout_rate: dropout after each hidden activation (train only).
    batch_norm: BatchNorm before each activation (statistics in 'batch_stats').
    batch_norm_axis_name: under pmap, the device axis to average batch statistics over.
  """
  num_classes: int = 10
  widths: Sequence[int] = (512, 256)
  activation: str = 'relu'
  dropout_rate: float = 0.0
  batch_norm: bool = False
  batch_norm_axis_name: str | None = None

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    """x: f32[B, ...] (flattened) -> logits f32[B, num_classes]."""
    if self.activation not in ACTIVATIONS:
      raise ValueError(f'Unknown activation {self.activation!r}; use one of: {", ".join(sorted(ACTIVATIONS))}.')
    x = x.reshape((x.shape[0], -1))
    axes = ('embed', 'mlp')
    for width in self.widths:
      x = dense(width, axes, use_bias=not self.batch_norm)(x)
      if self.batch_norm:
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, axis_name=self.batch_norm_axis_name,
                         scale_init=norm_param_init(nn.initializers.ones, axes[1]),
                         bias_init=norm_param_init(nn.initializers.zeros, axes[1]))(x)
      x = ACTIVATIONS[self.activation](x)
      x = Dropout(self.dropout_rate, deterministic=not train)(x)
      axes = axes[::-1]
    return dense(self.num_classes, (axes[0], 'classes'))(x)
