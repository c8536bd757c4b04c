"""Never lose a run: kills at any instant, SIGTERM, damaged checkpoints, NaN guard, retention."""

from __future__ import annotations

import logging
import pathlib
import shutil
import signal
import time

import jax
import numpy as np
import pytest
from conftest import REPO, load_experiment
from test_train import assert_trees_equal

from zoo.errors import NonFiniteLossError
from zoo.train.checkpoint import Checkpointer, load_state
from zoo.train.loop import train_and_evaluate
from zoo.train.writers import read_metrics

STEPS = 60
soak = load_experiment('soak.py')
CONFIG_FILE = str(REPO / 'experiments' / 'configs' / 'mnist_cnn.py')


def _launch(workdir, tfds_dir, every):
  return soak.launch(workdir, CONFIG_FILE, STEPS, every, [f'--config.data.tfds_dir={tfds_dir}'])


@pytest.fixture(scope='module')
def reference_run(tfds_dir, tmp_path_factory) -> pathlib.Path:
  """An uninterrupted launcher run of STEPS steps, checkpoint every 5."""
  workdir = tmp_path_factory.mktemp('reference')
  run = _launch(workdir, tfds_dir, 5)
  assert run.wait(timeout=300) == 0, run.stdout.read()
  return workdir


def _committed_steps(workdir: pathlib.Path) -> list[int]:
  folder = workdir / 'checkpoints'
  return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.exists() else []


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_gives_bit_identical_params(reference_run, tfds_dir, tmp_path):
  """Kills land anywhere after start-up: mid-step, mid async save (a save every 5 steps)."""
  summary = soak.soak(tmp_path, kills=3, steps=STEPS, every=5, max_delay_s=1.0, seed=0, config=CONFIG_FILE,
                      overrides=[f'--config.data.tfds_dir={tfds_dir}'], reference=reference_run)
  assert summary['kills_survived'] == 3
  assert summary['mismatches'] == 0 and summary['leaves'] > 0


@pytest.mark.slow
def test_sigterm_saves_at_the_step_boundary_exits_0_and_resumes(reference_run, tfds_dir, tmp_path):
  workdir = tmp_path / 'preempted'
  run = _launch(workdir, tfds_dir, 25)
  while not _committed_steps(workdir):
    assert run.poll() is None
    time.sleep(0.02)
  run.send_signal(signal.SIGTERM)
  assert run.wait(timeout=120) == 0
  output = run.stdout.read()
  assert 'Resume with the same command' in output, output
  interrupted = int(output.split('Interrupted at step ')[1].split(':')[0])
  assert interrupted in _committed_steps(workdir) and interrupted < STEPS
  resumed = _launch(workdir, tfds_dir, 25)
  assert resumed.wait(timeout=300) == 0
  assert_trees_equal(load_state(workdir), load_state(reference_run))


def _largest_file(folder: pathlib.Path) -> pathlib.Path:
  return max((p for p in folder.rglob('*') if p.is_file()), key=lambda p: p.stat().st_size)


DAMAGE = {
    'truncated_array_file': lambda ckpt: _largest_file(ckpt / 'state').write_bytes(
        _largest_file(ckpt / 'state').read_bytes()[:100]),
    'missing_item': lambda ckpt: shutil.rmtree(ckpt / 'data'),
    'emptied_state': lambda ckpt: [p.unlink() for p in (ckpt / 'state').rglob('*') if p.is_file()],
}


@pytest.mark.parametrize('damage', sorted(DAMAGE))
def test_damaged_latest_checkpoint_is_moved_aside_and_the_previous_one_used(damage, mnist_config, tmp_path):
  mnist_config.num_train_steps = 20
  mnist_config.checkpoint.every = 5
  mnist_config.checkpoint.keep = 10
  train_and_evaluate(mnist_config, str(tmp_path))
  expected = load_state(tmp_path)
  DAMAGE[damage](tmp_path / 'checkpoints' / '20')
  train_and_evaluate(mnist_config, str(tmp_path))
  quarantined = [p.name for p in (tmp_path / 'checkpoints_quarantine').iterdir()]
  assert len(quarantined) == 1 and quarantined[0].startswith('20.')
  assert_trees_equal(load_state(tmp_path), expected)  # resumed from 15, redid 16..20 identically


def test_folder_of_a_save_cut_short_is_moved_aside(mnist_config, tmp_path):
  mnist_config.num_train_steps = 10
  mnist_config.checkpoint.every = 5
  train_and_evaluate(mnist_config, str(tmp_path))
  leftover = tmp_path / 'checkpoints' / '15.orbax-checkpoint-tmp-1234'
  (leftover / 'state').mkdir(parents=True)
  (leftover / 'state' / 'partial').write_bytes(b'\0' * 10)
  before = load_state(tmp_path)
  train_and_evaluate(mnist_config, str(tmp_path))
  assert not leftover.exists()
  [moved] = (tmp_path / 'checkpoints_quarantine').iterdir()
  assert (moved / 'state' / 'partial').read_bytes() == b'\0' * 10
  assert_trees_equal(load_state(tmp_path), before)


def test_loading_a_run_needs_no_handler_it_lacks(mnist_config, tmp_path, caplog):
  mnist_config.num_train_steps = 5
  train_and_evaluate(mnist_config, str(tmp_path))
  with caplog.at_level(logging.WARNING):
    state = load_state(tmp_path)
  assert int(state['step']) == 5
  # Orbax warns of each checkpoint item (the pipeline position, the config) it has no handler for.
  assert not [record.getMessage() for record in caplog.records if 'could not be restored' in record.getMessage()]


def test_every_checkpoint_damaged_starts_afresh_keeping_them_aside(mnist_config, tmp_path):
  mnist_config.num_train_steps = 10
  mnist_config.checkpoint.every = 5
  train_and_evaluate(mnist_config, str(tmp_path))
  expected = load_state(tmp_path)
  for step in (5, 10):
    DAMAGE['missing_item'](tmp_path / 'checkpoints' / str(step))
  train_and_evaluate(mnist_config, str(tmp_path))
  assert len(list((tmp_path / 'checkpoints_quarantine').iterdir())) == 2
  assert_trees_equal(load_state(tmp_path), expected)


def test_nonfinite_loss_stops_naming_step_and_last_good_checkpoint(mnist_config, tmp_path):
  mnist_config.num_train_steps = 40
  mnist_config.checkpoint.every = 10
  mnist_config.log_every = 10
  mnist_config.optimizer.schedule = 'piecewise'
  mnist_config.optimizer.boundaries = (15,)
  mnist_config.optimizer.scales = (1e30,)  # lr 0.1 until step 15, then absurd
  message = r'Non-finite training at step 1[5-9].*Last good checkpoint: .*/10 \(step 10\)'
  with pytest.raises(NonFiniteLossError, match=message):
    train_and_evaluate(mnist_config, str(tmp_path))
  assert sorted(int(p.name) for p in (tmp_path / 'checkpoints').iterdir() if p.name.isdigit()) == [10]
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(load_state(tmp_path)['params']))


def test_nonfinite_skip_policy_counts_skipped_steps(mnist_config, tmp_path):
  mnist_config.num_train_steps = 30
  mnist_config.nonfinite = 'skip'
  mnist_config.optimizer.schedule = 'piecewise'
  mnist_config.optimizer.boundaries = (15,)
  mnist_config.optimizer.scales = (1e30,)
  result = train_and_evaluate(mnist_config, str(tmp_path))
  assert 0 < result['skipped_steps'] <= 15
  last_train_row = [r for r in read_metrics(tmp_path / 'metrics.jsonl') if r['split'] == 'train'][-1]
  assert last_train_row['skipped_steps'] == result['skipped_steps']
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(load_state(tmp_path)['params']))
  mnist_config.num_train_steps = 40  # resume: the count carries over (every step past 15 is skipped)
  resumed = train_and_evaluate(mnist_config, str(tmp_path))
  assert resumed['skipped_steps'] == result['skipped_steps'] + 10


def test_keeps_last_n_and_best_k_with_metrics_readable_without_arrays(tmp_path):
  from zoo.data.pipeline import ArraySource, Pipeline
  iterator = Pipeline({'train': ArraySource({'x': np.arange(8)})}, 'train', 2, seed=0).train_iterator()
  checkpointer = Checkpointer(tmp_path, keep=1, keep_best=2, best_metric='eval_accuracy', async_save=False)
  for step, accuracy in zip(range(1, 6), (0.5, 0.9, 0.6, 0.95, 0.7)):
    checkpointer.save(step, {'w': np.full(3, step, np.float32)}, iterator, {}, {'eval_accuracy': accuracy})
  checkpointer.close()
  checkpointer = Checkpointer(tmp_path, keep=1, keep_best=2, async_save=False)
  assert checkpointer.all_steps() == [2, 4, 5]
  assert checkpointer.metrics(4) == {'eval_accuracy': 0.95}
