"""Published weights: every name loads (hash checked) and scores its manifest's number on real data; bad
files, names and manifests each fail with an error naming the fix; folders and URLs load the same way."""

from __future__ import annotations

import copy
import functools
import gzip
import http.server
import json
import shutil
import threading

import numpy as np
import pytest
import safetensors.numpy
from conftest import RAW_DATA_DIR
from PIL import Image

import zoo.pretrained
from zoo.pretrained import WeightsError
from zoo.train.weights import PUBLISHED_DIR, file_record

PUBLISHED = json.loads((PUBLISHED_DIR / 'manifest.json').read_text())['weights']


def _tolerance(metric: str) -> float:
  return 0.001 if metric == 'accuracy' else 0.01  # 0.1 points, or 0.01 nats


@pytest.mark.slow
@pytest.mark.xdist_group('datasets')  # one worker prepares each dataset once (see test_data.py)
@pytest.mark.parametrize('name', sorted(PUBLISHED))
def test_published_weights_score_their_manifest_number_on_real_data(name, tfds_dir):
  model, variables, info = zoo.pretrained.load(name)
  assert info.sha256 == PUBLISHED[name]['files']['weights']['sha256'] and info.params > 0
  measured = zoo.pretrained.evaluate(info.config, variables, [info.split], vocab=info.vocab, tfds_dir=tfds_dir)
  for metric, value in info.metrics.items():
    assert abs(measured[info.split][metric] - value) <= _tolerance(metric), (metric, measured, info.metrics)


def _mnist_test_images(count: int) -> tuple[np.ndarray, np.ndarray]:
  images = np.frombuffer(gzip.open(RAW_DATA_DIR / 'mnist' / 't10k-images-idx3-ubyte.gz').read()[16:], np.uint8)
  labels = np.frombuffer(gzip.open(RAW_DATA_DIR / 'mnist' / 't10k-labels-idx1-ubyte.gz').read()[8:], np.uint8)
  return images.reshape(-1, 28, 28)[:count], labels[:count]


def test_load_gives_model_variables_and_info_that_classify_a_png(tmp_path):
  model, variables, info = zoo.pretrained.load('mnist_cnn')
  assert 'mnist_cnn' in zoo.pretrained.list()
  assert (info.dataset, info.split, info.preprocessing['input_shape']) == ('mnist', 'test', [28, 28, 1])
  assert info.metrics['accuracy'] >= 0.992 and info.license.startswith('CC BY-SA 3.0')
  assert info.recipe['command'].startswith('python experiments/train.py --config=experiments/configs/mnist_cnn.py')
  assert info.file_bytes == (PUBLISHED_DIR / 'mnist_cnn.safetensors').stat().st_size
  images, labels = _mnist_test_images(64)
  for i in range(3):
    Image.fromarray(images[i]).save(tmp_path / f'{i}.png')
  from_png = info.preprocess([str(tmp_path / f'{i}.png') for i in range(3)])
  np.testing.assert_array_equal(from_png, info.preprocess(images[:3]))
  assert from_png.shape == (3, 28, 28, 1) and from_png.dtype == np.float32 and from_png.max() <= 1.0
  assert info.preprocess(str(tmp_path / '0.png')).shape == (1, 28, 28, 1)
  predictions = np.asarray(model.apply(variables, info.preprocess(images), train=False)).argmax(-1)
  assert (predictions == labels).mean() >= 0.95


def _copy_of(name: str, folder) -> dict:
  """folder: a weights folder holding only `name` (its files and manifest entry); returns the entry."""
  folder.mkdir(parents=True, exist_ok=True)
  entry = copy.deepcopy(PUBLISHED[name])
  for record in entry['files'].values():
    shutil.copy(PUBLISHED_DIR / record['path'], folder / record['path'])
  (folder / 'manifest.json').write_text(json.dumps({'format_version': 1, 'weights': {name: entry}}))
  return entry


def test_a_folder_of_the_same_layout_loads(tmp_path):
  _copy_of('mnist_cnn', tmp_path / 'mine')
  _, variables, info = zoo.pretrained.load(str(tmp_path / 'mine'))
  _, published, _ = zoo.pretrained.load('mnist_cnn')
  assert info.name == 'mnist_cnn' and zoo.pretrained.names(str(tmp_path / 'mine')) == ['mnist_cnn']
  np.testing.assert_array_equal(variables['params']['Dense_1']['kernel'], published['params']['Dense_1']['kernel'])


def test_unknown_name_lists_the_published_names():
  with pytest.raises(WeightsError, match="No published weights named 'mnist_cnnn'.*published: .*mnist_cnn"):
    zoo.pretrained.load('mnist_cnnn')


def test_truncated_file_is_refused(tmp_path):
  entry = _copy_of('mnist_cnn', tmp_path)
  path = tmp_path / entry['files']['weights']['path']
  path.write_bytes(path.read_bytes()[:1000])
  with pytest.raises(WeightsError, match='truncated or altered. Fix: restore it'):
    zoo.pretrained.load(str(tmp_path))


def test_altered_file_of_the_same_size_is_refused(tmp_path):
  entry = _copy_of('mnist_cnn', tmp_path)
  path = tmp_path / entry['files']['weights']['path']
  data = bytearray(path.read_bytes())
  data[-5] ^= 1  # one bit of one weight
  path.write_bytes(bytes(data))
  with pytest.raises(WeightsError, match='sha256 other than the manifest'):
    zoo.pretrained.load(str(tmp_path))


def test_manifest_whose_config_does_not_build_these_weights_is_refused(tmp_path):
  entry = _copy_of('mnist_cnn', tmp_path)
  entry['config']['model']['hidden'] = 128
  (tmp_path / 'manifest.json').write_text(json.dumps({'format_version': 1, 'weights': {'mnist_cnn': entry}}))
  with pytest.raises(WeightsError, match=r'params/Dense_0/bias \(256,\) vs model \(128,\).*Fix: re-publish'):
    zoo.pretrained.load(str(tmp_path))


def test_newer_format_version_asks_for_a_newer_zoo(tmp_path):
  entry = _copy_of('mnist_cnn', tmp_path)
  (tmp_path / 'manifest.json').write_text(json.dumps({'format_version': 2, 'weights': {'mnist_cnn': entry}}))
  with pytest.raises(WeightsError, match='format version 2; this zoo reads up to version 1. Fix: upgrade zoo'):
    zoo.pretrained.load(str(tmp_path))


def test_weight_file_of_a_newer_format_version_asks_for_a_newer_zoo(tmp_path):
  entry = _copy_of('mnist_cnn', tmp_path)
  path = tmp_path / entry['files']['weights']['path']
  arrays = safetensors.numpy.load(path.read_bytes())
  path.write_bytes(safetensors.numpy.save(arrays, metadata={'format_version': '2'}))
  entry['files']['weights'] = file_record(path)  # a consistent manifest, the file itself from a newer zoo
  (tmp_path / 'manifest.json').write_text(json.dumps({'format_version': 1, 'weights': {'mnist_cnn': entry}}))
  with pytest.raises(WeightsError, match='mnist_cnn.safetensors has format version 2.*Fix: upgrade zoo'):
    zoo.pretrained.load(str(tmp_path))


class _CountingHandler(http.server.SimpleHTTPRequestHandler):
  requests: list[str] = []

  def log_message(self, *args):
    _CountingHandler.requests.append(self.path)


@pytest.fixture
def weights_server(tmp_path):
  """(base URL, folder): a local HTTP server on 127.0.0.1 serving a weights folder holding mnist_cnn."""
  folder = tmp_path / 'served'
  _copy_of('mnist_cnn', folder)
  _CountingHandler.requests = []
  server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(_CountingHandler, directory=folder))
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  yield f'http://127.0.0.1:{server.server_address[1]}/', folder
  server.shutdown()
  server.server_close()


def test_url_downloads_once_into_the_cache_with_the_hash_checked(weights_server, tmp_path, monkeypatch):
  url, folder = weights_server
  monkeypatch.setenv('ZOO_CACHE_DIR', str(tmp_path / 'cache'))
  _, variables, info = zoo.pretrained.load('mnist_cnn', source=url)
  _, again, _ = zoo.pretrained.load(url)
  weight_file = '/mnist_cnn.safetensors'
  assert _CountingHandler.requests.count(weight_file) == 1  # the second load used the cache
  np.testing.assert_array_equal(variables['params']['Conv_0']['kernel'], again['params']['Conv_0']['kernel'])
  cached = next((tmp_path / 'cache').rglob('mnist_cnn.safetensors'))
  cached.write_bytes(cached.read_bytes()[:-10])  # damaged in the cache: fetched again
  zoo.pretrained.load(url)
  assert _CountingHandler.requests.count(weight_file) == 2
  data = (folder / 'mnist_cnn.safetensors').read_bytes()
  (folder / 'mnist_cnn.safetensors').write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # altered on the server
  cached.unlink()
  with pytest.raises(WeightsError, match='truncated or altered'):
    zoo.pretrained.load(url)
