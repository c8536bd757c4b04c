"""The contract every task keeps (`Task`), and the types tasks, steps and the loop speak in."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import flax.linen as nn
import jax

Params = Any  # a pytree of arrays: the model's 'params' collection
ModelState = dict[str, Any]  # the model's other collections ('batch_stats', ...), {} when it has none
# One batch: the model's input under Task.input_key ('image' f32[B, ...] or 'tokens' i32[B, T]), 'label' i32[B]
# for classifiers, and optionally 'mask' f32[B] (0 for padding rows in evaluation batches).
Batch = dict[str, jax.Array]


@runtime_checkable
class Task(Protocol):
  """What a model is trained for: a differentiable loss with train metrics, and evaluation sums.

  A task is a frozen dataclass built by zoo.tasks.build(config.task, model); the train step differentiates
  `loss` in `params` and the evaluation adds up `eval_sums` over batches, then divides by the summed 'count'.
  """
  model: nn.Module
  input_key: str  # the batch key the model reads

  def loss(self, params: Params, model_state: ModelState, batch: Batch, rng: jax.Array, *,
           train: bool) -> tuple[jax.Array, tuple[dict[str, jax.Array], ModelState]]:
    """(objective f32[], (metrics {'loss', ...} of f32[], updated model state))."""

  def eval_sums(self, params: Params, model_state: ModelState, batch: Batch) -> dict[str, jax.Array]:
    """Per-batch sums f32[] of each metric over real rows, and their 'count'."""
