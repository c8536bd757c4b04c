"""Linen layers whose params carry logical axis names, so any mesh can shard them.

Logical axes used by zoo models: 'conv_height', 'conv_width', 'conv_in',
'conv_out' (convolutions); 'embed', 'mlp', 'classes' (dense layers).
`zoo.parallel` maps them to mesh axes with a rules table.
"""

from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    'relu': nn.relu, 'gelu': nn.gelu, 'tanh': nn.tanh, 'silu': nn.silu, 'elu': nn.elu,
}


def norm_param_init(init: Callable, axis: str) -> Callable:
  """A norm layer's scale/bias initializer with logical axis `axis`."""
  return nn.with_logical_partitioning(init, (axis,))


def dense(features: int, axes: tuple[str, str], name: str | None = None, **kwargs) -> nn.Dense:
  """nn.Dense with kernel axes `axes` (in, out) and bias axis `axes[1]`."""
  return nn.Dense(
      features,
      kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), axes),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), (axes[1],)),
      name=name, **kwargs)


def conv(features: int, kernel_size: Sequence[int], name: str | None = None, **kwargs) -> nn.Conv:
  """2-D nn.Conv with kernel axes (conv_height, conv_width, conv_in, conv_out)."""
  return nn.Conv(
      features, tuple(kernel_size),
      kernel_init=nn.with_logical_partitioning(
          nn.initializers.lecun_normal(), ('conv_height', 'conv_width', 'conv_in', 'conv_out')),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ('conv_out',)),
      name=name, **kwargs)
