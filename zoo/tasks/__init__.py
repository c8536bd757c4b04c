"""What a model is trained for: a loss with train metrics, and eval sums."""

from __future__ import annotations

import flax.linen as nn
import ml_collections

from zoo.registry import construct
from zoo.tasks.base import Batch, ModelState, Params, Task
from zoo.tasks.classification import Classification
from zoo.tasks.distillation import Distillation
from zoo.tasks.language_model import LanguageModel
from zoo.tasks.vae import VariationalAutoencoder

TASKS: dict[str, type[Task]] = {
    'classification': Classification,
    'distillation': Distillation,
    'language_model': LanguageModel,
    'vae': VariationalAutoencoder,
}


def build(config: ml_collections.ConfigDict, model: nn.Module, **inputs) -> Task:
  """config.name picks the task; other keys are its options; `inputs` are what it takes from elsewhere
  (the distillation teacher: see zoo.train.run_folder.task_inputs)."""
  return construct(TASKS, config, 'task', model=model, **inputs)


__all__ = ['Batch', 'Classification', 'Distillation', 'LanguageModel', 'ModelState', 'Params', 'TASKS', 'Task',
           'VariationalAutoencoder', 'build']
