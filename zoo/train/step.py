"""The train and eval steps: pure functions, compiled once for any model and task."""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

from zoo.compress import quantization
from zoo.errors import ConfigError
from zoo.train.state import TrainState


def cast_floats(tree: Any, dtype: jnp.dtype | None) -> Any:
  """Floating-point leaves of `tree` cast to `dtype` (None: unchanged); integer leaves untouched."""
  if dtype is None:
    return tree
  return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def cast_model_input(batch: dict, key: str, dtype: jnp.dtype | None) -> dict:
  """The batch with only its model input `key` cast (labels and masks keep their dtypes)."""
  return batch if dtype is None else {**batch, key: cast_floats(batch[key], dtype)}


def split_microbatches(batch: dict, count: int) -> dict:
  """[B, ...] leaves -> [count, B/count, ...]; micro-batch j holds rows j, j+count, j+2*count, ...

  Taking every count-th row (rather than contiguous blocks) keeps each
  micro-batch spread evenly over the devices that hold the batch's rows.
  """
  def split(x):
    if x.shape[0] % count:
      raise ValueError(f'A batch of {x.shape[0]} rows does not split into {count} micro-batches; '
                       f'make config.data.batch_size a multiple of config.microbatches={count}.')
    return x.reshape(x.shape[0] // count, count, *x.shape[1:]).swapaxes(0, 1)
  return jax.tree.map(split, batch)


def loss_and_grads(params, model_state: dict, batch: dict, rng: jax.Array, *, task, microbatches: int = 1,
                   compute_dtype: jnp.dtype | None = None) -> tuple[Any, dict, dict]:
  """(grads like params, metrics of f32[] means, new model state) for one batch.

  compute_dtype (e.g. bf16) runs the model on cast copies of the params,
  model state and model input (tasks compute losses in f32); the gradients arrive in the params' dtype
  (f32), as does the returned model state. With microbatches=k the batch is
  processed as k micro-batches in a lax.scan and the gradients and metrics
  are their means (equal to one big batch for per-example-mean losses);
  model state (BatchNorm statistics) is threaded through the micro-batches.
  """
  def loss_fn(params, model_state, batch, rng):
    loss, (metrics, new_state) = task.loss(cast_floats(params, compute_dtype), cast_floats(model_state, compute_dtype),
                                           cast_model_input(batch, task.input_key, compute_dtype), rng, train=True)
    return loss, (metrics, jax.tree.map(lambda new, old: new.astype(old.dtype), new_state, model_state))

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  if microbatches == 1:
    (_, (metrics, model_state)), grads = grad_fn(params, model_state, batch, rng)
    return grads, metrics, model_state

  def accumulate(carry, inputs):
    grad_sum, metric_sum, model_state = carry
    index, micro = inputs
    (_, (metrics, model_state)), grads = grad_fn(params, model_state, micro, jax.random.fold_in(rng, index))
    add = lambda a, b: jax.tree.map(jnp.add, a, b)
    return (add(grad_sum, grads), add(metric_sum, metrics), model_state), None

  micro = split_microbatches(batch, microbatches)
  first = jax.tree.map(lambda x: x[0], micro)
  metric_shapes = jax.eval_shape(lambda: grad_fn(params, model_state, first, rng)[0][1][0])
  zeros = lambda tree: jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), tree)
  (grad_sum, metric_sum, model_state), _ = jax.lax.scan(
      accumulate, (zeros(params), zeros(metric_shapes), model_state), (jnp.arange(microbatches), micro))
  mean = lambda tree: jax.tree.map(lambda x: x / microbatches, tree)
  return mean(grad_sum), mean(metric_sum), model_state


def train_step(state: TrainState, batch: dict, *, task, tx: optax.GradientTransformation,
               schedule: optax.Schedule, axis_name: str | None = None, microbatches: int = 1,
               compute_dtype: jnp.dtype | None = None) -> tuple[TrainState, dict]:
  """One optimizer step: (state, batch) -> (state, metrics of f32[] scalars).

  Dropout (and any other randomness) uses fold_in(state.rng, state.step)
  (and the device index under pmap). Under pmap (axis_name set) gradients
  and metrics are averaged over devices with lax.pmean; under jit the batch
  is one global array and XLA does the same reduction.
  A step whose loss or gradient is not finite changes nothing but the step
  counter and reports metrics['nonfinite'] = 1; the loop decides what follows.
  """
  rng = jax.random.fold_in(state.rng, state.step)
  if axis_name is not None:
    rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))
  grads, metrics, model_state = loss_and_grads(state.params, state.model_state, batch, rng, task=task,
                                               microbatches=microbatches, compute_dtype=compute_dtype)
  if axis_name is not None:
    grads, metrics = jax.lax.pmean((grads, metrics), axis_name)
  grad_norm = optax.global_norm(grads)
  finite = jnp.isfinite(metrics['loss']) & jnp.isfinite(grad_norm)

  def update(params, opt_state, model_state):
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, model_state

  # A branch, not jnp.where(finite, new, old) per leaf: selecting made XLA copy every optimizer-state
  # buffer (the donated moments were read again after being overwritten) and cost one more pass over
  # the state; in the branch the update runs in place.
  params, opt_state, model_state = jax.lax.cond(
      finite, update, lambda params, opt_state, _: (params, opt_state, state.model_state),
      state.params, state.opt_state, model_state)
  new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state, model_state=model_state)
  metrics = dict(metrics, grad_norm=grad_norm, learning_rate=schedule(state.step),
                 nonfinite=1.0 - finite.astype(jnp.float32))
  return new_state, metrics


def eval_step(state: TrainState, batch: dict, *, task, compute_dtype: jnp.dtype | None = None) -> dict:
  """Metric sums over one (possibly padded) batch; see the task's eval_sums."""
  return task.eval_sums(cast_floats(state.params, compute_dtype), cast_floats(state.model_state, compute_dtype),
                        cast_model_input(batch, task.input_key, compute_dtype))


def compiler_options(cpu_options, device_count: int = 1) -> dict[str, str] | None:
  """XLA options for this backend: `cpu_options` (config.cpu_compiler_options) on one CPU device, else none.

  The zoo's conv-net configs set xla_cpu_experimental_ynn_fusion_type there: it
  hands XLA CPU's dot, elementwise and reduce fusions to the YNNPACK library,
  which makes the CNN's kernel-gradient convolution several times faster
  (see benchmarks/README.md); for scan-based models it is slower, so it is per config.
  Meshes of several CPU devices (simulated, for tests) go without: the experimental
  YNN fusions reject some sharded layouts there (tensor-split convolutions inside
  the micro-batch loop fail at run time with jax 0.10.2).
  """
  if jax.default_backend() != 'cpu' or not cpu_options or device_count > 1:
    return None
  return {key: str(value) for key, value in dict(cpu_options).items()}


COMPUTE_DTYPES = {'float32': None, 'bfloat16': jnp.bfloat16, 'float16': jnp.float16}


def step_options(config: ml_collections.ConfigDict) -> tuple[int, jnp.dtype | None]:
  """(microbatches, compute dtype or None for f32) from the run config; ConfigError when invalid.

  The loop also calls it before preparing any data, so that a bad value fails before expensive work.
  """
  dtype_name = config.compute_dtype
  if dtype_name not in COMPUTE_DTYPES:
    raise ConfigError(f'config.compute_dtype={dtype_name!r}; use one of: {", ".join(COMPUTE_DTYPES)}.')
  microbatches = config.microbatches
  if not isinstance(microbatches, int) or microbatches < 1 or config.data.batch_size % microbatches:
    raise ConfigError(f'config.microbatches={microbatches!r} must be a positive integer dividing '
                      f'config.data.batch_size={config.data.batch_size}.')
  return microbatches, COMPUTE_DTYPES[dtype_name]


def compile_steps(task, tx, schedule, strategy, config: ml_collections.ConfigDict) -> tuple[Callable, Callable]:
  """(train_step, eval_step) compiled by `strategy` (zoo.parallel.strategies) with the run config's

  microbatches (gradient accumulation), compute_dtype (mixed precision; params stay f32) and
  cpu_compiler_options.
  """
  microbatches, compute_dtype = step_options(config)
  train = functools.partial(train_step, task=task, tx=tx, schedule=schedule, axis_name=strategy.axis_name,
                            microbatches=microbatches, compute_dtype=compute_dtype)
  evaluate = functools.partial(eval_step, task=task, compute_dtype=compute_dtype)
  if config.quantization.aware_training:
    train, evaluate = _fake_quantized(train), _fake_quantized(evaluate)
  return strategy.compile(train, evaluate, compiler_options(config.cpu_compiler_options, strategy.mesh.size))


def _fake_quantized(step_fn: Callable) -> Callable:
  """step_fn traced with every Dense/Conv fake-quantized to int8 (quantization-aware training)."""
  @functools.wraps(step_fn)
  def wrapped(*args):
    with quantization.quantized('fake'):
      return step_fn(*args)
  return wrapped
