"""The train and eval steps: pure functions, compiled once for any model and task."""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import optax

from zoo.train.state import TrainState


def train_step(state: TrainState, batch: dict, *, task, tx: optax.GradientTransformation,
               schedule: optax.Schedule) -> tuple[TrainState, dict]:
  """One optimizer step: (state, batch) -> (state, metrics of f32[] scalars).

  Dropout (and any other randomness) uses fold_in(state.rng, state.step).
  A step whose loss or gradient is not finite changes nothing but the step
  counter and reports metrics['nonfinite'] = 1; the loop decides what follows.
  """
  rng = jax.random.fold_in(state.rng, state.step)
  grad_fn = jax.value_and_grad(task.loss, has_aux=True)
  (loss, (metrics, model_state)), grads = grad_fn(state.params, state.model_state, batch, rng, train=True)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  grad_norm = optax.global_norm(grads)
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  keep_if_finite = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
  new_state = state.replace(
      step=state.step + 1,
      params=keep_if_finite(params, state.params),
      opt_state=keep_if_finite(opt_state, state.opt_state),
      model_state=keep_if_finite(model_state, state.model_state))
  metrics = dict(metrics, grad_norm=grad_norm, learning_rate=schedule(state.step),
                 nonfinite=1.0 - finite.astype(jnp.float32))
  return new_state, metrics


def eval_step(state: TrainState, batch: dict, *, task) -> dict:
  """Metric sums over one (possibly padded) batch; see the task's eval_sums."""
  return task.eval_sums(state.params, state.model_state, batch)


def compiler_options(cpu_options) -> dict[str, str] | None:
  """XLA options for this backend: `cpu_options` (config.cpu_compiler_options) on CPU, else none.

  The zoo's conv-net configs set xla_cpu_experimental_ynn_fusion_type there: it
  hands XLA CPU's dot, elementwise and reduce fusions to the YNNPACK library,
  which makes the CNN's kernel-gradient convolution several times faster
  (see benchmarks/README.md); for scan-based models it is slower, so it is per config.
  """
  if jax.default_backend() != 'cpu' or not cpu_options:
    return None
  return {key: str(value) for key, value in dict(cpu_options).items()}


def compile_steps(task, tx, schedule, state_shardings, batch_sharding, *,
                  cpu_options=None) -> tuple[Callable, Callable]:
  """jit-compiled (train_step, eval_step) with the state donated and kept sharded."""
  options = compiler_options(cpu_options)
  train = jax.jit(functools.partial(train_step, task=task, tx=tx, schedule=schedule),
                  in_shardings=(state_shardings, batch_sharding),
                  out_shardings=(state_shardings, None), donate_argnums=0, compiler_options=options)
  evaluate = jax.jit(functools.partial(eval_step, task=task), in_shardings=(state_shardings, batch_sharding),
                     compiler_options=options)
  return train, evaluate
