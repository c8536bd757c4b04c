"""experiments/train.py on bad input: one-line errors that name the fix, nothing saved touched."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import REPO
from test_train import tree_digest

CONFIG = REPO / 'experiments' / 'configs' / 'mnist_cnn.py'


def run_launcher(*args, cwd, env_extra=None) -> subprocess.CompletedProcess:
  env = {k: v for k, v in os.environ.items() if k not in ('ZOO_DATA_DIR', 'TFDS_DATA_DIR')}
  env.update(env_extra or {})
  return subprocess.run([sys.executable, str(REPO / 'experiments' / 'train.py'), *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=300)


def error_lines(result) -> list[str]:
  """The launcher's error lines (absl's flag errors or zoo's 'error:' line), no traceback."""
  assert result.returncode != 0
  assert 'Traceback' not in result.stderr, result.stderr
  return [line for line in result.stderr.splitlines() if line.startswith(('error:', 'FATAL'))]


@pytest.mark.parametrize('args,expected', [
    (['--config.optimizer.lr=0.1'], 'lr'),
    (['--config.optimizer.learning_rate=fast'], 'learning_rate'),
    (['--config.num_epochs=ten'], 'num_epochs'),
    (['--config=experiments/configs/no_such_config.py'], 'no_such_config'),
])
def test_bad_flags_are_refused_in_one_line(args, expected, tmp_path):
  result = run_launcher(f'--config={CONFIG}', f'--workdir={tmp_path / "run"}', *args, cwd=REPO)
  lines = error_lines(result)
  assert len(lines) == 1 and expected in lines[0], result.stderr
  assert not (tmp_path / 'run').exists()


@pytest.mark.parametrize('override,expected', [
    ('--config.data.name=mnits', "Unknown dataset 'mnits'. zoo can prepare: fashion_mnist, mnist. Set config.data.name"),
    ('--config.model.name=resnet9000', "Unknown model 'resnet9000'; set config.model.name to one of: cnn"),
    ('--config.optimizer.name=adagrad', "Unknown optimizer 'adagrad'; set config.optimizer.name"),
    ('--config.mesh.axes.data=3', 'needs 3 devices, but there are 1'),
])
def test_bad_config_values_name_the_fix(override, expected, tfds_dir, tmp_path):
  result = run_launcher(f'--config={CONFIG}', f'--workdir={tmp_path / "run"}', f'--config.data.tfds_dir={tfds_dir}',
                        override, cwd=REPO)
  lines = error_lines(result)
  assert len(lines) == 1 and expected in lines[0], result.stderr


def test_missing_data_says_which_files_and_where(tmp_path):
  result = run_launcher(f'--config={CONFIG}', f'--workdir={tmp_path / "run"}', '--config.data.name=fashion_mnist',
                        f'--config.data.tfds_dir={tmp_path / "tfds"}', f'--data_dir={tmp_path / "raw"}',
                        cwd=tmp_path, env_extra={'ZOO_OFFLINE': '1'})
  [line] = error_lines(result)
  assert f'put train-images-idx3-ubyte.gz' in line and str(tmp_path / 'raw' / 'fashion_mnist') in line


def test_extra_positional_arguments_are_refused(tmp_path):
  result = run_launcher(f'--config={CONFIG}', f'--workdir={tmp_path}', 'oops', cwd=REPO)
  assert result.returncode != 0 and 'Unexpected arguments: oops' in result.stderr


def test_other_models_workdir_is_refused_from_the_command_line(tfds_dir, tmp_path):
  common = [f'--config={CONFIG}', f'--workdir={tmp_path / "run"}', f'--config.data.tfds_dir={tfds_dir}',
            '--config.num_train_steps=5', '--config.checkpoint.every=5']
  assert run_launcher(*common, cwd=REPO).returncode == 0
  before = tree_digest(tmp_path / 'run')
  result = run_launcher(*common, '--config.model.hidden=128', cwd=REPO)
  [line] = error_lines(result)
  assert 'model.hidden: 256 -> 128' in line and 'new --workdir' in line
  assert tree_digest(tmp_path / 'run') == before
