"""Publishes a finished run's weights into a weights folder (default: the registry zoo ships).

  python experiments/publish.py --workdir=runs/results/mnist_cnn --name=mnist_cnn
  python experiments/publish.py --workdir=runs/results/sst2_lstm --name=sst2_lstm --dtype=float16

Exports the variables the run evaluates with (the params average where it keeps one; BatchNorm
statistics), plus the vocabulary of text models, as safetensors; reads the written file back (hash
checked) and scores it on the config's test split (and its eval split where that differs), and writes
the manifest entry with the numbers measured on that file. With --dtype=float16 the float32 file is
scored too and the difference is recorded; a difference over --tolerance (0.1 points of accuracy,
0.01 nats) is refused. Refuses runs whose metrics.jsonl has no final test row, and never replaces a
published entry without --overwrite.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shlex
import sys
import tempfile

import jax
import ml_collections
import numpy as np
from absl import app, flags, logging

from zoo import benchmarking
from zoo.errors import UserError
from zoo.models.flops import forward_flops
from zoo.pretrained import evaluate
from zoo.pretrained.hub import DATA_LICENSES, check_shapes, expected_shapes
from zoo.train import run_folder
from zoo.train import weights as weight_files
from zoo.train.loop import build_experiment
from zoo.train.writers import read_metrics

REPO = pathlib.Path(__file__).resolve().parents[1]
RESULTS = REPO / 'experiments' / 'results.jsonl'
DOC = REPO / 'docs' / 'pretrained.md'

_WORKDIR = flags.DEFINE_string('workdir', None, 'Finished run folder to publish.')
_NAME = flags.DEFINE_string('name', None, 'Published name (letters, digits, _).')
_OUT = flags.DEFINE_string('out', str(weight_files.PUBLISHED_DIR), 'Weights folder to write into.')
_OVERWRITE = flags.DEFINE_bool('overwrite', False, 'Replace an entry of the same name.')
_DTYPE = flags.DEFINE_enum('dtype', 'float32', ['float32', 'float16'], 'Storage dtype of float leaves.')
_TOLERANCE = flags.DEFINE_float('tolerance', None, 'Largest metric change allowed by --dtype '
                                '(default 0.001 accuracy, 0.01 nats).')
_COMMAND = flags.DEFINE_string('command', None, 'The command that trained the run (default: its '
                               'experiments/results.jsonl row).')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'Folder with raw dataset files.')
_TFDS_DIR = flags.DEFINE_string('tfds_dir', None, 'TFDS data dir (default: the run config\'s).')
flags.mark_flags_as_required(['workdir', 'name'])

PRIMARY = {'classification': 'accuracy', 'language_model': 'loss', 'vae': 'loss'}


def check_finished(workdir: pathlib.Path) -> dict:
  """The run's final test row; refuses a run that has none."""
  path = workdir / 'metrics.jsonl'
  rows = read_metrics(path) if path.is_file() else []
  if not rows or rows[-1]['split'] != 'test':
    raise UserError(f'{workdir} has not finished (no final test row in {path}); let it finish '
                    f'(python experiments/train.py --workdir={workdir} resumes it), then publish.')
  return rows[-1]


def recipe(workdir: pathlib.Path, config: ml_collections.ConfigDict, command: str | None) -> dict:
  """Config file, overrides, seed, train command and commit of the run."""
  row = None
  if command is None and RESULTS.is_file():
    for line in RESULTS.read_text().splitlines():
      candidate = json.loads(line)
      if f'--workdir=runs/results/{workdir.name}' in candidate['command'].split():
        row, command = candidate, candidate['command']
  if command is None:
    raise UserError(f'No experiments/results.jsonl row trains {workdir}; pass --command="the train command".')
  args = shlex.split(command)
  config_file = next((a.split('=', 1)[1] for a in args if a.startswith('--config=')), None)
  overrides = [a[len('--config.'):] for a in args if a.startswith('--config.')]
  return {'config_file': config_file, 'overrides': overrides, 'seed': config.seed, 'command': command,
          'commit': benchmarking.commit() or None, 'results_row': row['row'] if row else None,
          'train_date': row['date'] if row else None}


def recurrent_flops(model_config: ml_collections.ConfigDict, length: int) -> float:
  """FLOPs of an LSTM/GRU stack over `length` steps (zoo.models.flops counts Dense and Conv layers only):
  per step, layer and direction, the input and recurrent products, 2 * (D_in + H) * G * H."""
  if model_config.name not in ('rnn_classifier', 'rnn_lm'):
    return 0.0
  gates = {'lstm': 4, 'gru': 3}[model_config.cell]
  directions = 2 if model_config.get('bidirectional', False) else 1
  hidden, total, width = model_config.hidden, 0.0, model_config.embed_dim
  for _ in range(model_config.num_layers):
    total += directions * 2.0 * length * (width + hidden) * gates * hidden
    width = hidden * directions
  return total


def published_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The run's config as it is published: data read from the default places; a distilled student
  evaluates as the classifier it is (no teacher needed)."""
  config = ml_collections.ConfigDict(config.to_dict())
  config.data.tfds_dir = None
  if config.task.name == 'distillation':
    config.task = ml_collections.ConfigDict({'name': 'classification'})
  return config


def score(config, variables, splits, vocab, tfds_dir) -> dict:
  return evaluate(config, variables, splits, vocab=vocab, tfds_dir=tfds_dir, raw_data_dir=_DATA_DIR.value)


def publish(workdir: pathlib.Path, name: str, out: pathlib.Path) -> dict:
  """Writes name's files and manifest entry into `out`; returns the entry."""
  if not re.fullmatch(r'[a-z0-9_]+', name):
    raise UserError(f'--name={name!r}; use lower-case letters, digits and _ (e.g. mnist_cnn).')
  final_row = check_finished(workdir)
  manifest_path = out / weight_files.MANIFEST
  manifest = (weight_files.read_manifest(out) if manifest_path.is_file()
              else {'format_version': weight_files.FORMAT_VERSION, 'weights': {}})
  if name in manifest['weights'] and not _OVERWRITE.value:
    raise UserError(f'{manifest_path} already publishes {name!r}; pass --overwrite to replace it.')
  run_config, model, variables = run_folder.load_model(workdir)
  variables = jax.tree.map(np.asarray, variables)
  config = published_config(run_config)
  tfds_dir = _TFDS_DIR.value or run_config.data.get('tfds_dir')
  shapes_config = config.copy_and_resolve_references()
  if tfds_dir:
    shapes_config.data.tfds_dir = tfds_dir
  built = build_experiment(shapes_config, None, raw_data_dir=_DATA_DIR.value)
  example = np.asarray(built.pipeline.example_batch()[built.task.input_key][:1])
  language_model = config.task.name == 'language_model'
  if language_model:
    example = example[:, :-1]
  spec = jax.ShapeDtypeStruct(example.shape, example.dtype)
  check_shapes(variables, expected_shapes(model, spec), str(workdir))
  vocab = built.pipeline.vocab.tokens if built.pipeline.vocab is not None else None
  del built
  splits = list(dict.fromkeys([config.data.test_split, config.data.eval_split]))
  metric = PRIMARY[config.task.name]
  tolerance = _TOLERANCE.value if _TOLERANCE.value is not None else (0.001 if metric == 'accuracy' else 0.01)

  out.mkdir(parents=True, exist_ok=True)
  with tempfile.TemporaryDirectory(dir=out) as scratch:
    scratch = pathlib.Path(scratch)
    measured = {}
    for dtype in dict.fromkeys(['float32', _DTYPE.value]):
      record = weight_files.write_variables(scratch / f'{name}.{dtype}.safetensors', variables, dtype)
      measured[dtype] = (record, score(config, weight_files.read_variables(scratch, record), splits, vocab, tfds_dir))
      logging.info('%s as %s: %s', name, dtype, measured[dtype][1])
    record, metrics = measured[_DTYPE.value]
    difference = metrics[splits[0]][metric] - measured['float32'][1][splits[0]][metric]
    if abs(difference) > tolerance:
      raise UserError(f'Storing {name} as {_DTYPE.value} moves test {metric} by {difference:+.4g} (more than '
                      f'{tolerance}); publish it as --dtype=float32.')
    target = out / f'{name}.safetensors'
    os.replace(scratch / record['path'], target)
    files = {'weights': weight_files.file_record(target)}
    if vocab is not None:
      vocab_path = out / f'{name}.vocab.json'
      vocab_path.write_text(json.dumps(vocab, ensure_ascii=False), encoding='utf-8')
      files['vocab'] = weight_files.file_record(vocab_path)

  param_count = int(sum(np.size(v) for v in jax.tree.leaves(variables['params'])))
  image = example.dtype != np.int32
  preprocessing = {'kind': 'image' if image else 'text', 'input_shape': list(example.shape[1:]),
                   'input_dtype': str(example.dtype)}
  if image:
    preprocessing.update(image_scale=float(config.data.get('image_scale', 255.0)),
                         binarize=config.data.name == 'binarized_mnist')
  else:
    preprocessing.update(token_level=config.data.token_level, max_length=int(example.shape[1]),
                         language_model=language_model)
  entry = {
      'format_version': weight_files.FORMAT_VERSION,
      'files': files,
      'dataset': config.data.name,
      'split': splits[0],
      'metrics': measured[_DTYPE.value][1][splits[0]],
      'other_metrics': {s: measured[_DTYPE.value][1][s] for s in splits[1:]},
      'evaluated_on': {'split': splits[0], 'examples': 'all'},
      'run_final_test_row': final_row,
      'params': param_count,
      'flops_per_example': forward_flops(model, spec) + recurrent_flops(config.model, int(example.shape[1])),
      'preprocessing': preprocessing,
      'recipe': recipe(workdir, run_config, _COMMAND.value),
      'license': DATA_LICENSES.get(config.data.name, 'see the dataset\'s own terms'),
      'storage': {'dtype': _DTYPE.value, 'float32_metrics': measured['float32'][1][splits[0]],
                  'difference': {metric: difference}, 'float32_bytes': measured['float32'][0]['bytes']},
      'trained_steps': final_row['step'],
      'config': json.loads(config.to_json()),
  }
  manifest['weights'][name] = entry
  manifest['weights'] = dict(sorted(manifest['weights'].items()))
  scratch_manifest = manifest_path.with_suffix('.json.tmp')
  scratch_manifest.write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + '\n', encoding='utf-8')
  os.replace(scratch_manifest, manifest_path)
  if out.resolve() == weight_files.PUBLISHED_DIR and DOC.is_file():
    write_table(manifest)
  return entry


def _metric_text(entry: dict, split: str, metrics: dict) -> str:
  """The entry's primary metric (the one its storage difference is measured in) on `split`."""
  (primary, _), = entry['storage']['difference'].items()
  if primary == 'accuracy':
    return f'{metrics["accuracy"]:.2%} {split} acc.'
  unit = f'nats/{entry["preprocessing"]["token_level"]}' if entry['preprocessing'].get('language_model') else 'nats'
  return f'{metrics["loss"]:.3f} {unit} {split}'


def write_table(manifest: dict) -> None:
  """Regenerates the table of published weights in docs/pretrained.md from the manifest."""
  lines = ['| name | model | result (on the shipped file) | params | FLOPs/example | stored | size | change vs f32 |',
           '|---|---|---|---|---|---|---|---|']
  for name, entry in manifest['weights'].items():
    results = [_metric_text(entry, entry['split'], entry['metrics'])]
    results += [_metric_text(entry, split, metrics) for split, metrics in entry['other_metrics'].items()]
    (metric, change), = entry['storage']['difference'].items()
    change = f'{change * 100:+.2f} points' if metric == 'accuracy' else f'{change:+.5f} nats'
    lines.append(f'| `{name}` | {entry["config"]["model"]["name"]} on {entry["dataset"]} | {"; ".join(results)} | '
                 f'{entry["params"]:,} | {entry["flops_per_example"]:,.0f} | {entry["storage"]["dtype"]} | '
                 f'{entry["files"]["weights"]["bytes"] / 1e6:.2f} MB | '
                 f'{"-" if entry["storage"]["dtype"] == "float32" else change} |')
  total = sum(e['files']['weights']['bytes'] + e['files'].get('vocab', {}).get('bytes', 0)
              for e in manifest['weights'].values())
  lines.append(f'\nIn all {total / 1e6:.1f} MB (vocabularies included).')
  benchmarking.write_between_markers(DOC, 'PUBLISHED', '\n'.join(lines))


def main(argv):
  del argv
  logging.set_verbosity(logging.ERROR)
  try:
    entry = publish(pathlib.Path(_WORKDIR.value), _NAME.value, pathlib.Path(_OUT.value))
  except UserError as error:
    sys.exit(f'error: {error}')
  print(json.dumps({'name': _NAME.value, 'split': entry['split'], **entry['metrics'],
                    'bytes': entry['files']['weights']['bytes'], 'dtype': entry['storage']['dtype'],
                    'difference': entry['storage']['difference']}))


if __name__ == '__main__':
  app.run(main)
