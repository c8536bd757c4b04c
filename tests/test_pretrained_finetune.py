"""config.init_from: a run starts from published weights or another run (optimizer fresh); an output layer of
another shape is re-initialised and listed in one line; any other difference is an error naming the leaves."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from conftest import load_config

import zoo.pretrained
from zoo.errors import ConfigError, UserError
from zoo.models.layers import stack_layers
from zoo.train import init_from, run_folder
from zoo.train.loop import build_experiment, train_and_evaluate


def _experiment(tfds_dir, **model):
  config = load_config('mnist_cnn')
  config.data.tfds_dir = tfds_dir
  config.model.update(model)
  return build_experiment(config, None)


def _initialise(experiment, source, log=print):
  return init_from.initialise(experiment.state, source, experiment.tx, experiment.shardings, log=log)


def test_published_weights_load_with_a_fresh_optimizer(tfds_dir):
  experiment = _experiment(tfds_dir)
  state = _initialise(experiment, 'mnist_cnn')
  _, published, _ = zoo.pretrained.load('mnist_cnn')
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.params), jax.device_get(published['params']))
  fresh_optimizer = experiment.tx.init(state.params)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.opt_state), jax.device_get(fresh_optimizer))


def test_a_head_of_another_size_is_reinitialised_and_listed_in_one_line(tfds_dir):
  experiment = _experiment(tfds_dir, num_classes=5)
  lines = []
  state = _initialise(experiment, 'mnist_cnn', log=lines.append)
  assert lines == ['init_from=mnist_cnn: re-initialised 2 leaves whose shapes differ: '
                   'params/Dense_1/bias (10,) -> (5,), params/Dense_1/kernel (256, 10) -> (256, 5)']
  _, published, _ = zoo.pretrained.load('mnist_cnn')
  np.testing.assert_array_equal(state.params['Dense_0']['kernel'], published['params']['Dense_0']['kernel'])
  np.testing.assert_array_equal(state.params['Dense_1']['kernel'], experiment.state.params['Dense_1']['kernel'])


def test_a_difference_below_the_head_is_an_error_naming_the_leaves(tfds_dir):
  with pytest.raises(ConfigError, match=r'params/Dense_0/bias \(256,\) vs \(128,\); params/Dense_0/kernel .*'
                                        r'only the output layer \(Dense_1\) may differ'):
    _initialise(_experiment(tfds_dir, hidden=128), 'mnist_cnn')
  with pytest.raises(UserError, match="No published weights named 'nope'.*mnist_cnn"):
    _initialise(_experiment(tfds_dir), 'nope')


def test_a_run_starts_from_another_run_folder(trained_run, tfds_dir, tmp_path):
  config = load_config('mnist_cnn')
  config.data.tfds_dir = tfds_dir
  config.init_from = str(trained_run)
  config.num_train_steps = 1
  config.optimizer.learning_rate = 1e-9  # the one step moves nothing visibly: the checkpoint holds the source's params
  train_and_evaluate(config, str(tmp_path))
  source = run_folder.evaluation_variables(run_folder.latest_state(trained_run))['params']
  started = run_folder.latest_state(tmp_path)['params']
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=1e-6), started, source)


def test_unscanned_published_blocks_load_into_a_scanned_model_and_back(tfds_dir):
  config = load_config('sst2_transformer')
  config.data.tfds_dir = tfds_dir
  _, published, _ = zoo.pretrained.load('sst2_transformer')
  config.model.scan_layers = True
  scanned = _initialise(build_experiment(config, None), 'sst2_transformer')
  assert 'EncoderBlock_0' not in scanned.params
  stacked = stack_layers(jax.device_get(published['params']), 'EncoderBlock_')
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(scanned.params), stacked)
  assert init_from.in_layout_of(stacked, published['params']).keys() == published['params'].keys()
