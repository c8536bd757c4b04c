"""The bad-input catalogue: each kind of mistake gets a clear error that names the fix,
and nothing already saved in the workdir changes.

In-process cases go through `train_and_evaluate` (and the model / checkpoint
APIs); launcher cases run `experiments/train.py`.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from conftest import RAW_DATA_DIR, REPO, load_config
from test_train import tree_digest

from zoo import models
from zoo.config import set_dotted
from zoo.errors import CheckpointMismatchError, ConfigError, DataUnavailableError, UserError
from zoo.train.checkpoint import Checkpointer
from zoo.train.loop import train_and_evaluate

CONFIG_FILE = REPO / 'experiments' / 'configs' / 'mnist_cnn.py'


@pytest.fixture(scope='module')
def earlier_run(tfds_dir, tmp_path_factory) -> pathlib.Path:
  """A workdir holding a finished 5-step run: what no mistake may change."""
  workdir = tmp_path_factory.mktemp('earlier_run')
  train_and_evaluate(_short_config(tfds_dir), str(workdir))
  return workdir


def _short_config(tfds_dir) -> ml_collections.ConfigDict:
  config = load_config('mnist_cnn')
  config.data.tfds_dir = tfds_dir
  config.num_train_steps = 5
  config.checkpoint.every = 5
  return config


def _offline_empty_raw_dir(config, tmp_path, monkeypatch, files=()):
  """Points fashion_mnist at a raw dir holding only `files`, no download, no default dirs."""
  monkeypatch.setenv('ZOO_OFFLINE', '1')
  monkeypatch.delenv('ZOO_DATA_DIR', raising=False)
  monkeypatch.chdir(tmp_path)
  folder = tmp_path / 'raw' / 'fashion_mnist'
  folder.mkdir(parents=True)
  for name in files:
    shutil.copy(RAW_DATA_DIR / 'fashion_mnist' / name, folder)
  config.data.name = 'fashion_mnist'
  config.data.tfds_dir = str(tmp_path / 'tfds')
  return str(tmp_path / 'raw')


# (config key, bad value, error type, words the message must hold)
CONFIG_CASES = [
    ('data.name', 'mnits', ConfigError,
     "Unknown dataset 'mnits'. zoo can prepare: binarized_mnist, fashion_mnist, glue/sst2"),
    ('data.train_split', 'validation', ConfigError, "no split ['validation']; it has ['test', 'train']"),
    ('data.batch_size', 0, ConfigError, 'config.data.batch_size=0; it must be a positive integer'),
    ('data.eval_batch_size', -5, ConfigError, 'config.data.eval_batch_size=-5; it must be a positive integer'),
    ('model.name', 'resnet9000', ConfigError, "Unknown model 'resnet9000'; set config.model.name to one of: "),
    ('model.widht', 3, ConfigError, 'no option widht (config.model.widht); its options are'),
    ('task.name', 'regression', ConfigError, "Unknown task 'regression'; set config.task.name"),
    ('task.smoothing', 0.1, ConfigError, 'no option smoothing (config.task.smoothing)'),
    ('optimizer.name', 'adagrad', ConfigError, "Unknown optimizer 'adagrad'; set config.optimizer.name"),
    ('optimizer.schedule', 'linear', ConfigError, "Unknown schedule 'linear'; set config.optimizer.schedule"),
    ('optimizer.decay_mask', 'weights', ConfigError, "set config.optimizer.decay_mask to 'all' or 'kernels'"),
    ('mesh.axes', {'data': 3}, ConfigError, 'needs 3 devices, but there are 1'),
    ('mesh.axes', {'data': -1, 'tensor': -1}, ConfigError, 'at most one axis may be -1'),
    ('nonfinite', 'ignore', ConfigError, "config.nonfinite='ignore'; use one of: stop, skip"),
    ('num_epochs', 0, ConfigError, 'gives 0 train steps; set config.num_epochs or config.num_train_steps'),
    ('model.features', (16, 32), CheckpointMismatchError, 'model.features: [32, 64] -> [16, 32]'),
    ('model.num_classes', 12, CheckpointMismatchError, 'model.num_classes: 10 -> 12'),
    ('task.label_smoothing', 0.2, CheckpointMismatchError, 'task.label_smoothing: 0.0 -> 0.2'),
]


@pytest.mark.parametrize('key,value,error,words', CONFIG_CASES, ids=[f'{c[0]}={c[1]}' for c in CONFIG_CASES])
def test_bad_config_value(key, value, error, words, earlier_run, tfds_dir):
  before = tree_digest(earlier_run)
  config = _short_config(tfds_dir)
  if key == 'num_epochs':
    config.num_train_steps = -1
  set_dotted(config, key, value)
  with pytest.raises(error) as raised:
    train_and_evaluate(config, str(earlier_run))
  assert words in str(raised.value)
  assert isinstance(raised.value, UserError)
  assert tree_digest(earlier_run) == before


def test_workdir_that_is_a_file(tfds_dir, tmp_path):
  path = tmp_path / 'notes.txt'
  path.write_text('mine')
  with pytest.raises(ConfigError, match='is a file; pass a folder'):
    train_and_evaluate(_short_config(tfds_dir), str(path))
  assert path.read_text() == 'mine'


def test_no_data_anywhere(tfds_dir, tmp_path, monkeypatch):
  config = _short_config(tfds_dir)
  raw = _offline_empty_raw_dir(config, tmp_path, monkeypatch)
  with pytest.raises(DataUnavailableError, match=r'Fix: put train-images-idx3-ubyte.gz.* into .*raw/fashion_mnist/'):
    train_and_evaluate(config, str(tmp_path / 'run'), raw_data_dir=raw)


def test_incomplete_data_folder(tfds_dir, tmp_path, monkeypatch):
  config = _short_config(tfds_dir)
  raw = _offline_empty_raw_dir(config, tmp_path, monkeypatch, files=['t10k-labels-idx1-ubyte.gz'])
  with pytest.raises(DataUnavailableError, match='incomplete; missing: train-images-idx3-ubyte.gz'):
    train_and_evaluate(config, str(tmp_path / 'run'), raw_data_dir=raw)


def test_corrupt_data_file(tfds_dir, tmp_path, monkeypatch):
  config = _short_config(tfds_dir)
  files = sorted(p.name for p in (RAW_DATA_DIR / 'fashion_mnist').iterdir())
  raw = _offline_empty_raw_dir(config, tmp_path, monkeypatch, files=files)
  damaged = pathlib.Path(raw) / 'fashion_mnist' / 'train-labels-idx1-ubyte.gz'
  damaged.write_bytes(b'not a gzip file')
  with pytest.raises(DataUnavailableError, match='does not match its TFDS checksum.*Replace it with the original'):
    train_and_evaluate(config, str(tmp_path / 'run'), raw_data_dir=raw)
  assert damaged.read_bytes() == b'not a gzip file'


def test_data_dir_env_pointing_nowhere(tfds_dir, tmp_path, monkeypatch):
  config = _short_config(tfds_dir)
  _offline_empty_raw_dir(config, tmp_path, monkeypatch)
  monkeypatch.setenv('ZOO_DATA_DIR', str(tmp_path / 'typo'))
  with pytest.raises(DataUnavailableError, match=f'Folders searched: {tmp_path / "typo"}'):
    train_and_evaluate(config, str(tmp_path / 'run'))


def test_image_without_channel_axis():
  model = models.build(ml_collections.ConfigDict(dict(name='cnn')))
  with pytest.raises(ValueError, match=r'got shape \(2, 28, 28\). Add the missing axes, e.g. x\[..., None\]'):
    model.init(jax.random.PRNGKey(0), jnp.zeros((2, 28, 28)), train=False)


def test_checkpoint_with_params_of_other_shapes(tmp_path):
  from zoo.data.pipeline import ArraySource, Pipeline
  iterator = Pipeline({'train': ArraySource({'x': np.arange(4)})}, 'train', 2, seed=0).train_iterator()
  checkpointer = Checkpointer(tmp_path, async_save=False)
  checkpointer.save(1, {'params': {'w': np.zeros((3, 4), np.float32)}}, iterator, {})
  before = tree_digest(tmp_path)
  expected = {'params': {'w': jax.ShapeDtypeStruct((3, 5), np.float32)}}
  with pytest.raises(CheckpointMismatchError, match=r'w: \(3, 4\) -> \(3, 5\).*new --workdir'):
    checkpointer.restore_latest(expected, iterator)
  checkpointer.close()
  assert tree_digest(tmp_path) == before


def test_exploding_loss(tfds_dir, tmp_path):
  from zoo.errors import NonFiniteLossError
  config = _short_config(tfds_dir)
  config.optimizer.learning_rate = 1e30
  config.optimizer.schedule = 'constant'
  with pytest.raises(NonFiniteLossError, match='lower config.optimizer.learning_rate'):
    train_and_evaluate(config, str(tmp_path))


def run_launcher(*args, cwd=REPO, env_extra=None) -> subprocess.CompletedProcess:
  env = {k: v for k, v in os.environ.items() if k not in ('ZOO_DATA_DIR', 'TFDS_DATA_DIR')}
  env.update(env_extra or {})
  return subprocess.run([sys.executable, str(REPO / 'experiments' / 'train.py'), *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=300)


# launcher arguments after --config/--workdir, and words of the one error line
FLAG_CASES = [
    (['--config.optimizer.lr=0.1'], "unknown config key 'lr'"),
    (['--config.optimizer.learning_rate=fast'], 'learning_rate'),
    (['--config.num_epochs=ten'], 'num_epochs'),
    (['--config=experiments/configs/no_such_config.py'], 'no_such_config.py'),
    (['--config.data.name=mnits'], "error: Unknown dataset 'mnits'"),
    (['--config.model.hidden=128'], 'of a different model/task: model.hidden: 256 -> 128'),
    (['--config.data.tsv_dirr=reviews'], 'unknown config key \'tsv_dirr\' (did you mean "tsv_dir" instead of '
                                         '"tsv_dirr"?) in a --config.* override'),
    (['--config.data.name=tsv'], "error: config.data.name='tsv' needs --config.data.tsv_dir=DIR"),
]


@pytest.mark.parametrize('args,words', FLAG_CASES, ids=[' '.join(c[0]) for c in FLAG_CASES])
def test_bad_launcher_flags(args, words, earlier_run, tfds_dir):
  before = tree_digest(earlier_run)
  result = run_launcher(f'--config={CONFIG_FILE}', f'--workdir={earlier_run}', f'--config.data.tfds_dir={tfds_dir}',
                        '--config.num_train_steps=5', '--config.checkpoint.every=5', *args)
  assert result.returncode != 0
  assert 'Traceback' not in result.stderr, result.stderr
  [line] = [text for text in result.stderr.splitlines() if text.startswith(('error:', 'FATAL'))]
  assert words in line, line
  assert tree_digest(earlier_run) == before


def test_launcher_without_workdir_or_with_stray_arguments():
  missing = run_launcher(f'--config={CONFIG_FILE}')
  assert missing.returncode != 0 and "Flag --workdir must have a value other than None" in missing.stderr
  stray = run_launcher(f'--config={CONFIG_FILE}', '--workdir=/tmp/unused', 'oops')
  assert stray.returncode != 0 and 'Unexpected arguments: oops' in stray.stderr


def _one_error_line(result: subprocess.CompletedProcess) -> str:
  assert result.returncode != 0
  assert 'Traceback' not in result.stderr, result.stderr
  [line] = [text for text in result.stderr.splitlines() if text.startswith(('error:', 'FATAL'))]
  return line


def test_config_file_with_a_syntax_error(earlier_run, tmp_path):
  before = tree_digest(earlier_run)
  broken = tmp_path / 'broken.py'
  broken.write_text('def get_config(:\n  pass\n')
  line = _one_error_line(run_launcher(f'--config={broken}', f'--workdir={earlier_run}'))
  assert f'{broken}:1 has a syntax error (invalid syntax); fix that line' in line, line
  assert tree_digest(earlier_run) == before


# (config key, bad value, words of the one line) for mistakes caught before any step
MORE_CONFIG_CASES = [
    ('optimizer.learning_rate', 0.0, 'config.optimizer.learning_rate=0.0; it must be a number above 0'),
    ('optimizer.learning_rate', -0.1, 'config.optimizer.learning_rate=-0.1; it must be a number above 0'),
    ('data.batch_size', 70000, 'batch_size=70000 is larger than the 60000 examples of the train split'),
]


@pytest.mark.parametrize('key,value,words', MORE_CONFIG_CASES, ids=[f'{c[0]}={c[1]}' for c in MORE_CONFIG_CASES])
def test_more_bad_config_values(key, value, words, earlier_run, tfds_dir):
  before = tree_digest(earlier_run)
  config = _short_config(tfds_dir)
  set_dotted(config, key, value)
  with pytest.raises(ConfigError, match=re.escape(words)):
    train_and_evaluate(config, str(earlier_run))
  assert tree_digest(earlier_run) == before


def test_data_dir_that_does_not_exist(earlier_run, tfds_dir, tmp_path):
  before = tree_digest(earlier_run)
  with pytest.raises(ConfigError, match=r'--data_dir .*/typo is not a folder'):
    train_and_evaluate(_short_config(tfds_dir), str(earlier_run), raw_data_dir=str(tmp_path / 'typo'))
  assert tree_digest(earlier_run) == before


def test_unwritable_workdir_as_a_normal_user(earlier_run, tfds_dir):
  """Root ignores permissions: as root, the check runs with the effective uid of 'nobody'."""
  shared = pathlib.Path(tempfile.mkdtemp(prefix='zoo-readonly-'))
  try:
    os.chmod(shared, 0o755)
    workdir = shared / 'run'
    shutil.copytree(earlier_run, workdir)
    os.chmod(workdir, 0o755 if os.geteuid() == 0 else 0o555)  # readable, not writable by the user it runs as
    before = tree_digest(workdir)
    for target in (workdir, workdir / 'new' / 'deeper'):
      if os.geteuid() == 0:
        os.seteuid(65534)
      try:
        with pytest.raises(ConfigError, match=r'is not writable .* refuses this user.*pass a folder you can write'):
          train_and_evaluate(_short_config(tfds_dir), str(target))
      finally:
        if os.geteuid() != os.getuid():
          os.seteuid(os.getuid())
    assert tree_digest(workdir) == before and not (workdir / 'new').exists()
  finally:
    os.chmod(shared, 0o755)
    if (shared / 'run').exists():
      os.chmod(shared / 'run', 0o755)
    shutil.rmtree(shared)


def test_evaluate_a_split_the_dataset_lacks(earlier_run, tfds_dir):
  before = tree_digest(earlier_run)
  result = subprocess.run([sys.executable, str(REPO / 'experiments' / 'evaluate.py'), f'--workdir={earlier_run}',
                           '--split=validation', f'--set=data.tfds_dir={tfds_dir!r}'],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
  line = _one_error_line(result)
  assert "has no split ['validation']; it has ['test', 'train']" in line, line
  assert tree_digest(earlier_run) == before


def test_compress_quantize_on_a_model_it_cannot_quantize(tmp_path):
  workdir = tmp_path / 'text_run'
  workdir.mkdir()
  (workdir / 'config.json').write_text(load_config('sst2_lstm').to_json())
  before = tree_digest(workdir)
  result = subprocess.run([sys.executable, str(REPO / 'experiments' / 'compress.py'), f'--workdir={workdir}',
                           '--quantize'], cwd=REPO, capture_output=True, text=True, timeout=300)
  line = _one_error_line(result)
  assert "--quantize measures image classifiers; " in line and "'rnn_classifier' with task 'classification' on " \
         "'tokens' inputs. Drop --quantize" in line, line
  assert tree_digest(workdir) == before


def test_unreadable_checkpoint_metadata_is_reported_once_and_the_checkpoint_used(earlier_run, tfds_dir, tmp_path,
                                                                                 capsys, caplog):
  workdir = tmp_path / 'run'
  shutil.copytree(earlier_run, workdir)
  metadata = workdir / 'checkpoints' / '5' / '_CHECKPOINT_METADATA'
  metadata.write_text('{"garbage')
  before = tree_digest(workdir / 'checkpoints')
  capsys.readouterr()
  assert train_and_evaluate(_short_config(tfds_dir), str(workdir))['step'] == 5
  warnings = [line for line in capsys.readouterr().err.splitlines() if 'warning' in line.lower()]
  assert warnings == [f'warning: {metadata} is unreadable (JSONDecodeError); checkpoint 5 is used without it (its '
                      'state, data position and config are intact; its saved metrics are not). Nothing was changed.']
  assert not [r for r in caplog.records if 'Failed to json parse' in r.getMessage()]
  assert tree_digest(workdir / 'checkpoints') == before and not (workdir / 'checkpoints_quarantine').exists()
