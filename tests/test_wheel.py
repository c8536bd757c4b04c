"""Packaging: the wheel holds every package under zoo/ and the shipped configs, and trains from an install
outside the checkout (an editable install would hide a missing package)."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import zipfile

import pytest
from conftest import REPO


@pytest.fixture(scope='module')
def installed_wheel(tmp_path_factory) -> tuple[pathlib.Path, pathlib.Path]:
  """(the built wheel, the folder it is installed into with `pip install --target`)."""
  out = tmp_path_factory.mktemp('wheel')
  pip = [sys.executable, '-m', 'pip', '--disable-pip-version-check']
  subprocess.run([*pip, 'wheel', '--no-deps', '-q', '-w', str(out / 'dist'), str(REPO)],
                 check=True, capture_output=True, cwd=out)
  (wheel,) = (out / 'dist').glob('zoo-*.whl')
  subprocess.run([*pip, 'install', '--no-deps', '-q', '--target', str(out / 'site'), str(wheel)],
                 check=True, capture_output=True, cwd=out)
  return wheel, out / 'site'


def _source_packages() -> set[str]:
  packages = {'zoo.configs'}
  for init in (REPO / 'zoo').rglob('__init__.py'):
    packages.add('.'.join(init.parent.relative_to(REPO).parts))
  return packages


def test_every_package_and_config_is_in_the_wheel(installed_wheel):
  wheel, _ = installed_wheel
  names = zipfile.ZipFile(wheel).namelist()
  in_wheel = {'.'.join(pathlib.PurePosixPath(n).parent.parts) for n in names if n.endswith('/__init__.py')}
  assert _source_packages() <= in_wheel, sorted(_source_packages() - in_wheel)
  modules = {n for n in names if n.endswith('.py')}
  for source in (REPO / 'zoo').rglob('*.py'):
    assert source.relative_to(REPO).as_posix() in modules
  configs = {p.name for p in (REPO / 'experiments' / 'configs').glob('*.py')}
  assert configs <= {pathlib.PurePosixPath(n).name for n in names if n.startswith('zoo/configs/')}
  entry_points = next(n for n in names if n.endswith('entry_points.txt'))
  assert 'zoo-train = zoo.cli.train:run' in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_the_installed_wheel_trains_mnist_from_outside_the_checkout(installed_wheel, tfds_dir, tmp_path):
  _, site = installed_wheel
  workdir = tmp_path / 'run'
  script = f'''
import sys
sys.path.insert(0, {str(site)!r})
import zoo, zoo.train.loop
assert zoo.__file__.startswith({str(site)!r}), zoo.__file__
sys.argv = ['zoo-train', '--config=mnist_cnn', '--workdir={workdir}', '--config.data.tfds_dir={tfds_dir}',
            '--config.num_train_steps=4', '--config.eval_every=4', '--config.checkpoint.every=4']
from zoo.cli.train import run
run()
'''
  result = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, cwd=tmp_path, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  assert 'test accuracy' in result.stdout
  last = json.loads((workdir / 'metrics.jsonl').read_text().splitlines()[-1])
  assert last['split'] == 'test' and last['step'] == 4
