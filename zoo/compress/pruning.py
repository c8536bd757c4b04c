"""Magnitude pruning: one-shot masks, and gradual pruning as the last Optax transform of the chain.

Only kernels (params with ndim >= 2) are pruned; biases and norm scales stay.
A mask is True where a weight is kept. Gradual pruning follows Zhu & Gupta's
polynomial schedule s(t) = s_f + (s_i - s_f) (1 - (t - t0) / (t1 - t0))^3,
recomputing the masks every `every` steps between t0 and t1; a pruned weight
gets the update -w, which sets it to exactly 0.0 and keeps it there.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from zoo.errors import ConfigError

SCOPES = ('global', 'layer')


def is_prunable(leaf: Any) -> bool:
  """Kernels (ndim >= 2) are pruned; biases and norm parameters are not."""
  return getattr(leaf, 'ndim', 0) >= 2


def _keep_largest(magnitudes: jax.Array, sparsity: jax.Array) -> jax.Array:
  """bool mask keeping all but the floor(sparsity * n) smallest entries of a flat f32[n]."""
  count = magnitudes.size
  pruned = jnp.floor(sparsity * count).astype(jnp.int32)
  ranks = jnp.argsort(jnp.argsort(magnitudes, stable=True), stable=True)  # 0 = smallest
  return ranks >= pruned


def magnitude_masks(params: Any, sparsity: float | jax.Array, scope: str = 'global') -> Any:
  """Masks (True = keep) pruning the smallest-magnitude `sparsity` fraction of the kernels.

  scope 'global' ranks all kernels together (layers end at different
  sparsities); 'layer' prunes each kernel to `sparsity`. Non-kernel leaves get
  all-True masks.
  """
  if scope not in SCOPES:
    raise ConfigError(f'Pruning scope {scope!r}; use one of: {", ".join(SCOPES)}.')
  leaves, treedef = jax.tree.flatten(params)
  kernels = [i for i, leaf in enumerate(leaves) if is_prunable(leaf)]
  masks = [jnp.ones(jnp.shape(leaf), bool) for leaf in leaves]
  if scope == 'layer':
    for i in kernels:
      masks[i] = _keep_largest(jnp.abs(leaves[i]).ravel(), sparsity).reshape(leaves[i].shape)
  elif kernels:
    keep = _keep_largest(jnp.concatenate([jnp.abs(leaves[i]).ravel() for i in kernels]), sparsity)
    offsets = np.cumsum([0] + [leaves[i].size for i in kernels])
    for n, i in enumerate(kernels):
      masks[i] = keep[offsets[n]:offsets[n + 1]].reshape(leaves[i].shape)
  return jax.tree.unflatten(treedef, masks)


def apply_masks(params: Any, masks: Any) -> Any:
  """params with the masked-out weights set to 0."""
  return jax.tree.map(lambda p, m: jnp.where(m, p, jnp.zeros_like(p)), params, masks)


def polynomial_sparsity(final: float, begin_step: int, end_step: int, initial: float = 0.0,
                        power: int = 3) -> Callable[[jax.Array], jax.Array]:
  """Zhu & Gupta's schedule: `initial` before begin_step, rising to `final` at end_step, then flat."""
  if not 0.0 <= final < 1.0 or end_step < begin_step:
    raise ConfigError(f'Pruning needs 0 <= sparsity < 1 and begin_step <= end_step; got sparsity={final}, '
                      f'steps {begin_step}..{end_step}.')

  def schedule(step):
    progress = jnp.clip((step - begin_step) / max(end_step - begin_step, 1), 0.0, 1.0)
    return final + (initial - final) * (1.0 - progress) ** power
  return schedule


class PruningState(NamedTuple):
  count: jax.Array
  masks: Any


def gradual_pruning(schedule: Callable[[jax.Array], jax.Array], begin_step: int, end_step: int, every: int,
                    scope: str = 'global') -> optax.GradientTransformation:
  """Optax transform that keeps pruned weights at exactly zero; put it last in the chain.

  Between begin_step and end_step, every `every` steps, the masks are
  recomputed from the current params at sparsity schedule(step). A masked
  weight's update becomes -weight, so after optax.apply_updates it is 0.0.
  """
  if every < 1:
    raise ConfigError(f'Pruning every={every}; it must be a positive number of steps.')

  def init(params):
    return PruningState(jnp.zeros((), jnp.int32), jax.tree.map(lambda p: jnp.ones(jnp.shape(p), bool), params))

  def update(updates, state, params):
    if params is None:
      raise ValueError('gradual_pruning needs the params: call tx.update(grads, state, params).')
    step = state.count
    due = (step >= begin_step) & (step <= end_step) & ((step - begin_step) % every == 0)
    masks = jax.lax.cond(due, lambda: magnitude_masks(params, schedule(step), scope), lambda: state.masks)
    updates = jax.tree.map(lambda u, p, m: jnp.where(m, u, -p), updates, params, masks)
    return updates, PruningState(step + 1, masks)

  return optax.GradientTransformation(init, update)


def sparsity_report(params: Any) -> dict[str, float]:
  """Fraction of exact zeros per kernel ('path': fraction) and over all kernels ('all')."""
  report, zeros, total = {}, 0, 0
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    if is_prunable(leaf):
      leaf = np.asarray(leaf)
      name = '/'.join(str(getattr(k, 'key', getattr(k, 'idx', k))) for k in path)
      report[name] = float((leaf == 0).mean())
      zeros, total = zeros + int((leaf == 0).sum()), total + leaf.size
  report['all'] = zeros / total if total else 0.0
  return report
