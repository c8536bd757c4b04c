"""Accuracy against sparsity: one-shot magnitude pruning of a trained run, evaluated on its test split.

  python experiments/compress.py --workdir=runs/results/mnist_cnn [--sparsities=0,0.5,0.8,0.9,0.95] \
      [--scope=global] [--out=runs/results/mnist_cnn/compress]

Prunes the run's latest checkpoint (kernels only, smallest magnitudes first,
no fine-tuning; gradual pruning during training is config.optimizer.pruning)
and evaluates each sparsity. Writes pruning.jsonl (one object per sparsity)
and pruning.md (a table) into --out, and prints the table. The run's own
files are not touched.
"""

from __future__ import annotations

import json
import pathlib
import sys

from absl import app, flags, logging

from zoo import compress
from zoo.compress.evaluation import markdown, prune_and_evaluate
from zoo.errors import UserError

_WORKDIR = flags.DEFINE_string('workdir', None, 'Trained run folder.')
_SPARSITIES = flags.DEFINE_list('sparsities', ['0', '0.5', '0.8', '0.9', '0.95'], 'Fractions of kernel weights pruned.')
_SCOPE = flags.DEFINE_enum('scope', 'global', list(compress.pruning.SCOPES), 'Rank weights over all kernels or per layer.')
_OUT = flags.DEFINE_string('out', None, 'Output folder (default: <workdir>/compress).')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'Folder with raw dataset files.')
flags.mark_flag_as_required('workdir')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.ERROR)
  try:
    sparsities = [float(s) for s in _SPARSITIES.value]
    if not all(0.0 <= s < 1.0 for s in sparsities):
      raise UserError(f'--sparsities={",".join(_SPARSITIES.value)}: each must be in [0, 1).')
    rows = prune_and_evaluate(_WORKDIR.value, sparsities, _SCOPE.value, _DATA_DIR.value)
  except ValueError as error:
    sys.exit(f'error: --sparsities must be numbers in [0, 1) ({error}).')
  except UserError as error:
    sys.exit(f'error: {error}')
  out = pathlib.Path(_OUT.value) if _OUT.value else pathlib.Path(_WORKDIR.value) / 'compress'
  out.mkdir(parents=True, exist_ok=True)
  (out / 'pruning.jsonl').write_text(''.join(json.dumps(row) + '\n' for row in rows))
  table = markdown(rows)
  (out / 'pruning.md').write_text(table)
  print(table)


if __name__ == '__main__':
  app.run(main)
