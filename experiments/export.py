"""Exports a trained run as a serving artifact (jax.export StableHLO, any batch size) plus its preprocessing.

  python experiments/export.py --workdir=runs/mnist_cnn [--out=runs/mnist_cnn/export] [--data_dir=...]

The artifact runs with experiments/predict.py (or zoo.serving.Predictor), which
needs no zoo model code. Outputs: logits for classifiers and language models,
(logits, mean, logvar) for the VAE.
"""

from __future__ import annotations

import json
import pathlib
import sys

import ml_collections
from absl import app, flags, logging

from zoo import serving
from zoo.errors import UserError
from zoo.train.checkpoint import load_state
from zoo.train.loop import build_experiment

_WORKDIR = flags.DEFINE_string('workdir', None, 'Run folder to export (its latest checkpoint).')
_OUT = flags.DEFINE_string('out', None, 'Artifact folder (default: <workdir>/export).')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'Folder with raw dataset files (the data gives the input shape).')
flags.mark_flag_as_required('workdir')


def export_run(workdir: pathlib.Path, out: pathlib.Path, raw_data_dir: str | None = None) -> pathlib.Path:
  """Writes the artifact of `workdir`'s latest checkpoint into `out`; returns `out`."""
  if not (workdir / 'config.json').exists():
    raise UserError(f'{workdir} holds no config.json: it is not a zoo run folder. Pass the --workdir of a run.')
  try:
    saved = load_state(workdir)
  except FileNotFoundError as error:
    raise UserError(f'{error} Train the run first (experiments/train.py --workdir={workdir}); '
                    'an artifact needs trained weights.') from error
  config = ml_collections.ConfigDict(json.loads((workdir / 'config.json').read_text()))
  experiment = build_experiment(config, workdir, raw_data_dir=raw_data_dir)
  input_key = experiment.task.input_key
  example = experiment.pipeline.example_batch()[input_key]
  if input_key == 'tokens' and config.task.name == 'language_model':
    example = example[:, :-1]  # the LM reads tokens[:, :-1]
  variables = {'params': saved['params'], **saved['model_state']}
  model = experiment.model
  exported = serving.export_inference(lambda x: model.apply(variables, x, train=False), example)
  metadata = {
      'task': config.task.name, 'model': config.model.name, 'input_key': input_key,
      'input_shape': [None, *example.shape[1:]], 'input_dtype': str(example.dtype),
      'image_scale': config.data.get('image_scale', 255.0), 'trained_steps': int(saved['step']),
      'source_workdir': str(workdir.resolve()),
  }
  vocab = experiment.pipeline.vocab
  if vocab is not None:
    metadata.update(vocab=vocab.tokens, token_level=config.data.token_level)
  return serving.save_artifact(out, exported, metadata)


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
