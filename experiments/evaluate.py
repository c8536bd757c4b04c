"""Evaluates a run's latest checkpoint on a split, optionally with other task options.

  python experiments/evaluate.py --workdir=runs/results/binarized_mnist_vae --split=test \
      --set=task.iw_samples=500

Reads the run's config.json (and vocab.json), restores the latest checkpoint,
prints one JSON object of mean metrics. Writes nothing into the run folder.
"""

from __future__ import annotations

import json
import pathlib
import sys

import jax
import ml_collections
from absl import app, flags, logging

from zoo.config import apply_overrides
from zoo.errors import UserError
from zoo.train.checkpoint import load_state
from zoo.train.loop import build_experiment, evaluate
from zoo.train.step import compile_steps

_WORKDIR = flags.DEFINE_string('workdir', None, 'Run folder to evaluate.')
_SPLIT = flags.DEFINE_string('split', None, 'Split (default: the config\'s test split).')
_SET = flags.DEFINE_multi_string('set', [], 'Override as dotted.key=value (value parsed as JSON if it can be).')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'Folder with raw dataset files.')
flags.mark_flag_as_required('workdir')


def main(argv):
  del argv
  logging.set_verbosity(logging.ERROR)
  workdir = pathlib.Path(_WORKDIR.value)
  try:
    config = ml_collections.ConfigDict(json.loads((workdir / 'config.json').read_text()))
    apply_overrides(config, _SET.value)
    experiment = build_experiment(config, workdir, raw_data_dir=_DATA_DIR.value)
    saved = load_state(workdir)
  except (UserError, FileNotFoundError, KeyError) as error:
    sys.exit(f'error: {error}')
  state = experiment.state.replace(
      params=jax.device_put(saved['params'], experiment.shardings.params),
      model_state=jax.device_put(saved['model_state'], experiment.shardings.model_state))
  strategy = experiment.strategy
  _, eval_step = compile_steps(experiment.task, experiment.tx, experiment.schedule, strategy, config)
  split = _SPLIT.value or config.data.test_split
  metrics = evaluate(eval_step, strategy.place_state(state), experiment.pipeline, split,
                     config.data.eval_batch_size, strategy)
  print(json.dumps({'workdir': str(workdir), 'step': int(saved['step']), 'split': split, **metrics}))


if __name__ == '__main__':
  app.run(main)
