"""Draws what a trained run looks at: saliency and integrated gradients (image classifiers) or attention maps
(Transformers), as PNGs in <workdir>/inspect/.

  python experiments/inspect_run.py --workdir=runs/results/mnist_cnn [--count=8] [--steps=64]

Uses the first --count examples of the test split and explains the predicted
class. Prints one JSON object: the files written and, for integrated
gradients, the largest completeness gap |sum(attributions) - (logit(x) - logit(0))|.
"""

from __future__ import annotations

import json
import pathlib
import sys

import jax
import numpy as np
from absl import app, flags, logging

from zoo import inspect as zoo_inspect
from zoo.errors import UserError
from zoo.train.loop import load_run

_WORKDIR = flags.DEFINE_string('workdir', None, 'Trained run folder.')
_COUNT = flags.DEFINE_integer('count', 8, 'Test examples to explain.')
_STEPS = flags.DEFINE_integer('steps', 64, 'Integrated-gradients path steps.')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'Folder with raw dataset files.')
flags.mark_flag_as_required('workdir')


def explain_images(model, variables, images: np.ndarray, out: pathlib.Path, steps: int) -> dict:
  """Saliency and integrated gradients of the predicted classes of images f32[B, H, W, C]."""
  logits_fn = lambda x: model.apply(variables, x, train=False)
  images = jax.numpy.asarray(images)
  predicted = logits_fn(images).argmax(-1)
  maps = {'saliency': zoo_inspect.saliency(logits_fn, images, predicted),
          'integrated gradients': zoo_inspect.integrated_gradients(logits_fn, images, predicted, steps=steps)}
  gap = zoo_inspect.completeness_gap(logits_fn, images, predicted, maps['integrated gradients'])
  path = zoo_inspect.save_attributions(np.asarray(images), {k: np.asarray(v) for k, v in maps.items()},
                                       [f'predicted {int(c)}' for c in predicted], out / 'attributions.png')
  return {'files': [str(path)], 'max_completeness_gap': float(np.abs(gap).max())}


def explain_tokens(model, variables, tokens: np.ndarray, vocab, out: pathlib.Path) -> dict:
  """Head-averaged attention maps of each block for the first sequence i32[B, T] (padding cut off)."""
  length = max(int(np.flatnonzero(tokens[0]).max(initial=0)) + 1, 1)
  maps = zoo_inspect.attention_maps(model, variables, jax.numpy.asarray(tokens[:1]))
  words = [vocab.tokens[i] for i in tokens[0, :length]] if vocab is not None else [str(i) for i in tokens[0, :length]]
  path = zoo_inspect.save_attention_maps([np.asarray(m[0].mean(0))[:length, :length] for m in maps], words,
                                         out / 'attention.png')
  return {'files': [str(path)]}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.ERROR)
  out = pathlib.Path(_WORKDIR.value) / 'inspect'
  try:
    config, experiment, state = load_run(_WORKDIR.value, raw_data_dir=_DATA_DIR.value)
    batch = next(iter(experiment.pipeline.eval_batches(config.data.test_split, _COUNT.value)))
    variables = {'params': state.params, **state.model_state}
    if config.model.name == 'transformer':
      result = explain_tokens(experiment.model, variables, batch['tokens'], experiment.pipeline.vocab, out)
    elif experiment.task.input_key == 'image' and config.task.name == 'classification':
      result = explain_images(experiment.model, variables, batch['image'], out, _STEPS.value)
    else:
      raise UserError(f'inspect_run.py explains image classifiers and Transformers; {config.model.name!r} with '
                      f'task {config.task.name!r} is neither.')
  except UserError as error:
    sys.exit(f'error: {error}')
  print(json.dumps({'workdir': _WORKDIR.value, **result}))


if __name__ == '__main__':
  app.run(main)
