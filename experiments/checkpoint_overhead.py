"""How much an in-flight async checkpoint save slows the train step.

  python experiments/checkpoint_overhead.py --config=experiments/configs/mnist_cnn.py --steps=300 --every=20

Runs the config's train step, saving every `--every` steps with the zoo's
Checkpointer, and times every step (blocking on its result). Steps that start
while a save is in flight are compared with the others. Prints one JSON object.

This shared machine's speed drifts by 20-50% over minutes, more than the
effect measured, so besides the pooled medians the tool pairs each save with
the quiet steps of its own interval: `slowdown_paired` is the median over
intervals of (mean in-flight step / mean quiet step of that interval) - 1.
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
_STEPS = flags.DEFINE_integer('steps', 300, 'Timed steps.')
_EVERY = flags.DEFINE_integer('every', 20, 'Save interval in steps.')
_WARMUP = flags.DEFINE_integer('warmup', 10, 'Untimed steps first.')


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  config = _CONFIG.value.copy_and_resolve_references()
  config.num_train_steps = _STEPS.value + _WARMUP.value
  experiment = build_experiment(config, None)
  strategy = experiment.strategy
  train_step, _ = compile_steps(experiment.task, experiment.tx, experiment.schedule, strategy, config)
  iterator = experiment.pipeline.train_iterator()
  batches = [strategy.put_batch(next(iterator)) for _ in range(8)]
  state = strategy.place_state(experiment.state)
  for i in range(_WARMUP.value):
    state, _ = train_step(state, batches[i % len(batches)])
  jax.block_until_ready(state)

  with tempfile.TemporaryDirectory() as workdir:
    checkpointer = Checkpointer(pathlib.Path(workdir), keep=2)
    save_call_s = []
    intervals = [([], [])]  # per save interval: (in-flight step times, quiet step times)
    for i in range(_STEPS.value):
      saving = checkpointer.manager.is_saving_in_progress()
      started = time.perf_counter()
      state, metrics = train_step(state, batches[i % len(batches)])
      jax.block_until_ready(metrics)
      intervals[-1][0 if saving else 1].append(time.perf_counter() - started)
      if (i + 1) % _EVERY.value == 0:
        started = time.perf_counter()
        checkpointer.save(i + 1, strategy.canonical_state(state), iterator, {})
        save_call_s.append(time.perf_counter() - started)
        intervals.append(([], []))
    checkpointer.close()
  in_flight = [elapsed for saving, _ in intervals for elapsed in saving]
  quiet = [elapsed for _, calm in intervals for elapsed in calm]

  median = lambda xs: float(np.median(xs)) * 1e3 if xs else None
  result = {
      'config': config.model.name, 'device': jax.devices()[0].device_kind, 'device_count': jax.device_count(),
      'steps': _STEPS.value, 'save_every': _EVERY.value,
      'params_bytes': int(sum(x.nbytes for x in jax.tree.leaves(state.params))),
      'state_bytes': int(sum(x.nbytes for x in jax.tree.leaves(state))),
      'step_ms_median_no_save': median(quiet), 'step_ms_median_save_in_flight': median(in_flight),
      'steps_with_save_in_flight': len(in_flight),
      'save_call_ms_median': median(save_call_s),
  }
  if quiet and in_flight:
    result['slowdown_while_saving'] = result['step_ms_median_save_in_flight'] / result['step_ms_median_no_save'] - 1
  paired = [np.mean(saving) / np.mean(calm) - 1 for saving, calm in intervals if saving and calm]
  if paired:
    result.update(slowdown_paired=float(np.median(paired)), slowdown_paired_p10_p90=[
        float(np.percentile(paired, 10)), float(np.percentile(paired, 90))], paired_intervals=len(paired))
  # The blocking part of each save, spread over the interval, as a share of the step time.
  result['amortized_save_overhead'] = (result['save_call_ms_median'] / _EVERY.value) / result['step_ms_median_no_save']
  print(json.dumps(result))


if __name__ == '__main__':
  app.run(main)
