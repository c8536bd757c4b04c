"""The train state and its creation, directly sharded on a mesh."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from zoo.parallel import logical_shardings


@flax.struct.dataclass
class TrainState:
  """Everything a step reads and writes.

  Attributes:
    step: i32[] number of optimizer steps taken.
    params: model parameters (plain arrays, f32).
    opt_state: optax state.
    model_state: other model collections, e.g. {'batch_stats': ...}.
    rng: u32[2] base key; step s uses fold_in(rng, s).
  """
  step: jax.Array
  params: Any
  opt_state: Any
  model_state: Any
  rng: jax.Array


def create(model: nn.Module, tx: optax.GradientTransformation, example_input: jax.Array, seed: int,
           mesh: Mesh, rules) -> tuple[TrainState, TrainState]:
  """Initialises the state from `seed`, created directly with its shardings.

  Args:
    example_input: an array shaped like one batch of model inputs (any batch size).
  Returns:
    (state, shardings), shardings being a TrainState of NamedShardings.
  """
  init = lambda: init_boxed(model, tx, example_input, seed)
  shardings = logical_shardings(jax.eval_shape(init), mesh, rules)
  state = jax.jit(lambda: unbox(init()), out_shardings=shardings)()
  return state, shardings


def init_boxed(model: nn.Module, tx: optax.GradientTransformation, example_input: jax.Array, seed: int) -> TrainState:
  """The fresh state from `seed`, params still boxed with their logical axis names (trace it: jit or eval_shape)."""
  init_rng, train_rng = jax.random.split(jax.random.PRNGKey(seed))
  params_rng, dropout_rng = jax.random.split(init_rng)
  variables = model.init({'params': params_rng, 'dropout': dropout_rng}, example_input, train=False)
  params = variables.pop('params')
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                    model_state=dict(variables), rng=train_rng)


def unbox(state: TrainState) -> TrainState:
  """The state with plain arrays in place of logically-named boxes."""
  return nn.meta.unbox(state)
