"""What length-bucketed batching (config.data.bucket_by_length) buys on long documents.

  python experiments/bucketing_benchmark.py [--steps=24] [--docs=2048] [--max_length=448] [--hidden=128]

Builds documents of 50 to 400 words (uniform) by concatenating consecutive real SST-2 train sentences
(../shared/data/sst2/train.tsv), writes them as your own TSV data, and times the train step of a one-layer
LSTM classifier on them without and with bucketing, the way the loop runs it. Each step is timed to
completion. A bucketed batch has one of up to 8 widths, each compiled on its first use: those steps are
counted as compilation, not as steady time. The epoch time is extrapolated from the steady mean step time
(steps_per_epoch x s/step; a fraction of an epoch is measured), plus the measured compilation time.
Tokens/s counts real tokens (padding excluded). Prints one JSON object per mode.
"""

from __future__ import annotations

import json
import pathlib
import tempfile
import time

import jax
import ml_collections
import numpy as np
from absl import app, flags, logging

from zoo import benchmarking
from zoo.config import default_config
from zoo.data.bucketing import token_lengths
from zoo.train.loop import build_experiment
from zoo.train.step import compile_steps

_STEPS = flags.DEFINE_integer('steps', 24, 'Timed steps per mode (compiling steps included).')
_DOCS = flags.DEFINE_integer('docs', 2048, 'Training documents.')
_MAX_LENGTH = flags.DEFINE_integer('max_length', 448, 'Tokens kept per document (config.data.max_length).')
_BATCH = flags.DEFINE_integer('batch_size', 32, 'Documents per batch.')
_HIDDEN = flags.DEFINE_integer('hidden', 128, 'LSTM width (embeddings too).')
_SST2 = flags.DEFINE_string('sst2', str(pathlib.Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'sst2'
                                        / 'train.tsv'), 'SST-2 train.tsv (the sentences the documents are made of).')


def long_documents(path: str, count: int, seed: int = 0) -> list[tuple[str, str]]:
  """(text, label) pairs: consecutive SST-2 sentences joined until a target of 50-400 words (uniform)."""
  rows = [line.split('\t') for line in pathlib.Path(path).read_text().split('\n')[1:] if '\t' in line]
  rng = np.random.default_rng(seed)
  documents = []
  for _ in range(count):
    target, start, words, label = int(rng.integers(50, 401)), int(rng.integers(len(rows))), [], None
    while len(words) < target:
      sentence, sentence_label = rows[start % len(rows)]
      label = sentence_label if label is None else label
      words += sentence.split()
      start += 1
    documents.append((' '.join(words[:target]), label.strip()))
  return documents


def write_tsv(path: pathlib.Path, documents: list[tuple[str, str]]) -> None:
  path.write_text('sentence\tlabel\n' + ''.join(f'{text}\t{label}\n' for text, label in documents))


def measure(tsv_dir: str, bucket: bool) -> dict:
  config = default_config('glue/sst2')
  config.data.update(dict(name='tsv', tsv_dir=tsv_dir, batch_size=_BATCH.value, eval_batch_size=_BATCH.value,
                          max_length=_MAX_LENGTH.value, vocab_size=20000, bucket_by_length=bucket))
  config.model = ml_collections.ConfigDict(dict(name='rnn_classifier', vocab_size=20000, embed_dim=_HIDDEN.value,
                                                hidden=_HIDDEN.value, num_layers=1, cell='lstm', num_classes=2))
  config.task.input_key = 'tokens'
  config.num_epochs = 1
  experiment = build_experiment(config, None)
  strategy = experiment.strategy
  train_step, _ = compile_steps(experiment.task, experiment.tx, experiment.schedule, strategy, config)
  state = strategy.place_state(experiment.state)
  iterator = experiment.pipeline.train_iterator()
  seen, steady, compiling, real_tokens, padded_tokens = set(), [], [], 0, 0
  for _ in range(_STEPS.value):
    batch = next(iterator)
    width = batch['tokens'].shape[1]
    started = time.perf_counter()
    state, metrics = train_step(state, strategy.put_batch(batch))
    jax.block_until_ready(metrics)
    elapsed = time.perf_counter() - started
    if width in seen:
      steady.append(elapsed)
      real_tokens += int(token_lengths(batch['tokens']).sum())
      padded_tokens += batch['tokens'].size
    else:
      seen.add(width)
      compiling.append(elapsed)
  step_s = float(np.mean(steady))
  steps_per_epoch = experiment.pipeline.steps_per_epoch
  return {
      'bucket_by_length': bucket, 'steps_timed': len(steady), 'steps_compiling': len(compiling),
      'widths_seen': sorted(seen), 'step_s_mean': step_s, 'step_s_median': float(np.median(steady)),
      'compile_s_total': float(np.sum(compiling)), 'real_tokens_per_s': real_tokens / max(float(np.sum(steady)), 1e-9),
      'padding_fraction': 1 - real_tokens / padded_tokens, 'steps_per_epoch': steps_per_epoch,
      'epoch_s_extrapolated': steps_per_epoch * step_s + float(np.sum(compiling)),
  }


def main(argv):
  del argv
  logging.set_verbosity(logging.ERROR)
  documents = long_documents(_SST2.value, _DOCS.value + 64)
  lengths = [len(text.split()) for text, _ in documents]
  common = {**benchmarking.provenance(), 'devices': f'{jax.device_count()} {jax.default_backend()}',
            'model': f'lstm 1x{_HIDDEN.value}',
            'batch_size': _BATCH.value, 'max_length': _MAX_LENGTH.value, 'docs': _DOCS.value,
            'doc_words_mean': float(np.mean(lengths[:_DOCS.value])), 'doc_words_min_max': [min(lengths), max(lengths)]}
  with tempfile.TemporaryDirectory() as folder:
    write_tsv(pathlib.Path(folder) / 'train.tsv', documents[:_DOCS.value])
    write_tsv(pathlib.Path(folder) / 'validation.tsv', documents[_DOCS.value:])
    for bucket in (False, True):
      print(json.dumps({**common, **measure(folder, bucket)}), flush=True)


if __name__ == '__main__':
  app.run(main)
