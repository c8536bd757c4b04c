"""The train and eval steps: pure functions, compiled once for any model and task."""

from __future__ import annotations

import functools
from typing import Callable

import jax
import optax

from zoo.train.state import TrainState


def train_step(state: TrainState, batch: dict, *, task, tx: optax.GradientTransformation,
               schedule: optax.Schedule) -> tuple[TrainState, dict]:
  """One optimizer step: (state, batch) -> (state, metrics of f32[] scalars).

  Dropout (and any other randomness) uses fold_in(state.rng, state.step).
  """
  rng = jax.random.fold_in(state.rng, state.step)
  grad_fn = jax.value_and_grad(task.loss, has_aux=True)
  (_, (metrics, model_state)), grads = grad_fn(state.params, state.model_state, batch, rng, train=True)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = dict(metrics, grad_norm=optax.global_norm(grads), learning_rate=schedule(state.step))
  new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state, model_state=model_state)
  return new_state, metrics


def eval_step(state: TrainState, batch: dict, *, task) -> dict:
  """Metric sums over one (possibly padded) batch; see the task's eval_sums."""
  return task.eval_sums(state.params, state.model_state, batch)


def compile_steps(task, tx, schedule, state_shardings, batch_sharding) -> tuple[Callable, Callable]:
  """jit-compiled (train_step, eval_step) with the state donated and kept sharded."""
  train = jax.jit(functools.partial(train_step, task=task, tx=tx, schedule=schedule),
                  in_shardings=(state_shardings, batch_sharding),
                  out_shardings=(state_shardings, None), donate_argnums=0)
  evaluate = jax.jit(functools.partial(eval_step, task=task), in_shardings=(state_shardings, batch_sharding))
  return train, evaluate
