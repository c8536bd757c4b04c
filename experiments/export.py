"""Exports a trained run as a serving artifact (jax.export StableHLO, any batch size) plus its preprocessing.

  python experiments/export.py --workdir=runs/mnist_cnn [--out=runs/mnist_cnn/export] [--data_dir=...]

The artifact runs with experiments/predict.py (or zoo.serving.Predictor), which
needs no zoo model code. Outputs: logits for classifiers and language models,
(logits, mean, logvar) for the VAE.
"""

from __future__ import annotations

import pathlib
import sys

from absl import app, flags, logging

from zoo import serving
from zoo.errors import UserError
from zoo.serving.from_run import export_run

_WORKDIR = flags.DEFINE_string('workdir', None, 'Run folder to export (its latest checkpoint).')
_OUT = flags.DEFINE_string('out', None, 'Artifact folder (default: <workdir>/export).')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'Folder with raw dataset files (the data gives the input shape).')
flags.mark_flag_as_required('workdir')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.ERROR)
  workdir = pathlib.Path(_WORKDIR.value)
  out = pathlib.Path(_OUT.value) if _OUT.value else workdir / 'export'
  try:
    folder = export_run(workdir, out, _DATA_DIR.value)
  except UserError as error:
    sys.exit(f'error: {error}')
  print(f'exported {workdir} -> {folder} ({(folder / serving.PROGRAM).stat().st_size} bytes)')


if __name__ == '__main__':
  app.run(main)
