"""Linen layers whose params carry logical axis names, so any mesh can shard them.

Logical axes used by zoo models: 'conv_height', 'conv_width', 'conv_in',
'conv_out' (convolutions); 'embed', 'mlp', 'classes' (dense layers).
`zoo.parallel` maps them to mesh axes with a rules table.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec

BATCH_AXES = ('data', 'fsdp')  # the mesh axes a batch is split over (zoo.parallel.mesh shards input batches so)


def constrain_batch(x: jax.Array) -> jax.Array:
  """x [B, ...] with B split over the batch axes of the mesh being traced under, as the input batch is.

  Without it, a layout that shards weights over 'fsdp' lets XLA gather the batch instead of the weights inside
  the step (activations of the whole batch on every chip). A no-op outside a mesh context
  (jax.sharding.use_abstract_mesh, which the jit strategy enters), and where B does not divide.
  """
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return x
  axes = tuple(axis for axis in BATCH_AXES if axis in mesh.axis_names and mesh.shape[axis] > 1)
  if not axes or x.shape[0] % math.prod(mesh.shape[axis] for axis in axes):
    return x
  return jax.lax.with_sharding_constraint(x, PartitionSpec(axes))


ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    'relu': nn.relu, 'gelu': nn.gelu, 'tanh': nn.tanh, 'silu': nn.silu, 'elu': nn.elu,
}


def norm_param_init(init: Callable, axis: str) -> Callable:
  """A norm layer's scale/bias initializer with logical axis `axis`."""
  return nn.with_logical_partitioning(init, (axis,))


def _dense_inits(axes: tuple[str, str]) -> dict[str, Callable]:
  """Kernel (lecun normal, logical axes `axes`) and bias (zeros, axis `axes[1]`) initializers."""
  return dict(kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), axes),
              bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), (axes[1],)))


def dense(features: int, axes: tuple[str, str], name: str | None = None, **kwargs) -> nn.Dense:
  """nn.Dense with kernel axes `axes` (in, out) and bias axis `axes[1]`."""
  return nn.Dense(features, name=name, **_dense_inits(axes), **kwargs)


class DenseParams(nn.Module):
  """The params of `dense(features, axes)` (same names, shapes and initial values), returned unapplied,

  for kernels that apply them inside their own loops (zoo.kernels.recurrence.recurrent_layer).
  """
  features: int
  axes: tuple[str, str]

  @nn.compact
  def __call__(self, in_features: int) -> tuple[jax.Array, jax.Array]:
    """-> (kernel f32[in_features, features], bias f32[features])."""
    inits = _dense_inits(self.axes)
    return (self.param('kernel', inits['kernel_init'], (in_features, self.features)),
            self.param('bias', inits['bias_init'], (self.features,)))


def perturbation_point(module: nn.Module, name: str, x: jax.Array) -> jax.Array:
  """x plus the caller's 'perturbations' entry `name` (same shape as x) when apply is given one, else x.

  The hook for adversarial training (zoo.tasks.classification): the task gets the entry's shape
  by applying with mutable=['perturbations'], and its gradient is the loss's gradient at x.
  Unlike a bare `module.perturb`, init creates nothing, so `init`'s variables hold no batch-shaped zeros.
  """
  return x if module.is_initializing() else module.perturb(name, x)


def conv(features: int, kernel_size: Sequence[int], name: str | None = None, **kwargs) -> nn.Conv:
  """2-D nn.Conv with kernel axes (conv_height, conv_width, conv_in, conv_out)."""
  return nn.Conv(
      features, tuple(kernel_size),
      kernel_init=nn.with_logical_partitioning(
          nn.initializers.lecun_normal(), ('conv_height', 'conv_width', 'conv_in', 'conv_out')),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ('conv_out',)),
      name=name, **kwargs)


class Dropout(nn.Module):
  """Inverted dropout whose masks cost a quarter of nn.Dropout's random bits (same rng stream, 'dropout').

  nn.Dropout draws one 32-bit threefry word per element. Here each word gives
  four 8-bit uniforms, so the keep probability is rounded to a multiple of
  1/256 (rate 0.3 keeps 179/256 = 0.6992, rate 0.1 keeps 230/256); kept values
  are scaled by the realized 256/179, so the expectation stays exact. On 2 CPU
  cores a [64, 60, 512] mask, forward and backward, falls from 19 to 3.4 ms:
  flax's dropout was a third of the Transformer's train step
  (benchmarks/README.md). Rates within 1/512 of 0 or 1 use full 32-bit
  uniforms instead. Words are drawn over the leading axes, so the masks are
  the same however the batch is sharded.

  Attributes:
    rate: probability of dropping an element.
    deterministic: if true, return the input unchanged (eval); may be given at call time instead.
  """
  rate: float
  deterministic: bool | None = None

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool | None = None) -> jax.Array:
    """x: any float array -> same shape and dtype, elements dropped and the rest scaled (train)."""
    if nn.merge_param('deterministic', self.deterministic, deterministic) or self.rate == 0.0:
      return x
    if self.rate >= 1.0:
      return jnp.zeros_like(x)
    rng = self.make_rng('dropout')
    keep_levels = round((1.0 - self.rate) * 256)
    if keep_levels in (0, 256):
      keep = jax.random.bernoulli(rng, 1.0 - self.rate, x.shape)
      return jnp.where(keep, x / (1.0 - self.rate), jnp.zeros_like(x))
    words = -(-x.shape[-1] // 4)
    bits = jax.random.bits(rng, (*x.shape[:-1], words), jnp.uint32)
    uniform8 = jax.lax.bitcast_convert_type(bits, jnp.uint8).reshape(*x.shape[:-1], 4 * words)[..., :x.shape[-1]]
    keep = uniform8 < np.uint8(keep_levels)
    return jnp.where(keep, x * jnp.asarray(256 / keep_levels, x.dtype), jnp.zeros_like(x))


POOLINGS = ('mean', 'max', 'attention')


def masked_pool(x: jax.Array, valid: jax.Array, how: str) -> jax.Array:
  """Pools x f32[B, T, D] over its real steps (valid: bool[B, T]) -> f32[B, D], without params.

  'mean': the average over real steps; 'max': per feature, the largest value over real
  steps. A row without real steps gives 0 either way.
  """
  if how == 'max':
    pooled = jnp.where(valid[..., None], x, jnp.finfo(x.dtype).min).max(1)
    return jnp.where(valid.any(1, keepdims=True), pooled, jnp.zeros_like(pooled))
  if how == 'mean':
    weights = valid.astype(x.dtype)[..., None]
    return (x * weights).sum(1) / jnp.maximum(weights.sum(1), 1.0)
  raise ValueError(f"Unknown pooling {how!r} for masked_pool; use 'mean' or 'max'.")


class Pool(nn.Module):
  """Pools x f32[B, T, D] over its real steps (valid: bool[B, T]) -> f32[B, D].

  how: 'mean' or 'max' (`masked_pool`, no params), or 'attention': keys-only MLP
  attention (Bahdanau et al. 2015; the pooling of the Flax SST-2 example), the
  average of x weighted by softmax over real steps of v^T tanh(W x_t), with W
  [D, hidden] ('keys', hidden defaults to D) and v [hidden, 1] ('energy'). A row
  without real steps gives 0.
  """
  how: str
  hidden: int | None = None

  @nn.compact
  def __call__(self, x: jax.Array, valid: jax.Array) -> jax.Array:
    if self.how not in POOLINGS:
      raise ValueError(f'Unknown pooling {self.how!r}; use one of: {", ".join(POOLINGS)}.')
    if self.how != 'attention':
      return masked_pool(x, valid, self.how)
    energy = jnp.tanh(dense(self.hidden or x.shape[-1], ('embed', 'mlp'), name='keys', use_bias=False)(x))
    scores = dense(1, ('mlp', None), name='energy', use_bias=False)(energy)[..., 0]
    weights = jax.nn.softmax(jnp.where(valid, scores, jnp.finfo(scores.dtype).min), axis=-1) * valid
    return jnp.einsum('bt,btd->bd', weights, x)


# Rematerialisation policies by name (config.model.remat): which values a block's backward pass keeps from
# its forward pass; the rest are recomputed. 'none' keeps everything (no remat), 'full' keeps only the
# block's inputs, 'dots_saveable' keeps matmul/conv outputs, 'dots_with_no_batch_dims_saveable' keeps
# only the weight matmuls' outputs (not attention's batched dots).
REMAT_POLICIES: dict[str, Callable | None] = {
    'none': None,
    'full': jax.checkpoint_policies.nothing_saveable,
    'dots_saveable': jax.checkpoint_policies.dots_saveable,
    'dots_with_no_batch_dims_saveable': jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def remat_policy(name: str) -> Callable | None:
  """The jax.checkpoint policy called `name` (see REMAT_POLICIES); ValueError naming the choices."""
  if name not in REMAT_POLICIES:
    raise ValueError(f'Unknown remat policy {name!r}; use one of: {", ".join(REMAT_POLICIES)}.')
  return REMAT_POLICIES[name]


def maybe_remat(block: type[nn.Module], policy: str, static_argnums: tuple[int, ...] = ()) -> type[nn.Module]:
  """`block` wrapped in nn.remat with the named policy, or `block` itself for 'none'.

  static_argnums count `self` as 0 (flax's convention), e.g. (2,) for __call__(self, x, train).
  """
  checkpoint_policy = remat_policy(policy)
  if policy == 'none':
    return block
  return nn.remat(block, policy=checkpoint_policy, static_argnums=static_argnums)


def stack_layers(collection: dict, prefix: str, stacked_name: str = 'layers') -> dict:
  """Unscanned -> scanned layout: entries prefix0..prefix{n-1} (e.g. 'EncoderBlock_0') of one variable
  collection (params, batch_stats, ...) become one entry `stacked_name` whose leaves have a leading axis n."""
  names = sorted((k for k in collection if k.startswith(prefix) and k[len(prefix):].isdigit()),
                 key=lambda k: int(k[len(prefix):]))
  if not names:
    raise ValueError(f'No entries named {prefix}0, {prefix}1, ... to stack; the tree has {sorted(collection)}.')
  rest = {k: v for k, v in collection.items() if k not in names}
  return {**rest, stacked_name: jax.tree.map(lambda *leaves: jnp.stack(leaves), *[collection[k] for k in names])}


def unstack_layers(collection: dict, prefix: str, stacked_name: str = 'layers') -> dict:
  """Scanned -> unscanned layout, the inverse of stack_layers."""
  if stacked_name not in collection:
    raise ValueError(f'No stacked entry {stacked_name!r} to unstack; the tree has {sorted(collection)}.')
  stacked = collection[stacked_name]
  count = jax.tree.leaves(stacked)[0].shape[0]
  rest = {k: v for k, v in collection.items() if k != stacked_name}
  return {**rest, **{f'{prefix}{i}': jax.tree.map(lambda leaf, i=i: leaf[i], stacked) for i in range(count)}}
