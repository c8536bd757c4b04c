"""What compression costs or buys a trained run: accuracy against sparsity, against size (int8), and a
distilled student against the same student trained alone.

  python experiments/compress.py --workdir=runs/results/mnist_cnn [--sparsities=0,0.5,0.8,0.9,0.95] \
      [--scope=global] [--quantize] [--distill_student=experiments/configs/mnist_student.py] [--out=...]

Prunes the run's latest checkpoint (kernels only, smallest magnitudes first,
no fine-tuning; gradual pruning during training is config.optimizer.pruning)
and evaluates each sparsity: pruning.jsonl and pruning.md. With --quantize,
also int8 post-training quantization (weights per channel; activations
dynamic, or static from 4 calibration batches) through the int8 path:
quantization.jsonl and quantization.md (quantization-aware training is
config.quantization.aware_training). With --distill_student=CONFIG, also
trains that student alone and distilled from the run (T, alpha flags):
distillation.jsonl and .md. Files go into --out; the tables are printed.
The run's own files are not touched.
"""

from __future__ import annotations

import json
import pathlib
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from zoo import compress
from zoo.errors import UserError
from zoo.train import run_folder
from zoo.train.compression import (
  distill_and_compare,
  distillation_markdown,
  markdown,
  prune_and_evaluate,
  quantization_markdown,
  quantize_and_evaluate,
)

_WORKDIR = flags.DEFINE_string('workdir', None, 'Trained run folder.')
_SPARSITIES = flags.DEFINE_list('sparsities', ['0', '0.5', '0.8', '0.9', '0.95'], 'Fractions of kernel weights pruned.')
_SCOPE = flags.DEFINE_enum('scope', 'global', list(compress.pruning.SCOPES),
                           'Rank weights over all kernels or per layer.')
_QUANTIZE = flags.DEFINE_bool('quantize', False, 'Also measure int8 post-training quantization.')
_STUDENT = config_flags.DEFINE_config_file('distill_student', None, 'Also train this student config alone and '
                                           'distilled from --workdir (e.g. experiments/configs/mnist_student.py).')
_TEMPERATURE = flags.DEFINE_float('temperature', 4.0, 'Distillation temperature.')
_ALPHA = flags.DEFINE_float('alpha', 0.9, 'Distillation: weight of the teacher\'s soft targets.')
_OUT = flags.DEFINE_string('out', None, 'Output folder (default: <workdir>/compress).')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'Folder with raw dataset files.')
flags.mark_flag_as_required('workdir')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.ERROR)
  try:
    try:
      sparsities = [float(s) for s in _SPARSITIES.value]
    except ValueError as error:
      raise UserError(f'--sparsities must be numbers in [0, 1) ({error}).') from None
    if not all(0.0 <= s < 1.0 for s in sparsities):
      raise UserError(f'--sparsities={",".join(_SPARSITIES.value)}: each must be in [0, 1).')
    if _QUANTIZE.value:
      _check_quantizable(_WORKDIR.value)
    rows = prune_and_evaluate(_WORKDIR.value, sparsities, _SCOPE.value, _DATA_DIR.value)
    quantized_rows = quantize_and_evaluate(_WORKDIR.value, raw_data_dir=_DATA_DIR.value) if _QUANTIZE.value else []
    distilled_rows = []
    if _STUDENT.value is not None:
      distilled_rows = distill_and_compare(_WORKDIR.value, _STUDENT.value, _out_folder(),
                                           temperature=_TEMPERATURE.value, alpha=_ALPHA.value,
                                           raw_data_dir=_DATA_DIR.value)
  except UserError as error:
    sys.exit(f'error: {error}')
  for name, table_rows, to_markdown in (('pruning', rows, markdown),
                                       ('quantization', quantized_rows, quantization_markdown),
                                       ('distillation', distilled_rows, distillation_markdown)):
    if table_rows:
      _write(name, table_rows, to_markdown(table_rows))


def _check_quantizable(workdir: str) -> None:
  """Before any work: --quantize measures image classifiers (test accuracy of int8 Dense/Conv layers)."""
  config = run_folder.read_config(workdir)
  task, input_key = config.task.name, config.task.get('input_key', 'image')
  if task != 'classification' or input_key != 'image':
    raise UserError(f'--quantize measures image classifiers; {workdir} is a {config.model.name!r} with task {task!r} '
                    f'on {input_key!r} inputs. Drop --quantize for this run.')


def _out_folder() -> pathlib.Path:
  out = pathlib.Path(_OUT.value) if _OUT.value else pathlib.Path(_WORKDIR.value) / 'compress'
  out.mkdir(parents=True, exist_ok=True)
  return out


def _write(name: str, rows: list[dict], table: str) -> None:
  """<out>/<name>.jsonl and <out>/<name>.md, and the table on stdout."""
  (_out_folder() / f'{name}.jsonl').write_text(''.join(json.dumps(row) + '\n' for row in rows))
  (_out_folder() / f'{name}.md').write_text(table)
  print(table)


if __name__ == '__main__':
  app.run(main)
