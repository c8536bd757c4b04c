"""The loop on real MNIST: learning, run folder, determinism, resumption, mismatch."""

from __future__ import annotations

import functools
import hashlib
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import load_config

from zoo.errors import CheckpointMismatchError
from zoo.models import MLP
from zoo.tasks.classification import Classification
from zoo.train.checkpoint import Checkpointer, abstract_like, load_state
from zoo.train.loop import intervals, train_and_evaluate
from zoo.train.state import TrainState
from zoo.train.step import train_step
from zoo.train.writers import read_metrics


def assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  jax.tree.map(np.testing.assert_array_equal, a, b)


def tree_digest(folder: pathlib.Path) -> dict[str, str]:
  return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(folder.rglob('*')) if p.is_file()}


@pytest.mark.slow
def test_cnn_learns_mnist_and_leaves_a_readable_run_folder(mnist_config, tmp_path):
  mnist_config.num_train_steps = 300
  mnist_config.eval_every = 150
  mnist_config.checkpoint.every = 150
  result = train_and_evaluate(mnist_config, str(tmp_path))
  assert result['accuracy'] >= 0.95
  rows = read_metrics(tmp_path / 'metrics.jsonl')
  assert rows[-1]['split'] == 'test' and rows[-1]['accuracy'] == pytest.approx(result['accuracy'])
  assert {r['split'] for r in rows} == {'train', 'eval', 'test'}
  train_losses = [r['loss'] for r in rows if r['split'] == 'train']
  assert train_losses[-1] < train_losses[0] / 3
  assert (tmp_path / 'config.json').read_text().count('"cnn"') == 1
  assert list((tmp_path / 'tensorboard').glob('events.out.tfevents.*'))
  assert (tmp_path / 'curves.png').read_bytes()[:4] == b'\x89PNG'
  assert sorted(int(p.name) for p in (tmp_path / 'checkpoints').iterdir() if p.name.isdigit()) == [150, 300]


def test_same_seed_gives_bit_identical_params_and_another_seed_does_not(mnist_config, tmp_path):
  mnist_config.num_train_steps = 20
  train_and_evaluate(mnist_config, str(tmp_path / 'a'))
  train_and_evaluate(mnist_config, str(tmp_path / 'b'))
  mnist_config.seed = 1
  train_and_evaluate(mnist_config, str(tmp_path / 'c'))
  a, b, c = (load_state(tmp_path / x)['params'] for x in 'abc')
  assert_trees_equal(a, b)
  assert not np.array_equal(a['Dense_0']['kernel'], c['Dense_0']['kernel'])


def test_checkpoint_round_trip_restores_state_and_data_position(mnist_config, tmp_path):
  from zoo.data import build_pipeline
  pipeline = build_pipeline(mnist_config.data, seed=0)
  iterator = pipeline.train_iterator()
  for _ in range(3):
    next(iterator)
  state = {'w': jax.numpy.arange(6.0).reshape(2, 3), 'step': jax.numpy.int32(7)}
  checkpointer = Checkpointer(tmp_path, keep=2)
  checkpointer.save(3, state, iterator, {'model': {'name': 'cnn'}})
  checkpointer.close()
  expected_next = next(iterator)['label']

  resumed_iterator = pipeline.train_iterator()
  checkpointer = Checkpointer(tmp_path, keep=2)
  assert checkpointer.latest_step() == 3
  restored = checkpointer.restore(3, abstract_like(state), resumed_iterator)
  checkpointer.close()
  assert_trees_equal(jax.tree.map(np.asarray, restored), jax.tree.map(np.asarray, state))
  np.testing.assert_array_equal(next(resumed_iterator)['label'], expected_next)


def test_workdir_of_another_model_is_refused_and_left_untouched(mnist_config, tmp_path):
  mnist_config.num_train_steps = 10
  mnist_config.checkpoint.every = 10
  train_and_evaluate(mnist_config, str(tmp_path))
  before = tree_digest(tmp_path)
  mnist_config.model.features = (16, 32)
  with pytest.raises(CheckpointMismatchError, match=r'model.features: \[32, 64\] -> \[16, 32\].*new --workdir'):
    train_and_evaluate(mnist_config, str(tmp_path))
  assert tree_digest(tmp_path) == before


def test_a_nonfinite_step_changes_nothing_but_the_step_counter():
  model = MLP(widths=(16,), num_classes=3, batch_norm=True)
  x = jax.random.normal(jax.random.key(0), (8, 5))
  variables = dict(nn.meta.unbox(model.init(jax.random.key(1), x, train=False)))
  params = variables.pop('params')
  tx = optax.adam(1e-2)
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                     model_state=dict(variables), rng=jax.random.key_data(jax.random.key(2)))
  step = jax.jit(functools.partial(train_step, task=Classification(model), tx=tx, schedule=lambda s: 1e-2))
  labels = jnp.arange(8) % 3
  good, metrics = step(state, {'image': x, 'label': labels})
  assert float(metrics['nonfinite']) == 0.0
  assert not np.array_equal(good.params['Dense_0']['kernel'], state.params['Dense_0']['kernel'])
  bad, metrics = step(good, {'image': x.at[3, 1].set(jnp.nan), 'label': labels})
  assert float(metrics['nonfinite']) == 1.0 and int(bad.step) == int(good.step) + 1
  for field in ('params', 'opt_state', 'model_state'):
    assert_trees_equal(getattr(bad, field), getattr(good, field))


def test_the_loop_evaluates_the_params_average_when_the_optimizer_keeps_one():
  from zoo.train import optim  # pylint: disable=import-outside-toplevel
  from zoo.train.loop import for_evaluation  # pylint: disable=import-outside-toplevel
  params = {'dense': {'kernel': jnp.ones((2, 3)), 'bias': jnp.zeros(3)}}
  tx = optax.chain(optax.sgd(0.1), optim.params_average(0.99))
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), model_state={},
                     rng=jax.random.key_data(jax.random.key(2)))
  average = jax.tree.map(lambda p: p + 1.0, params)
  averaged = state.replace(opt_state=(state.opt_state[0], state.opt_state[1]._replace(average=average)))
  assert for_evaluation(averaged).params is average and for_evaluation(averaged).opt_state is averaged.opt_state
  plain = state.replace(opt_state=optax.sgd(0.1).init(params))
  assert for_evaluation(plain) is plain


def test_eval_and_checkpoint_intervals_are_in_epochs_unless_given_in_steps():
  config = load_config('mnist_cnn')
  assert intervals(config, steps_per_epoch=468) == (468, 468)
  config.eval_every_epochs, config.checkpoint.every_epochs = 2.5, 0.5
  assert intervals(config, steps_per_epoch=10) == (25, 5)
  config.eval_every = 7  # steps win where set
  assert intervals(config, steps_per_epoch=10) == (7, 5)
