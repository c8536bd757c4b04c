"""The README's and docs/pretrained.md's snippets run as shown (a PNG classified with published weights; the
weights used
from Flax NNX), and the NNX module computes what the linen module computes."""

from __future__ import annotations

import gzip
import subprocess
import sys

import jax
import numpy as np
import optax
import pytest
from conftest import RAW_DATA_DIR, REPO
from flax import nnx
from PIL import Image

import zoo.pretrained

DOC = (REPO / 'docs' / 'pretrained.md').read_text()


README = (REPO / 'README.md').read_text()


def _snippet(heading: str, text: str = DOC) -> str:
  return text.split(heading, 1)[1].split('```python\n', 1)[1].split('```', 1)[0]


def _mnist_test(count: int) -> tuple[np.ndarray, np.ndarray]:
  images = np.frombuffer(gzip.open(RAW_DATA_DIR / 'mnist' / 't10k-images-idx3-ubyte.gz').read()[16:], np.uint8)
  labels = np.frombuffer(gzip.open(RAW_DATA_DIR / 'mnist' / 't10k-labels-idx1-ubyte.gz').read()[8:], np.uint8)
  return images.reshape(-1, 28, 28)[:count], labels[:count].astype(np.int32)


@pytest.fixture
def digit_folder(tmp_path):
  """A folder holding digit.png: the first MNIST test image (a 7)."""
  images, labels = _mnist_test(1)
  Image.fromarray(images[0]).save(tmp_path / 'digit.png')
  assert labels[0] == 7
  return tmp_path


def _run(snippet: str, cwd) -> str:
  result = subprocess.run([sys.executable, '-c', snippet], capture_output=True, text=True, timeout=300, cwd=cwd)
  assert result.returncode == 0, result.stderr
  return result.stdout


def test_readme_png_snippet_classifies_a_digit(digit_folder):
  snippet = _snippet('### Classify a PNG with published weights', README)
  assert 'zoo.train' not in snippet and len(snippet.strip().splitlines()) <= 8
  assert _run(snippet, digit_folder).startswith('digit 7; this model scores 99.')


def test_docs_nnx_snippet_trains_a_new_head_on_the_published_cnn(digit_folder):
  final_loss = float(_run(_snippet('## From Flax NNX'), digit_folder).split('final loss')[1])
  assert final_loss < 0.1  # ln 2 = 0.69 at the start


@pytest.mark.skipif('sst2_lstm' not in zoo.pretrained.list(), reason='sst2_lstm is not published')
def test_docs_text_and_pytorch_snippets_run():
  listing = _run(DOC.split('# Published weights', 1)[1].split('```python\n', 1)[1].split('```', 1)[0], REPO)
  assert "'mnist_cnn'" in listing and 'python experiments/train.py' in listing
  assert _run(_snippet('## In PyTorch'), REPO).strip() in ('tensor([1])', 'tensor([0])')


def test_nnx_module_computes_what_the_linen_module_computes_and_trains():
  model, variables, info = zoo.pretrained.load('mnist_cnn')
  images, labels = _mnist_test(256)
  x = info.preprocess(images)
  cnn = zoo.pretrained.to_nnx(model, variables)
  np.testing.assert_array_equal(np.asarray(cnn(x, train=False)), np.asarray(model.apply(variables, x, train=False)))
  graphdef, state = nnx.split(cnn)
  assert len(jax.tree.leaves(nnx.state(cnn, nnx.Param))) == len(jax.tree.leaves(variables['params'])) == 8
  optimizer = nnx.Optimizer(cnn, optax.sgd(0.05), wrt=nnx.Param)

  @nnx.jit
  def step(cnn, optimizer, x, y):
    loss, grads = nnx.value_and_grad(
        lambda m: optax.softmax_cross_entropy_with_integer_labels(m(x, train=True), y).mean())(cnn)
    optimizer.update(cnn, grads)
    return loss

  first = float(step(cnn, optimizer, x, labels))
  assert 0 < first < 0.1  # already trained: 99% of these digits right
  assert (np.asarray(nnx.merge(graphdef, state)(x, train=False)).argmax(-1) == labels).mean() >= 0.97
