"""Pruning (exact one-shot sparsities; gradual pruning keeps pruned weights at exactly zero) and distillation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from zoo import compress
from zoo.compress.pruning import PruningState
from zoo.errors import ConfigError
from zoo.train.compression import markdown, prune_and_evaluate
from zoo.train.loop import build_experiment
from zoo.train.step import compile_steps


def test_one_shot_masks_prune_the_smallest_kernels_globally_or_per_layer():
  rng = np.random.default_rng(0)
  params = {'dense': {'kernel': jnp.asarray(rng.normal(size=(30, 20)), jnp.float32), 'bias': jnp.ones(20)},
            'out': {'kernel': jnp.asarray(10 * rng.normal(size=(20, 5)), jnp.float32)}}
  per_layer = compress.sparsity_report(compress.apply_masks(params, compress.magnitude_masks(params, 0.8, 'layer')))
  assert per_layer == {'dense/kernel': 0.8, 'out/kernel': 0.8, 'all': 0.8}
  pruned = compress.apply_masks(params, compress.magnitude_masks(params, 0.8, 'global'))
  report = compress.sparsity_report(pruned)
  assert report['all'] == pytest.approx(0.8, abs=1 / 700)
  assert report['out/kernel'] < report['dense/kernel']  # the 10x larger layer keeps more of its weights
  survivors = np.abs(np.concatenate([np.asarray(pruned['dense']['kernel']).ravel(),
                                     np.asarray(pruned['out']['kernel']).ravel()]))
  removed = np.abs(np.concatenate([np.asarray(params['dense']['kernel']).ravel(),
                                   np.asarray(params['out']['kernel']).ravel()]))[survivors == 0]
  assert removed.max() <= survivors[survivors > 0].min()  # the smallest magnitudes went
  assert np.array_equal(pruned['dense']['bias'], params['dense']['bias'])  # biases are never pruned
  with pytest.raises(ConfigError, match='use one of: global, layer'):
    compress.magnitude_masks(params, 0.5, 'row')


def test_polynomial_schedule_rises_cubically_to_the_final_sparsity():
  schedule = compress.polynomial_sparsity(0.9, begin_step=10, end_step=110)
  assert float(schedule(0)) == 0.0 and float(schedule(10)) == 0.0
  assert float(schedule(60)) == pytest.approx(0.9 * (1 - 0.5 ** 3))
  assert float(schedule(110)) == pytest.approx(0.9) and float(schedule(500)) == pytest.approx(0.9)
  with pytest.raises(ConfigError, match='0 <= sparsity < 1'):
    compress.polynomial_sparsity(1.0, 0, 10)


def test_gradual_pruning_keeps_pruned_weights_at_exactly_zero_while_training(mnist_config):
  config = mnist_config.copy_and_resolve_references()
  config.num_train_steps = 24
  config.optimizer.pruning.update(sparsity=0.6, begin_fraction=0.0, end_fraction=0.5, every=4)
  experiment = build_experiment(config, None)
  train_step, _ = compile_steps(experiment.task, experiment.tx, experiment.schedule, experiment.strategy, config)
  iterator = experiment.pipeline.train_iterator()
  state, losses, masks_at = experiment.state, [], {}
  assert compress.sparsity_report(jax.device_get(state.params))['all'] < 1e-3  # it starts dense
  for step in range(config.num_train_steps):
    state, metrics = train_step(state, experiment.strategy.put_batch(next(iterator)))
    losses.append(float(metrics['loss']))
    pruning = [s for s in state.opt_state if isinstance(s, PruningState)][0]
    masks_at[step + 1] = jax.device_get(pruning.masks)
    for kept, param in zip(jax.tree.leaves(masks_at[step + 1]), jax.tree.leaves(jax.device_get(state.params))):
      assert np.all(param[~kept] == 0.0), step  # pruned weights are exactly zero after every step

  report = compress.sparsity_report(jax.device_get(state.params))
  assert report['all'] == pytest.approx(0.6, abs=1e-3)  # reached at end_fraction * 24 = step 12, then held
  assert jax.tree.all(jax.tree.map(np.array_equal, masks_at[13], masks_at[24]))  # no mask changes after the end
  assert np.isfinite(losses).all() and np.mean(losses[-4:]) < np.mean(losses[:4])  # and still learns


def test_compress_launcher_measures_accuracy_against_sparsity(trained_run):
  rows = prune_and_evaluate(str(trained_run), [0.0, 0.9], 'global')
  assert [row['target_sparsity'] for row in rows] == [0.0, 0.9]
  assert rows[0]['sparsity'] < 1e-3 and rows[1]['sparsity'] == pytest.approx(0.9, abs=1e-3)
  assert rows[1]['nonzero_kernel_weights'] == pytest.approx(0.1 * rows[0]['nonzero_kernel_weights'], rel=1e-3)
  assert all(0.0 <= row['test_accuracy'] <= 1.0 for row in rows)
  assert rows[0]['test_accuracy'] != rows[1]['test_accuracy']  # pruning 90% changes the model
  table = markdown(rows)
  assert table.splitlines()[0].startswith('| model | scope | sparsity') and '| cnn | global | 90.0% |' in table


def test_distillation_loss_mixes_soft_teacher_targets_and_labels(trained_run, mnist_config):
  config = mnist_config.copy_and_resolve_references()
  config.task = ml_collections.ConfigDict(dict(name='distillation', teacher_workdir=str(trained_run),
                                               temperature=2.0, alpha=0.5))
  experiment = build_experiment(config, None)
  batch = next(experiment.pipeline.train_iterator())
  _, teacher_variables = experiment.task.teacher
  rng = jax.random.PRNGKey(0)
  loss_fn = jax.jit(lambda params: experiment.task.loss(params, {}, batch, rng, train=False))
  # The student is a copy of the teacher: nothing left to learn from the soft targets.
  loss, (metrics, _) = loss_fn(teacher_variables['params'])
  assert float(metrics['soft_loss']) == pytest.approx(0.0, abs=1e-6)
  assert float(loss) == pytest.approx(0.5 * float(metrics['hard_loss']), rel=1e-6)
  # A fresh student: the soft term is positive and the loss is the stated mix.
  loss, (metrics, _) = loss_fn(experiment.state.params)
  assert float(metrics['soft_loss']) > 1e-6
  assert float(loss) == pytest.approx(0.5 * 4.0 * float(metrics['soft_loss']) + 0.5 * float(metrics['hard_loss']),
                                      rel=1e-5)
  config.task.teacher_workdir = str(trained_run / 'missing')
  with pytest.raises(ConfigError, match='holds no zoo run'):
    build_experiment(config, None)
