"""experiments/evaluate.py re-scores a run; a text run's vocabulary must match on resume."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO, load_config
from test_train import tree_digest

from zoo.errors import ConfigError
from zoo.train.loop import train_and_evaluate
from zoo.train.writers import read_metrics


@pytest.fixture(scope='module')
def sst2_run(tfds_dir, tmp_path_factory):
  config = load_config('sst2_lstm')
  config.data.tfds_dir = tfds_dir
  config.num_train_steps = 10
  config.checkpoint.every = 10
  config.model.update(dict(embed_dim=16, hidden=16))
  workdir = tmp_path_factory.mktemp('sst2_run')
  train_and_evaluate(config, str(workdir))
  return config, workdir


def test_evaluate_reproduces_the_runs_test_metrics_and_writes_nothing(sst2_run, tfds_dir):
  _, workdir = sst2_run
  before = tree_digest(workdir)
  result = subprocess.run([sys.executable, str(REPO / 'experiments' / 'evaluate.py'), f'--workdir={workdir}'],
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  scores = json.loads(result.stdout.strip().splitlines()[-1])
  test_row = read_metrics(workdir / 'metrics.jsonl')[-1]
  assert scores['split'] == 'validation' and scores['step'] == 10
  assert scores['accuracy'] == pytest.approx(test_row['accuracy'], abs=1e-7)
  assert scores['loss'] == pytest.approx(test_row['loss'], rel=1e-6)
  assert tree_digest(workdir) == before


def test_resuming_with_another_vocabulary_is_refused(sst2_run):
  config, workdir = sst2_run
  before = tree_digest(workdir)
  config = config.copy_and_resolve_references()
  config.data.vocab_size = 5000
  with pytest.raises(ConfigError, match=r'vocab.json \(\d+ tokens\) differs from the vocabulary built now \(5000'):
    train_and_evaluate(config, str(workdir))
  assert tree_digest(workdir) == before
