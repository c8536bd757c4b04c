"""predict.py on inputs of the wrong kind: one line naming the fix, or the training preprocessing applied."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from conftest import REPO
from test_train import tree_digest

from zoo.serving import Predictor
from zoo.serving.from_run import export_run


def predict(*args) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, str(REPO / 'experiments' / 'predict.py'), *args], cwd=REPO,
                        capture_output=True, text=True, timeout=300)


def test_text_for_an_image_model_and_uint8_arrays(trained_run, tmp_path):
  folder = export_run(trained_run, tmp_path / 'artifact')
  before = tree_digest(folder)
  result = predict(f'--artifact={folder}', '--text', 'a gripping film')
  assert result.returncode != 0 and 'Traceback' not in result.stderr, result.stderr
  [line] = [text for text in result.stderr.splitlines() if text.startswith('error:')]
  assert 'takes image of shape [batch, 28, 28, 1], not text: drop --text' in line, line
  predictor = Predictor(folder)
  pixels = np.random.default_rng(0).integers(0, 256, (3, 28, 28, 1), dtype=np.uint8)
  np.testing.assert_array_equal(np.asarray(predictor(pixels)), np.asarray(predictor(pixels.astype(np.float32) / 255)))
  np.save(tmp_path / 'pixels.npy', pixels)
  scaled = predict(f'--artifact={folder}', f'--npy={tmp_path / "pixels.npy"}')
  np.save(tmp_path / 'floats.npy', pixels.astype(np.float32) / 255)
  floats = predict(f'--artifact={folder}', f'--npy={tmp_path / "floats.npy"}')
  assert scaled.returncode == 0, scaled.stderr
  classes = [[row.split('"class"')[1] for row in out.stdout.splitlines()] for out in (scaled, floats)]
  assert classes[0] == classes[1]
  assert tree_digest(folder) == before
