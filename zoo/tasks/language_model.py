"""Next-token language modelling: cross-entropy in nats per token."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from zoo.tasks.base import Batch, Params


@dataclasses.dataclass(frozen=True)
class LanguageModel:
  """model(tokens i32[B, T], train) -> logits f32[B, T, V], trained to predict token t+1.

  Batches hold 'tokens' i32[B, T+1] (inputs are [:, :-1], targets [:, 1:]) and
  optionally 'mask' f32[B] (0 for padding rows in eval).
  """
  model: nn.Module
  input_key: str = 'tokens'

  def _per_token_loss(self, params, model_state, batch, rng, train):
    tokens = batch[self.input_key]
    logits = self.model.apply({'params': params, **model_state}, tokens[:, :-1], train=train, rngs={'dropout': rng})
    logits = logits.astype(jnp.float32)  # the loss in f32 also when the model computes in bf16
    targets = tokens[:, 1:]
    return optax.softmax_cross_entropy_with_integer_labels(logits, targets), logits.argmax(-1) == targets

  def loss(self, params: Params, model_state: dict, batch: Batch, rng: jax.Array, *,
           train: bool) -> tuple[jnp.ndarray, tuple[dict, dict]]:
    """Mean nats per token f32[] and ({'loss', 'accuracy'}, model state)."""
    losses, correct = self._per_token_loss(params, model_state, batch, rng, train)
    loss = losses.mean()
    return loss, ({'loss': loss, 'accuracy': correct.mean()}, model_state)

  def eval_sums(self, params: Params, model_state: dict, batch: Batch) -> dict[str, jnp.ndarray]:
    """Sums over real tokens: {'loss' (nats), 'accuracy', 'count' (tokens)}."""
    losses, correct = self._per_token_loss(params, model_state, batch, jax.random.PRNGKey(0), False)
    mask = batch.get('mask', jnp.ones(losses.shape[:1], jnp.float32))[:, None] * jnp.ones_like(losses)
    return {'loss': (losses * mask).sum(), 'accuracy': (correct * mask).sum(), 'count': mask.sum()}
