"""Serving artifacts: the exported program reproduces the trained model, from a process without zoo.models."""

from __future__ import annotations

import json
import subprocess
import sys

import ml_collections
import numpy as np
import pytest
from conftest import REPO

from zoo import models
from zoo.errors import UserError
from zoo.serving import Predictor
from zoo.serving.from_run import export_run
from zoo.train.checkpoint import load_state

# Runs in a fresh interpreter: loads the artifact, predicts, and reports which zoo modules it imported.
FRESH_PROCESS = '''
import json, sys
import numpy as np
from zoo.serving import Predictor
predictor = Predictor(sys.argv[1])
inputs = np.load(sys.argv[2])
outputs = {str(n): np.asarray(predictor(inputs[:n])).tolist() for n in (3, 7)}
print(json.dumps({'outputs': outputs, 'zoo_modules': sorted(m for m in sys.modules if m.startswith('zoo'))}))
'''


def test_artifact_reproduces_the_model_at_two_batch_sizes_without_zoo_models(trained_run, tmp_path):
  folder = export_run(trained_run, tmp_path / 'artifact')
  metadata = json.loads((folder / 'serving.json').read_text())
  assert metadata['input_shape'] == [None, 28, 28, 1] and metadata['trained_steps'] == 10
  inputs = np.random.default_rng(0).uniform(size=(7, 28, 28, 1)).astype(np.float32)
  np.save(tmp_path / 'inputs.npy', inputs)

  result = subprocess.run([sys.executable, '-c', FRESH_PROCESS, str(folder), str(tmp_path / 'inputs.npy')],
                          capture_output=True, text=True, check=True, cwd=REPO)
  report = json.loads(result.stdout.strip().splitlines()[-1])
  assert not any(m.startswith('zoo.models') for m in report['zoo_modules']), report['zoo_modules']

  config = ml_collections.ConfigDict(json.loads((trained_run / 'config.json').read_text()))
  saved = load_state(trained_run)
  expected = np.asarray(models.build(config.model).apply({'params': saved['params']}, inputs, train=False))
  for count in (3, 7):
    np.testing.assert_allclose(np.asarray(report['outputs'][str(count)]), expected[:count], atol=1e-5, rtol=1e-5)


def test_predict_cli_classifies_png_files(trained_run, tmp_path):
  from PIL import Image  # pylint: disable=import-outside-toplevel
  folder = export_run(trained_run, tmp_path / 'artifact')
  paths = []
  for index in range(2):
    paths.append(tmp_path / f'digit{index}.png')
    Image.fromarray(np.full((28, 28), 40 * index, np.uint8)).save(paths[-1])
  result = subprocess.run([sys.executable, str(REPO / 'experiments' / 'predict.py'), f'--artifact={folder}',
                           *map(str, paths)], capture_output=True, text=True, check=True, cwd=REPO)
  rows = [json.loads(line) for line in result.stdout.splitlines()]
  assert [row['input'] for row in rows] == list(map(str, paths))
  for row in rows:
    assert 0 <= row['class'] < 10 and abs(sum(row['probabilities']) - 1) < 1e-4

  Image.fromarray(np.zeros((20, 20), np.uint8)).save(tmp_path / 'small.png')
  bad = subprocess.run([sys.executable, str(REPO / 'experiments' / 'predict.py'), f'--artifact={folder}',
                        str(tmp_path / 'small.png')], capture_output=True, text=True, cwd=REPO)
  assert bad.returncode != 0 and 'is 20x20 pixels; the model takes 28x28. Resize it first.' in bad.stderr


def test_bad_serving_inputs_get_clear_errors(trained_run, tmp_path):
  folder = export_run(trained_run, tmp_path / 'artifact')
  predictor = Predictor(folder)
  with pytest.raises(UserError, match=r'takes inputs of shape \[batch, 28, 28, 1\]; got \[2, 28, 28\]'):
    predictor(np.zeros((2, 28, 28), np.float32))
  with pytest.raises(UserError, match='not a zoo serving artifact .* experiments/export.py'):
    Predictor(tmp_path)
  untrained = tmp_path / 'untrained'
  untrained.mkdir()
  (untrained / 'config.json').write_text((trained_run / 'config.json').read_text())
  with pytest.raises(UserError, match='has no checkpoint yet .* let it train first'):
    export_run(untrained, tmp_path / 'nothing')
  assert not (tmp_path / 'nothing').exists()
  with pytest.raises(UserError, match='holds no zoo run'):
    export_run(tmp_path / 'no_such_run', tmp_path / 'nothing')
