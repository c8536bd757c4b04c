"""Classification: softmax cross-entropy loss and accuracy."""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from zoo.errors import ConfigError

Params = Any
Batch = dict[str, jnp.ndarray]


def scaled_per_example(tree: Any, norm: float) -> Any:
  """`tree` (leaves [B, ...]) rescaled so that each example's L2 norm, over all its leaves' entries, is `norm`."""
  leaves = jax.tree.leaves(tree)
  squares = sum(jnp.square(leaf.astype(jnp.float32)).reshape(leaf.shape[0], -1).sum(-1) for leaf in leaves)
  scale = norm / (jnp.sqrt(squares) + 1e-12)  # f32[B]
  return jax.tree.map(lambda leaf: leaf * scale.reshape((-1,) + (1,) * (leaf.ndim - 1)).astype(leaf.dtype), tree)


@dataclasses.dataclass(frozen=True)
class Classification:
  """Turns a classifier `model(x, train=...) -> logits` into losses and metrics.

  Batches hold 'image' (any float input the model takes, [B, ...]), 'label'
  i32[B] and optionally 'mask' f32[B] (0 for padding rows in eval).

  adversarial_epsilon > 0 adds adversarial training on the model's perturbation points
  (layers.perturbation_point; Miyato et al. 2017 for text): the train loss becomes
  CE(x) + CE(x + r), where r is the gradient of CE at the points, scaled to L2 norm epsilon per example
  (fixed, no gradient through it), and the same dropout masks serve both terms.
  Metrics: 'loss' stays the plain cross-entropy; 'adversarial_loss' is CE(x + r).
  """
  model: nn.Module
  input_key: str = 'image'
  label_smoothing: float = 0.0
  adversarial_epsilon: float = 0.0

  def loss(self, params: Params, model_state: dict, batch: Batch, rng: jax.Array, *,
           train: bool) -> tuple[jnp.ndarray, tuple[dict, dict]]:
    """Train objective f32[] and ({'loss', 'accuracy'[, 'adversarial_loss']}, updated model state)."""
    def cross_entropy(perturbations, params=params):
      logits, new_model_state = self.logits(params, model_state, batch, rng, train=train, perturbations=perturbations)
      targets = optax.smooth_labels(jax.nn.one_hot(batch['label'], logits.shape[-1]), self.label_smoothing)
      return optax.softmax_cross_entropy(logits, targets).mean(), (logits, new_model_state)

    loss, (logits, new_model_state) = cross_entropy(None)
    objective, extra = loss, {}
    if train and self.adversarial_epsilon:
      # The direction is found with the params held fixed: the outer gradient must not run through this
      # inner one (and cannot, for the recurrence kernels' custom VJPs with dynamic loop bounds).
      zeros = self.zero_perturbations(params, model_state, batch, rng)
      gradient, _ = jax.grad(cross_entropy, has_aux=True)(zeros, jax.lax.stop_gradient(params))
      adversarial_loss, _ = cross_entropy(scaled_per_example(gradient, self.adversarial_epsilon))
      objective, extra = loss + adversarial_loss, {'adversarial_loss': adversarial_loss}
    accuracy = (logits.argmax(-1) == batch['label']).mean()
    return objective, ({'loss': loss, 'accuracy': accuracy, **extra}, new_model_state)

  def logits(self, params: Params, model_state: dict, batch: Batch, rng: jax.Array, *,
             train: bool, perturbations: dict | None = None) -> tuple[jnp.ndarray, dict]:
    """(f32[B, C] logits, model state updated in train mode); `perturbations` are added at the model's points."""
    variables = {'params': params, **model_state, **({'perturbations': perturbations} if perturbations else {})}
    mutable = list(model_state) if train and model_state else False
    output = self.model.apply(variables, batch[self.input_key], train=train,
                              rngs={'dropout': rng}, mutable=mutable)
    logits, new_model_state = output if mutable else (output, model_state)
    return logits.astype(jnp.float32), new_model_state  # losses in f32 also when the model computes in bf16

  def zero_perturbations(self, params: Params, model_state: dict, batch: Batch, rng: jax.Array) -> dict:
    """Zeros shaped like the model's perturbation points for this batch; ConfigError when it has none."""
    _, collections = jax.eval_shape(lambda: self.model.apply(
        {'params': params, **model_state}, batch[self.input_key], train=True, rngs={'dropout': rng},
        mutable=['perturbations', *model_state]))
    if not collections.get('perturbations'):
      raise ConfigError(f'config.task.adversarial_epsilon needs a model with a perturbation point (rnn_classifier, '
                        f'transformer); {type(self.model).__name__} has none: set it to 0.')
    return jax.tree.map(lambda shape: jnp.zeros(shape.shape, shape.dtype), collections['perturbations'])

  def eval_sums(self, params: Params, model_state: dict, batch: Batch) -> dict[str, jnp.ndarray]:
    """Per-batch sums {'loss', 'accuracy', 'count'} (f32[]) over unmasked rows."""
    logits = self.model.apply({'params': params, **model_state}, batch[self.input_key], train=False)
    logits = logits.astype(jnp.float32)
    mask = batch.get('mask', jnp.ones(logits.shape[:1], jnp.float32))
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch['label'])
    correct = logits.argmax(-1) == batch['label']
    return {'loss': (loss * mask).sum(), 'accuracy': (correct * mask).sum(), 'count': mask.sum()}
