"""Classification: softmax cross-entropy loss and accuracy."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from zoo.errors import ConfigError
from zoo.tasks.base import Batch, Params


def scaled_per_example(tree: Any, norm: float) -> Any:
  """`tree` (leaves [B, ...]) rescaled so that each example's L2 norm, over all its leaves' entries, is `norm`."""
  leaves = jax.tree.leaves(tree)
  squares = sum(jnp.square(leaf.astype(jnp.float32)).reshape(leaf.shape[0], -1).sum(-1) for leaf in leaves)
  scale = norm / (jnp.sqrt(squares) + 1e-12)  # f32[B]
  return jax.tree.map(lambda leaf: leaf * scale.reshape((-1,) + (1,) * (leaf.ndim - 1)).astype(leaf.dtype), tree)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _clean_pass(task, params, model_state, batch, rng, zeros):
  """(cross-entropy f32[], (logits, model state), its gradient at the perturbation points), differentiable in params.

  What it buys: the one backward pass that yields the perturbation gradient also yields the params'
  gradient, which the VJP below reuses, so an adversarial step costs two forward and backward passes, not three.
  The perturbation gradient is a constant to the caller (no gradient flows back through it).
  """
  return _clean_pass_forward(task, params, model_state, batch, rng, zeros)[0]


def _clean_pass_forward(task, params, model_state, batch, rng, zeros):
  """((cross-entropy, (logits, model state), perturbation gradient), params gradient kept for the VJP)."""
  (loss, aux), (params_gradient, gradient) = jax.value_and_grad(task.cross_entropy, argnums=(0, 4), has_aux=True)(
      params, model_state, batch, rng, zeros)
  return (loss, aux, gradient), params_gradient


def _clean_pass_backward(task, params_gradient, cotangents):
  del task
  loss_cotangent = cotangents[0]
  return jax.tree.map(lambda g: g * loss_cotangent.astype(g.dtype), params_gradient), None, None, None, None


_clean_pass.defvjp(_clean_pass_forward, _clean_pass_backward)


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

  consistency_weight w > 0 is R-Drop (Liang et al. 2021): the model sees the batch twice, with
  independent dropout masks (one pass over the batch stacked on itself), and the train loss becomes
  the mean CE of both copies + w * the mean of KL(p1 || p2) and KL(p2 || p1) between their predictions.
  Metrics: 'loss' is the mean CE of both copies; 'consistency' the symmetric KL.
  """
  model: nn.Module
  input_key: str = 'image'
  label_smoothing: float = 0.0
  adversarial_epsilon: float = 0.0
  consistency_weight: float = 0.0

  def __post_init__(self):
    for option in ('adversarial_epsilon', 'consistency_weight'):
      if getattr(self, option) < 0:
        raise ConfigError(f'config.task.{option}={getattr(self, option)} must be >= 0 (0: off).')
    if self.adversarial_epsilon and self.consistency_weight:
      raise ConfigError('config.task.adversarial_epsilon and config.task.consistency_weight do not combine; '
                        'set one of them to 0.')

  def loss(self, params: Params, model_state: dict, batch: Batch, rng: jax.Array, *,
           train: bool) -> tuple[jnp.ndarray, tuple[dict, dict]]:
    """Train objective f32[] and ({'loss', 'accuracy'[, 'adversarial_loss' | 'consistency']}, model state)."""
    if train and self.consistency_weight:
      twice = jax.tree.map(lambda x: jnp.concatenate([x, x]), batch)
      loss, (both_logits, new_model_state) = self.cross_entropy(params, model_state, twice, rng, None)
      logits, second_logits = jnp.split(both_logits, 2)
      first, second = jax.nn.log_softmax(logits), jax.nn.log_softmax(second_logits)
      consistency = 0.5 * (optax.losses.kl_divergence_with_log_targets(second, first)
                           + optax.losses.kl_divergence_with_log_targets(first, second)).mean()
      objective, extra = loss + self.consistency_weight * consistency, {'consistency': consistency}
    elif not (train and self.adversarial_epsilon):
      loss, (logits, new_model_state) = self.cross_entropy(params, model_state, batch, rng, None, train=train)
      objective, extra = loss, {}
    else:
      zeros = self.zero_perturbations(params, model_state, batch, rng)
      loss, (logits, new_model_state), gradient = _clean_pass(self, params, model_state, batch, rng, zeros)
      adversarial_loss, _ = self.cross_entropy(params, model_state, batch, rng,
                                               scaled_per_example(gradient, self.adversarial_epsilon), train=True)
      objective, extra = loss + adversarial_loss, {'adversarial_loss': adversarial_loss}
    accuracy = (logits.argmax(-1) == batch['label']).mean()
    return objective, ({'loss': loss, 'accuracy': accuracy, **extra}, new_model_state)

  def cross_entropy(self, params: Params, model_state: dict, batch: Batch, rng: jax.Array,
                    perturbations: dict | None, *, train: bool = True) -> tuple[jnp.ndarray, tuple]:
    """(mean cross-entropy f32[] against the smoothed labels, (logits f32[B, C], updated model state))."""
    logits, new_model_state = self.logits(params, model_state, batch, rng, train=train, perturbations=perturbations)
    targets = optax.smooth_labels(jax.nn.one_hot(batch['label'], logits.shape[-1]), self.label_smoothing)
    return optax.softmax_cross_entropy(logits, targets).mean(), (logits, new_model_state)

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
