"""Published weights in the PyTorch twins: for every family, the twin with the converted weights computes what
the zoo model computes on real test inputs (within 1e-4), and the state_dict converts back bit for bit."""

from __future__ import annotations

import csv
import dataclasses
import gzip

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import scipy.io
from conftest import RAW_DATA_DIR

import zoo.pretrained
from zoo import models
from zoo.data.text import Vocabulary
from zoo.pretrained import torch_convert, torch_twins
from zoo.train.weights import PUBLISHED_DIR, flatten

torch = pytest.importorskip('torch')
PUBLISHED = zoo.pretrained.names()
ALLOWED_MISSING = ('positions', 'num_batches_tracked')  # buffers the twin computes itself


def _idx_images(folder: str, count: int) -> np.ndarray:
  data = gzip.open(RAW_DATA_DIR / folder / 't10k-images-idx3-ubyte.gz').read()[16:]
  return np.frombuffer(data, np.uint8).reshape(-1, 28, 28, 1)[:count]


def _dev_sentences(count: int) -> list[str]:
  with open(RAW_DATA_DIR / 'sst2' / 'dev.tsv', encoding='utf-8') as file:
    return [row['sentence'] for row in csv.DictReader(file, delimiter='\t', quoting=csv.QUOTE_NONE)][:count]


def _real_inputs(info) -> np.ndarray:
  """A batch of real test inputs, preprocessed as the model was trained."""
  dataset = info.dataset
  if dataset in ('mnist', 'fashion_mnist'):
    return info.preprocess(_idx_images(dataset, 64))
  if dataset == 'binarized_mnist':
    test = scipy.io.loadmat(RAW_DATA_DIR / 'binarized_mnist' / 'binarized_mnist_test.mat')['X']
    return info.preprocess(test[:64].reshape(-1, 28, 28, 1).astype(np.uint8))
  if dataset == 'glue/sst2':
    return info.preprocess(_dev_sentences(32))
  text = (RAW_DATA_DIR / 'tinyshakespeare' / 'input.txt').read_text()
  tail = text[int(len(text) * 0.95):]
  return np.concatenate([info.preprocess(tail[i * 128:(i + 1) * 128]) for i in range(4)])


def _twin_with(model_config, variables, input_shape):
  twin = torch_twins.build(model_config, input_shape)
  state_dict = torch_convert.to_state_dict(model_config, variables, input_shape)
  missing, unexpected = twin.load_state_dict({k: torch.tensor(v) for k, v in state_dict.items()}, strict=False)
  assert not unexpected and all(key.endswith(ALLOWED_MISSING) for key in missing), (missing, unexpected)
  return twin.eval()


def _torch_input(model_config, x: np.ndarray):
  if model_config.name in ('cnn', 'resnet'):
    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
  return torch.from_numpy(x).long() if x.dtype == np.int32 else torch.from_numpy(x)


def _assert_round_trip(model_config, variables, twin, input_shape):
  back = torch_convert.from_state_dict(model_config, twin.state_dict(), input_shape)
  expected, got = flatten(jax.device_get(variables)), flatten(back)
  assert sorted(expected) == sorted(got)
  for key in expected:
    assert got[key].dtype == expected[key].dtype and np.array_equal(got[key], expected[key]), key


def _compare(model, variables, twin, x):
  """Zoo and twin outputs on x (the VAE: encoder mean and log-variance, and the decoder's logits at the mean)."""
  with torch.no_grad():
    if isinstance(model, models.VAE):
      mean, logvar = model.apply(variables, x.reshape(len(x), -1), method=model.encode)
      twin_mean, twin_logvar = twin.encode(torch.from_numpy(x.reshape(len(x), -1)))
      logits = model.apply(variables, mean, method=model.decode)
      pairs = [(mean, twin_mean), (logvar, twin_logvar), (logits, twin.decoder(twin_mean))]
    else:
      pairs = [(model.apply(variables, x, train=False), twin(_torch_input(model_config_of(model), x)))]
  for zoo_out, torch_out in pairs:
    np.testing.assert_allclose(torch_out.numpy(), np.asarray(zoo_out), rtol=1e-4, atol=1e-4)


def model_config_of(model) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({'name': {v: k for k, v in models.MODELS.items()}[type(model)]})


@pytest.mark.parametrize('name', PUBLISHED)
def test_published_weights_in_the_torch_twin_match_zoo_and_convert_back_bit_exactly(name):
  model, variables, info = zoo.pretrained.load(name)
  input_shape = info.preprocessing['input_shape']
  twin = _twin_with(info.config.model, variables, input_shape)
  _compare(model, variables, twin, _real_inputs(info))
  _assert_round_trip(info.config.model, variables, twin, input_shape)


FRESH = {  # families and options no published model covers, with fresh weights on real inputs
    'gru_bidirectional_attention': dict(name='rnn_classifier', vocab_size=20000, embed_dim=32, hidden=24,
                                        num_layers=2, cell='gru', bidirectional=True, pooling='attention',
                                        dropout_rate=0.0),
    'lstm_bidirectional_last': dict(name='rnn_classifier', vocab_size=20000, embed_dim=32, hidden=24, num_layers=1,
                                    cell='lstm', bidirectional=True, pooling='last', dropout_rate=0.0),
    'gru_lm': dict(name='rnn_lm', vocab_size=20000, embed_dim=16, hidden=24, num_layers=2, cell='gru'),
    'transformer_mean_pooling': dict(name='transformer', vocab_size=20000, max_len=60, d_model=32, num_heads=4,
                                     num_layers=2, d_ff=64, dropout_rate=0.0, pooling='mean'),
    'mlp_batch_norm': dict(name='mlp', widths=(64, 32), batch_norm=True, num_classes=10),
    'resnet': dict(name='resnet', stage_sizes=(2, 1, 1), widths=(8, 16, 16), num_classes=10),
}


@pytest.mark.parametrize('key', sorted(FRESH))
def test_twins_of_other_options_match_zoo_on_real_inputs(key):
  model = models.build(ml_collections.ConfigDict(FRESH[key]))
  fields = {f.name: getattr(model, f.name) for f in dataclasses.fields(model) if f.name not in ('parent', 'name')}
  model_config = ml_collections.ConfigDict({'name': FRESH[key]['name'], **fields})  # every option, defaults too
  if model_config.name in ('mlp', 'resnet'):
    x = _idx_images('fashion_mnist', 64).astype(np.float32) / 255.0
  else:
    vocab = Vocabulary.build(_dev_sentences(872), level='word', max_size=20000)
    x = np.asarray([(vocab.encode(s, 'word') + [0] * 60)[:60] for s in _dev_sentences(32)], np.int32)
    if model_config.name == 'rnn_lm':
      x = np.maximum(x, 1)  # a language model reads windows without padding
  variables = jax.tree.map(np.asarray, dict(nn.meta.unbox(model.init(jax.random.PRNGKey(0), jnp.asarray(x),
                                                                    train=False))))
  if 'batch_stats' in variables:  # statistics other than the initial 0 / 1, so that eval-mode BatchNorm counts
    rng = np.random.default_rng(0)  # and BatchNorm scales away from the zero init of each block's last one
    variables['params'] = jax.tree_util.tree_map_with_path(
        lambda path, v: v + 0.5 if 'BatchNorm' in jax.tree_util.keystr(path) else v, variables['params'])
    variables['batch_stats'] = jax.tree.map(lambda v: (v + rng.uniform(0.5, 1.5, v.shape)).astype(np.float32),
                                            variables['batch_stats'])
  input_shape = x.shape[1:]
  twin = _twin_with(model_config, variables, input_shape)
  with torch.no_grad():
    twin_out = twin(_torch_input(model_config, x))
  np.testing.assert_allclose(twin_out.numpy(), np.asarray(model.apply(variables, x, train=False)),
                             rtol=1e-4, atol=1e-4)
  _assert_round_trip(model_config, variables, twin, input_shape)


def test_published_dir_is_the_registry():
  assert (PUBLISHED_DIR / 'manifest.json').is_file()
