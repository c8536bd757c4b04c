"""Classification: softmax cross-entropy loss and accuracy."""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

Params = Any
Batch = dict[str, jnp.ndarray]


@dataclasses.dataclass(frozen=True)
class Classification:
  """Turns a classifier `model(x, train=...) -> logits` into losses and metrics.

  Batches hold 'image' (any float input the model takes, [B, ...]), 'label'
  i32[B] and optionally 'mask' f32[B] (0 for padding rows in eval).
  """
  model: nn.Module
  input_key: str = 'image'
  label_smoothing: float = 0.0

  def loss(self, params: Params, model_state: dict, batch: Batch, rng: jax.Array, *,
           train: bool) -> tuple[jnp.ndarray, tuple[dict, dict]]:
    """Mean cross-entropy f32[] and ({'loss', 'accuracy'}, updated model state)."""
    logits, new_model_state = self.logits(params, model_state, batch, rng, train=train)
    num_classes = logits.shape[-1]
    targets = optax.smooth_labels(jax.nn.one_hot(batch['label'], num_classes), self.label_smoothing)
    loss = optax.softmax_cross_entropy(logits, targets).mean()
    accuracy = (logits.argmax(-1) == batch['label']).mean()
    return loss, ({'loss': loss, 'accuracy': accuracy}, new_model_state)

  def logits(self, params: Params, model_state: dict, batch: Batch, rng: jax.Array, *,
             train: bool) -> tuple[jnp.ndarray, dict]:
    """(f32[B, C] logits, model state updated in train mode)."""
    variables = {'params': params, **model_state}
    mutable = list(model_state) if train and model_state else False
    output = self.model.apply(variables, batch[self.input_key], train=train,
                              rngs={'dropout': rng}, mutable=mutable)
    logits, new_model_state = output if mutable else (output, model_state)
    return logits.astype(jnp.float32), new_model_state  # losses in f32 also when the model computes in bf16

  def eval_sums(self, params: Params, model_state: dict, batch: Batch) -> dict[str, jnp.ndarray]:
    """Per-batch sums {'loss', 'accuracy', 'count'} (f32[]) over unmasked rows."""
    logits = self.model.apply({'params': params, **model_state}, batch[self.input_key], train=False)
    logits = logits.astype(jnp.float32)
    mask = batch.get('mask', jnp.ones(logits.shape[:1], jnp.float32))
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch['label'])
    correct = logits.argmax(-1) == batch['label']
    return {'loss': (loss * mask).sum(), 'accuracy': (correct * mask).sum(), 'count': mask.sum()}
