"""Kill a training run with SIGKILL at random moments, resume it each time, and
check that it ends with the same params, bit for bit, as an uninterrupted run.

  python experiments/soak.py --kills=20 --steps=200 --workdir=/tmp/soak

Prints one JSON object: kills survived, mismatching leaves (must be 0), the
checkpoints moved aside, wall time.
"""

from __future__ import annotations

import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import time

import jax
import numpy as np
from absl import app, flags

from zoo.train.checkpoint import load_state

REPO = pathlib.Path(__file__).resolve().parents[1]
_KILLS = flags.DEFINE_integer('kills', 20, 'How many SIGKILLs to survive.')
_STEPS = flags.DEFINE_integer('steps', 200, 'Train steps of the run.')
_EVERY = flags.DEFINE_integer('checkpoint_every', 5, 'Checkpoint interval (small: kills land in saves).')
_MAX_DELAY = flags.DEFINE_float('max_delay_s', 2.0, 'Kills land uniformly in [0, max_delay_s] after start-up.')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the kill times.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Folder for the two runs.')
_CONFIG = flags.DEFINE_string('config', str(REPO / 'experiments' / 'configs' / 'mnist_cnn.py'), 'Config file.')
_OVERRIDES = flags.DEFINE_multi_string('override', [], 'Extra --config.* flags for both runs, e.g. '
                                       '--override=--config.data.tfds_dir=/tmp/tfds.')


def launch(workdir: pathlib.Path, config: str, steps: int, every: int, overrides=()) -> subprocess.Popen:
  """Starts experiments/train.py on `config` for `steps` steps, checkpointing every `every`."""
  command = [sys.executable, str(REPO / 'experiments' / 'train.py'), f'--config={config}', f'--workdir={workdir}',
             f'--config.num_train_steps={steps}', f'--config.checkpoint.every={every}',
             '--config.eval_every=100000', *overrides]
  return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _has_checkpoint(workdir: pathlib.Path) -> bool:
  folder = workdir / 'checkpoints'
  return folder.exists() and any(p.name.isdigit() for p in folder.iterdir())


def _finish(run: subprocess.Popen) -> None:
  if run.wait() != 0:
    raise RuntimeError(f'run failed:\n{run.stdout.read()[-3000:]}')


def soak(workdir: pathlib.Path, *, kills: int, steps: int, every: int, max_delay_s: float, seed: int,
         config: str, overrides=(), reference: pathlib.Path | None = None) -> dict:
  """Runs the reference (unless given: a finished run of the same settings) and
  the killed run; returns the JSON summary."""
  started = time.time()
  if reference is None:
    reference = workdir / 'reference'
    _finish(launch(reference, config, steps, every, overrides))
  chooser = random.Random(seed)
  killed_dir = workdir / 'killed'
  survived = 0
  while survived < kills:
    run = launch(killed_dir, config, steps, every, overrides)
    while not _has_checkpoint(killed_dir) and run.poll() is None:  # past start-up
      time.sleep(0.02)
    time.sleep(chooser.uniform(0.0, max_delay_s))
    if run.poll() is not None:
      _finish(run)
      break  # finished before the kill: the remaining kills cannot happen
    os.kill(run.pid, signal.SIGKILL)
    run.wait()
    survived += 1
  _finish(launch(killed_dir, config, steps, every, overrides))
  expected, got = load_state(reference), load_state(killed_dir)
  mismatches = sum(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(got)))
  quarantine = killed_dir / 'checkpoints_quarantine'
  return {'kills_requested': kills, 'kills_survived': survived, 'steps': steps, 'checkpoint_every': every,
          'leaves': len(jax.tree.leaves(expected)), 'mismatches': mismatches,
          'moved_aside': sorted(p.name for p in quarantine.iterdir()) if quarantine.exists() else [],
          'wall_s': round(time.time() - started, 1)}


def main(argv):
  del argv
  summary = soak(pathlib.Path(_WORKDIR.value), kills=_KILLS.value, steps=_STEPS.value, every=_EVERY.value,
                 max_delay_s=_MAX_DELAY.value, seed=_SEED.value, config=_CONFIG.value, overrides=_OVERRIDES.value)
  print(json.dumps(summary))
  if summary['mismatches'] or summary['kills_survived'] < summary['kills_requested']:
    sys.exit(1)


if __name__ == '__main__':
  flags.mark_flag_as_required('workdir')
  app.run(main)
