"""Evaluates a run's latest checkpoint on a split, optionally with other task options.

  python experiments/evaluate.py --workdir=runs/results/binarized_mnist_vae --split=test \
      --set=task.iw_samples=500

Reads the run's config.json (and vocab.json), restores the latest checkpoint,
prints one JSON object of mean metrics. Writes nothing into the run folder.
"""

from __future__ import annotations

import json
import sys

from absl import app, flags, logging

from zoo.errors import UserError
from zoo.train.loop import evaluate_state, load_run

_WORKDIR = flags.DEFINE_string('workdir', None, 'Run folder to evaluate.')
_SPLIT = flags.DEFINE_string('split', None, 'Split (default: the config\'s test split).')
_SET = flags.DEFINE_multi_string('set', [], "Override as dotted.key=value (a Python literal, else a string).")
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'Folder with raw dataset files.')
flags.mark_flag_as_required('workdir')


def main(argv):
  del argv
  logging.set_verbosity(logging.ERROR)
  try:
    split_override = [f'data.test_split={_SPLIT.value!r}'] if _SPLIT.value else []  # its data is prepared, or named
    config, experiment, state = load_run(_WORKDIR.value, [*_SET.value, *split_override], raw_data_dir=_DATA_DIR.value)
    split = config.data.test_split
    metrics = evaluate_state(config, experiment, state, split)
  except UserError as error:
    sys.exit(f'error: {error}')
  print(json.dumps({'workdir': _WORKDIR.value, 'step': int(state.step), 'split': split, **metrics}))


if __name__ == '__main__':
  app.run(main)
