"""Reading a run folder: its config, its latest saved state and the variables its evaluations use.

Every reader of finished runs goes through here: `load_run` (zoo.train.loop), the distillation teacher,
publishing weights and the results table.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import flax.linen as nn
import ml_collections

from zoo import models
from zoo.errors import ConfigError
from zoo.train import optim
from zoo.train.checkpoint import load_state


def read_config(workdir: str | pathlib.Path, role: str = '--workdir') -> ml_collections.ConfigDict:
  """The resolved config a run saved (config.json); `role` is the flag or key that named the folder, for errors."""
  path = pathlib.Path(workdir) / 'config.json'
  if not path.is_file():
    raise ConfigError(f'{role}={workdir} holds no zoo run (no config.json); pass the folder of a trained run.')
  return ml_collections.ConfigDict(json.loads(path.read_text()))


def latest_state(workdir: str | pathlib.Path, role: str = '--workdir') -> dict[str, Any]:
  """The latest checkpoint's train state as numpy arrays ({'step', 'params', 'opt_state', 'model_state', ...})."""
  try:
    return load_state(workdir)
  except FileNotFoundError as error:
    raise ConfigError(f'{role}={workdir} has no checkpoint yet ({error}); let it train first '
                      f'(experiments/train.py --workdir={workdir}).') from error


def evaluation_variables(saved: dict[str, Any]) -> dict[str, Any]:
  """{'params': ..., **model_state} as the run evaluates: its params average where the optimizer keeps one."""
  return {'params': optim.evaluation_params(saved['params'], saved['opt_state']), **saved['model_state']}


def load_model(workdir: str | pathlib.Path,
               role: str = '--workdir') -> tuple[ml_collections.ConfigDict, nn.Module, dict]:
  """(config, model, variables) of a run's latest checkpoint, the variables as its evaluations use them."""
  config = read_config(workdir, role)
  return config, models.build(config.model), evaluation_variables(latest_state(workdir, role))


def task_inputs(task_config: ml_collections.ConfigDict) -> dict[str, Any]:
  """What a task takes from other runs, as keyword arguments: the distillation teacher (model, variables)."""
  if task_config.get('name') != 'distillation':
    return {}
  _, model, variables = load_model(task_config.teacher_workdir, role='config.task.teacher_workdir')
  return {'teacher': (model, variables)}
