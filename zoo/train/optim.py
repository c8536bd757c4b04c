"""Optax optimizer and learning-rate schedule from a config.

The optimizer is one chain, in this order:
  clip_by_global_norm -> coupled penalties (L2, L1, added to the gradient)
  -> the method's scaling (sgd, momentum, nesterov, adam, adamw, rmsprop)
  -> decoupled weight decay -> -learning_rate(step) -> [gradual magnitude pruning]
  -> [params average].
Penalties and weight decay use a mask: 'all' params, or 'kernels' (params
with ndim >= 2, which leaves out biases and norm scales).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

from zoo import compress
from zoo.config import complete
from zoo.errors import ConfigError

SCHEDULES = ('constant', 'exponential', 'piecewise', 'warmup_cosine')
OPTIMIZERS = ('sgd', 'momentum', 'nesterov', 'adam', 'adamw', 'rmsprop')


def build_schedule(config: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """step -> learning rate. config: learning_rate, schedule and its options.

  constant; exponential (decay_rate every decay_steps, staircase);
  piecewise (boundaries as fractions of total_steps or steps, scales);
  warmup_cosine (warmup_steps linear from 0, cosine to end_learning_rate).
  """
  config = complete('optimizer', config)
  lr = config.learning_rate
  if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
    raise ConfigError(f'config.optimizer.learning_rate={lr!r}; it must be a number above 0, e.g. 1e-3.')
  name = config.schedule
  if name == 'constant':
    return optax.constant_schedule(lr)
  if name == 'exponential':
    return optax.exponential_decay(lr, transition_steps=config.decay_steps, decay_rate=config.decay_rate,
                                   staircase=config.staircase)
  if name == 'piecewise':
    boundaries = [int(b * total_steps) if 0 < b < 1 else int(b) for b in config.boundaries]
    return optax.piecewise_constant_schedule(lr, dict(zip(boundaries, config.scales)))
  if name == 'warmup_cosine':
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=lr, warmup_steps=config.warmup_steps,
        decay_steps=max(total_steps, config.warmup_steps + 1),
        end_value=config.end_learning_rate)
  raise ConfigError(f'Unknown schedule {name!r}; set config.optimizer.schedule to one of: {", ".join(SCHEDULES)}.')


def decay_mask(kind: str):
  """'all' -> None (every param); 'kernels' -> mask fn keeping params with ndim >= 2."""
  if kind == 'all':
    return None
  if kind == 'kernels':
    return lambda params: jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)
  raise ConfigError(f"Unknown decay mask {kind!r}; set config.optimizer.decay_mask to 'all' or 'kernels'.")


def add_l1_penalty(l1: float, mask: Any = None) -> optax.GradientTransformation:
  """Adds l1 * sign(param) to the gradient (the subgradient of l1 * |param|)."""
  def update(updates, state, params):
    if params is None:
      raise ValueError('add_l1_penalty needs params passed to update().')
    return jax.tree.map(lambda g, p: g + l1 * jnp.sign(p), updates, params), state
  transform = optax.GradientTransformation(lambda params: optax.EmptyState(), update)
  return optax.masked(transform, mask) if mask is not None else transform


class ParamsAverageState(NamedTuple):
  """count: i32[] updates averaged so far; average: a moving average of the params (like params)."""
  count: jax.Array
  average: Any


def params_average(decay: float) -> optax.GradientTransformation:
  """Keeps an exponential moving average of the params after each update, for evaluation.

  Polyak averaging with the rate of TF's ExponentialMovingAverage(num_updates):
  average = r * average + (1 - r) * new params, r = min(decay, (1 + n) / (10 + n)) at
  the n-th update, so the first updates are not held back by the initial params.
  `decay` binds only from n = 9 / (1 - decay) - 10 on (8990 updates for 0.999); before
  that it weighs update k of n by about 9 k^8 / n^9 (at n = 3000: 61% of the weight on
  the last tenth of the updates, 87% on the last fifth).
  Must be the chain's last transformation (it needs the final updates). Updates
  pass through unchanged; `averaged_params` reads the average from the optimizer state.
  """
  def init(params):
    return ParamsAverageState(jnp.zeros((), jnp.int32), jax.tree.map(jnp.array, params))

  def update(updates, state, params):
    if params is None:
      raise ValueError('params_average needs params passed to update().')
    count = state.count.astype(jnp.float32)
    rate = jnp.minimum(decay, (1.0 + count) / (10.0 + count))
    average = jax.tree.map(lambda a, p, u: rate * a + (1.0 - rate) * (p + u), state.average, params, updates)
    return updates, ParamsAverageState(state.count + 1, average)

  return optax.GradientTransformation(init, update)


def averaged_params(opt_state: Any) -> Any | None:
  """The params average that `params_average` keeps in `opt_state`, or None if the optimizer keeps none.

  opt_state may be typed (optax states) or the dicts and lists that checkpoint.load_state restores.
  """
  if isinstance(opt_state, ParamsAverageState):
    return opt_state.average
  if isinstance(opt_state, dict):
    if set(opt_state) == set(ParamsAverageState._fields):
      return opt_state['average']
    opt_state = list(opt_state.values())
  if not isinstance(opt_state, (list, tuple)):
    return None
  found = [average for average in map(averaged_params, opt_state) if average is not None]
  return found[0] if found else None


def _scaling(config: ml_collections.ConfigDict) -> list[optax.GradientTransformation]:
  name = config.name
  if name == 'sgd':
    return []
  if name in ('momentum', 'nesterov'):
    return [optax.trace(decay=config.momentum, nesterov=name == 'nesterov')]
  if name in ('adam', 'adamw'):
    return [optax.scale_by_adam(b1=config.b1, b2=config.b2, eps=config.eps)]
  if name == 'rmsprop':
    scaling = [optax.scale_by_rms(decay=config.decay, eps=config.eps)]
    if config.momentum:
      scaling.append(optax.trace(decay=config.momentum))
    return scaling
  raise ConfigError(f'Unknown optimizer {name!r}; set config.optimizer.name to one of: {", ".join(OPTIMIZERS)}.')


def build(config: ml_collections.ConfigDict, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """Returns (optax transform, learning-rate schedule) for `config`: the optimizer section, or a plain or
  partial dict of it (the rest from zoo.config.default_config).

  Keys (defaults in zoo.config.default_config): name, learning_rate, schedule (+ its options), momentum
  (momentum, nesterov, rmsprop; 0 turns it off for rmsprop), b1, b2, eps, decay (rmsprop), grad_clip_norm,
  weight_decay (decoupled, any optimizer; 'adamw' is 'adam' where weight_decay is meant to be set),
  l2, l1, decay_mask ('kernels' or 'all'), pruning (sparsity > 0 turns on gradual
  magnitude pruning of the kernels: scope, begin/end as fractions of the run, every),
  average_decay (> 0: evaluate a moving average of the params, see `params_average`).
  """
  config = complete('optimizer', config)
  schedule = build_schedule(config, total_steps)
  mask = decay_mask(config.decay_mask)
  chain = []
  if config.grad_clip_norm:
    chain.append(optax.clip_by_global_norm(config.grad_clip_norm))
  if config.l2:
    chain.append(optax.add_decayed_weights(config.l2, mask))
  if config.l1:
    chain.append(add_l1_penalty(config.l1, mask))
  chain.extend(_scaling(config))
  if config.weight_decay:
    chain.append(optax.add_decayed_weights(config.weight_decay, mask))
  chain.append(optax.scale_by_learning_rate(schedule))
  pruning = config.pruning
  if pruning.sparsity > 0:
    begin, end = int(pruning.begin_fraction * total_steps), int(pruning.end_fraction * total_steps)
    chain.append(compress.gradual_pruning(compress.polynomial_sparsity(pruning.sparsity, begin, end), begin, end,
                                          pruning.every, pruning.scope))
  if config.average_decay:
    if pruning.sparsity > 0:
      raise ConfigError('config.optimizer.average_decay with pruning would evaluate an average of pruned and '
                        'unpruned weights, which is not sparse; set one of them to 0.')
    if not 0.0 < config.average_decay < 1.0:
      raise ConfigError(f'config.optimizer.average_decay={config.average_decay} must lie in (0, 1), e.g. 0.999.')
    chain.append(params_average(config.average_decay))
  return optax.chain(*chain), schedule


def evaluation_params(params: Any, opt_state: Any) -> Any:
  """The params a run evaluates with: the optimizer's params average where it keeps one, else `params`."""
  average = averaged_params(opt_state)
  return params if average is None else average
