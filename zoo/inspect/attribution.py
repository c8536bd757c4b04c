"""Which input pixels a classifier's decision rests on: saliency maps and integrated gradients.

Both take `logits_fn(x) -> f32[B, C]` (e.g. lambda x: model.apply(variables, x,
train=False)), inputs x f32[B, ...] and target classes i32[B], and return
attributions shaped like x.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

LogitsFn = Callable[[jax.Array], jax.Array]


def _target_logit_sum(logits_fn: LogitsFn, target: jax.Array) -> Callable[[jax.Array], jax.Array]:
  """x -> sum over the batch of each example's target logit (its gradient is per-example)."""
  return lambda x: jnp.take_along_axis(logits_fn(x), target[:, None], axis=1).sum()


def saliency(logits_fn: LogitsFn, x: jax.Array, target: jax.Array) -> jax.Array:
  """|d logit_target / d x| (Simonyan et al. 2014): f32 like x."""
  return jnp.abs(jax.grad(_target_logit_sum(logits_fn, target))(x))


def integrated_gradients(logits_fn: LogitsFn, x: jax.Array, target: jax.Array, baseline: jax.Array | None = None,
                         steps: int = 64) -> jax.Array:
  """Integrated gradients (Sundararajan et al. 2017) from `baseline` (default zeros) to x: f32 like x.

  (x - baseline) times the mean gradient of the target logit at `steps`
  midpoints of the straight path. Completeness: the attributions of an
  example sum to logit(x) - logit(baseline), up to the midpoint rule's error.
  """
  baseline = jnp.zeros_like(x) if baseline is None else baseline
  grad_fn = jax.grad(_target_logit_sum(logits_fn, target))

  def add_gradient(total, alpha):
    return total + grad_fn(baseline + alpha * (x - baseline)), None

  alphas = (jnp.arange(steps, dtype=x.dtype) + 0.5) / steps
  total, _ = jax.lax.scan(add_gradient, jnp.zeros_like(x), alphas)
  return (x - baseline) * total / steps


def completeness_gap(logits_fn: LogitsFn, x: jax.Array, target: jax.Array, attributions: jax.Array,
                     baseline: jax.Array | None = None) -> jax.Array:
  """f32[B]: sum of attributions minus (logit_target(x) - logit_target(baseline)); ~0 for IG."""
  baseline = jnp.zeros_like(x) if baseline is None else baseline
  pick = lambda inputs: jnp.take_along_axis(logits_fn(inputs), target[:, None], axis=1)[:, 0]
  return attributions.reshape(x.shape[0], -1).sum(-1) - (pick(x) - pick(baseline))


def attention_maps(model, variables: dict, tokens: jax.Array) -> list[jax.Array]:
  """Per encoder block, in order, the attention weights f32[B, heads, T, T] of a zoo TransformerEncoder."""
  _, state = model.apply(variables, tokens, train=False, mutable=['intermediates'])
  blocks = state['intermediates']
  names = sorted((name for name in blocks if name.startswith('EncoderBlock_')), key=lambda n: int(n.split('_')[-1]))
  return [blocks[name]['MultiHeadSelfAttention_0']['attention_weights'][0] for name in names]
