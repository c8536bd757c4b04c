"""How much an in-flight async checkpoint save slows the train step.

  python experiments/checkpoint_overhead.py --config=experiments/configs/mnist_cnn.py --pairs=30 --segment=30

Runs the config's train step the way the training loop does (dispatch runs
ahead; the host blocks only at the end of a segment) in pairs of segments of
`--segment` steps: a quiet one, with no save anywhere, and one that starts
right after a save call returns, so the save's asynchronous part runs during
it. The two are timed back to back, in random order, and the next pair starts
only when the save is on disk.

This shared machine's speed drifts by 20-50% over minutes, more than the
effect measured, so the estimate is paired: `slowdown_in_flight` is the median
over pairs of (saving segment / quiet segment) - 1. The blocking part of a save
(the `save` call itself) is reported apart, as `save_call_ms`, and amortized
over a save interval of one segment. Prints one JSON object.
"""

from __future__ import annotations

import json
import pathlib
import tempfile
import time

import jax
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from zoo.train.checkpoint import Checkpointer
from zoo.train.loop import build_experiment
from zoo.train.step import compile_steps

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file.', lock_config=True)
_PAIRS = flags.DEFINE_integer('pairs', 30, 'Pairs of (quiet, saving) segments.')
_SEGMENT = flags.DEFINE_integer('segment', 30, 'Steps per segment; longer than a save stays in flight.')
_WARMUP = flags.DEFINE_integer('warmup', 10, 'Untimed steps first.')


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  config = _CONFIG.value.copy_and_resolve_references()
  config.num_train_steps = _WARMUP.value + 2 * _PAIRS.value * _SEGMENT.value
  experiment = build_experiment(config, None)
  strategy = experiment.strategy
  train_step, _ = compile_steps(experiment.task, experiment.tx, experiment.schedule, strategy, config)
  iterator = experiment.pipeline.train_iterator()
  batches = [strategy.put_batch(next(iterator)) for _ in range(8)]
  state = strategy.place_state(experiment.state)
  step = 0

  def run_segment():
    """Seconds for one segment of steps, dispatched ahead and blocked on once at the end."""
    nonlocal state, step
    started = time.perf_counter()
    for _ in range(_SEGMENT.value):
      state, metrics = train_step(state, batches[step % len(batches)])
      step += 1
    jax.block_until_ready((state, metrics))
    return time.perf_counter() - started

  for _ in range(_WARMUP.value // _SEGMENT.value + 1):
    run_segment()
  order = np.random.default_rng(0).permutation([0, 1] * _PAIRS.value).reshape(_PAIRS.value, 2)
  quiet_s, saving_s, save_call_s, outlasted = [], [], [], 0
  with tempfile.TemporaryDirectory() as workdir:
    checkpointer = Checkpointer(pathlib.Path(workdir), keep=2)
    for saving_first, _ in order:
      for saving in (bool(saving_first), not saving_first):
        if saving:
          started = time.perf_counter()
          checkpointer.save(step, strategy.canonical_state(state), iterator, {})
          save_call_s.append(time.perf_counter() - started)
          saving_s.append(run_segment())
          outlasted += int(checkpointer.manager.is_saving_in_progress())
          checkpointer.wait()
        else:
          quiet_s.append(run_segment())
    checkpointer.close()

  ratios = np.array(saving_s) / np.array(quiet_s) - 1
  step_ms = lambda seconds: float(np.median(seconds)) / _SEGMENT.value * 1e3
  print(json.dumps({
      'config': config.model.name, 'device': jax.devices()[0].device_kind, 'device_count': jax.device_count(),
      'pairs': _PAIRS.value, 'segment_steps': _SEGMENT.value,
      'state_bytes': int(sum(x.nbytes for x in jax.tree.leaves(state))),
      'step_ms_quiet': step_ms(quiet_s), 'step_ms_save_in_flight': step_ms(saving_s),
      'slowdown_in_flight': float(np.median(ratios)),
      'slowdown_in_flight_p10_p90': [float(np.percentile(ratios, 10)), float(np.percentile(ratios, 90))],
      'saves_outlasting_their_segment': outlasted,
      'save_call_ms': float(np.median(save_call_s)) * 1e3,
      'amortized_save_call_overhead': float(np.median(save_call_s)) / float(np.median(quiet_s)),
  }))


if __name__ == '__main__':
  app.run(main)
