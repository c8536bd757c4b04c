"""Knowledge distillation (Hinton et al. 2015): a student learns from a trained zoo run's softened outputs."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax

from zoo.errors import ConfigError
from zoo.tasks.base import Batch, Params
from zoo.tasks.classification import Classification


@dataclasses.dataclass(frozen=True)
class Distillation(Classification):
  """Classification whose loss mixes the teacher's temperature-softened outputs and the labels.

  loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(student, labels).
  Evaluation is the student's plain classification metrics.

  Attributes:
    teacher_workdir: run folder of the teacher (a classifier of the same inputs and classes); the training
      loop loads it (zoo.train.run_folder.task_inputs) and passes it in as `teacher`.
    temperature: T; the T^2 factor keeps the soft-target gradients on the scale of the hard ones.
    alpha: weight of the soft targets.
    teacher: (model, variables) of the teacher, its variables as its evaluations use them.
  """
  teacher_workdir: str = ''
  temperature: float = 4.0
  alpha: float = 0.9
  teacher: tuple[Any, dict] | None = dataclasses.field(default=None, repr=False, compare=False)

  def __post_init__(self):
    super().__post_init__()
    if not 0.0 <= self.alpha <= 1.0 or self.temperature <= 0:
      raise ConfigError(f'Distillation needs 0 <= alpha <= 1 and temperature > 0; got alpha={self.alpha}, '
                        f'temperature={self.temperature}.')
    for option in ('adversarial_epsilon', 'consistency_weight'):
      if getattr(self, option):
        raise ConfigError(f'The distillation task trains on the plain loss only; remove config.task.{option}.')
    if self.teacher is None:
      raise ConfigError('The distillation task needs a teacher: set config.task.teacher_workdir to a trained run '
                        '(zoo.tasks.build(config, model, teacher=(model, variables)) in your own code).')

  def loss(self, params: Params, model_state: dict, batch: Batch, rng: jax.Array, *,
           train: bool) -> tuple[jnp.ndarray, tuple[dict, dict]]:
    """Mixed loss f32[] and ({'loss', 'accuracy', 'soft_loss', 'hard_loss'}, updated model state)."""
    logits, new_model_state = self.logits(params, model_state, batch, rng, train=train)
    teacher_model, teacher_variables = self.teacher
    teacher_logits = teacher_model.apply(teacher_variables, batch[self.input_key], train=False).astype(jnp.float32)
    soft_targets = jax.nn.softmax(teacher_logits / self.temperature)
    soft = optax.kl_divergence(jax.nn.log_softmax(logits / self.temperature), soft_targets).mean()
    hard = optax.softmax_cross_entropy_with_integer_labels(logits, batch['label']).mean()
    loss = self.alpha * self.temperature ** 2 * soft + (1 - self.alpha) * hard
    accuracy = (logits.argmax(-1) == batch['label']).mean()
    return loss, ({'loss': loss, 'accuracy': accuracy, 'soft_loss': soft, 'hard_loss': hard}, new_model_state)
