"""Shared fixtures: MNIST prepared once per session from the real raw files."""

from __future__ import annotations

import importlib.util
import os
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[1]

# One persistent XLA compilation cache for the test workers and every process they start (before
# JAX is imported): dozens of tests and launcher subprocesses compile the same train steps. Entries
# are keyed by program, options and versions, so a hit runs the very executable a miss would build.
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', str(REPO / '.pytest_cache' / 'jax_compilation_cache'))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.5')

import ml_collections
import pytest

from zoo.data import prepare
from zoo.train.loop import train_and_evaluate

RAW_DATA_DIR = REPO.parent / 'shared' / 'data'


def load_experiment(relative_path: str):
  """Imports experiments/<relative_path> (the experiments folder is not a package)."""
  path = REPO / 'experiments' / relative_path
  spec = importlib.util.spec_from_file_location(path.stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_config(name: str) -> ml_collections.ConfigDict:
  """experiments/configs/<name>.py's get_config()."""
  return load_experiment(f'configs/{name}.py').get_config()


@pytest.fixture(scope='session')
def tfds_dir(tmp_path_factory) -> str:
  """A TFDS data dir holding MNIST, built offline from the raw IDX files."""
  path = tmp_path_factory.mktemp('tfds')
  prepare('mnist', raw_data_dir=str(RAW_DATA_DIR), tfds_dir=str(path), allow_download=False)
  return str(path)


@pytest.fixture
def mnist_config(tfds_dir) -> ml_collections.ConfigDict:
  """The mnist_cnn config on the session's TFDS dir, cut to a short run."""
  config = load_config('mnist_cnn')
  config.data.tfds_dir = tfds_dir
  config.num_train_steps = 40
  config.log_every = 10
  config.eval_every = 20
  config.checkpoint.every = 20
  return config


@pytest.fixture(scope='session')
def trained_run(tfds_dir, tmp_path_factory) -> pathlib.Path:
  """A finished 10-step mnist_cnn run folder (for tools that read runs: export, compress)."""
  config = load_config('mnist_cnn')
  config.data.tfds_dir = tfds_dir
  config.num_train_steps = config.eval_every = config.checkpoint.every = 10
  workdir = tmp_path_factory.mktemp('trained_run')
  train_and_evaluate(config, str(workdir))
  return workdir
