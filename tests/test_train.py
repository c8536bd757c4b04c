"""The loop on real MNIST: learning, run folder, determinism, resumption, mismatch."""

from __future__ import annotations

import hashlib
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from zoo.errors import CheckpointMismatchError
from zoo.train.checkpoint import Checkpointer, abstract_like
from zoo.train.loop import train_and_evaluate
from zoo.train.writers import read_metrics

from conftest import REPO


def final_state(workdir) -> dict:
  """The state saved in workdir's latest checkpoint, as numpy arrays."""
  manager = ocp.CheckpointManager(pathlib.Path(workdir).resolve() / 'checkpoints')
  restored = manager.restore(manager.latest_step(), args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  return jax.tree.map(np.asarray, restored.state)


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
  a, b, c = (final_state(tmp_path / x)['params'] for x in 'abc')
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


def _launch(workdir, tfds_dir, steps, *extra) -> subprocess.Popen:
  command = [sys.executable, str(REPO / 'experiments' / 'train.py'),
             f'--config={REPO / "experiments" / "configs" / "mnist_cnn.py"}', f'--workdir={workdir}',
             f'--config.data.tfds_dir={tfds_dir}', f'--config.num_train_steps={steps}',
             '--config.checkpoint.every=10', '--config.eval_every=1000', *extra]
  return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_killed_run_resumes_to_bit_identical_params(tfds_dir, tmp_path):
  steps = 60
  reference = _launch(tmp_path / 'reference', tfds_dir, steps)
  assert reference.wait(timeout=300) == 0, reference.stdout.read()

  workdir = tmp_path / 'killed'
  run = _launch(workdir, tfds_dir, steps)
  deadline = time.time() + 300
  while not (workdir / 'checkpoints' / '20' / 'commit_success.txt').exists():
    assert run.poll() is None and time.time() < deadline, 'run ended before its second checkpoint'
    time.sleep(0.05)
  os.kill(run.pid, signal.SIGKILL)
  run.wait()
  rerun = _launch(workdir, tfds_dir, steps)
  assert rerun.wait(timeout=300) == 0, rerun.stdout.read()
  assert_trees_equal(final_state(workdir), final_state(tmp_path / 'reference'))
  train_steps = [r['step'] for r in read_metrics(workdir / 'metrics.jsonl') if r['split'] == 'train']
  assert train_steps == sorted(set(train_steps)) and train_steps[-1] == steps


def test_workdir_of_another_model_is_refused_and_left_untouched(mnist_config, tmp_path):
  mnist_config.num_train_steps = 10
  mnist_config.checkpoint.every = 10
  train_and_evaluate(mnist_config, str(tmp_path))
  before = tree_digest(tmp_path)
  mnist_config.model.features = (16, 32)
  with pytest.raises(CheckpointMismatchError, match=r'model.features: \[32, 64\] -> \[16, 32\].*new --workdir'):
    train_and_evaluate(mnist_config, str(tmp_path))
  assert tree_digest(tmp_path) == before
