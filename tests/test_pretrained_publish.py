"""experiments/publish.py: refuses unfinished runs and existing names, and publishes a finished run with the
number measured on the written file."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from conftest import REPO

import zoo.pretrained

COMMAND = '--command=python experiments/train.py --config=experiments/configs/mnist_cnn.py --workdir=RUN'


def _publish(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, str(REPO / 'experiments' / 'publish.py'), *args, COMMAND],
                        capture_output=True, text=True, timeout=600, cwd=REPO)


def test_refuses_a_run_that_did_not_finish(trained_run, tmp_path):
  run = tmp_path / 'run'
  shutil.copytree(trained_run, run)
  rows = (run / 'metrics.jsonl').read_text().splitlines()
  (run / 'metrics.jsonl').write_text('\n'.join(r for r in rows if '"test"' not in r) + '\n')
  result = _publish(f'--workdir={run}', '--name=tiny', f'--out={tmp_path / "weights"}')
  assert result.returncode != 0 and 'has not finished (no final test row' in result.stderr, result.stderr
  assert not (tmp_path / 'weights').exists()


@pytest.mark.slow
def test_publishes_a_finished_run_and_never_overwrites_without_the_flag(trained_run, tmp_path, tfds_dir):
  out = tmp_path / 'weights'
  result = _publish(f'--workdir={trained_run}', '--name=tiny_cnn', f'--out={out}', f'--tfds_dir={tfds_dir}')
  assert result.returncode == 0, result.stderr
  printed = json.loads(result.stdout.strip().splitlines()[-1])
  final_test_row = json.loads((trained_run / 'metrics.jsonl').read_text().splitlines()[-1])
  assert abs(printed['accuracy'] - final_test_row['accuracy']) <= 0.001
  _, _, info = zoo.pretrained.load('tiny_cnn', source=str(out))
  assert info.metrics['accuracy'] == printed['accuracy'] and info.recipe['config_file'].endswith('mnist_cnn.py')
  before = (out / 'manifest.json').read_text()
  again = _publish(f'--workdir={trained_run}', '--name=tiny_cnn', f'--out={out}')
  assert again.returncode != 0 and "already publishes 'tiny_cnn'; pass --overwrite" in again.stderr, again.stderr
  assert (out / 'manifest.json').read_text() == before
