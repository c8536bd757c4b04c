"""Runs a serving artifact (from experiments/export.py) on PNG files or text lines; needs no zoo model code.

  python experiments/predict.py --artifact=runs/mnist_cnn/export digit1.png digit2.png
  python experiments/predict.py --artifact=runs/sst2_lstm/export --text "a gripping film" "dull and long"
  python experiments/predict.py --artifact=... --npy=inputs.npy      # an array [B, ...] as the model takes it

Prints one JSON object per input: classifiers give the class and its
probability (and all probabilities), the VAE its mean absolute reconstruction
error and latent mean, language models the most likely next token.
"""

from __future__ import annotations

import json
import sys

import numpy as np
from absl import app, flags, logging

from zoo.errors import UserError
from zoo.serving import Predictor

_ARTIFACT = flags.DEFINE_string('artifact', None, 'Artifact folder written by experiments/export.py.')
_TEXT = flags.DEFINE_bool('text', False, 'Treat the arguments as text lines (default: image files).')
_NPY = flags.DEFINE_string('npy', None, 'A .npy array of inputs [B, ...] instead of files.')
flags.mark_flag_as_required('artifact')


def describe(predictor: Predictor, inputs: np.ndarray, names: list[str]) -> list[dict]:
  """One JSON-ready dict per input row."""
  outputs = predictor(inputs)
  task = predictor.metadata['task']
  rows = []
  for index, name in enumerate(names):
    if task == 'classification':
      logits = np.asarray(outputs[index], np.float64)
      probs = np.exp(logits - logits.max())
      probs /= probs.sum()
      rows.append({'input': name, 'class': int(probs.argmax()), 'probability': float(probs.max()),
                   'probabilities': [round(float(p), 6) for p in probs]})
    elif task == 'vae':
      logits, mean, _ = (np.asarray(o[index]) for o in outputs)
      pixels = inputs[index].reshape(-1)
      reconstruction = 1 / (1 + np.exp(-logits))
      rows.append({'input': name, 'mean_abs_reconstruction_error': float(np.abs(reconstruction - pixels).mean()),
                   'latent_mean': [round(float(v), 4) for v in mean]})
    else:
      ids = np.asarray(inputs[index])
      last = max(int(np.flatnonzero(ids).max(initial=0)), 0)
      next_id = int(np.asarray(outputs[index])[last].argmax())
      vocab = predictor.metadata.get('vocab')
      rows.append({'input': name, 'next_token_id': next_id, 'next_token': vocab[next_id] if vocab else None})
  return rows


def main(argv):
  logging.set_verbosity(logging.ERROR)
  items = argv[1:]
  try:
    predictor = Predictor(_ARTIFACT.value)
    if _NPY.value:
      inputs = np.load(_NPY.value)
      items = [f'{_NPY.value}[{i}]' for i in range(len(inputs))]
    elif not items:
      raise UserError('Pass image files or, with --text, text lines (or --npy=FILE).')
    elif _TEXT.value:
      inputs = predictor.texts(items)
    else:
      inputs = predictor.images(items)
    for row in describe(predictor, inputs, items):
      print(json.dumps(row))
  except (UserError, OSError) as error:
    sys.exit(f'error: {error}')


if __name__ == '__main__':
  app.run(main)
